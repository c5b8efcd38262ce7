"""Measuring a training run: real vs processed tokens, peak memory, and plain-text tables.

Used by the benchmarks in ``bench/`` and by the tests that check them.

* :class:`TokenCounter` hooks a model's forward and adds up, call by call, the tokens it was given
  (``input_ids.numel()``) and the real ones among them (``attention_mask.sum()``; without a mask,
  as in padding-free packing, every token is real).
* :class:`PeakMemory` samples the process's resident memory in a background thread (CPU), or reads
  the CUDA allocator's peak, over a ``with`` block, and reports the peak above the level at entry.
* :func:`format_table` prints a list of dicts as aligned columns; :func:`write_results` saves JSON.
"""

from __future__ import annotations

import threading
import time


class TokenCounter:
    """Count real and processed tokens in every forward call of ``model`` (until :meth:`remove`)."""

    def __init__(self, model):
        self.real = 0
        self.processed = 0
        self.calls = 0
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            return
        mask = kwargs.get("attention_mask")
        self.calls += 1
        self.processed += int(input_ids.numel())
        self.real += int(mask.sum()) if mask is not None else int(input_ids.numel())

    @property
    def share(self) -> float:
        """Real tokens as a share of processed ones (1.0 when nothing ran)."""
        return self.real / self.processed if self.processed else 1.0

    def snapshot(self) -> dict:
        return {"real": self.real, "processed": self.processed, "calls": self.calls}

    def remove(self) -> None:
        self._handle.remove()


class PeakMemory:
    """Peak memory above the level at entry, in bytes, over a ``with`` block (``.peak_bytes`` after).

    On CUDA: ``torch.cuda.max_memory_allocated`` after a reset. On the CPU: the resident set size,
    sampled every ``interval`` seconds (a peak shorter than that can be missed; memory freed by an
    earlier run but kept by the allocator lowers what a later run appears to add).
    """

    def __init__(self, device: str = "cpu", interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            import gc

            import psutil

            gc.collect()
            _release_freed_memory()
            self._process = psutil.Process()
            self._start = self._process.memory_info().rss
            self._max = self._start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._start
        else:
            self._stop.set()
            self._thread.join()
            self._max = max(self._max, self._process.memory_info().rss)
            self.peak_bytes = self._max - self._start
        return False


def write_results(path, results: dict) -> None:
    """Write ``results`` as indented JSON to ``path`` (parents created; replaced atomically)."""
    import json
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _release_freed_memory() -> None:
    """Hand memory that earlier work freed back to the OS (glibc), so it is not hidden from the next peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def format_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".3g") -> str:
    """Rows of dicts → an aligned plain-text table (numbers right-aligned)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))

    def fmt(value):
        if isinstance(value, float):
            return format(value, floatfmt)
        return "" if value is None else str(value)

    cells = [[fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) for c in columns]
    line = lambda values: "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])
