"""dDPO: direct preference optimisation from the dSFT model, through TRL's ``DPOTrainer``.

    python -m handbook.dpo --config recipes/zephyr-7b-beta/dpo/config_full.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m handbook.dpo --config ...

The policy starts from the dSFT model and the reference is the same dSFT model, frozen. With
``precompute_ref_log_probs: true`` (the handbook's default) the reference only scores every pair
once, forward only, before training; its log-probabilities are stored with the dataset and reused
in every epoch, and no reference model is kept in memory during training. With ``use_peft`` the
reference is the policy with its adapter disabled; ``load_in_4bit`` + ``use_peft`` is QLoRA.
Notebook 04 calls :func:`train` directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .binarize import validate_triples
from .models import ModelArguments

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

    rows = rows.to_list() if hasattr(rows, "to_list") else list(rows)
    validate_triples(rows)
    return Dataset.from_list([{"prompt": r["chosen"][:-1], "chosen": [r["chosen"][-1]],
                               "rejected": [r["rejected"][-1]]} for r in rows])


def load_dpo_datasets(data_args: DPODataArguments, output_dir: str | None = None):
    """``(train, eval or None)`` in TRL's format, every row validated."""
    if data_args.dataset_name == "toy":
        from .aif import toy_preferences

        data_dir = data_args.toy_data_dir or (str(Path(output_dir) / "data") if output_dir else None)
        train_rows, train_report = toy_preferences("train", data_args.toy_prompts_per_category,
                                                   data_args.toy_data_seed, data_dir)
        eval_rows, eval_report = toy_preferences("heldout", data_args.toy_eval_prompts_per_category,
                                                 data_args.toy_data_seed, data_dir)
        logger.info("toy preferences: train %s; held-out %s", train_report, eval_report)
    else:
        from .sft import _load_split

        train_rows = _load_split(data_args.dataset_name, data_args.dataset_config, data_args.dataset_train_split)
        eval_rows = (_load_split(data_args.dataset_name, data_args.dataset_config, data_args.dataset_test_split)
                     if data_args.dataset_test_split else None)
    train = to_trl_pairs(train_rows)
    evaluation = to_trl_pairs(eval_rows) if eval_rows is not None else None
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if evaluation is not None and data_args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))
    return train, evaluation


def resolve_model_path(model_args: ModelArguments) -> ModelArguments:
    """``toy`` → the toy base; ``toy-dsft`` → the cached toy dSFT student."""
    if model_args.model_name_or_path == "toy":
        from .toy import toy_base_path

        model_args.model_name_or_path = str(toy_base_path())
    elif model_args.model_name_or_path == "toy-dsft":
        from .toy.students import toy_students

        model_args.model_name_or_path = toy_students()["dsft"]
    return model_args


def train(model_args: ModelArguments, data_args: DPODataArguments, training_args, datasets=None, callbacks=None):
    """dDPO from ``model_args``' model (the dSFT model) against itself, frozen; saves to ``output_dir``.

    ``datasets`` may pass ``(train, eval)`` directly in TRL's format (``eval`` may be a dict of named
    sets, as notebook 04 does to follow train and held-out pairs). Returns the trainer.
    """
    from trl import DPOTrainer

    from .models import get_model, get_peft_config, get_tokenizer

    resolve_model_path(model_args)
    tokenizer = get_tokenizer(model_args, training_args.trust_remote_code)
    if datasets is None:
        train_ds, eval_ds = load_dpo_datasets(data_args, training_args.output_dir)
    else:
        train_ds, eval_ds = datasets
    model = get_model(model_args, trust_remote_code=training_args.trust_remote_code)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # TRL: precomputed log-probs, the adapter disabled (PEFT), or a frozen copy of `model`
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks,
    )
    result = trainer.train()
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(training_args.output_dir)
        out = Path(training_args.output_dir)
        (out / "train_results.json").write_text(json.dumps(result.metrics, indent=2))
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    return trainer


def main(argv: list[str] | None = None) -> None:
    from trl import DPOConfig

    from .configs import parse_config

    model_args, data_args, training_args = parse_config([ModelArguments, DPODataArguments, DPOConfig], argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trainer = train(model_args, data_args, training_args)
    if trainer.accelerator.is_main_process:
        print(f"dDPO model saved to {training_args.output_dir}")


if __name__ == "__main__":
    main()
