"""An append-only JSONL record of finished calls, so long generation and rating runs can resume.

The first line records the run's arguments (``meta``); every later line is one finished result,
written (and fsync'ed) as soon as it arrives. Reopening the file with the same ``meta`` loads the
finished results; reopening with different ``meta`` is refused, because the results would no
longer belong to the run being asked for. A last line cut short by a kill is dropped (that call was
in flight, not finished, and is made again); a corrupt line anywhere else is an error naming it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence


class CallCache:
    """Results keyed by the tuple of ``key_fields`` of each record."""

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
        if tail:  # a line cut short by a kill: drop it, the call is redone
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
        """Write ``records`` durably, then remember them. Under ``accelerate launch`` only the main
        process writes (every process holds the same gathered results)."""
        if not records:
            return
        from .distributed import is_main_process

        if not is_main_process():
            for record in records:
                self.records[self.key(record)] = record
            return
        with self.path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for record in records:
            self.records[self.key(record)] = record
