"""Small helpers notebooks share: where outputs go, the metrics each notebook records, and the local
models a notebook answers with.

Each notebook writes ``metrics.json`` into its ``output_dir``: the values it asserts. The
tutorial runner gathers them into ``summary.json`` and the papermill tests assert on them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

METRICS_FILE = "metrics.json"


def prepare_output_dir(output_dir: str | Path) -> Path:
    path = Path(output_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def quiet_libraries() -> None:
    """Keep a notebook's output to what it teaches: no per-``map`` progress bars from ``datasets`` (a notebook
    that tokenizes a dozen small datasets shows a dozen bars, saved at 0 % by papermill), no weight-loading bars
    and info logs from ``transformers``, and no library deprecation warnings. Errors still show, and the handbook's
    own long steps (generation, ratings, MT-Bench) keep their progress bars."""
    import logging
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("transformers", "trl", "datasets", "accelerate", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|trl|datasets|accelerate|peft|torch)\.")


def record_metrics(output_dir: str | Path, **metrics) -> dict:
    """Merge ``metrics`` into ``output_dir/metrics.json`` and return the whole record.

    Values must be JSON numbers, strings, booleans or lists/dicts of them; NaN and infinity are
    refused, since a metric that is not a number should fail loudly, not turn into ``null``.
    """
    path = prepare_output_dir(output_dir) / METRICS_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {key!r} is {value}")
        if hasattr(value, "item"):  # numpy / torch scalars
            value = value.item()
        record[key] = value
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_metrics(output_dir: str | Path) -> dict:
    path = Path(output_dir) / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the notebook recorded no metrics")
    return json.loads(path.read_text())


class LocalModels(Mapping):
    """Named local models as chat backends (``handbook.tiers.model_backend``), each loaded on first use and,
    with ``keep``, kept for later cells (a notebook that asks the same models twice loads them once; pass
    ``keep=False`` where they do not fit in memory together, e.g. 7B models). A mapping name → backend whose
    ``items()`` loads one model at a time, so a loop over it (``run_models``) never holds two unkept models."""

    def __init__(self, paths: dict[str, str], keep: bool = True, batch_size: int = 32):
        self.paths, self.keep, self.batch_size = dict(paths), keep, batch_size
        self._loaded: dict = {}

    def __getitem__(self, name: str):
        if name in self._loaded:
            return self._loaded[name]
        from .tiers import model_backend

        backend = model_backend(self.paths[name], self.batch_size, label=name)
        if self.keep:
            self._loaded[name] = backend
        return backend

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __contains__(self, name) -> bool:   # without loading it
        return name in self.paths
