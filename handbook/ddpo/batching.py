"""Batching for dDPO: no padding computed, the same examples, the same loss.

TRL's ``DPOTrainer`` pads every batch to its longest sequence (chosen and rejected of all pairs
together), and its ``padding_free`` option is disabled in TRL 1.16. Chat data has a wide spread
of lengths (UltraFeedback pairs: ~900 tokens, a long tail), so random batches are mostly padding.
:class:`HandbookDPOTrainer` adds three things to ``DPOTrainer``, nothing else:

* ``pack_rows=True`` (the default; ``pack_rows`` of ``DPODataArguments`` in a recipe): every forward
  that scores replies — the policy's, the reference's, precomputed or live — runs on the batch's
  chosen and rejected rows packed into one sequence, attention kept within each row, and TRL's
  loss code reads the result in its padded layout (:mod:`handbook.ddpo.packing`). Nothing is
  computed for padding; Eq. 1 and every metric are TRL's, per pair, up to float rounding.
* ``train_sampling_strategy: group_by_length`` (a transformers ``TrainingArguments`` field) works
  for preference pairs: the pair's length (:func:`pair_lengths`) is computed from TRL's tokenized
  columns, and transformers' mega-batch grouping (shuffle, cut into mega-batches of up to 50
  batches, sort each by length) makes batches of similar lengths. Every pair is still seen once
  per epoch, in a random mega-batch; only which pairs share a batch changes.
* The precomputed reference pass (``precompute_ref_log_probs``) scores pairs in length order and
  puts the log-probs back in the dataset's own order, so the forward-only pass wastes no padding
  and the result is the same pair by pair (tested).

With packed rows, grouping no longer saves compute (a packed batch costs its real tokens, whatever
their lengths): random batches (``train_sampling_strategy: random``, TRL's batches) cost the same.
The recipes keep grouping, so that a run's batches and per-step losses are those of the padded runs
before (``pack_rows: false``).

:func:`length_grouped_sampler` and :func:`reference_pass_order` are those two orders on their own,
from a list of lengths: the trainer calls them, and so does ``bench/gpu_bench.py`` (no TRL, no
datasets needed). :func:`padding_efficiency` simulates the real-token share of a batching rule on a
list of lengths.
"""

from __future__ import annotations

import functools

import numpy as np


def pair_lengths(dataset, max_length: int | None = None) -> list[int]:
    """Tokens one pair occupies in a padded batch: ``prompt + max(chosen, rejected)`` (TRL's layout), capped."""
    lengths = []
    columns = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
    for batch in columns.iter(batch_size=1024):  # a batch at a time: the token ids of 60 K pairs are gigabytes
        for prompt, chosen, rejected in zip(batch["prompt_ids"], batch["chosen_ids"], batch["rejected_ids"]):
            n = len(prompt) + max(len(chosen), len(rejected))
            lengths.append(min(n, max_length) if max_length else n)
    return lengths


def length_grouped_sampler(lengths, global_batch: int, seed: int):
    """The sampler :class:`HandbookDPOTrainer` trains with: transformers' ``LengthGroupedSampler``.

    ``lengths`` one per pair (:func:`pair_lengths`), ``global_batch`` the pairs of one optimizer step
    over all processes (per-device batch × accumulation steps × processes), ``seed`` the data seed. Each
    ``iter()`` draws a new order from the sampler's own generator (the next epoch's).
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    return LengthGroupedSampler(global_batch, lengths=lengths, generator=torch.Generator().manual_seed(seed))


def reference_pass_order(lengths) -> np.ndarray:
    """The order of the precomputed reference pass: longest pair first (an out-of-memory shows at once)."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def length_grouped_order(lengths, batch_size: int, mega_batch_mult: int | None = None, seed: int = 0) -> list[int]:
    """transformers' grouping (``get_length_grouped_indices``) with an explicit seed, for simulations."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    generator = torch.Generator().manual_seed(seed)
    return get_length_grouped_indices(list(lengths), batch_size, mega_batch_mult, generator=generator)


def padding_efficiency(lengths, batch_size: int, order: str = "random", seed: int = 0) -> float:
    """Real-token share when ``lengths`` are batched by ``order`` ("random", "grouped", "sorted") and padded.

    Each batch costs ``batch_size_of_batch × longest``; the share is the sum of lengths over that.
    """
    lengths = np.asarray(lengths)
    if order == "random":
        index = np.random.default_rng(seed).permutation(len(lengths))
    elif order == "grouped":
        index = np.asarray(length_grouped_order(lengths.tolist(), batch_size, seed=seed))
    elif order == "sorted":
        index = np.argsort(-lengths, kind="stable")
    else:
        raise ValueError(f"order must be 'random', 'grouped' or 'sorted', not {order!r}")
    padded = sum(len(b) * int(b.max()) for b in np.array_split(lengths[index], range(batch_size, len(index), batch_size)))
    return float(lengths.sum() / padded)


@functools.cache
def _dpo_trainer_class():
    from trl import DPOTrainer

    class HandbookDPOTrainer(DPOTrainer):
        """``DPOTrainer`` with length grouping for pairs, a length-sorted reference pass and, with
        ``pack_rows=True`` (the default), padding-free forwards (see the module doc).

        ``pack_rows``: pack each batch's chosen and rejected rows into one sequence for every forward
        that scores replies — the policy's, and the reference's whether precomputed or live
        (:mod:`handbook.ddpo.packing`); ``False``: TRL's padded batches. The recipes' switch is
        ``pack_rows`` of ``DPODataArguments``.
        """

        def __init__(self, *args, pack_rows: bool = True, **kwargs):
            self.pack_rows = pack_rows
            self.packed_models = []  # the models whose forwards are padding-free (policy, reference)
            self._packing_done = False
            super().__init__(*args, **kwargs)
            self._enable_packing()

        def _enable_packing(self):
            """Put the packed forward on the policy and the reference model, once TRL has added its fused LM
            head to them (before the precomputed reference pass, which runs inside ``DPOTrainer.__init__``)."""
            if not self.pack_rows or self._packing_done or getattr(self, "_is_vision_dataset", False):
                return
            self._packing_done = True
            from .packing import enable_packed_forward

            models = [self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model]
            if self.ref_model is not None:
                models.append(self.accelerator.unwrap_model(self.ref_model))
            self.packed_models = [m for m in models if enable_packed_forward(m)]

        def _pairs_grouped(self, dataset):
            return (self.args.train_sampling_strategy == "group_by_length" and hasattr(dataset, "column_names")
                    and "prompt_ids" in dataset.column_names)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self._pairs_grouped(dataset):  # transformers would look for an `input_ids` column
                # Mega-batches are cut in global batches and drawn from a seeded generator, so any number of
                # processes sees the same order: N processes take turns at the batches of one process's run.
                global_batch = (self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
                                * self.args.world_size)
                return length_grouped_sampler(pair_lengths(dataset, self.args.max_length), global_batch,
                                              self._data_seed())
            return super()._get_train_sampler(train_dataset)

        def _data_seed(self):
            return self.args.data_seed if self.args.data_seed is not None else self.args.seed

        def _get_eval_sampler(self, eval_dataset):
            if self._pairs_grouped(eval_dataset):
                return length_grouped_sampler(pair_lengths(eval_dataset, self.args.max_length),
                                              self.args.eval_batch_size, self._data_seed())
            return super()._get_eval_sampler(eval_dataset)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            self._enable_packing()
            if hasattr(dataset, "__len__") and len(dataset) == 0:  # TRL dropped every pair (torch.cat of nothing)
                raise ValueError(f"dDPO: none of the {name} pairs remains after the trainer's preparation (max_length "
                                 f"{self.args.max_length}: a pair whose prompt alone fills it is dropped); raise "
                                 "max_length or shorten the prompts")
            if not hasattr(dataset, "column_names") or "prompt_ids" not in dataset.column_names or len(dataset) < 2:
                return super()._precompute_ref_logps(dataset, name, batch_size)
            order = reference_pass_order(pair_lengths(dataset, self.args.max_length))
            scored = super()._precompute_ref_logps(dataset.select(order), name, batch_size)
            return scored.select(np.argsort(order, kind="stable"))  # back to the dataset's order

    return HandbookDPOTrainer


def __getattr__(name):  # lazy: importing the module must not import TRL
    if name == "HandbookDPOTrainer":
        return _dpo_trainer_class()
    raise AttributeError(name)
