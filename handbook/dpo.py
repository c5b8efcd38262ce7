"""``python -m handbook.dpo``: dDPO from a recipe.

    python -m handbook.dpo --config recipes/zephyr-7b-beta/dpo/config_full.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m handbook.dpo --config ...

The recipe's names are resolved through the tier table (``model_name_or_path: toy-dsft``,
``dataset_name: toy``; :mod:`handbook.tiers`), then :func:`handbook.ddpo.training.train` runs TRL's
``DPOTrainer`` from the dSFT model against itself, frozen. ``resume_from_checkpoint: true`` continues
from the newest checkpoint in ``output_dir``. Notebook 04 calls :func:`train`, the same function.
"""

from __future__ import annotations

from .core.cli import run_training_cli
from .core.configs import check_training_ranges
from .core.models import ModelArguments
from .core.outputs import claimed_output
from .core.runner import reported_errors
from .ddpo import training
from .ddpo.training import DPODataArguments
from .tiers import dpo_datasets, resolve_and_build


def train(model_args: ModelArguments, data_args: DPODataArguments, training_args, datasets=None, callbacks=None):
    """dDPO as the CLI runs it: names resolved, pairs loaded (unless ``datasets`` = ``(train, eval)`` is
    given; ``eval`` may be a dict of named sets), model, tokenizer and logs saved. Returns the trainer."""
    check_training_ranges(training_args)
    with claimed_output(training_args.output_dir, "dDPO model", getattr(training_args, "overwrite_output_dir", False)):
        # claimed before any work: the build step may train the toy students, the data may be cached here
        model_args = resolve_and_build(model_args)  # `toy-dsft` → the cached student, built here on first use
        if datasets is None:
            datasets = dpo_datasets(data_args, training_args.output_dir)
        return training.train(model_args, data_args, training_args, datasets=datasets, callbacks=callbacks)


def main(argv: list[str] | None = None) -> None:
    from .core.trainer_configs import DPOConfig

    run_training_cli([ModelArguments, DPODataArguments, DPOConfig], train, "dDPO model", argv)


if __name__ == "__main__":
    with reported_errors():  # a user's mistake: one `error:` line, exit status 1 (--debug: the traceback)
        main()
