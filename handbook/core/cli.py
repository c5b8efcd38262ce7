"""The one shape of the handbook's training entry points, as upstream alignment-handbook's scripts have one."""

from __future__ import annotations

import logging

from .configs import parse_config
from .distributed import finish


def run_training_cli(dataclass_types, train, what: str, argv=None) -> None:
    """The one shape of the training entry points (``python -m handbook.sft`` / ``dpo``): parse the recipe and
    the command line into ``dataclass_types`` (the training config last), run ``train(*configs)``, say where
    the model went (rank 0), end a launched run cleanly (:func:`finish`)."""
    configs = parse_config(dataclass_types, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trainer = train(*configs)
    if trainer.accelerator.is_main_process:
        print(f"{what} saved to {configs[-1].output_dir}")
    finish(trainer)
