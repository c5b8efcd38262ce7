"""``python -m handbook.sft``: dSFT from a recipe.

    python -m handbook.sft --config recipes/zephyr-7b-beta/sft/config_full.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m handbook.sft --config ...

The recipe's names are resolved through the tier table (``model_name_or_path: toy``, ``dataset_name:
toy``, SmolLM2 offline; :mod:`handbook.tiers`), then :func:`handbook.dsft.training.train` runs TRL's
``SFTTrainer``. Notebook 02 calls :func:`train`, the same function.
"""

from __future__ import annotations

import logging

from .core.cli import run_training_cli
from .core.models import ModelArguments
from .dsft import training
from .dsft.training import SFTDataArguments
from .tiers import resolve_model_args, sft_datasets

logger = logging.getLogger(__name__)


def train(model_args: ModelArguments, data_args: SFTDataArguments, training_args, datasets=None, callbacks=None):
    """dSFT as the CLI runs it: names resolved, data loaded (unless ``datasets`` = ``(train, eval)``
    is given), model, tokenizer and logs saved to ``output_dir``. Returns the trainer."""
    resolve_model_args(model_args)
    if datasets is None:
        train_ds, eval_ds, reports = sft_datasets(data_args, training_args.output_dir)
        for r in reports:
            logger.info("%s", r)
        datasets = (train_ds, eval_ds)
    return training.train(model_args, data_args, training_args, datasets=datasets, callbacks=callbacks)


def main(argv: list[str] | None = None) -> None:
    from trl import SFTConfig

    run_training_cli([ModelArguments, SFTDataArguments, SFTConfig], train, "dSFT model", argv)


if __name__ == "__main__":
    main()
