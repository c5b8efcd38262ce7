"""Files and datasets every stage reads and writes: JSONL, dataset splits, prompt ids, finished runs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Callable, Iterator

logger = logging.getLogger(__name__)


def prompt_id(prompt: str) -> str:
    """The SHA-256 hex digest of the prompt text, as in ultrachat_200k and ultrafeedback_binarized."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def iter_jsonl(path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-empty line of a JSONL file. A missing file, a line that is not
    UTF-8, not JSON (a torn last line included) or not a JSON object is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    for n, line, ended in _text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            torn = "" if ended else "; the file's last line is cut short (a torn write?)"
            raise ValueError(f"{path}, line {n}: not JSON: {exc.msg} (column {exc.colno}){torn}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}, line {n}: not a JSON object (a JSON {type(obj).__name__})")
        yield n, obj


def read_jsonl(path) -> list[dict]:
    """The JSON objects of a JSONL file, one per non-empty line; a bad line is an error naming file and line
    (:func:`iter_jsonl`)."""
    return [obj for _, obj in iter_jsonl(path)]


def _text_lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """``(line number, text, ended)`` of a UTF-8 text file: the text without its line break and a leading
    byte-order mark, ``ended`` whether a line break closed it (``False`` only for a last line cut short). A byte
    that is not UTF-8 is an error naming file and line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                                 f"of the line)") from None
            yield n, (text.removeprefix("\ufeff") if n == 1 else text).rstrip("\r\n"), raw.endswith(b"\n")


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (parents created): into ``<path>.tmp-<pid>``, fsync'ed, then
    renamed over ``path`` — a full disk or a kill leaves the previous file (or none), never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_jsonl(path, rows) -> None:
    """Write ``rows`` as JSONL, whole or not at all (:func:`write_text_atomic`)."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


#: Prompt files by suffix (case-insensitive): one prompt per line, or rows with a ``prompt`` field.
PROMPT_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}


def read_prompts(path) -> list[str]:
    """Prompts from a file, read by what its suffix says it is (upper case too: ``.JSONL``): ``.txt`` — one per
    non-empty line; ``.jsonl`` — a ``prompt`` field per row; ``.json`` — a list of such rows (or of strings);
    ``.csv`` — a ``prompt`` column. Another suffix is refused naming the file (it is not guessed to be text). A
    missing file, a bad row, an empty prompt or a file with no prompt is an error naming file and line or row."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    kind = PROMPT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: a prompt file must be {', '.join(PROMPT_FORMATS)} (by its suffix); got "
                         f"{path.suffix or 'no suffix'!r}")
    if kind == "text":
        prompts = [line for _, line, _ in _text_lines(path) if line.strip()]
    elif kind == "jsonl":
        prompts = [_prompt_field(row, f"{path}, line {n}") for n, row in iter_jsonl(path)]
    elif kind == "json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a .json prompt file is a list of rows with a 'prompt' field (or of strings)")
        prompts = [row if isinstance(row, str) and row.strip() else _prompt_field(row, f"{path}, row {i}")
                   for i, row in enumerate(rows, 1)]
    else:
        import csv

        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if "prompt" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: a .csv prompt file needs a 'prompt' column; its columns: "
                                 f"{', '.join(reader.fieldnames or []) or 'none'}")
            prompts = [_prompt_field(row, f"{path}, line {reader.line_num}") for row in reader]
    if not prompts:
        raise ValueError(f"{path}: no prompts (the file is empty)")
    return prompts


def _prompt_field(row, where: str) -> str:
    prompt = row.get("prompt") if isinstance(row, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: field 'prompt' is missing or empty")
    return prompt


def load_splits(name: str, config: str | None, train_split: str, test_split: str | None,
                test_split_size: float | None = None, seed: int = 0,
                check_row: Callable[[dict, int], None] | None = None):
    """``(train, eval or None)`` of a dataset: a directory written by ``save_to_disk`` (one dataset or a
    ``DatasetDict``), a .jsonl/.json file, or a hub id. Eval rows never silently equal train rows:

    * ``test_split_size`` set: the eval rows are that share (0 < x < 1) or number (>= 1) of the training
      split's rows, drawn with ``seed``; the rest, in their order, train (``test_split`` is not read);
    * else a named ``test_split`` must exist (a ``DatasetDict`` or a hub dataset; a missing one is an error
      naming the dataset and its splits);
    * a single dataset (a .jsonl/.json file, one saved dataset) has no named splits: no eval set, said in the log.

    ``check_row(row, index)`` validates the rows of a file before they become a dataset (its error is
    prefixed with the file and line). A dataset or split with no rows is an error."""
    source = _load_source(name, config, check_row)
    single = not isinstance(source, dict)
    train = source if single else _split(source, train_split, name)
    _require_rows(train, name if single else f"{name} (split {train_split!r})")
    if test_split_size is not None:
        train, test = _hold_out(train, test_split_size, seed, name)
        logger.info("%s: %d rows held out as the eval set (test_split_size %s, seed %d; dataset_test_split not "
                    "read), %d rows train", name, len(test), test_split_size, seed, len(train))
        return train, test
    if not test_split:
        logger.info("%s: no eval set (dataset_test_split is none and test_split_size is not set)", name)
        return train, None
    if single:
        logger.warning("%s is a single dataset with no named splits: no eval set (its rows are the training rows; "
                       "set test_split_size to hold some out for evaluation)", name)
        return train, None
    if test_split == train_split:
        raise ValueError(f"{name}: dataset_test_split {test_split!r} is the training split: the eval loss would be "
                         "measured on training rows. Name a held-out split, or set test_split_size to hold rows out")
    test = _split(source, test_split, name)
    _require_rows(test, f"{name} (split {test_split!r})")
    check_no_train_rows_in_eval(train, test, f"{name} (split {test_split!r})")
    return train, test


def row_digest(row: dict) -> str:
    """SHA-256 of a row's JSON (keys sorted): equal rows, equal digests, whatever the split they sit in."""
    return hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def check_no_train_rows_in_eval(train, test, name: str) -> int:
    """Compare the rows' digests (:func:`row_digest`): an eval set made only of training rows is an error (its loss
    is a training loss); some training rows in it are a warning naming how many. Returns that number."""
    seen = {row_digest(r) for r in train}
    shared = sum(row_digest(r) in seen for r in test)
    if shared == len(test):
        raise ValueError(f"{name}: every one of its {len(test)} eval rows is also a training row, so the eval loss "
                         "would be a training loss. Name a held-out split, or set test_split_size")
    if shared:
        logger.warning("%s: %d of its %d eval rows are also training rows (equal content): the eval loss is partly "
                       "measured on training data", name, shared, len(test))
    return shared


class _HubSplits(dict):
    """The named splits of a hub dataset, each loaded when asked for."""

    def __init__(self, name: str, config: str | None):
        super().__init__()
        self.name, self.config = name, config


def _split(source: dict, split: str, name: str):
    """``source[split]``; a split the dataset does not have is an error naming the dataset and the splits it has."""
    if isinstance(source, _HubSplits):
        import datasets

        try:
            return datasets.load_dataset(source.name, source.config, split=split)
        except ValueError as exc:
            if "split" in str(exc).lower():
                raise ValueError(f"{name} has no split {split!r} ({exc})") from None
            raise
    if split not in source:
        raise ValueError(f"{name} has no split {split!r}; it has {', '.join(map(repr, source))}")
    return source[split]


def _load_source(name: str, config: str | None, check_row=None):
    """A single ``Dataset`` or a mapping of named splits."""
    import datasets

    path = Path(name)
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - e.g. IndexError for a dataset saved with no rows
            raise ValueError(f"{name}: not a loadable dataset directory ({type(exc).__name__}: {exc}); it must be "
                             f"written by `save_to_disk`, completely, with at least one row") from None
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else loaded
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such file")
        return _file_dataset(path, check_row)
    return _HubSplits(name, config)


def _file_dataset(path: Path, check_row=None):
    """A .jsonl file (one JSON object a line) or a .json file (an array of objects, or JSON lines) as a
    ``Dataset``; every bad line, row or value is an error naming file and line."""
    from datasets import Dataset

    located = None
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None  # JSON lines in a .json file: read line by line below, with line numbers
        if isinstance(data, list):
            bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
            if bad is not None:
                raise ValueError(f"{path}: item {bad} of the array is not a JSON object")
            located = [(f"{path}, item {i}", r) for i, r in enumerate(data)]
        elif data is not None and not isinstance(data, dict):
            raise ValueError(f"{path}: not an array of JSON objects (a JSON {type(data).__name__})")
    if located is None:
        located = [(f"{path}, line {n}", r) for n, r in iter_jsonl(path)]
    if not located:
        raise ValueError(f"{path}: no rows (the file is empty)")
    if check_row is not None:
        for i, (where, row) in enumerate(located):
            try:
                check_row(row, i)
            except ValueError as exc:
                raise type(exc)(f"{where}: {exc}") from None
    rows = [r for _, r in located]
    try:
        return Dataset.from_list(rows)
    except Exception as exc:  # noqa: BLE001 - pyarrow's type errors name no row: find the first that breaks
        lo, hi = 1, len(rows)  # the shortest prefix that fails
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                Dataset.from_list(rows[:mid])
                lo = mid + 1
            except Exception:  # noqa: BLE001
                hi = mid
        raise ValueError(f"{located[lo - 1][0]}: the row's values do not have the types of the rows before it "
                         f"({type(exc).__name__}: {exc})") from None


def _require_rows(ds, where: str) -> None:
    if len(ds) == 0:
        raise ValueError(f"{where}: no rows")


def _hold_out(train, size: float, seed: int, name: str):
    """``(train, held out)``: ``size`` (a share in (0, 1) or a number of rows) of the rows drawn with ``seed``;
    both keep the rows' order."""
    check_test_split_size(size)
    n = len(train)
    k = round(size * n) if size < 1 else int(size)
    if not 1 <= k < n:
        raise ValueError(f"{name}: test_split_size {size} holds out {k} of {n} rows; at least one row must be held "
                         f"out and at least one left to train")
    held = set(random.Random(seed).sample(range(n), k))
    return (train.select([i for i in range(n) if i not in held]), train.select(sorted(held)))


def check_test_split_size(size: float | None) -> None:
    """``test_split_size`` is none, a share in (0, 1) or a whole number of rows >= 1 (for ``__post_init__``)."""
    from .configs import ConfigError

    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0
                             or (size >= 1 and size != int(size))):
        raise ConfigError(f"`test_split_size`: invalid value {size!r}; a share between 0 and 1 (0.05) or a whole "
                          f"number of rows (500)")


def dataset_sizes(train_ds, eval_ds) -> dict:
    """Rows per set name as a trainer gets them (``eval_ds``: one set, a dict of named sets, or ``None``)."""
    evals = eval_ds if isinstance(eval_ds, dict) else {"eval": eval_ds}
    return {"train": len(train_ds), **{k: len(v) for k, v in evals.items() if v is not None}}


def report_prepared_rows(trainer, given: dict, what: str, log=logger) -> dict:
    """After the trainer prepared its datasets (tokenized, truncated to ``max_length``; TRL's DPO drops a pair whose
    prompt alone fills ``max_length``, and its SFT packing merges rows), say how many rows each set kept and how
    many ``max_length`` cut short, and refuse a set that kept none. ``given``: rows handed to the trainer per set
    name (``{"train": 812, "eval": 40}``). Returns ``{set: {"given", "kept", "dropped", "truncated"}}``."""
    max_length = getattr(trainer.args, "max_length", None)
    packed = bool(getattr(trainer.args, "packing", False))
    prepared = {"train": trainer.train_dataset}
    evals = trainer.eval_dataset
    if isinstance(evals, dict):
        prepared.update(evals)
    elif evals is not None:
        prepared["eval"] = evals
    out = {}
    for name, n in given.items():
        ds = prepared.get(name)
        if ds is None or n is None:
            continue
        kept = len(ds)
        ids = next((c for c in ("input_ids", "prompt_ids") if c in ds.column_names), None)
        truncated = 0
        if max_length and ids == "input_ids" and not packed:
            truncated = sum(len(x) >= max_length for x in ds[ids])
        out[name] = {"given": n, "kept": kept, "dropped": 0 if packed else n - kept, "truncated": truncated}
        if kept == 0:
            raise ValueError(f"{what}: none of the {n} {name} rows remains after the trainer's preparation "
                             f"(max_length {max_length}: a pair whose prompt alone fills it is dropped); raise "
                             "max_length or shorten the rows")
        if not packed and kept < n:
            log.warning("%s: %d of %d %s rows dropped by the trainer's preparation (max_length %s: the prompt alone "
                        "fills it, so no completion token would be learned)", what, n - kept, n, name, max_length)
        if truncated:
            log.warning("%s: %d of %d %s rows are longer than max_length %s and were cut to it", what, truncated,
                        kept, name, max_length)
    return out


def disable_eval_without_dataset(training_args, eval_dataset, log=logger) -> None:
    """With no eval set, the trainer's ``eval_strategy`` becomes ``"no"`` (said in the log) instead of failing
    in the trainer; ``load_best_model_at_end`` needs an eval set and is an error."""
    if eval_dataset is not None or getattr(training_args, "eval_strategy", None) in (None, "no"):
        return
    if getattr(training_args, "load_best_model_at_end", False):
        raise ValueError("load_best_model_at_end needs an eval set, and there is none: name an existing "
                         "dataset_test_split or set test_split_size")
    from transformers.trainer_utils import IntervalStrategy

    log.warning("no eval set: eval_strategy %r becomes 'no' (name an existing dataset_test_split or set "
                "test_split_size to evaluate)", getattr(training_args.eval_strategy, "value", training_args.eval_strategy))
    training_args.eval_strategy = IntervalStrategy.NO
    training_args.do_eval = False


def last_checkpoint(training_args):
    """The checkpoint to resume from: the newest *complete* one in ``output_dir`` when ``resume_from_checkpoint`` is
    true (see :func:`complete_checkpoints`), a path when it is one, else ``None``."""
    resume = getattr(training_args, "resume_from_checkpoint", None)
    if resume in (None, False, "false", "False"):
        return None
    if resume not in (True, "true", "True"):
        return resume
    complete = complete_checkpoints(training_args.output_dir)
    return str(complete[-1]) if complete else None


def complete_checkpoints(output_dir) -> list[Path]:
    """``checkpoint-<step>`` folders of ``output_dir`` that a resume can load, oldest first. transformers writes a
    checkpoint's ``trainer_state.json`` last (after the weights, optimizer, scheduler and RNG states), so a
    checkpoint whose ``trainer_state.json`` is missing or not whole JSON is one a kill cut short: it is skipped
    with a warning naming it, and the newest complete one before it is used."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    complete = []
    for _, path in found:
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            logger.warning("%s is incomplete (no whole trainer_state.json: a run stopped while saving it); resuming "
                           "from an earlier checkpoint", path)
            continue
        complete.append(path)
    return complete


def save_training_outputs(trainer, tokenizer, result, output_dir: str) -> None:
    """Model (a collective under ZeRO-3: every rank calls it), then tokenizer and logs from rank 0."""
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        out = Path(output_dir)
        (out / "train_results.json").write_text(json.dumps(result.metrics, indent=2))
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
