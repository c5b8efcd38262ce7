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
from .core.configs import check_training_ranges
from .core.models import ModelArguments
from .core.outputs import claimed_output
from .core.runner import reported_errors
from .dsft import training
from .dsft.training import SFTDataArguments
from .tiers import resolve_and_build, sft_datasets

logger = logging.getLogger(__name__)


def train(model_args: ModelArguments, data_args: SFTDataArguments, training_args, datasets=None, callbacks=None):
    """dSFT as the CLI runs it: names resolved, data loaded (unless ``datasets`` = ``(train, eval)``
    is given), model, tokenizer and logs saved to ``output_dir``. Returns the trainer."""
    check_training_ranges(training_args)
    with claimed_output(training_args.output_dir, "dSFT model", getattr(training_args, "overwrite_output_dir", False)):
        # claimed before any work: the build step may train the toy students, the data may be cached here
        model_args = resolve_and_build(model_args)  # `toy-dsft` → the cached student, built here on first use
        if datasets is None:
            train_ds, eval_ds, reports = sft_datasets(data_args, training_args.output_dir)
            for r in reports:
                logger.info("%s", r)
            datasets = (train_ds, eval_ds)
        return training.train(model_args, data_args, training_args, datasets=datasets, callbacks=callbacks)


def main(argv: list[str] | None = None) -> None:
    from .core.trainer_configs import SFTConfig

    run_training_cli([ModelArguments, SFTDataArguments, SFTConfig], train, "dSFT model", argv)


if __name__ == "__main__":
    with reported_errors():  # a user's mistake: one `error:` line, exit status 1 (--debug: the traceback)
        main()
