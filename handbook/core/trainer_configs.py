"""TRL's trainer configs with the settings the handbook adds — the one way to add a setting TRL lacks.

As huggingface/alignment-handbook does (``alignment/configs.py``: ``class SFTConfig(trl.SFTConfig)``), each is a
dataclass subclass: a recipe's key, a ``--key value`` and a notebook's keyword all reach it the same way, with its
help text in ``--help``. Code that takes a plain TRL config reads an added setting with ``getattr(args, name,
default)``, so notebooks may keep building ``trl.SFTConfig`` / ``trl.DPOConfig`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from .outputs import OVERWRITE_HELP


@dataclass
class SFTConfig(trl.SFTConfig):
    """TRL's ``SFTConfig`` plus ``overwrite_output_dir``."""

    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})


@dataclass
class DPOConfig(trl.DPOConfig):
    """TRL's ``DPOConfig`` plus ``overwrite_output_dir``."""

    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})
