"""How many tokens a recipe trains on, and what that costs in FLOPs, hours and MFU — from the recipe itself.

A recipe names its dataset and split (``dataset_name``, ``dataset_train_split``), its epochs, its
``max_length``, whether SFT packs without truncating (``packing_strategy: bfd_split``) and whether a DPO
reference is precomputed (``precompute_ref_log_probs``). :func:`recipe_tokens` reads those fields and
multiplies:

    tokens = rows of the split × epochs × tokens per row (capped where the recipe truncates)

* **rows** — the split's size as its dataset card gives it (:data:`CITED_SPLIT_ROWS`; with
  ``max_train_samples`` the smaller of the two). A split not in the table is an error naming the recipe
  file and its fields: nothing is guessed.
* **tokens per row** — passed in with its source: measured from rows at hand
  (:func:`mean_tokens_per_row`), or a stated assumption (:data:`ASSUMED_TOKENS_PER_ROW`) where the data
  cannot be read. For DPO a row is a pair: prompt + chosen and prompt + rejected, each cut at
  ``max_length``.

**FLOPs** (:meth:`TokenEstimate.flops`): training costs ≈ 6·N per token (forward 2N, backward 4N); a DPO
reference model costs a forward (2N per token) — every epoch when it runs live, once when its
log-probabilities are precomputed. **MFU** (model FLOPs utilisation) is the model's FLOPs per second
divided by the hardware's peak: :func:`mfu`.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ..core.configs import load_yaml

# Split sizes from the dataset cards (the original ultrafeedback_binarized, as Zephyr-7B-β trained on it).
CITED_SPLIT_ROWS: dict[tuple[str, str], tuple[int, str]] = {
    ("HuggingFaceH4/ultrachat_200k", "train_sft"): (207_865, "ultrachat_200k's dataset card"),
    ("HuggingFaceH4/ultrachat_200k", "test_sft"): (23_110, "ultrachat_200k's dataset card"),
    ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs"): (61_966, "ultrafeedback_binarized's dataset card "
                                                                       "(the version Zephyr-7B-β trained on)"),
    ("HuggingFaceH4/ultrafeedback_binarized", "test_prefs"): (2_000, "ultrafeedback_binarized's dataset card"),
}

# Mean tokens per row where the data cannot be read here (no hub): the handbook's own length model of these
# datasets (handbook/tools/synthetic.py, bench/), an assumption, not a measurement. Measure instead with
# mean_tokens_per_row on rows of the dataset when they are at hand.
ASSUMED_TOKENS_PER_ROW: dict[str, tuple[float, str]] = {
    "HuggingFaceH4/ultrachat_200k": (1_470, "assumed: the handbook's length model of UltraChat dialogues "
                                            "(handbook/tools/synthetic.py), not measured here"),
    "HuggingFaceH4/ultrafeedback_binarized": (900, "assumed: the handbook's length model of UltraFeedback pairs, "
                                                   "chosen + rejected (handbook/tools/synthetic.py), not measured here"),
}

A100_BF16_TFLOPS = 312.0  # NVIDIA A100's dense bf16 peak, per GPU


@dataclass(frozen=True)
class TokenEstimate:
    """Tokens a recipe trains on, and where each factor comes from."""

    recipe: str                 # the recipe file
    stage: str                  # "sft" or "dpo" (a recipe with a `beta` is DPO)
    rows: int                   # training rows (dialogues / pairs) of one epoch
    rows_source: str            # where ``rows`` comes from
    epochs: float               # the recipe's num_train_epochs
    tokens_per_row: float       # mean tokens per row after the recipe's truncation
    tokens_per_row_source: str  # measured, or an assumption, and from what
    reference: str              # DPO: "precomputed" or "live"; SFT: "none"

    @property
    def tokens_per_epoch(self) -> float:
        return self.rows * self.tokens_per_row

    @property
    def tokens(self) -> float:
        """Tokens the policy trains on: every epoch's."""
        return self.tokens_per_epoch * self.epochs

    def flops(self, n_params: float) -> float:
        """Training FLOPs: 6·N per trained token, plus a DPO reference's 2·N forward per token — every epoch
        when it runs live, once when precomputed."""
        reference_tokens = {"none": 0.0, "precomputed": self.tokens_per_epoch, "live": self.tokens}[self.reference]
        return 6 * n_params * self.tokens + 2 * n_params * reference_tokens

    def hours(self, n_params: float, n_gpus: int, mfu: float, peak_tflops: float = A100_BF16_TFLOPS) -> float:
        """Wall-clock hours on ``n_gpus`` GPUs of ``peak_tflops`` each at model-FLOPs utilisation ``mfu``."""
        if not 0 < mfu <= 1 or n_gpus < 1:
            raise ValueError(f"mfu must be in (0, 1] and n_gpus >= 1, got mfu={mfu}, n_gpus={n_gpus}")
        return self.flops(n_params) / (n_gpus * peak_tflops * 1e12 * mfu) / 3600


def mfu(flops: float, seconds: float, n_gpus: int, peak_tflops: float = A100_BF16_TFLOPS) -> float:
    """Model FLOPs utilisation: the share of the GPUs' peak that ``flops`` in ``seconds`` amounts to."""
    if seconds <= 0 or n_gpus < 1:
        raise ValueError(f"seconds must be > 0 and n_gpus >= 1, got {seconds}, {n_gpus}")
    return flops / seconds / (n_gpus * peak_tflops * 1e12)


def _field(recipe: Mapping, key: str, source: str):
    if key not in recipe:
        raise ValueError(f"{source}: field '{key}' is missing (needed for the token estimate)")
    return recipe[key]


def recipe_tokens(recipe_file: str | os.PathLike, tokens_per_row: float, tokens_per_row_source: str,
                  rows: int | None = None, rows_source: str | None = None,
                  reference: str | None = None) -> TokenEstimate:
    """The tokens that ``recipe_file`` trains on (see the module's docstring).

    ``rows``: the training rows when known otherwise (e.g. counted from the data at hand; with
    ``rows_source``); else :data:`CITED_SPLIT_ROWS` by the recipe's dataset and split. ``reference``
    overrides the recipe's DPO reference mode (``"live"`` / ``"precomputed"``), e.g. to cost a run made
    before TRL could precompute. A recipe with ``max_steps`` > 0 is refused: the estimate counts whole epochs.
    """
    source = str(recipe_file)
    recipe = load_yaml(recipe_file)
    stage = "dpo" if "beta" in recipe else "sft"
    if int(recipe.get("max_steps", -1) or -1) > 0:
        raise ValueError(f"{source}: field 'max_steps' is set ({recipe['max_steps']}): the estimate counts whole "
                         f"epochs (num_train_epochs)")
    epochs = float(_field(recipe, "num_train_epochs", source))
    if rows is None:
        key = (_field(recipe, "dataset_name", source), _field(recipe, "dataset_train_split", source))
        if key not in CITED_SPLIT_ROWS:
            raise ValueError(f"{source}: fields 'dataset_name' / 'dataset_train_split' = {key[0]!r} / {key[1]!r}: no "
                             f"cited size for this split (known: {sorted(CITED_SPLIT_ROWS)}); pass rows=")
        rows, rows_source = CITED_SPLIT_ROWS[key]
    if recipe.get("max_train_samples") is not None:
        rows = min(rows, int(recipe["max_train_samples"]))
    max_length = recipe.get("max_length")
    per_row = float(tokens_per_row)
    if max_length is not None:
        if stage == "dpo":
            per_row = min(per_row, 2 * int(max_length))  # chosen and rejected, each cut at max_length
        elif not (recipe.get("packing") and recipe.get("packing_strategy") == "bfd_split"):
            per_row = min(per_row, int(max_length))      # truncated at max_length (bfd_split packs the overflow)
    if stage == "dpo":
        reference = reference or ("precomputed" if recipe.get("precompute_ref_log_probs") else "live")
        if reference not in ("precomputed", "live"):
            raise ValueError(f"reference must be 'precomputed' or 'live', got {reference!r}")
    else:
        if reference not in (None, "none"):
            raise ValueError(f"{source}: an SFT recipe has no reference model (reference={reference!r})")
        reference = "none"
    return TokenEstimate(recipe=source, stage=stage, rows=int(rows), rows_source=rows_source or "given",
                         epochs=epochs, tokens_per_row=per_row, tokens_per_row_source=tokens_per_row_source,
                         reference=reference)


def assumed_tokens_per_row(recipe_file: str | os.PathLike) -> tuple[float, str]:
    """``(tokens per row, source)`` of :data:`ASSUMED_TOKENS_PER_ROW` for the recipe's dataset; an error
    naming the recipe and field for a dataset with no stated assumption."""
    name = _field(load_yaml(recipe_file), "dataset_name", str(recipe_file))
    if name not in ASSUMED_TOKENS_PER_ROW:
        raise ValueError(f"{recipe_file}: field 'dataset_name' = {name!r}: no stated tokens-per-row assumption; "
                         f"measure it with mean_tokens_per_row (known: {sorted(ASSUMED_TOKENS_PER_ROW)})")
    return ASSUMED_TOKENS_PER_ROW[name]


def mean_tokens_per_row(rows: Iterable[Mapping], tokenizer, stage: str, max_length: int | None = None) -> float:
    """Mean tokens per row, measured: SFT rows (``messages``) through the tokenizer's chat template; DPO rows
    (``chosen`` and ``rejected`` conversations, ``ultrafeedback_binarized``'s schema) as the two
    conversations' tokens, each cut at ``max_length``. A malformed row raises ``ValueError`` naming it."""
    if stage not in ("sft", "dpo"):
        raise ValueError(f"stage must be 'sft' or 'dpo', got {stage!r}")
    fields = ("messages",) if stage == "sft" else ("chosen", "rejected")
    counts = []
    for n, row in enumerate(rows):
        total = 0
        for key in fields:
            conversation = row.get(key)
            if not isinstance(conversation, list) or not conversation:
                raise ValueError(f"row {n}: field '{key}' must be a non-empty conversation")
            ids = tokenizer.apply_chat_template(conversation, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, Mapping) else ids
            total += min(len(ids), max_length) if max_length else len(ids)
        counts.append(total)
    if not counts:
        raise ValueError("mean_tokens_per_row: no rows")
    return statistics.fmean(counts)


def recipe_file_name(path: str | os.PathLike) -> str:
    """``recipes/<model>/<stage>/<file>`` for display."""
    parts = Path(path).parts
    return "/".join(parts[parts.index("recipes"):]) if "recipes" in parts else str(path)
