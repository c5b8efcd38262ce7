"""TRL-style configuration: a YAML recipe plus ``--key value`` overrides, parsed into dataclasses.

    python -m handbook.sft --config recipes/toy/sft/config.yaml --max_steps 50

Like TRL's ``TrlParser`` (which this builds on): the YAML file sets the defaults, the command line
overrides them, and an ``env:`` mapping in the YAML sets environment variables. On top of it:

* every key of the file is checked against the dataclasses *before* anything runs; an unknown key
  fails with a message naming the file and the key, and for keys that TRL or transformers removed
  (``max_seq_length``, ``max_prompt_length``, ``warmup_ratio``, ...) what replaces them;
* the training config's device and precision are made explicit (``resolve_device_and_precision``):
  on a machine without CUDA the recipe's ``bf16: true`` becomes float32 on the CPU instead of an
  error, so one recipe runs on a laptop and on a cluster.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Sequence

import yaml

from .models import resolve_device_and_precision

# The recipes ship inside the package (``handbook/recipes``; a checkout links ``recipes/`` to it), so an
# installed handbook finds them exactly as a checkout does.
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def recipe_path(name: str | os.PathLike) -> Path:
    """A recipe file: ``name`` as a path if it exists, else relative to the package's recipes
    (``toy/sft/config.yaml`` or ``recipes/toy/sft/config.yaml``, from any directory)."""
    path = Path(name)
    if path.exists():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("recipes",) else path.parts
    packaged = RECIPES_DIR.joinpath(*parts) if parts else RECIPES_DIR
    if packaged.is_file():
        return packaged
    raise FileNotFoundError(f"recipe {str(name)!r} not found: neither a file nor a recipe of the package "
                            f"({RECIPES_DIR})")

# Keys that older TRL / transformers accepted and the pinned versions do not, with what to use.
REMOVED_KEYS = {
    "max_seq_length": "SFTConfig's `max_seq_length` was renamed `max_length`",
    "max_prompt_length": "DPOConfig no longer has `max_prompt_length`; use `max_length` (and `truncation_mode`)",
    "max_completion_length": "DPOConfig no longer has `max_completion_length`; use `max_length`",
    "warmup_ratio": "transformers 5 removed `warmup_ratio`; write the ratio as `warmup_steps` (a value below 1 is a ratio)",
    "dataset_text_field": "use a `messages` column with the chat template instead of `dataset_text_field`",
    "evaluation_strategy": "renamed `eval_strategy`",
    "torch_dtype": "renamed `dtype`",
    "use_flash_attention_2": "use `attn_implementation: flash_attention_2`",
    "dataset_mixer": "the upstream handbook's `dataset_mixer` is not supported; use `dataset_name`",
    "dataset_splits": "use `dataset_train_split` / `dataset_test_split`",
}


class ConfigError(ValueError):
    pass


def known_keys(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for t in dataclass_types for f in dataclasses.fields(t) if f.init}


def check_keys(config: dict, dataclass_types: Sequence[type], source: str) -> None:
    """Raise :class:`ConfigError` naming ``source`` and the key for every key no dataclass has."""
    allowed = known_keys(dataclass_types) | {"env"}
    problems = []
    for key in config:
        if key in allowed:
            continue
        hint = REMOVED_KEYS.get(key)
        if hint is None:
            import difflib

            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "no such option"
        problems.append(f"{source}: unknown key `{key}`: {hint}")
    if problems:
        raise ConfigError("\n".join(problems))


def load_yaml(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    return config


def _is_training_config(t: type) -> bool:
    return any(f.name == "bf16" for f in dataclasses.fields(t))


def parse_config(dataclass_types: Sequence[type], argv: Sequence[str] | None = None):
    """Parse ``--config FILE`` plus command-line overrides into one instance per dataclass."""
    from trl import TrlParser

    args = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser(list(dataclass_types))
    config: dict = {}
    if "--config" in args:
        i = args.index("--config")
        path = recipe_path(args[i + 1])
        del args[i:i + 2]
        config = load_yaml(path)
        check_keys(config, dataclass_types, str(path))
        for key, value in (config.pop("env", None) or {}).items():
            os.environ[key] = str(value)
    # command-line keys are checked too (argparse would reject them, with a less helpful message)
    cli_keys = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    check_keys({k: None for k in cli_keys}, dataclass_types, "command line")
    if any(_is_training_config(t) for t in dataclass_types):
        config = resolve_device_and_precision(config)
    if config:
        parser.set_defaults_with_config(**config)
    return parser.parse_args_into_dataclasses(args=args)


def read_recipe(path: str | os.PathLike, dataclass_types: Sequence[type], **overrides):
    """A recipe file (plus keyword overrides) as dataclass instances, for notebooks and tests."""
    import json

    argv = ["--config", str(Path(path))]
    for key, value in overrides.items():
        if isinstance(value, (list, dict)):
            raise ConfigError(f"override `{key}`: only scalar overrides are supported; edit the recipe for lists and mappings")
        argv += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    try:
        return parse_config(dataclass_types, argv)
    except SystemExit as exc:  # argparse reports bad values by exiting; a notebook wants an exception
        raise ConfigError(f"{path}: invalid arguments {argv[2:]} (see the message above)") from exc
