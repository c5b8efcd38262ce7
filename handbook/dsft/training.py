"""dSFT: supervised fine-tuning on teacher-written dialogues, through TRL's ``SFTTrainer``.

    python -m handbook.sft --config recipes/zephyr-7b-beta/sft/config_full.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m handbook.sft --config ...

The recipe holds three groups of keys: the model (``handbook.core.models.ModelArguments``), the data
(:class:`SFTDataArguments`) and the trainer (TRL's ``SFTConfig``). Which tokens carry loss is the recipe's
``assistant_only_loss``: ``true`` (the toy and small recipes) learns the assistant's tokens only — the chat template
must carry ``{% generation %}`` markers, as the handbook's Zephyr templates do; ``false`` (the zephyr-7b-beta
recipes) learns every token, as the run that produced Zephyr-7B-β did (TRL 0.7.4 packed the rendered text with
labels = input ids). Packing, LoRA (``use_peft``) and QLoRA (``load_in_4bit`` + ``use_peft``) are switches in
the recipe. ``python -m handbook.sft`` (and notebook 02, through
``handbook.sft.train``) resolve the recipe's names — ``toy`` models and data — and call :func:`train`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..core.callbacks import with_handbook_callbacks
from ..core.configs import check_training_ranges
from ..core.data import (check_test_split_size, dataset_sizes, disable_eval_without_dataset, last_checkpoint,
                         load_splits, report_prepared_rows, save_training_outputs)
from ..core.models import ModelArguments, limit_reporting
from ..core.outputs import claimed_output
from .filters import FilterReport, ultrachat_filters, validate_dialogue, validate_dialogues

logger = logging.getLogger(__name__)


@dataclass
class SFTDataArguments:
    """Where the dialogues come from."""

    dataset_name: str = field(
        default="HuggingFaceH4/ultrachat_200k",
        metadata={"help": "A hub dataset id, a directory written by `save_to_disk`, a .jsonl file, or 'toy' "
                          "(dialogues written by the toy teacher, generated on first use and cached)."})
    dataset_config: str | None = field(default=None, metadata={"help": "The hub dataset's configuration name."})
    dataset_train_split: str = field(default="train_sft", metadata={"help": "Training split."})
    dataset_test_split: str | None = field(
        default="test_sft",
        metadata={"help": "Evaluation split; it must exist (none: no eval). A .jsonl file or a single saved dataset has "
                          "no named splits: no eval unless test_split_size is set."})
    test_split_size: float | None = field(
        default=None,
        metadata={"help": "Hold out this share (0 < x < 1) or this number of rows (>= 1) of the training split as the "
                          "eval set, drawn with test_split_seed (dataset_test_split is then not read)."})
    test_split_seed: int = field(default=0, metadata={"help": "Seed of the test_split_size draw."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation rows."})
    apply_ultrachat_filters: bool = field(
        default=False,
        metadata={"help": "Truecase, drop self-disclaiming dialogues and de-duplicate (ultrachat_200k is already "
                          "filtered; turn this on for raw teacher output)."})
    toy_prompts_per_category: int = field(default=150, metadata={"help": "Toy: seed prompts per category."})
    toy_replies_per_prompt: int = field(default=2, metadata={"help": "Toy: dialogues per seed prompt."})
    toy_eval_prompts_per_category: int = field(default=8, metadata={"help": "Toy: held-out prompts for eval loss."})
    toy_data_seed: int = field(default=0, metadata={"help": "Toy: seed of prompt sampling and the teacher."})
    toy_data_dir: str | None = field(
        default=None, metadata={"help": "Toy: where generated dialogues are cached (default: <output_dir>/data)."})

    def __post_init__(self):
        check_test_split_size(self.test_split_size)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def load_sft_datasets(data_args: SFTDataArguments):
    """``(train, eval or None, filter reports)`` from a hub id, a saved dataset or a JSONL file; every row
    validated (a file's errors name its line), only ``messages`` kept. The eval set is a named split that
    exists, or ``test_split_size`` rows held out of the training split, else none (:func:`load_splits`).
    (The toy world's dialogues: ``handbook.toy.dialogues.toy_sft_datasets``.)"""
    reports: list[FilterReport] = []
    train, test = load_splits(data_args.dataset_name, data_args.dataset_config, data_args.dataset_train_split,
                              data_args.dataset_test_split, data_args.test_split_size, data_args.test_split_seed,
                              check_row=validate_dialogue)
    if data_args.apply_ultrachat_filters:
        from datasets import Dataset

        rows, reports = ultrachat_filters(train.to_list())
        train = Dataset.from_list(rows)
    train, test = prepare_sft_splits(train, test, data_args)
    return train, test, reports


def prepare_sft_splits(train, test, data_args: SFTDataArguments):
    """``max_*_samples`` applied, every row validated, only ``messages`` kept: ``(train, eval or None)``."""
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if test is not None and data_args.max_eval_samples is not None:
        test = test.select(range(min(data_args.max_eval_samples, len(test))))
    for split_name, ds in (("train", train), ("eval", test)):
        if ds is None:
            continue
        if "messages" not in ds.column_names:
            raise ValueError(f"{data_args.dataset_name} ({split_name}): row 0: field 'messages' is missing "
                             f"(columns: {ds.column_names})")
        if len(ds) == 0:
            raise ValueError(f"{data_args.dataset_name} ({split_name}): no rows")
        try:
            validate_dialogues(ds)
        except ValueError as exc:
            raise type(exc)(f"{data_args.dataset_name} ({split_name}): {exc}") from None
    keep = lambda ds: ds.remove_columns([c for c in ds.column_names if c != "messages"])  # noqa: E731
    return keep(train), (keep(test) if test is not None else None)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train(model_args: ModelArguments, data_args: SFTDataArguments, training_args, datasets=None, callbacks=None):
    """Fine-tune ``model_args``' model on the dialogues; save model, tokenizer and logs to ``output_dir``.

    ``datasets`` may pass ``(train, eval)`` directly (the notebook does); otherwise they are loaded
    from ``data_args``. Returns the trainer.
    """
    check_training_ranges(training_args)  # also when a notebook builds the config itself
    limit_reporting(training_args)  # e.g. a recipe's `report_to: tensorboard` where it is not installed
    with claimed_output(training_args.output_dir, "dSFT model", getattr(training_args, "overwrite_output_dir", False)):
        return _train(model_args, data_args, training_args, datasets, callbacks)


def _train(model_args, data_args, training_args, datasets, callbacks):
    from trl import SFTTrainer

    from ..core.models import get_model, get_peft_config, get_tokenizer

    tokenizer = get_tokenizer(model_args, training_args.trust_remote_code)
    if training_args.assistant_only_loss and "{% generation %}" not in (tokenizer.chat_template or ""):
        raise ValueError(
            f"assistant_only_loss needs {{% generation %}} markers in the chat template, and the template of "
            f"{model_args.model_name_or_path!r} has none: set `chat_template: zephyr` in the recipe")
    if datasets is None:
        train_ds, eval_ds, reports = load_sft_datasets(data_args)
        for r in reports:
            logger.info("%s", r)
    else:
        train_ds, eval_ds = datasets
        evals = eval_ds.items() if isinstance(eval_ds, dict) else [("eval", eval_ds)]
        for name, ds in [("train", train_ds), *evals]:
            if ds is not None:
                try:
                    validate_dialogues(ds)
                except ValueError as exc:
                    raise type(exc)(f"{name} dataset: {exc}") from None
    disable_eval_without_dataset(training_args, eval_ds, logger)
    model = get_model(model_args, trust_remote_code=training_args.trust_remote_code)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=with_handbook_callbacks(callbacks),  # the final step's loss is always logged
    )
    trainer.prepared_rows = report_prepared_rows(trainer, dataset_sizes(train_ds, eval_ds), "dSFT")
    result = trainer.train(resume_from_checkpoint=last_checkpoint(training_args))
    save_training_outputs(trainer, tokenizer, result, training_args.output_dir)
    return trainer
