"""dDPO: direct preference optimisation from the dSFT model, through TRL's ``DPOTrainer``.

    python -m handbook.dpo --config recipes/zephyr-7b-beta/dpo/config_full.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m handbook.dpo --config ...

The policy starts from the dSFT model and the reference is the same dSFT model, frozen. With
``precompute_ref_log_probs: true`` (the handbook's default) the reference only scores every pair
once, forward only, before training; its log-probabilities are stored with the dataset and reused
in every epoch, and no reference model is kept in memory during training. With
``train_sampling_strategy: group_by_length`` pairs of similar lengths share a batch, so far fewer
padding tokens are processed (:mod:`handbook.ddpo.batching`; bench/bench_dpo.py measures both), and with
``pack_rows: true`` (the default, a ``DPODataArguments`` field) none: every forward runs on the batch's
rows packed into one sequence (:mod:`handbook.ddpo.packing`; the same Eq. 1 as TRL's). With
``use_peft`` the reference is the policy with its adapter disabled; ``load_in_4bit`` + ``use_peft`` is QLoRA.
``python -m handbook.dpo`` (and notebook 04, through ``handbook.dpo.train``) resolve the recipe's
names — ``toy`` models and data — and call :func:`train`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..aif.binarize import validate_triples
from ..core.callbacks import with_handbook_callbacks
from ..core.configs import check_training_ranges
from ..core.data import (check_test_split_size, dataset_sizes, disable_eval_without_dataset, last_checkpoint,
                         load_splits, report_prepared_rows, save_training_outputs)
from ..core.models import ModelArguments, limit_reporting
from ..core.outputs import claimed_output

logger = logging.getLogger(__name__)


@dataclass
class DPODataArguments:
    """Where the preference triples come from (``ultrafeedback_binarized``'s schema)."""

    dataset_name: str = field(
        default="HuggingFaceH4/ultrafeedback_binarized",
        metadata={"help": "A hub dataset id, a directory written by `save_to_disk`, a .jsonl file, or 'toy' "
                          "(triples from the toy AIF recipe, generated on first use and cached)."})
    dataset_config: str | None = field(default=None, metadata={"help": "The hub dataset's configuration name."})
    dataset_train_split: str = field(default="train_prefs", metadata={"help": "Training split."})
    dataset_test_split: str | None = field(
        default="test_prefs",
        metadata={"help": "Evaluation split; it must exist (none: no eval). A .jsonl file or a single saved dataset "
                          "(what `aif generate` writes as triples/) has no named splits: no eval unless "
                          "test_split_size is set."})
    test_split_size: float | None = field(
        default=None,
        metadata={"help": "Hold out this share (0 < x < 1) or this number of pairs (>= 1) of the training split as the "
                          "eval set, drawn with test_split_seed (dataset_test_split is then not read)."})
    test_split_seed: int = field(default=0, metadata={"help": "Seed of the test_split_size draw."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation pairs."})
    toy_prompts_per_category: int = field(default=60, metadata={"help": "Toy: train prompts per category."})
    toy_eval_prompts_per_category: int = field(default=12, metadata={"help": "Toy: held-out prompts per category."})
    toy_data_seed: int = field(default=1, metadata={"help": "Toy: seed of prompt sampling."})
    toy_data_dir: str | None = field(default=None, metadata={"help": "Toy: cache of pool and ratings "
                                                                     "(default: <output_dir>/data)."})
    pack_rows: bool = field(default=True, metadata={
        "help": "How the pairs are batched: every forward (policy, reference pass) runs on the batch's chosen and "
                "rejected rows packed into one sequence, attention kept within each row, no padding computed "
                "(handbook.ddpo.packing; the same Eq. 1 as TRL's). false: TRL's padded batches."})

    def __post_init__(self):
        check_test_split_size(self.test_split_size)


def to_trl_pairs(rows):
    """``ultrafeedback_binarized`` rows → TRL's conversational preference format.

    ``prompt`` = the conversation before the last turn, ``chosen``/``rejected`` = the last assistant
    turn of each. Malformed rows (:func:`validate_pair`) raise ``ValueError`` naming the row and the field.
    """
    from datasets import Dataset

    if isinstance(rows, Dataset):  # a dataset on disk stays on disk (multi-process precompute needs it)
        for n, row in enumerate(rows):
            validate_pair(row, n)
        return rows.map(_trl_pair, remove_columns=rows.column_names, desc="Preference pairs")
    rows = list(rows)
    for n, row in enumerate(rows):
        validate_pair(row, n)
    return Dataset.from_list([_trl_pair(r) for r in rows])


def validate_pair(row: dict, index: int) -> None:
    """Raise ``ValueError`` naming row ``index`` and the field of a malformed preference triple: the checks of
    :func:`handbook.aif.binarize.validate_triples`, then ``chosen`` and ``rejected`` are each a dialogue
    (user and assistant turns alternating from the user's, no empty turn) and share every
    turn before their last one (the prompt both replies answer; TRL keeps one)."""
    if not isinstance(row, dict):
        raise ValueError(f"row {index}: not a mapping of fields")
    try:
        validate_triples([row])
    except ValueError as exc:
        message = str(exc)
        raise ValueError(f"row {index}: {message.removeprefix('row 0: ')}") from None
    for key in ("chosen", "rejected"):
        for j, turn in enumerate(row[key]):
            role = turn.get("role") if isinstance(turn, dict) else None
            expected = "user" if j % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(f"row {index}: {key}[{j}].role: turns must alternate user/assistant, got {role!r} "
                                 f"where {expected!r} belongs")
            if not isinstance(turn.get("content"), str) or not turn["content"].strip():
                raise ValueError(f"row {index}: {key}[{j}].content is empty")
    chosen, rejected = row["chosen"][:-1], row["rejected"][:-1]
    if chosen != rejected:
        j = next((j for j, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected)))
        raise ValueError(f"row {index}: fields 'chosen' and 'rejected' differ before their last turn (at turn {j}: "
                         f"{len(chosen)} and {len(rejected)} earlier turns); both replies must answer the same "
                         f"conversation")


def _trl_pair(row: dict) -> dict:
    return {"prompt": row["chosen"][:-1], "chosen": [row["chosen"][-1]], "rejected": [row["rejected"][-1]]}


def load_dpo_datasets(data_args: DPODataArguments):
    """``(train, eval or None)`` in TRL's format from a hub id, a saved dataset or a JSONL file, every row
    validated (a file's errors name its line). The eval set is a named split that exists, or
    ``test_split_size`` pairs held out of the training split, else none (:func:`load_splits`).
    (The toy world's triples: ``handbook.toy.preferences.toy_dpo_datasets``.)"""
    train_rows, eval_rows = load_splits(data_args.dataset_name, data_args.dataset_config,
                                        data_args.dataset_train_split, data_args.dataset_test_split,
                                        data_args.test_split_size, data_args.test_split_seed, check_row=validate_pair)
    return prepare_dpo_splits(train_rows, eval_rows, data_args)


def prepare_dpo_splits(train_rows, eval_rows, data_args: DPODataArguments):
    """Triples (``ultrafeedback_binarized`` rows) → TRL pairs, validated, ``max_*_samples`` applied."""
    def pairs(rows, split):
        if len(rows) == 0:
            raise ValueError(f"{data_args.dataset_name} ({split}): no rows")
        try:
            return to_trl_pairs(rows)
        except ValueError as exc:
            raise ValueError(f"{data_args.dataset_name} ({split}): {exc}") from None

    train = pairs(train_rows, "train")
    evaluation = pairs(eval_rows, "eval") if eval_rows is not None else None
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if evaluation is not None and data_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def train(model_args: ModelArguments, data_args: DPODataArguments, training_args, datasets=None, callbacks=None):
    """dDPO from ``model_args``' model (the dSFT model) against itself, frozen; saves to ``output_dir``.

    ``datasets`` may pass ``(train, eval)`` directly in TRL's format (``eval`` may be a dict of named
    sets, as notebook 04 does to follow train and held-out pairs). Returns the trainer.
    """
    check_training_ranges(training_args)  # also when a notebook builds the config itself
    limit_reporting(training_args)  # e.g. a recipe's `report_to: tensorboard` where it is not installed
    with claimed_output(training_args.output_dir, "dDPO model", getattr(training_args, "overwrite_output_dir", False)):
        return _train(model_args, data_args, training_args, datasets, callbacks)


def _train(model_args, data_args, training_args, datasets, callbacks):
    from ..core.models import get_model, get_peft_config, get_tokenizer
    from .batching import HandbookDPOTrainer

    tokenizer = get_tokenizer(model_args, training_args.trust_remote_code)
    if datasets is None:
        train_ds, eval_ds = load_dpo_datasets(data_args)
    else:
        train_ds, eval_ds = datasets
    disable_eval_without_dataset(training_args, eval_ds, logger)
    model = get_model(model_args, trust_remote_code=training_args.trust_remote_code)
    trainer = HandbookDPOTrainer(  # TRL's DPOTrainer + length grouping for pairs (handbook.ddpo.batching)
        model=model,
        ref_model=None,  # TRL: precomputed log-probs, the adapter disabled (PEFT), or a frozen copy of `model`
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=with_handbook_callbacks(callbacks),  # the final step's loss is always logged
        pack_rows=data_args.pack_rows,  # padding-free rows (handbook.ddpo.packing)
    )
    trainer.prepared_rows = report_prepared_rows(trainer, dataset_sizes(train_ds, eval_ds), "dDPO")
    result = trainer.train(resume_from_checkpoint=last_checkpoint(training_args))
    save_training_outputs(trainer, tokenizer, result, training_args.output_dir)
    return trainer
