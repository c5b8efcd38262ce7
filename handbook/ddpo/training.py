"""dDPO: direct preference optimisation from the dSFT model, through TRL's ``DPOTrainer``.

    python -m handbook.dpo --config recipes/zephyr-7b-beta/dpo/config_full.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m handbook.dpo --config ...

The policy starts from the dSFT model and the reference is the same dSFT model, frozen. With
``precompute_ref_log_probs: true`` (the handbook's default) the reference only scores every pair
once, forward only, before training; its log-probabilities are stored with the dataset and reused
in every epoch, and no reference model is kept in memory during training. With
``train_sampling_strategy: group_by_length`` pairs of similar lengths share a batch, so far fewer
padding tokens are processed (:mod:`handbook.ddpo.batching`; bench/bench_dpo.py measures both). With
``use_peft`` the reference is the policy with its adapter disabled; ``load_in_4bit`` + ``use_peft`` is QLoRA.
``python -m handbook.dpo`` (and notebook 04, through ``handbook.dpo.train``) resolve the recipe's
names — ``toy`` models and data — and call :func:`train`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..aif.binarize import validate_triples
from ..core.data import last_checkpoint, load_split, save_training_outputs
from ..core.models import ModelArguments

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
    dataset_test_split: str | None = field(default="test_prefs", metadata={"help": "Evaluation split (none: no eval)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation pairs."})
    toy_prompts_per_category: int = field(default=60, metadata={"help": "Toy: train prompts per category."})
    toy_eval_prompts_per_category: int = field(default=12, metadata={"help": "Toy: held-out prompts per category."})
    toy_data_seed: int = field(default=1, metadata={"help": "Toy: seed of prompt sampling."})
    toy_data_dir: str | None = field(default=None, metadata={"help": "Toy: cache of pool and ratings "
                                                                     "(default: <output_dir>/data)."})


def to_trl_pairs(rows):
    """``ultrafeedback_binarized`` rows → TRL's conversational preference format.

    ``prompt`` = the conversation before the last turn, ``chosen``/``rejected`` = the last assistant
    turn of each. Malformed rows raise ``ValueError`` naming the row and the field.
    """
    from datasets import Dataset

    if isinstance(rows, Dataset):  # a dataset on disk stays on disk (multi-process precompute needs it)
        validate_triples(rows)
        return rows.map(_trl_pair, remove_columns=rows.column_names, desc="Preference pairs")
    rows = list(rows)
    validate_triples(rows)
    return Dataset.from_list([_trl_pair(r) for r in rows])


def _trl_pair(row: dict) -> dict:
    return {"prompt": row["chosen"][:-1], "chosen": [row["chosen"][-1]], "rejected": [row["rejected"][-1]]}


def load_dpo_datasets(data_args: DPODataArguments):
    """``(train, eval or None)`` in TRL's format from a hub id, a saved dataset or a JSONL file, every row
    validated. (The toy world's triples: ``handbook.toy.data.toy_dpo_datasets``.)"""
    train_rows = load_split(data_args.dataset_name, data_args.dataset_config, data_args.dataset_train_split)
    eval_rows = (load_split(data_args.dataset_name, data_args.dataset_config, data_args.dataset_test_split)
                 if data_args.dataset_test_split else None)
    return prepare_dpo_splits(train_rows, eval_rows, data_args)


def prepare_dpo_splits(train_rows, eval_rows, data_args: DPODataArguments):
    """Triples (``ultrafeedback_binarized`` rows) → TRL pairs, validated, ``max_*_samples`` applied."""
    train = to_trl_pairs(train_rows)
    evaluation = to_trl_pairs(eval_rows) if eval_rows is not None else None
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
    from ..core.models import get_model, get_peft_config, get_tokenizer
    from .batching import HandbookDPOTrainer

    tokenizer = get_tokenizer(model_args, training_args.trust_remote_code)
    if datasets is None:
        train_ds, eval_ds = load_dpo_datasets(data_args)
    else:
        train_ds, eval_ds = datasets
    model = get_model(model_args, trust_remote_code=training_args.trust_remote_code)
    trainer = HandbookDPOTrainer(  # TRL's DPOTrainer + length grouping for pairs (handbook.batching)
        model=model,
        ref_model=None,  # TRL: precomputed log-probs, the adapter disabled (PEFT), or a frozen copy of `model`
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=last_checkpoint(training_args))
    save_training_outputs(trainer, tokenizer, result, training_args.output_dir)
    return trainer
