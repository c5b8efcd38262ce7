"""TRL-style configuration: a YAML recipe plus ``--key value`` overrides, parsed into dataclasses.

    python -m handbook.sft --config recipes/toy/sft/config.yaml --max_steps 50
    python -m handbook.aif_data generate --config recipes/toy/aif/config.yaml      # a command, then its options

One parser for every CLI and for notebooks' :func:`read_recipe`: :class:`HandbookParser`, TRL's ``TrlParser``
(itself transformers' ``HfArgumentParser``) as the upstream alignment-handbook uses it::

    parser = HandbookParser([ModelArguments, SFTDataArguments, SFTConfig])
    model_args, data_args, training_args = parser.parse_args_and_config()

The YAML file sets the defaults, the command line overrides them, and an ``env:`` mapping in the YAML sets
environment variables. On top of ``TrlParser``, *before* anything runs:

* every key (of the file, of the command line, of ``read_recipe``'s keyword overrides) is checked against
  the dataclasses: an unknown key fails with a message naming the file and the key, and for keys that TRL
  or transformers removed (``max_seq_length``, ``max_prompt_length``, ``warmup_ratio``, ...) what replaces them;
* every value is checked against its field: its type, by pydantic's ``TypeAdapter`` in lax mode (a YAML string
  such as ``1e-5`` for a float field is converted, as argparse converts a command-line string; three rules of the
  handbook's on top, :func:`_convert`), and the choices ``HfArgumentParser`` derives from an ``Enum``/``Literal``
  type or a field's ``metadata={"choices": ...}`` (``lr_scheduler_type``, ``eval_strategy``,
  ``train_sampling_strategy``, ...). A bad value is a :class:`ConfigError` naming the file, the key, the value
  and what is allowed;
* the training config's device and precision are made explicit (``resolve_device_and_precision``):
  on a machine without CUDA the recipe's ``bf16: true`` becomes float32 on the CPU instead of an
  error, so one recipe runs on a laptop and on a cluster. This cannot wait for the training entry point:
  transformers refuses to build a bf16 config on such a machine. ``report_to`` is limited to the installed
  integrations by the training entry point (``handbook.core.models.limit_reporting``), not here.

Errors are :class:`ConfigError` (a ``ValueError``), never argparse's ``SystemExit``; ``--help`` still prints help.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import functools
import json
import os
import re
import sys
import types
import typing
from argparse import ArgumentTypeError, RawDescriptionHelpFormatter
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from trl import TrlParser

from .distributed import world_size
from .models import resolve_device_and_precision
from .secrets import ALLOW_KEY_ENV

__all__ = ["ConfigError", "HandbookParser", "parse_config", "parse_command", "read_recipe", "recipe_path",
           "check_keys", "check_values", "check_dataclass", "check_time_bounds", "load_yaml", "REMOVED_KEYS",
           "RECIPES_DIR"]

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
    """A recipe's or command line's key or value that does not fit the dataclasses; the message names the
    file (or ``command line``), the key, the value and what is allowed."""


class _CommandLineError(ConfigError):
    """argparse's complaint about the command line (already says ``command line:``)."""


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


# --- keys ----------------------------------------------------------------------------------------------
# Keys of a recipe that belong to the handbook, not to a dataclass.
HANDBOOK_KEYS = {
    "env": "a mapping of environment variables to set before the run",
    "global_batch_size": "the batch of one optimizer step over all processes; gradient_accumulation_steps is "
                         "derived from it and the number of processes (per device × accumulation × processes)",
}


def known_keys(dataclass_types: Sequence[type]) -> set[str]:
    return {f.name for t in dataclass_types for f in dataclasses.fields(t) if f.init}


def check_keys(config: Mapping, dataclass_types: Sequence[type], source: str | None, *, allowed: set[str] | None = None,
               prefix: str = "") -> None:
    """Raise :class:`ConfigError` naming ``source`` and the key for every key no dataclass has.

    ``allowed`` replaces the dataclasses' field names (plus ``env``); ``prefix`` goes before each key in the
    message (``pool[0].``)."""
    allowed = (known_keys(dataclass_types) | set(HANDBOOK_KEYS)) if allowed is None else allowed
    problems = []
    for key in config:
        if key in allowed:
            continue
        hint = REMOVED_KEYS.get(key)
        if hint is None:
            close = difflib.get_close_matches(str(key).replace("-", "_"), allowed, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "no such option"
        problems.append(f"{_where(source)}unknown key `{prefix}{key}`: {hint}")
    if problems:
        raise ConfigError("\n".join(problems))


#: The most nodes a recipe may expand to, aliases counted at every use: a recipe is a few hundred; an "alias bomb"
#: (each level nine aliases of the one before) is billions and would exhaust memory wherever it is walked.
MAX_YAML_NODES = 100_000


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML 1.2 requires keys to be unique;
    PyYAML would keep the last silently) and a document that expands past :data:`MAX_YAML_NODES`."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, collections.abc.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key `{key}` is given twice, on line {seen[key]} and on line {line} (YAML keys "
                                "are unique: remove one)", key_node.start_mark)
            if isinstance(key, collections.abc.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            sizes: dict[int, int] = {}

            def size(n) -> int:  # nodes after alias expansion; each distinct node is counted once, then reused
                if id(n) not in sizes:
                    sizes[id(n)] = 1  # (a recursive alias counts once)
                    children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else \
                        n.value if isinstance(n, yaml.SequenceNode) else []
                    sizes[id(n)] = 1 + sum(size(c) for c in children)
                return sizes[id(n)]

            if size(node) > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"the document expands to more than {MAX_YAML_NODES:,} values through its aliases "
                                "(*name); a recipe never needs that many", node.start_mark)
        return node


def load_yaml(path: str | os.PathLike) -> dict:
    """A recipe file as a mapping; a key given twice or an alias bomb is refused naming the lines (see
    :class:`_RecipeLoader`), as is anything that is not a YAML mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.load(f, Loader=_RecipeLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping")
    return config


# --- values ---------------------------------------------------------------------------------------------
# A value is converted by pydantic's lax mode (``TypeAdapter``: ``"1e-5"`` → 1e-05, ``"3"`` → 3, ``"true"`` →
# True, ``2023`` → ``"2023"`` for a string field, every element of a list), with the handbook's three rules on top
# (:func:`_convert`); a field's type in words for messages is :func:`_describe`.
class _Invalid(Exception):
    """A value that does not fit a type."""


_NONE = type(None)
_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence)
_LAX = ConfigDict(coerce_numbers_to_str=True, arbitrary_types_allowed=True)


def _members(tp) -> tuple | None:
    """The members of a ``Union``/``X | Y`` type, else None."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


def _is_enum(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _container(tp):
    origin = typing.get_origin(tp) or tp
    if origin is Mapping or isinstance(origin, type) and issubclass(origin, Mapping):
        return dict
    if origin in _SEQUENCES or isinstance(origin, type) and issubclass(origin, (list, tuple, set)):
        return list
    return None


@functools.lru_cache(maxsize=None)
def _adapter(tp) -> TypeAdapter | None:
    try:
        return TypeAdapter(tp, config=_LAX)
    except Exception:  # a type pydantic has no schema for: left to the dataclass  # noqa: BLE001
        return None


def _convert(value, tp):
    """``value`` checked against (and converted to) the type ``tp``, as argparse converts a command-line string;
    raises :class:`_Invalid`. Pydantic's lax mode, plus three rules:

    * a boolean fits only a boolean field (``beta: true`` is a mistake, not 1.0; ``seed: yes`` no seed);
    * a string for a mapping field is read as JSON or YAML flow style (a command-line ``--pool '[{...}]'``);
    * a scalar where a list is expected (``loss_type: sigmoid``, ``lora_target_modules: all-linear``) is kept as
      written (the configs accept it), but checked as an element."""
    members = _members(tp) or (tp,)
    if any(m in (Any, object) for m in members):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bool) and bool not in members and not any(typing.get_origin(m) is Literal for m in members):
        raise _Invalid
    containers = {_container(m) for m in members}
    if isinstance(value, str) and dict in containers and str not in members:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise _Invalid from None
    try:
        adapter = _adapter(tp)
    except TypeError:  # an unhashable annotation (the cache's key): left to the dataclass, as an unknown type is
        adapter = None
    if adapter is None:
        return value
    try:
        converted = adapter.validate_python(value)
    except ValidationError:
        lists = [m for m in members if _container(m) is list]
        if lists and not isinstance(value, (list, tuple, Mapping)):
            _convert(value, (typing.get_args(lists[0]) or (Any,))[0])
            return value
        raise _Invalid from None
    return converted.value if isinstance(converted, enum.Enum) else converted


def _describe(tp) -> str:
    """``tp`` in words, for messages: ``an integer (int)``, ``a list of strings or null``."""
    members = _members(tp)
    if members is not None:
        parts = list(dict.fromkeys(_describe(m) for m in members if m is not _NONE))
        if _NONE in members:
            parts.append("null")
        return " or ".join(parts)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if _is_enum(tp):
        return "one of " + ", ".join(str(m.value) for m in tp)
    simple = {bool: "a boolean (true/false)", int: "an integer (int)", float: "a number (float)",
              str: "a string (str)", _NONE: "null", Any: "anything", object: "anything"}
    if tp in simple:
        return simple[tp]
    container = origin or tp
    if isinstance(container, type) and issubclass(container, Mapping):
        return "a mapping (dict)" if len(args) != 2 else f"a mapping (dict) of {_describe(args[1])}"
    if container in _SEQUENCES:
        return f"a list of {_describe(args[0])}" if args else "a list"
    return getattr(tp, "__name__", str(tp))


def _show(value) -> str:
    """A value as the recipe spells it (``true``, ``2.5``, ``"abc"``, ``[1, 2]``), with its Python type."""
    if value is None:
        return "null"
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{text} ({type(value).__name__})"


def _choices_message(value, choices) -> str:
    allowed = [str(getattr(c, "value", c)) for c in choices]
    message = f"allowed values: {', '.join(allowed)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, allowed, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    elif isinstance(value, bool) and {"no", "yes", "on", "off", "false", "true"} & {a.lower() for a in allowed}:
        message += " (YAML reads unquoted yes/no/on/off as booleans: quote the value)"
    return message


def _check_value(key: str, value, tp, choices, source: str | None):
    """``value`` converted for the field ``key`` of type ``tp``, or :class:`ConfigError` naming all of it."""
    try:
        converted = _convert(value, tp)
    except _Invalid:
        if choices:
            expected = _choices_message(value, choices)
        else:
            expected = f"expected {_describe(tp)}"
            if isinstance(value, bool) and tp is str:
                expected += " (YAML reads unquoted yes/no/on/off as booleans: quote the value)"
        raise ConfigError(f"{_where(source)}`{key}`: invalid value {_show(value)}; {expected}") from None
    if choices and converted is not None:
        for element in (converted if isinstance(converted, list) else [converted]):
            if element not in choices:
                raise ConfigError(f"{_where(source)}`{key}`: invalid value {_show(element)}; "
                                  f"{_choices_message(element, choices)}")
    return converted


# --- the parser -----------------------------------------------------------------------------------------
class HandbookParser(TrlParser):
    """TRL's ``TrlParser`` (``HfArgumentParser`` + ``--config FILE`` + ``env:``), with the checks above.

    ``parse_args_and_config(args, overrides)`` returns one instance per dataclass, or raises
    :class:`ConfigError` before any of them is built. Commands (``python -m handbook.aif_data generate ...``) are
    subparsers made the way TRL's CLI makes them: ``parser.add_command(name, dataclass_types)``, then
    ``parser.parse_command(argv)`` → ``(name, instances)``.
    """

    def __init__(self, dataclass_types=None, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--learning_rat` is an unknown key, not `--learning_rate`
        super().__init__(dataclass_types, **kwargs)
        self._fields: dict[str, tuple[type, Any]] = {}  # key → (its dataclass, its type as written)
        for dtype in self.dataclass_types:
            hints = typing.get_type_hints(dtype)
            for f in dataclasses.fields(dtype):
                if f.init:
                    self._fields[f.name] = (dtype, hints[f.name])
        self._actions_by_key = {}
        for action in self._actions:
            # one spelling, as in TRL's and the upstream handbook's recipes: `--output_dir`, not also `--output-dir`
            dashed = [o for o in action.option_strings if o.startswith("--") and "-" in o[2:]]
            for option in dashed:
                action.option_strings.remove(option)
                self._option_string_actions.pop(option, None)
            if action.dest in self._fields and f"--{action.dest}" in action.option_strings:
                self._actions_by_key[action.dest] = action
                if action.type is not None:  # command-line strings go through the same checker as YAML values
                    action.type = self._cli_type(action)
        self._commands = None

    # argparse reports errors by printing usage and exiting; a notebook (and a test) wants an exception
    def error(self, message):
        match = re.match(r"argument [^:]*: (command line: .*)", message, re.S)
        raise _CommandLineError(match.group(1) if match else f"command line: {message}")

    def _cli_type(self, action):
        key, (_, tp) = action.dest, self._fields[action.dest]
        if action.nargs in ("+", "*"):  # one string per element of a list
            members = _members(tp) or (tp,)
            lists = [m for m in members if typing.get_origin(m) in (list, tuple, set) or m in (list, tuple, set)]
            tp = (typing.get_args(lists[0]) or (Any,))[0] if lists else tp
        choices = action.choices
        members = _members(tp) or ()
        # as TRL's parser does: `none`/`null` sets an Optional field that could not hold the string itself to None
        none_words = _NONE in members and str not in members and action.nargs not in ("+", "*")

        def convert(text: str):
            if none_words and text.lower() in ("none", "null"):
                return None
            try:
                return _check_value(key, text, tp, choices, "command line")
            except ConfigError as exc:
                raise ArgumentTypeError(str(exc)) from None

        convert.__name__ = getattr(tp, "__name__", key)
        return convert

    @property
    def cli_keys(self) -> set[str]:
        """The ``--key`` spellings this parser takes (underscores; ``no_<flag>`` for flags on by default)."""
        keys = {"help"}
        for action in self._actions:
            keys |= {o[2:] for o in action.option_strings if o.startswith("--") and "-" not in o[2:]}
        return keys

    def check_values(self, config: Mapping, source: str | None, prefix: str = "") -> dict:
        """``config`` with every value checked against its field (and converted where argparse would convert
        a string); one :class:`ConfigError` lists every bad value."""
        out, problems = {}, []
        for key, value in config.items():
            if key not in self._fields:
                out[key] = value
                continue
            action = self._actions_by_key.get(key)
            try:
                out[key] = _check_value(f"{prefix}{key}", value, self._fields[key][1],
                                        action.choices if action is not None else None, source)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("\n".join(problems))
        return out

    def parse_args_and_config(self, args: Sequence[str] | None = None, overrides: Mapping | None = None):
        """``--config FILE`` plus ``--key value`` arguments (plus ``overrides``, checked the same way) → one
        instance per dataclass. The file's values, then the overrides, then the command line win."""
        args = list(sys.argv[1:] if args is None else args)
        types_ = self.dataclass_types
        config: dict = {}
        source = None
        for i, arg in enumerate(args):
            if arg == "--config" or arg.startswith("--config="):
                if arg == "--config" and i + 1 >= len(args):
                    raise ConfigError("command line: --config needs a file")
                path = recipe_path(arg.split("=", 1)[1] if "=" in arg else args[i + 1])
                del args[i:i + (1 if "=" in arg else 2)]
                source = str(path)
                config = load_yaml(path)
                check_keys(config, types_, source)
                env = config.pop("env", None) or {}
                if not isinstance(env, dict):
                    raise ConfigError(f"{source}: `env` must be a mapping of environment variables")
                if ALLOW_KEY_ENV in env:
                    raise ConfigError(f"{source}: `env` may not set {ALLOW_KEY_ENV}: which key variables may be sent "
                                      "to a server is the user's choice (--allow_key_env NAME on the command line)")
                global_batch = config.pop("global_batch_size", None)
                accumulation_in_file = "gradient_accumulation_steps" in config
                config = self.check_values(config, source)
                break
        else:
            env, global_batch, accumulation_in_file = {}, None, False
        if any(a == "--config" or a.startswith("--config=") for a in args):
            raise ConfigError("command line: --config given twice")
        overrides = dict(overrides or {})
        global_batch = overrides.pop("global_batch_size", global_batch)
        args = _confirm_key_variables(args)
        args, cli_global_batch = _pop_option(args, "global_batch_size")
        if cli_global_batch is not None:
            try:
                global_batch = int(cli_global_batch)
            except ValueError:
                raise ConfigError(f"command line: `global_batch_size`: invalid value {cli_global_batch!r}; expected "
                                  "a positive integer") from None
        if overrides:
            check_keys(overrides, types_, "keyword arguments", allowed=known_keys(types_))
            config.update(self.check_values(overrides, "keyword arguments"))
        # command-line keys are checked too (argparse would reject them, with a less helpful message)
        cli_keys = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
        check_keys(dict.fromkeys(sorted(cli_keys)), types_, "command line", allowed=self.cli_keys)
        if any(_is_training_config(t) for t in types_):
            # the one machine probe left in parsing: transformers refuses to *build* a bf16 config without a GPU, so
            # the device policy is decided before the config exists (``report_to`` waits for the training entry point)
            config = resolve_device_and_precision(config)
        for key, value in env.items():
            os.environ[str(key)] = str(value)
        if config:
            self.set_defaults_with_config(**config)
        try:
            *instances, rest = self.parse_args_into_dataclasses(args=args, return_remaining_strings=True,
                                                                 look_for_args_file=False)
        except _CommandLineError:
            raise
        except (ValueError, TypeError) as exc:  # a dataclass's own checks (__post_init__), named by the file
            raise ConfigError(f"{_where(source or 'command line')}{exc}") from exc
        if rest:
            raise ConfigError(f"command line: unexpected arguments {rest}: options are `--key value`")
        for instance in instances:
            if _is_training_config(type(instance)):
                check_training_ranges(instance, lambda key: "command line" if key in cli_keys else
                                      "keyword arguments" if key in (overrides or {}) else source)
        if global_batch is not None:
            training = [x for x in instances if _is_training_config(type(x))]
            if not training:
                raise ConfigError(f"{_where(source)}`global_batch_size` needs a training config")
            explicit = (accumulation_in_file or "gradient_accumulation_steps" in cli_keys
                        or "gradient_accumulation_steps" in (overrides or {}))
            apply_global_batch(training[0], global_batch, world_size(), source, explicit)
        return tuple(instances)

    # --- commands (TRL's CLI: one TrlParser per subcommand) ---
    def add_command(self, name: str, dataclass_types: Sequence[type], help: str | None = None) -> HandbookParser:
        if self._commands is None:
            self._commands = self.add_subparsers(dest="command", metavar="{" + "COMMAND" + "}")
        if help is None and dataclass_types and dataclass_types[0].__doc__:
            help = dataclass_types[0].__doc__.strip().splitlines()[0]
        sub = self._commands.add_parser(name, dataclass_types=dataclass_types, help=help)
        self._commands.metavar = "{" + ",".join(self._commands.choices) + "}"
        return sub

    def parse_command(self, args: Sequence[str] | None = None, overrides: Mapping | None = None):
        """``(command, instances)`` for ``COMMAND [--config FILE] [--key value ...]``."""
        args = list(sys.argv[1:] if args is None else args)
        commands = self._commands.choices if self._commands else {}
        if args[:1] in (["-h"], ["--help"]):
            self.print_help()
            raise SystemExit(0)
        if not args or args[0] not in commands:
            got = f"unknown command {args[0]!r}" if args else "a command is required"
            raise ConfigError(f"command line: {got}; choose from {', '.join(commands)}\n{self.format_usage()}")
        return args[0], commands[args[0]].parse_args_and_config(args[1:], overrides)


def _confirm_key_variables(args: list[str]) -> list[str]:
    """``args`` without ``--allow_key_env NAME``; that name, and the name of a ``--api_key_env NAME`` the user typed,
    join :data:`~handbook.core.backends.ALLOW_KEY_ENV` — key variables the user chose to send (a recipe naming any
    other for a remote server is refused by :class:`~handbook.core.backends.OpenAIBackend`)."""
    from .secrets import check_variable_name

    args, allowed = _pop_option(args, "allow_key_env")
    _, typed = _pop_option(list(args), "api_key_env")
    names = [n for n in (allowed, typed) if n and n.lower() != "none"]
    for name in names:
        try:
            check_variable_name(name, "allow_key_env" if name == allowed else "api_key_env")
        except ValueError as exc:
            raise ConfigError(f"command line: {exc}") from None
    if names:
        known = [n for n in os.environ.get(ALLOW_KEY_ENV, "").split(",") if n]
        os.environ[ALLOW_KEY_ENV] = ",".join(dict.fromkeys([*known, *names]))
    return args


def _pop_option(args: list[str], name: str) -> tuple[list[str], str | None]:
    """``args`` without ``--name value`` (or ``--name=value``), and the value (``None`` if absent)."""
    for i, arg in enumerate(args):
        if arg == f"--{name}":
            if i + 1 >= len(args):
                raise ConfigError(f"command line: --{name} needs a value")
            return args[:i] + args[i + 2:], args[i + 1]
        if arg.startswith(f"--{name}="):
            return args[:i] + args[i + 1:], arg.split("=", 1)[1]
    return args, None


def apply_global_batch(training_args, global_batch, processes: int, source: str | None = None,
                       explicit_accumulation: bool = False) -> int:
    """Set ``gradient_accumulation_steps`` so that one optimizer step sees ``global_batch`` sequences on
    ``processes`` processes: ``global_batch = per_device_train_batch_size × accumulation × processes``.

    The paper's batches (dSFT 512, dDPO 32) are properties of the recipe, not of the machine: on 8 GPUs,
    16 or one node the step is the same. A global batch that the processes cannot split evenly is an error
    naming the numbers; so is a ``gradient_accumulation_steps`` given on the command line beside it.
    Returns the accumulation.
    """
    where = _where(source)
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1:
        raise ConfigError(f"{where}`global_batch_size`: invalid value {global_batch!r}; expected a positive integer")
    if explicit_accumulation:
        raise ConfigError(f"{where}`global_batch_size` {global_batch} sets gradient_accumulation_steps; set one of "
                          "the two, not both (to change the step, override global_batch_size or "
                          "per_device_train_batch_size)")
    per_step = training_args.per_device_train_batch_size * processes
    if global_batch % per_step:
        raise ConfigError(
            f"{where}`global_batch_size` {global_batch} is not a multiple of per_device_train_batch_size "
            f"{training_args.per_device_train_batch_size} × {processes} process(es) = {per_step}: change "
            "per_device_train_batch_size or the number of processes")
    training_args.gradient_accumulation_steps = global_batch // per_step
    return training_args.gradient_accumulation_steps


#: Values a training stage cannot work with: (key, test, rule). ``max_steps`` -1 means "by epochs" (transformers);
#: 0 or below would save an untrained model as if trained, ``beta`` 0 a DPO that moves nothing (the loss's
#: gradient is ``beta`` times the preference's; the paper's Eq. 1 needs beta > 0) and a negative ``beta`` one
#: that learns the opposite of the preferences.
TRAINING_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("num_train_epochs", lambda v: v > 0, "greater than 0 (or set max_steps)"),
    ("max_steps", lambda v: v == -1 or v > 0, "a positive number of steps, or -1 (train by num_train_epochs)"),
    ("learning_rate", lambda v: v > 0, "greater than 0"),
    ("per_device_train_batch_size", lambda v: v >= 1, "at least 1"),
    ("gradient_accumulation_steps", lambda v: v >= 1, "at least 1"),
    ("beta", lambda v: v > 0, "greater than 0 (0 leaves the model where it started; below 0 it learns the "
                              "opposite of the preferences)"),
    ("max_length", lambda v: v is None or v >= 1, "at least 1 token, or unset"),
)


def check_training_ranges(training_args, source_of: Callable[[str], str | None] = lambda key: None) -> None:
    """Refuse a training config whose values the stage cannot work with (:data:`TRAINING_RANGES`) before any
    work, naming each key and, through ``source_of(key)``, where it was set (a recipe file or the command line)."""
    problems = []
    for key, ok, rule in TRAINING_RANGES:
        if not hasattr(training_args, key):
            continue
        value = getattr(training_args, key)
        if key == "num_train_epochs" and getattr(training_args, "max_steps", -1) > 0:
            continue  # max_steps wins over epochs (transformers)
        if isinstance(value, (int, float)) or value is None:
            if not ok(value):
                problems.append(f"{_where(source_of(key))}`{key}`: invalid value {value}; must be {rule}")
    if problems:
        raise ConfigError("\n".join(problems))


def _is_training_config(t: type) -> bool:
    return any(f.name == "bf16" for f in dataclasses.fields(t))


def check_values(config: Mapping, dataclass_types: Sequence[type], source: str | None = None,
                 prefix: str = "") -> dict:
    """``config``'s values checked against ``dataclass_types``' fields (see :class:`HandbookParser`)."""
    return HandbookParser(list(dataclass_types)).check_values(config, source, prefix)


def check_dataclass(instance, source: str | None = None, prefix: str = "") -> None:
    """Check a dataclass instance's field values as a recipe's would be (for ``__post_init__``)."""
    values = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance) if f.init}
    check_values(values, [type(instance)], source, prefix)


def parse_config(dataclass_types: Sequence[type], argv: Sequence[str] | None = None):
    """Parse ``--config FILE`` plus command-line overrides into one instance per dataclass."""
    return HandbookParser(list(dataclass_types)).parse_args_and_config(argv)


def parse_command(commands: Mapping[str, Sequence[type]], argv: Sequence[str] | None = None,
                  prog: str | None = None, description: str | None = None):
    """``(command, instances)`` for a CLI with commands, e.g. ``{"generate": [AIFArguments], "convert":
    [ConvertArguments]}``: the first argument names the command, the rest goes through its parser."""
    parser = HandbookParser(prog=prog, description=description, formatter_class=RawDescriptionHelpFormatter)
    for name, dataclass_types in commands.items():
        parser.add_command(name, list(dataclass_types))
    return parser.parse_command(argv)


def read_recipe(path: str | os.PathLike, dataclass_types: Sequence[type], **overrides):
    """A recipe file (plus keyword overrides, checked as the file's values are) as dataclass instances,
    for notebooks and tests. Raises :class:`ConfigError`."""
    return HandbookParser(list(dataclass_types)).parse_args_and_config(["--config", str(Path(path))], overrides)


def check_time_bounds(args, keys: Sequence[str] = ("timeout", "max_total_seconds")) -> None:
    """For a ``__post_init__``: each of ``keys`` (seconds: a per-request timeout, a run's time bound) is unset or
    greater than 0; else a :class:`ConfigError` naming the key and the value."""
    for key in keys:
        value = getattr(args, key)
        if value is not None and not value > 0:
            raise ConfigError(f"`{key}`: invalid value {value}; must be greater than 0 (seconds), or unset")
