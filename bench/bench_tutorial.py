"""The whole toy tutorial (every notebook, through papermill), timed, with where the time goes.

    python bench/bench_tutorial.py                  # ~1.3 min on 2 CPU cores once the toy caches exist

Runs ``handbook.tutorial`` (what ``make tutorial`` runs) and breaks each notebook's wall time into
its cells (papermill records every cell's duration in the executed notebook) and the rest — kernel
start, imports before the first cell, papermill's own work. The slowest cells are where to cut.
The first run on a machine also builds the toy base and trains the cached toy students (~1.5 min
once); ``--cold`` points the cache at an empty directory to time that case.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

GOAL_SECONDS = 90   # warm (toy caches built), on 2 CPU cores


def cell_profile(executed_notebook: Path) -> list[dict]:
    """Per code cell of an executed notebook: its duration (papermill's metadata) and first line."""
    nb = json.loads(Path(executed_notebook).read_text())
    cells = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        duration = (cell.get("metadata", {}).get("papermill") or {}).get("duration")
        source = "".join(cell["source"]).strip().splitlines()
        first = next((line for line in source if line and not line.startswith(("#", "from ", "import "))),
                     source[0] if source else "")
        imports = sum(line.startswith(("from ", "import ")) for line in source)
        label = f"[{imports} imports] {first}" if imports >= 3 else first
        cells.append({"cell": index, "seconds": float(duration or 0.0), "code": label[:70]})
    return cells


def run(runs_dir: Path | None = None, cold: bool = False, top: int = 8, verbose: bool = True) -> dict:
    from handbook.tools.measure import format_table
    from handbook.tutorial import run_tutorial

    with tempfile.TemporaryDirectory() as tmp:
        if cold:
            os.environ["HANDBOOK_CACHE"] = str(Path(tmp) / "cache")
        run_dir, summary = run_tutorial(Path(runs_dir or Path(tmp) / "runs"))
        notebooks = {}
        all_cells = []
        for name, entry in summary["notebooks"].items():
            cells = cell_profile(run_dir / name / f"{name}.ipynb")
            in_cells = sum(c["seconds"] for c in cells)
            notebooks[name] = {"seconds": entry["seconds"], "cells_seconds": round(in_cells, 2),
                               "overhead_seconds": round(entry["seconds"] - in_cells, 2)}
            all_cells += [{"notebook": name, **c} for c in cells]
    slowest = sorted(all_cells, key=lambda c: -c["seconds"])[:top]
    result = {"tutorial_seconds": summary["total_seconds"], "goal_seconds": GOAL_SECONDS,
              "cold_cache": cold, "notebooks": notebooks, "slowest_cells": slowest}
    if verbose:
        print(format_table([{"notebook": n, **v} for n, v in notebooks.items()]))
        print(f"total {summary['total_seconds']:.1f} s (goal ≤ {GOAL_SECONDS} s warm)\n\nslowest cells:")
        print(format_table(slowest, ["notebook", "cell", "seconds", "code"]))
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the executed notebooks here")
    parser.add_argument("--cold", action="store_true", help="start from an empty toy cache (builds everything)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = run(args.runs_dir, args.cold)
    if args.out:
        from handbook.tools.measure import write_results

        write_results(args.out, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
