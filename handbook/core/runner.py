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

**Identity.** ``meta`` is everything a result depends on: the run's arguments and the producer of the results
— each backend's ``describe()`` (``handbook.core.backends.describe_backend``: a local model's weights
fingerprint, an endpoint's ``base_url`` and ``model``, a toy judge's ``noise``, ...), the sampling, a hash of
the prompt templates and of the inputs. Reopening a cache with the same ``meta`` loads its records and those
calls are not made again. Reopening it with a different ``meta`` is refused (:class:`CacheMismatch`) with a
message naming the file and, field by field, what changed (``judge.noise: 0.1 in the cache, 0.9 now``): its
results were made by another producer or with other arguments and are not this run's. To start over, delete
the file or give the run another path; to reuse its results deliberately anyway, pass
``policy=RunPolicy(allow_reuse=True)`` (the commands' ``--allow_cache_reuse``): the header then takes the new ``meta`` and
keeps the old ones under ``reused_from``, and a warning names what changed. A last line cut short by a kill is
truncated away (that call was in flight, not finished, and is made again); a corrupt line anywhere else is an
error naming the file and the line.

**Failures.** ``call`` may put an exception in place of a payload's dict (a backend's
``handbook.core.backends.TransportError``: unreachable, timed out, 5xx after its retries, a malformed reply);
when ``call`` raises a ``TransportError`` itself, every call of its batch failed. A failed call is never
recorded. The run goes on with the next batches, stops at a batch in which every call failed (the endpoint is
down: waiting through the rest would only repeat it) or when the run's time bound (``policy.deadline``, a
:class:`~handbook.core.deadline.Deadline`) has run out, and then ``run`` raises :class:`CallsFailed` with the
count, the calls not attempted and the first error. What finished is on disk, so a rerun makes exactly the
calls that are not recorded, and no other. (A caller that wants a failure *recorded* — a judge's reply
without a rating, a request the server refused — makes a record of it: it is an answer, not an outage.)

**Locks.** While a run has its cache open, it holds an exclusive lock (``fcntl.flock``) on ``<cache>.lock``,
which records its pid; a second run on the same cache is refused (:class:`OutputLocked`) with a message
naming that pid. The lock goes with its process, so one left by a killed run never blocks. Commands lock
their output folders the same way (:func:`exclusive_lock`).

**Progress.** One tqdm bar per run: ``total`` calls, starting at the number already finished,
advanced by each batch as it is recorded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from tqdm.auto import tqdm

from .backends import TransportError
from .deadline import Deadline
from .secrets import redact

logger = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run that cannot finish as asked, with a message that says why and what to do; the commands print it
    and exit non-zero."""


class CallsFailed(RunError):
    """Calls that got no usable reply (never recorded); a rerun makes exactly them again."""

    def __init__(self, message: str, failed: int, not_attempted: int, first_error: BaseException | None):
        super().__init__(message)
        self.failed, self.not_attempted, self.first_error = failed, not_attempted, first_error


class OutputLocked(RunError):
    """Another live run writes this output folder or cache."""


class EmptyOutput(RunError):
    """A stage whose output would be empty (nothing to save, nothing to score)."""


class CacheMismatch(ValueError):
    """A cache written by another producer or with other arguments (the message names what changed)."""


#: Set (to anything but 0) for the traceback of every error an entry point reports in one line; ``--debug`` on a
#: command line does the same.
DEBUG_ENV = "HANDBOOK_DEBUG"

#: What a user's mistake or the world raises (a wrong value, a missing file, a refused folder, an outage): reported
#: as one ``error:`` line. Anything else is a bug in the handbook or a library and keeps its traceback.
USER_ERRORS = (RunError, CacheMismatch, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """For every command's ``__main__``: a user's mistake or a failure of the world (:data:`USER_ERRORS`, a
    :class:`~handbook.core.backends.BackendError`, a wrong config's ``ConfigError``) ends the process with one
    ``error: ...`` line on stderr and exit status 1 — the message says what happened and what to do, no traceback
    (with ``--debug`` or ``HANDBOOK_DEBUG=1``: the traceback too). Ctrl-C ends it with exit status 130 saying
    what was kept (every finished call is in its cache already: caches are appended and flushed per batch)."""
    from .backends import BackendError

    debug = "--debug" in sys.argv or os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        yield
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ninterrupted: stopped before the end. Every call that finished is in its cache; a rerun with the "
              "same command asks only what is missing.", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # now, not after the requests still in flight (worker threads would be joined at exit): every cache is
        # fsync'ed per batch and a lock is the kernel's, so nothing is lost by not unwinding further
        os._exit(130)
    except (*USER_ERRORS, BackendError) as exc:
        if debug:
            raise
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, (RunError, CacheMismatch, BackendError)) and type(exc).__name__ != "ConfigError":
            message += f"  ({type(exc).__name__}; {DEBUG_ENV}=1 shows where)"
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


# ---------------------------------------------------------------------------------------------
# Locks
# ---------------------------------------------------------------------------------------------
_held: set[str] = set()  # lock files this process holds


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``lock_path`` (created if missing; it records this process's pid, the
    time and the command) for the duration, or raise :class:`OutputLocked` naming the holder's pid. ``what``
    names the thing locked in the message. The kernel drops the lock when its process ends, however it ends, so
    a lock file left by a killed run does not block. Under ``accelerate launch`` only the main process locks
    (the others write nothing)."""
    from .distributed import is_main_process

    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unlocked, and say so
        logger.warning("no fcntl on this platform: %s is not locked against a second run", what)
        yield
        return
    if not is_main_process():
        yield
        return
    path = Path(lock_path)
    key = str(path.resolve())
    if key in _held:
        raise OutputLocked(f"{what} is already being written by this process (pid {os.getpid()}): one run at a "
                           f"time per output (lock file {path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():  # never truncate what a link points at
        raise OutputLocked(f"{what}: the lock file {path} is a symbolic link; refusing to open it (remove it if it "
                           "is yours: a run creates its own)")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise OutputLocked(f"{what}: cannot open the lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = json.loads(os.read(fd, 4096).decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            holder = {}
        os.close(fd)
        pid = holder.get("pid", "unknown: it is just starting")
        since = f", since {holder['started']}" if holder.get("started") else ""
        command = f": {holder['command']}" if holder.get("command") else ""
        raise OutputLocked(f"{what} is being written by another run (pid {pid}{since}{command}). Wait for it to "
                           f"end, or give this run another output. (Lock file {path}; a lock is released when "
                           "its process ends, so a killed run never blocks.)") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "command": redact(" ".join(sys.argv))[:300]}).encode(), 0)
        _held.add(key)
        yield
    finally:
        _held.discard(key)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPolicy:
    """What one run of a command hands, explicitly, to every resumable loop and endpoint it makes.

    ``deadline``: the run's time bound (``--max_total_seconds``; :class:`~handbook.core.deadline.Deadline`), given
    to :class:`ResumableCalls` (no batch past it) and to the run's endpoints (``build_backend(spec,
    deadline=...)``). ``allow_reuse`` (``--allow_cache_reuse``): a cache whose ``meta`` differs from the run's is
    reused instead of refused (its header takes the run's ``meta``, the old one kept under ``reused_from``; a
    warning names what changed), for a producer known to be the same under another identity: the same weights
    copied to another folder, the same server at another address. The default, ``RunPolicy()``: no bound, no
    reuse — what a notebook cell or a test gets unless it says otherwise."""

    deadline: Deadline | None = None
    allow_reuse: bool = False


@contextlib.contextmanager
def guarded_run(lock_path: str | os.PathLike, what: str, max_total_seconds: float | None = None,
                allow_reuse: bool = False) -> Iterator[RunPolicy]:
    """One run of an entry point that writes an output (``dsft_data``, ``aif generate``, ``evaluate``): the output's
    lock held (:func:`exclusive_lock` on ``lock_path``; ``what`` names the output to a second run) while the body
    runs, which gets the run's :class:`RunPolicy` — its deadline starts now — to pass on."""
    policy = RunPolicy(Deadline.after(max_total_seconds), allow_reuse)
    with exclusive_lock(lock_path, what):
        yield policy


def _flatten(value, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for k in sorted(value, key=str):
            name = f'{prefix}["{k}"]' if "." in str(k) or " " in str(k) else (f"{prefix}.{k}" if prefix else str(k))
            yield from _flatten(value[k], name)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


_ABSENT = object()


def meta_diff(old: Any, new: Any, limit: int = 20) -> list[str]:
    """What differs between two metas, one line per field: ``judge.noise: 0.1 in the cache, 0.9 now``."""
    before, after = dict(_flatten(old)), dict(_flatten(new))

    def show(v):
        if v is _ABSENT:
            return "absent"
        text = json.dumps(v, ensure_ascii=False)
        return text if len(text) <= 80 else text[:77] + "..."

    lines = [f"{field or '(meta)'}: {show(before.get(field, _ABSENT))} in the cache, {show(after.get(field, _ABSENT))} now"
             for field in dict.fromkeys([*before, *after]) if before.get(field, _ABSENT) != after.get(field, _ABSENT)]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


class CallCache:
    """The cache file of :class:`ResumableCalls` (rules in the module docstring): ``records`` keyed by
    the tuple of ``key_fields`` of each record. Holds the file's lock until :meth:`close`."""

    def __init__(self, path: str | os.PathLike, meta: dict, key_fields: Sequence[str], reuse: bool = False):
        self.path = Path(path)
        self.meta = json.loads(json.dumps(meta))  # as it will read back
        self.key_fields = tuple(key_fields)
        self.records: dict[tuple, dict] = {}
        self.reuse = reuse
        from .distributed import is_main_process

        self._lock = contextlib.ExitStack()
        self._lock.enter_context(exclusive_lock(self.path.with_name(self.path.name + ".lock"), f"the cache {self.path}"))
        try:
            if self.path.exists() and self.path.stat().st_size > 0:
                self._load()
            elif is_main_process():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("w", encoding="utf-8") as f:
                    f.write(json.dumps({"meta": self.meta}, sort_keys=True) + "\n")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the cache's lock."""
        self._lock.close()

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
        try:
            header = json.loads(complete[0])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}, line 1: corrupt cache header ({exc})") from None
        if header.get("meta") != self.meta:
            changes = "\n  ".join(meta_diff(header.get("meta"), self.meta))
            if not self.reuse:
                raise CacheMismatch(
                    f"{self.path} was written with different arguments or by another producer, so its results "
                    f"are not this run's. What changed:\n  {changes}\n"
                    f"To start over, delete {self.path} (or give this run another output_dir / cache path); to "
                    "reuse its results deliberately anyway (the same weights copied elsewhere, the same server at "
                    "another address), rerun with --allow_cache_reuse (in code: "
                    "policy=RunPolicy(allow_reuse=True)).")
            logger.warning("%s: reusing results made with other arguments or by another producer (allowed): %s",
                           self.path, changes.replace("\n  ", "; "))
            reused = [*header.get("reused_from", []), {"meta": header.get("meta"), "until": time.strftime("%Y-%m-%d %H:%M:%S")}]
            from .distributed import is_main_process

            if is_main_process():
                tmp = self.path.with_name(self.path.name + ".tmp")
                with tmp.open("wb") as f:
                    f.write(json.dumps({"meta": self.meta, "reused_from": reused}, sort_keys=True).encode() + b"\n")
                    f.write(b"".join(line + b"\n" for line in complete[1:]))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
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
                 desc: str = "", progress: bool = True, policy: RunPolicy = RunPolicy()):
        self.key_fields = tuple(key_fields)
        self.desc = desc
        self.deadline = policy.deadline
        self.cache = (CallCache(cache_path, meta, self.key_fields, reuse=policy.allow_reuse)
                      if cache_path is not None else None)
        self.results: dict[tuple, dict] = self.cache.records if self.cache is not None else {}
        self.bar = tqdm(total=total, desc=desc, disable=not progress, initial=len(self.results))

    def __enter__(self) -> "ResumableCalls":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()
        if self.cache is not None:
            self.cache.close()

    def __contains__(self, key: tuple) -> bool:
        return key in self.results

    def run(self, items: Iterable[tuple[tuple, Any]], call: Callable[[list], Sequence[dict]],
            batch_size: int | None = None) -> list[dict]:
        """Make the calls of ``items`` not finished yet, ``batch_size`` payloads per ``call``; each
        batch's records are stored durably before the next batch. Returns the records of ``items``, or raises
        :class:`CallsFailed` when any call failed (see the module docstring), after every batch it could make."""
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
        failed: list[tuple[tuple, BaseException]] = []
        stopped, not_attempted = "", 0
        for start in range(0, len(pending), size):
            if self.deadline is not None and self.deadline.passed():
                stopped, not_attempted = self.deadline.message(), len(pending) - start
                break
            batch = pending[start:start + size]
            try:
                replies = list(call([payload for _, payload in batch]))
            except TransportError as exc:  # the whole batch got no reply
                replies = [exc] * len(batch)
            if len(replies) != len(batch):
                raise ValueError(f"call returned {len(replies)} results for a batch of {len(batch)}")
            records = []
            for (key, _), reply in zip(batch, replies):
                if isinstance(reply, BaseException):
                    failed.append((key, reply))
                else:
                    records.append(self._record(key, reply))
            self._store(records)
            if not records:
                stopped = (self.deadline.message() if self.deadline is not None and self.deadline.passed()
                           else f"every call of a batch of {len(batch)} failed")
                not_attempted = len(pending) - start - len(batch)
                break
        if failed or stopped:
            raise self._failure(failed, stopped, not_attempted, len(pending))
        return [self.results[key] for key in keys]

    def _failure(self, failed, stopped: str, not_attempted: int, asked: int) -> CallsFailed:
        where = f"{self.desc}: " if self.desc else ""
        first = failed[0][1] if failed else None
        field_values = ", ".join(f"{f}={v!r}" for f, v in zip(self.key_fields, failed[0][0])) if failed else ""
        stop = f"; stopped early ({stopped}), {not_attempted} call(s) not attempted" if stopped else ""
        cache = f" in {self.cache.path}" if self.cache is not None else ""
        message = (f"{where}{len(failed)} of {asked} call(s) failed and were not recorded{stop}. What finished is "
                   f"kept{cache}; a rerun makes exactly the {len(failed) + not_attempted} call(s) not recorded.")
        if first is not None:
            message += f" First error ({field_values}): {first}"
        return CallsFailed(message, len(failed), not_attempted, first)

    def _record(self, key: tuple, reply: dict) -> dict:
        missing = {}
        for field, value in zip(self.key_fields, key):
            if field not in reply:
                missing[field] = value
            elif reply[field] != value:
                raise ValueError(f"call returned {field}={reply[field]!r} for the call keyed {field}={value!r}")
        return {**missing, **reply}

    def _store(self, records: list[dict]) -> None:
        if not records:
            return
        if self.cache is not None:
            self.cache.append(records)  # also fills self.results, the same dict
        else:
            for record in records:
                self.results[tuple(record[f] for f in self.key_fields)] = record
        self.bar.update(len(records))
