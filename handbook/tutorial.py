"""Execute every notebook with papermill (at toy size by default) and summarise what each stage achieved.

    python -m handbook.tutorial [--runs-dir runs] [--only 00] [-p key=value ...]
    python -m handbook.tutorial -p tier=small -p max_steps=2 -p max_length=128 -p batch_size=2 ...

Each notebook runs into ``runs/<timestamp>/<notebook>/`` (the executed notebook, its figures and
its ``metrics.json``); the notebooks of one run are sibling folders, so a later notebook finds an earlier
one's output (``handbook.tiers.previous_output``). ``runs/<timestamp>/summary.json`` collects ``{"total_seconds":
..., "parameters": {...}, "notebooks": {"<name>": {"seconds": ..., "tier": ..., "metrics": {...}}}}``.
Every ``-p`` goes to every notebook (papermill injects it; a notebook without that parameter ignores it), so the
notebooks share parameter names: ``tier``, ``max_steps``, ``max_length``, ``batch_size``, ``max_samples``,
``max_new_tokens``, ``n_per_category``, ``prompts_per_category``, ``eval_prompts_per_category``, ``betas``, the
endpoints' ``teacher_base_url`` / ``judge_base_url`` (and ``_model``), ``questions_path``; ``seed`` (the training
seed of 02, 04, 05), ``data_seed`` (the data's draw in 01, 03, 04; 0 is the recipes' data) and ``check_claims``
(02-05 assert the toy claims at their measured thresholds: ``handbook.toy.claims``).
``make tutorial`` calls this; the papermill tests call ``run_notebook``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from .core.runner import reported_errors
from .notebook import read_metrics

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


# The small tier at smoke-test sizes: SmolLM2's real weights, two optimizer steps, one prompt per category —
# what CI runs (tests/test_notebooks_small.py, ~4 min on 2 CPU cores) and the GPU check repeats.
# Every notebook gets every key; one without that parameter ignores it.
SMALL_SMOKE_PARAMETERS = {"tier": "small", "max_steps": 2, "max_length": 128, "batch_size": 2, "max_new_tokens": 16,
                          "n_per_category": 1, "prompts_per_category": 1, "eval_prompts_per_category": 1,
                          "betas": [0.1]}


def discover_notebooks(notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks (``NN_*.ipynb``) in order."""
    found = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks in {notebooks_dir}")
    return found


def run_notebook(notebook: Path, output_dir: Path, parameters: dict | None = None,
                 progress_bar: bool = False) -> tuple[float, dict]:
    """Execute ``notebook`` with papermill into ``output_dir``; return (seconds, metrics).

    The notebook receives ``output_dir`` (plus ``parameters``) and must write its
    ``metrics.json`` there. A failing cell raises papermill's ``PapermillExecutionError``.
    """
    import papermill as pm

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    params = {"output_dir": str(output_dir), **(parameters or {})}
    start = time.perf_counter()
    pm.execute_notebook(
        str(notebook),
        str(output_dir / notebook.name),
        parameters=params,
        cwd=str(Path(notebook).resolve().parent),
        progress_bar=progress_bar,
        kernel_name="python3",
        # Every cell has finished and its outputs are in the notebook; a graceful shutdown would then wait 1.5–2 s
        # per notebook for the kernel's own teardown of torch and transformers. Nothing in the notebooks needs it:
        # they close their files in their cells, their locks are fcntl locks (released when the process dies), and
        # the kill reaches the kernel's process group, so a server a cell started and left running goes with it.
        shutdown_kernel="immediate",
    )
    seconds = time.perf_counter() - start
    return seconds, read_metrics(output_dir)


def run_tutorial(runs_dir: Path, only: list[str] | None = None, parameters: dict | None = None,
                 notebooks_dir: Path = NOTEBOOKS_DIR) -> tuple[Path, dict]:
    run_dir = Path(runs_dir) / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=False)
    notebooks = [nb for nb in discover_notebooks(notebooks_dir)
                 if not only or any(nb.stem.startswith(o) for o in only)]
    summary = {"total_seconds": 0.0, "parameters": dict(parameters or {}), "notebooks": {}}
    start = time.perf_counter()
    for nb in notebooks:
        print(f"▶ {nb.name}", flush=True)
        seconds, metrics = run_notebook(nb, run_dir / nb.stem, parameters, progress_bar=True)
        tier = metrics.get("tier", (parameters or {}).get("tier", "toy"))  # what the notebook says it ran
        summary["notebooks"][nb.stem] = {"seconds": round(seconds, 2), "tier": tier, "metrics": metrics}
        summary["total_seconds"] = round(time.perf_counter() - start, 2)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir, summary


def format_summary(summary: dict) -> str:
    lines = [f"{'notebook':<34} {'tier':<5} {'seconds':>8}  metrics"]
    for name, entry in summary["notebooks"].items():
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in entry["metrics"].items() if k != "tier")
        lines.append(f"{name:<34} {entry.get('tier', ''):<5} {entry['seconds']:>8.1f}  {metrics}")
    lines.append(f"{'total':<34} {'':<5} {summary['total_seconds']:>8.1f}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _parse_param(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"parameter must be key=value, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=REPO_ROOT / "runs")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 02")
    parser.add_argument("-p", "--parameter", action="append", type=_parse_param, default=[],
                        help="notebook parameter override key=value (JSON values), e.g. -p tier=small")
    args = parser.parse_args(argv)
    run_dir, summary = run_tutorial(args.runs_dir, args.only, dict(args.parameter))
    print()
    print(format_summary(summary))
    print(f"\nexecuted notebooks, figures and summary.json: {run_dir}")
    return 0


if __name__ == "__main__":
    with reported_errors():  # a user's mistake: one `error:` line, exit status 1 (--debug: the traceback)
        sys.exit(main())
