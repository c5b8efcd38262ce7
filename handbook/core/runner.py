"""Resumable batched calls: the one loop behind every long generation, rating and judging run.

:class:`ResumableCalls` runs many independent calls to a backend in batches and keeps each
finished result, so that a killed run restarted with the same arguments loses no result and
repeats no finished call. Every such loop of the handbook (dSFT dialogues, the AIF pool and its
ratings, MT-Bench answers and judgments) goes through it; the rules live here and nowhere else.

**Calls and records.** Each call has a key, a tuple of JSON values named by ``key_fields`` (e.g.
``(prompt_id, step)``). ``run(items, call, batch_size)`` takes ``(key, payload)`` pairs, skips
every key already finished (and repeats of a key), hands the payloads of the rest to ``call`` in
batches of ``batch_size`` (``None``: all in one batch) and expects back one dict per payload, in
order. That dict with the key fields added is the call's *record*: key fields the dict lacks are
put first, ones it has must equal the key. A run in phases (a step that needs the results of the
previous one, a batch per temperature) calls ``run`` once per phase, building each phase's
payloads from the records so far (``results``).

**The cache file** (``cache_path``; ``None`` keeps the records in memory only) is append-only JSONL.
The first line is ``{"meta": ...}``, the arguments the run's results depend on; every later line
is one record, ``json.dumps(record, ensure_ascii=False)``. Each batch's records are appended,
flushed and fsync'ed as soon as the batch returns, before the next batch starts, so a kill loses
at most the batch in flight. Under ``accelerate launch`` only the main process writes (every
process holds the same gathered results); the others keep the records in memory.

**Resuming.** Reopening a cache with the same ``meta`` loads its records and those calls are not
made again. Reopening it with different ``meta`` is refused with a message naming the file and
both metas, because its results would not belong to the run being asked for. A last line cut
short by a kill is truncated away (that call was in flight, not finished, and is made again); a
corrupt line anywhere else is an error naming the file and the line.

**Progress.** One tqdm bar per run: ``total`` calls, starting at the number already finished,
advanced by each batch as it is recorded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm


class CallCache:
    """The cache file of :class:`ResumableCalls` (rules in the module docstring): ``records`` keyed by
    the tuple of ``key_fields`` of each record."""

    def __init__(self, path: str | os.PathLike, meta: dict, key_fields: Sequence[str]):
        self.path = Path(path)
        self.meta = json.loads(json.dumps(meta))  # as it will read back
        self.key_fields = tuple(key_fields)
        self.records: dict[tuple, dict] = {}
        from .distributed import is_main_process

        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        elif is_main_process():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", encoding="utf-8") as f:
                f.write(json.dumps({"meta": self.meta}, sort_keys=True) + "\n")

    def key(self, record: dict) -> tuple:
        return tuple(record[k] for k in self.key_fields)

    def _load(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        if tail:  # a torn last line
            with self.path.open("r+b") as f:
                f.truncate(len(raw) - len(tail))
        if not complete:
            raise ValueError(f"{self.path}: no header line")
        header = json.loads(complete[0])
        if header.get("meta") != self.meta:
            raise ValueError(
                f"{self.path} was written with different arguments:\n  cache: {header.get('meta')}\n"
                f"  now:   {self.meta}\nuse another cache path, or delete this one to start over")
        for n, line in enumerate(complete[1:], start=2):
            try:
                record = json.loads(line)
                self.records[self.key(record)] = record
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{self.path}, line {n}: corrupt cache record ({exc})") from None

    def __contains__(self, key: tuple) -> bool:
        return key in self.records

    def get(self, key: tuple) -> dict | None:
        return self.records.get(key)

    def append(self, records: Sequence[dict]) -> None:
        """Write ``records`` durably (main process only), then remember them."""
        if not records:
            return
        from .distributed import is_main_process

        if is_main_process():
            with self.path.open("a", encoding="utf-8") as f:
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        for record in records:
            self.records[self.key(record)] = record


class ResumableCalls:
    """Batched calls whose records survive a kill (see the module docstring).

    ::

        with ResumableCalls(cache_path, meta, ("prompt_id", "model"), total=len(ids) * len(models),
                            desc="pool") as calls:
            for model in models:  # one phase per model
                calls.run([((pid, model), prompt) for pid, prompt in zip(ids, prompts)],
                          lambda batch: [{"response": r} for r in complete(model, batch)], batch_size=64)
        calls.results[(pid, model)]  # {"prompt_id": pid, "model": model, "response": ...}
    """

    def __init__(self, cache_path: str | os.PathLike | None, meta: dict, key_fields: Sequence[str], total: int,
                 desc: str = "", progress: bool = True):
        self.key_fields = tuple(key_fields)
        self.cache = CallCache(cache_path, meta, self.key_fields) if cache_path is not None else None
        self.results: dict[tuple, dict] = self.cache.records if self.cache is not None else {}
        self.bar = tqdm(total=total, desc=desc, disable=not progress, initial=len(self.results))

    def __enter__(self) -> "ResumableCalls":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()

    def __contains__(self, key: tuple) -> bool:
        return key in self.results

    def run(self, items: Iterable[tuple[tuple, Any]], call: Callable[[list], Sequence[dict]],
            batch_size: int | None = None) -> list[dict]:
        """Make the calls of ``items`` not finished yet, ``batch_size`` payloads per ``call``; each
        batch's records are stored durably before the next batch. Returns the records of ``items``."""
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        keys, todo = [], {}
        for key, payload in items:
            key = tuple(key)
            if len(key) != len(self.key_fields):
                raise ValueError(f"key {key!r} does not match the key fields {self.key_fields}")
            keys.append(key)
            if key not in self.results and key not in todo:
                todo[key] = payload
        pending = list(todo.items())
        size = batch_size or max(len(pending), 1)
        for start in range(0, len(pending), size):
            batch = pending[start:start + size]
            replies = list(call([payload for _, payload in batch]))
            if len(replies) != len(batch):
                raise ValueError(f"call returned {len(replies)} results for a batch of {len(batch)}")
            self._store([self._record(key, reply) for (key, _), reply in zip(batch, replies)])
        return [self.results[key] for key in keys]

    def _record(self, key: tuple, reply: dict) -> dict:
        missing = {}
        for field, value in zip(self.key_fields, key):
            if field not in reply:
                missing[field] = value
            elif reply[field] != value:
                raise ValueError(f"call returned {field}={reply[field]!r} for the call keyed {field}={value!r}")
        return {**missing, **reply}

    def _store(self, records: list[dict]) -> None:
        if self.cache is not None:
            self.cache.append(records)  # also fills self.results, the same dict
        else:
            for record in records:
                self.results[tuple(record[f] for f in self.key_fields)] = record
        self.bar.update(len(records))
