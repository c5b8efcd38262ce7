"""Padding-free dDPO: the rows of a preference batch packed into one sequence, no padding computed.

TRL's ``DPOTrainer`` scores a batch of B pairs as 2B rows (B chosen, then B rejected, each prompt +
reply), padded to the longest row; its ``padding_free`` is disabled in TRL 1.16. Length grouping
(:mod:`handbook.ddpo.batching`) leaves the padding inside pairs and batches: ~27 % of what a batch
computes on the benchmark's UltraFeedback-like pairs. Here every forward that scores replies — the
policy's in training and evaluation, the reference's (the precomputed pass, or live) — runs on the
rows of the padded batch laid end to end in one row of real tokens (:func:`pack_rows`):

* **positions** restart at 0 at every row, so each row gets the rotary positions it has in the padded
  batch (TRL right-pads; the padded forward numbers positions 0, 1, ... from the row's start);
* **attention stays within each row** (``cu_seq_lens``, the rows' boundaries, are passed to the
  attention): with FlashAttention-2/3 that is its variable-length kernel; otherwise the model's
  attention becomes :func:`segment_sdpa_attention` (registered as ``handbook_segments``), one causal
  SDPA call per row. (transformers' own answer for sdpa, a block-diagonal mask over the packed
  sequence, computes the whole T×T square of a T-token batch: measured slower than padding on the
  CPU, ``bench/README.md``.) Calls that do carry an attention mask — generation, any padded
  forward — go to transformers' sdpa unchanged;
* the **label of each row's first token** is masked, so that no row predicts the next row's start;
* the per-token outputs of TRL's fused LM head (log-probs, entropy, ...) are **scattered back** to
  the padded layout, zeros at padding as TRL's own are. TRL's ``_compute_loss`` and
  ``compute_ref_log_probs`` — Eq. 1, every metric, every loss type — run unchanged on the numbers a
  padded forward gives, up to float rounding (``tests/test_ddpo_packing.py``: per-pair log-probs
  equal to TRL's, and a whole run's per-step losses equal to the padded run's).

:func:`enable_packed_forward` puts this on a model that TRL has given its fused LM head
(``HandbookDPOTrainer`` does it for the policy and the reference when ``pack_rows`` is on, the
handbook's default). Only calls with ``fused_lm_head=True``, ``input_ids``, ``labels`` and a 2-D,
right-padded ``attention_mask`` are packed; every other call goes through as it is.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

ATTENTION = "handbook_segments"
"""The attention implementation :func:`segment_sdpa_attention` is registered under."""

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
"""Implementations with a variable-length kernel: they take the rows' boundaries as they are."""

REPLACEABLE_ATTENTION = (None, "sdpa", "eager", ATTENTION)
"""Implementations that :func:`enable_packed_forward` replaces by :func:`segment_sdpa_attention`."""

_PASSED_THROUGH = {"use_cache", "output_router_logits", "num_items_in_batch"}


# --- attention within each row -------------------------------------------------------------------------

def segment_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                           sliding_window: int | None = None, is_causal: bool | None = None, **kwargs):
    """transformers attention function: causal SDPA within each packed row, nothing across rows.

    ``query``/``key``/``value``: ``[batch, heads, tokens, head_dim]``. With ``cu_seq_lens_q`` (the rows'
    cumulative lengths, as FlashAttention's varlen kernel takes them) or packed ``position_ids``
    (restarting at 0) and no mask, each row is attended on its own, causally, within
    ``sliding_window`` if the model has one. Anything else — a mask, a KV cache, bidirectional
    attention — is transformers' ``sdpa_attention_forward``, unchanged.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    sdpa = functools.partial(sdpa_attention_forward, module, dropout=dropout, scaling=scaling, is_causal=is_causal,
                             **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is not None or not causal or query.shape[2] != key.shape[2]:
        return sdpa(query, key, value, attention_mask)
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError(f"{ATTENTION} attention: softcap / attention sinks are not supported; "
                                  "set pack_rows: false for this model")
    bounds = _row_bounds(query, kwargs)
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:
        key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    if bounds is None:  # one sequence per row of the batch
        out = _causal_sdpa(query, key, value, dropout, scaling, sliding_window)
    else:
        out = torch.cat([_causal_sdpa(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout, scaling,
                                      sliding_window) for s, e in bounds if e > s], dim=2)
    return out.transpose(1, 2).contiguous(), None


def _row_bounds(query, kwargs) -> list[tuple[int, int]] | None:
    """``[(start, end), ...]`` of the packed rows, or ``None`` when the batch is not packed."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:
        if query.shape[0] != 1:
            raise ValueError(f"cu_seq_lens_q describes one packed row, but the batch has {query.shape[0]} rows")
        cu = cu.tolist()
        if cu[0] != 0 or cu[-1] != query.shape[2]:
            raise ValueError(f"cu_seq_lens_q runs from {cu[0]} to {cu[-1]}, the packed row has {query.shape[2]} tokens")
        return list(zip(cu[:-1], cu[1:]))
    position_ids = kwargs.get("position_ids")
    if position_ids is None or query.shape[0] != 1 or position_ids.shape[-1] != query.shape[2]:
        return None
    positions = position_ids.reshape(-1)
    starts = torch.nonzero(torch.diff(positions, prepend=positions[:1] - 1) != 1).flatten().tolist()
    if starts == [0]:
        return None
    return list(zip(starts, starts[1:] + [positions.numel()]))


def _causal_sdpa(query, key, value, dropout, scaling, sliding_window):
    n = query.shape[2]
    if sliding_window is not None and n > sliding_window:
        i = torch.arange(n, device=query.device)
        band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < sliding_window)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=band, dropout_p=dropout, scale=scaling)
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, dropout_p=dropout, scale=scaling)


def _segment_mask(*args, attention_mask=None, **kwargs):
    """The mask for :data:`ATTENTION`: none without a padding mask (the attention keeps rows apart and
    causal itself; no T×T mask is built), transformers' sdpa mask with one."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register_segment_attention() -> str:
    """Register :func:`segment_sdpa_attention` (and its mask) with transformers as :data:`ATTENTION`."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(ATTENTION, segment_sdpa_attention)
    AttentionMaskInterface.register(ATTENTION, _segment_mask)
    return ATTENTION


# --- packing and unpacking -----------------------------------------------------------------------------

@dataclass
class PackedRows:
    """The real tokens of a right-padded batch of ``N`` rows, laid end to end in one row of ``T`` tokens."""

    input_ids: torch.Tensor     # [1, T]
    position_ids: torch.Tensor  # [1, T]: 0, 1, ... from each row's start
    cu_seq_lens: torch.Tensor   # [N + 1], int32: where each row starts and ends in the packed row
    max_length: int             # the longest row
    mask: torch.Tensor          # [N, L], bool: the padded batch's real tokens

    def labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The padded batch's ``labels`` packed, each row's first token masked (-100): the token before it
        is the previous row's last, which must not learn to predict it."""
        packed = labels[self.mask].clone()
        starts = self.cu_seq_lens[:-1].long()
        packed[starts[starts < packed.numel()]] = -100  # (an empty row starts where the next one does, or at the end)
        return packed.unsqueeze(0)

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """A fused-head per-token output of the packed row, ``[1, T - 1]`` (entry t scores token t + 1),
        → the padded layout ``[N, L - 1]`` (entry [i, t] scores token t + 1 of row i), zeros at padding."""
        flat = torch.cat([values.reshape(-1), values.new_zeros(1)])  # the last token of the last row scores nothing
        return flat.new_zeros(self.mask.shape).masked_scatter(self.mask, flat)[:, :-1]


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PackedRows:
    """Pack a right-padded batch (``attention_mask`` 1 on a prefix of each row, 0 after) into one row.

    A mask that is not a prefix per row (left padding, holes) raises ``ValueError``: its padded forward
    numbers positions differently, so the packed one would not compute the same thing.
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(f"pack_rows needs input_ids and attention_mask of one 2-D shape, got "
                         f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    prefix = torch.arange(mask.shape[1], device=mask.device) < lengths[:, None]
    if not torch.equal(mask, prefix):
        rows = torch.nonzero((mask != prefix).any(dim=1)).flatten().tolist()
        raise ValueError(f"pack_rows: rows {rows[:10]} are not right-padded (their attention_mask is not 1s then 0s)")
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=mask.device)
    cu[1:] = lengths.cumsum(0)
    starts = torch.repeat_interleave(cu[:-1].long(), lengths)
    position_ids = torch.arange(int(cu[-1]), device=mask.device) - starts
    return PackedRows(input_ids=input_ids[mask].unsqueeze(0), position_ids=position_ids.unsqueeze(0),
                      cu_seq_lens=cu, max_length=int(lengths.max()) if len(lengths) else 0, mask=mask)


# --- the model's forward -------------------------------------------------------------------------------

def packing_unsupported(model) -> str | None:
    """Why ``model`` cannot run packed (a sentence), or ``None`` when it can."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation in FLASH_ATTENTION:
        return None
    if implementation not in REPLACEABLE_ATTENTION:
        return f"its attention implementation {implementation!r} takes no row boundaries (sdpa, eager or flash do)"
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        return f"{type(model).__name__} does not dispatch its attention through transformers' AttentionInterface"
    return None


def enable_packed_forward(model) -> bool:
    """Make ``model``'s fused-head forwards padding-free (see the module doc); ``True`` if it now packs.

    ``model``: the ``PreTrainedModel`` TRL gave its fused LM head (``trl.trainer.utils.add_fused_lm_head``;
    under PEFT, the base model). Idempotent. A model that cannot pack (:func:`packing_unsupported`) is
    left as it is, with a warning saying why.
    """
    if getattr(model, "_handbook_packed_forward", False):
        return True
    reason = packing_unsupported(model)
    if reason is not None:
        logger.warning("pack_rows: %s; dDPO batches stay padded", reason)
        return False
    if model.config._attn_implementation not in FLASH_ATTENTION:
        model.set_attn_implementation(register_segment_attention())
    inner = model.forward

    @functools.wraps(inner)
    def packed_forward(*args, fused_lm_head=False, labels=None, **kwargs):
        attention_mask = kwargs.get("attention_mask")
        input_ids = kwargs.get("input_ids")
        if not fused_lm_head or labels is None:  # generation, plain forwards: as they are
            return inner(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        others = sorted(k for k, v in kwargs.items()
                        if v is not None and k not in _PASSED_THROUGH | {"input_ids", "attention_mask"})
        if args or input_ids is None or attention_mask is None or attention_mask.dim() != 2 or others:
            _warn_once(f"pack_rows: a fused-head forward with {others or 'no input_ids or 2-D attention_mask'} "
                       "is not packed; it runs padded")
            return inner(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        model.packed_calls += 1
        rows = pack_rows(input_ids, attention_mask)
        rest = {k: v for k, v in kwargs.items() if k in _PASSED_THROUGH and v is not None}
        cu = rows.cu_seq_lens
        out = inner(input_ids=rows.input_ids, position_ids=rows.position_ids, labels=rows.labels(labels),
                    fused_lm_head=True, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=rows.max_length,
                    max_length_k=rows.max_length, **rest)
        for name in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"):
            value = getattr(out, name, None)
            if value is not None:
                setattr(out, name, rows.unpack(value))
        if getattr(out, "label_mask", None) is not None:
            out.label_mask = labels[:, 1:] != -100
        return out

    model.forward = packed_forward
    model._handbook_packed_forward = True
    model.packed_calls = 0  # forwards that ran packed (tests and benchmarks read it)
    return True


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)
