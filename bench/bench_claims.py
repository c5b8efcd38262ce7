"""The toy notebooks' claims, measured over training seeds, data seeds and CPU kernels.

    python bench/bench_claims.py                         # 5 seeds x 2 data seeds x every kernel here (~75 min on 2 cores)
    python bench/bench_claims.py --kernels avx2 --seeds 0 --data-seeds 0     # one run
    python bench/bench_claims.py --write-package         # also write handbook/toy/claims_measured.json (the thresholds)

Every run executes notebooks 01-05 through the tutorial runner — the code and the notebooks that ship, at their
defaults — in a fresh process with ``ATEN_CPU_CAPABILITY=<kernel>`` (PyTorch's CPU kernels: ``default``, ``avx2``,
``avx512``; a kernel the CPU cannot run is skipped, as torch reports) and ``-p seed=S -p data_seed=D -p
reuse_cached_student=false -p check_claims=false`` (notebook 02 trains its student under that kernel instead of
reusing the cached one; the notebooks record their claims' values without asserting the thresholds being measured). Notebook 03 (scripted Python, no training) also runs alone for the extra data seeds, since its claims vary
with the data only. Each claim of ``handbook.toy.claims`` is then summarised (n, mean, sd, min, max) and judged
robust or not (its threshold, mean -/+ 4 sd, on the claim's side of its floor; its worst run clearing the floor
by the claim's margin).

Results go to ``bench/results/claims.json`` after every run, with a fingerprint of the code and notebooks: a rerun
with the same fingerprint skips the runs already there (an interrupted measurement resumes), another fingerprint
starts over. ``--write-package`` writes the summary that the notebooks' assertions read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "claims.json"
NOTEBOOKS = ["01", "02", "03", "04", "05"]
KERNELS = ["default", "avx2", "avx512"]


def fingerprint() -> str:
    """What the measurement depends on, and nothing else: the package's code with its comments and docstrings
    left out (its syntax tree), its recipes as data (YAML comments left out) and the notebooks' code cells (their
    prose and outputs change no result)."""
    import yaml

    digest = hashlib.sha256()
    for path in sorted(p for p in (ROOT / "handbook").rglob("*") if p.suffix in (".py", ".yaml")
                       and "__pycache__" not in p.parts):
        text = path.read_text(encoding="utf-8")
        body = _code_tree(text) if path.suffix == ".py" else json.dumps(yaml.safe_load(text), sort_keys=True)
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + body.encode() + b"\0")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        digest.update(path.name.encode() + b"\0" + _code_tree(code).encode() + b"\0")
    return digest.hexdigest()[:16]


def _code_tree(source: str) -> str:
    """Python source as its syntax tree without docstrings: comments, layout and documentation do not count."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def capability(kernel: str) -> str:
    """What torch runs with ``ATEN_CPU_CAPABILITY=kernel`` on this CPU (``AVX512``, ``AVX2``, ``DEFAULT``, ...)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env={**os.environ, "ATEN_CPU_CAPABILITY": kernel}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def run_notebooks(kernel: str, seed: int, data_seed: int, only: list[str], runs_dir: Path) -> dict:
    """One run of ``only`` through ``python -m handbook.tutorial`` under ``kernel``; the notebooks' metrics."""
    params = ["-p", f"seed={seed}", "-p", f"data_seed={data_seed}", "-p", "reuse_cached_student=false",
              "-p", "check_claims=false"]
    env = {**os.environ, "ATEN_CPU_CAPABILITY": kernel, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "handbook.tutorial", "--runs-dir", str(runs_dir), "--only", *only,
                           *params], env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"kernel {kernel}, seed {seed}, data seed {data_seed}: the tutorial failed\n"
                           + proc.stdout[-2000:] + proc.stderr[-4000:])
    (run_dir,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seconds": round(time.perf_counter() - start, 1),
            "notebook_seconds": {n: e["seconds"] for n, e in summary["notebooks"].items()},
            "metrics": {n: e["metrics"] for n, e in summary["notebooks"].items()}}


def summarize(runs: list[dict]) -> dict:
    """Per claim: its distribution, threshold and robustness; per reported value: its distribution."""
    from handbook.toy import claims

    stats = claims.summarize_runs(runs)
    rounded = lambda s: {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}  # noqa: E731
    table = {}
    for c in claims.CLAIMS:
        if c.key not in stats:
            continue
        s = stats[c.key]
        table[c.key] = {**rounded(s), "threshold": claims.threshold(c, s), "floor": c.floor, "side": c.side(),
                        "worst_margin_required": c.worst_margin, "problems": claims.robustness(c, s)}
    return {"claims": table, "reported": {r.key: rounded(stats[r.key]) for r in claims.REPORTED if r.key in stats},
            "by_kernel": by_kernel(runs)}


def by_kernel(runs: list[dict]) -> dict:
    """The central claims' mean and range per CPU kernel: how much the kernels alone move them."""
    from handbook.toy import claims

    out = {}
    for kernel in dict.fromkeys(r["kernel"] for r in runs if len(r["notebooks"]) > 1):
        stats = claims.summarize_runs([r for r in runs if r["kernel"] == kernel and len(r["notebooks"]) > 1])
        out[kernel] = {k: {s: round(stats[k][s], 4) for s in ("n", "mean", "min", "max")}
                       for k in ("ddpo_over_dsft", "mt_ddpo_over_dsft", "dsft_over_base") if k in stats}
    return out


README = ROOT / "README.md"


def write_readme_tables(measured: dict, readme: Path = README) -> None:
    """Replace the README's generated blocks (between their markers) by ``measured``'s: the claims and reported-values
    tables and the toy results of notebooks 03, 04 and 05 (:func:`handbook.toy.claims.readme_results`)."""
    from handbook.toy import claims

    text = readme.read_text(encoding="utf-8")
    blocks = {"claims-table": claims.markdown_table(measured), "reported-table": claims.reported_table(measured),
              **claims.readme_results(measured)}
    for name, table in blocks.items():
        begin, end = f"<!-- {name}:begin (bench/bench_claims.py writes this) -->", f"<!-- {name}:end -->"
        if begin not in text or end not in text:
            raise ValueError(f"{readme}: no {begin} ... {end} block to write the {name} table into")
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1]
    readme.write_text(text, encoding="utf-8")


def format_summary(summary: dict) -> str:
    from handbook.tools.measure import format_table

    rows = [{"claim": k, "n": v["n"], "mean": v["mean"], "sd": v["sd"], "min": v["min"], "max": v["max"],
             "asserted": f"{v['side']}= {v['threshold']:g}", "floor": f"{v['side']} {v['floor']:g}",
             "robust": "yes" if not v["problems"] else "NO"} for k, v in summary["claims"].items()]
    reported = [{"reported": k, **v} for k, v in summary["reported"].items()]
    return format_table(rows) + "\n\n" + format_table(reported)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="training seeds")
    parser.add_argument("--data-seeds", default="0,1", help="data seeds of the full runs")
    parser.add_argument("--extra-data-seeds", default="2,3,4,5,6,7,8,9",
                        help="more data seeds for notebook 03 alone (its claims depend on the data only)")
    parser.add_argument("--kernels", default=",".join(KERNELS), help="ATEN_CPU_CAPABILITY values to measure under")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--from-results", action="store_true",
                        help="run nothing: summarise the runs already in --out (whatever code measured them; its "
                             "fingerprint is kept) and, with --write-package, write them")
    parser.add_argument("--write-package", action="store_true",
                        help="write the summary to handbook/toy/claims_measured.json (the notebooks' thresholds) and "
                             "the README's tables")
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    from handbook.tools.measure import write_results
    from handbook.toy import claims

    ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    seeds, data_seeds, extra = ints(args.seeds), ints(args.data_seeds), ints(args.extra_data_seeds)
    kernels, skipped = {}, {}
    for k in ([] if args.from_results else args.kernels.split(",")):
        got = capability(k)
        (kernels if got.lower() == k.lower() else skipped)[k] = got
    for k, got in skipped.items():
        print(f"kernel {k}: not on this CPU (torch runs {got} instead); skipped", flush=True)
    fp = fingerprint()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.from_results:
        if not previous.get("runs"):
            raise SystemExit(f"{args.out}: no runs to summarise")
        if previous["fingerprint"] != fp:
            print(f"note: {args.out} was measured with code of fingerprint {previous['fingerprint']}; the code here "
                  f"is {fp}")
        fp, kernels, skipped = previous["fingerprint"], previous["machine"]["kernels"], previous["machine"]["skipped_kernels"]
        seeds, data_seeds, extra = (previous["setup"][k] for k in ("seeds", "data_seeds", "extra_data_seeds"))
    runs = previous.get("runs", []) if previous.get("fingerprint") == fp else []
    if previous and not runs:
        print(f"{args.out}: measured with other code (fingerprint {previous.get('fingerprint')}, now {fp}): starting over")
    plan = [(k, s, d, NOTEBOOKS) for k in kernels for d in data_seeds for s in seeds]
    plan += [(next(iter(kernels)), 0, d, ["03"]) for d in extra if d not in data_seeds]
    done = {(r["kernel"], r["seed"], r["data_seed"], tuple(r["notebooks"])) for r in runs}
    todo = [] if args.from_results else [p for p in plan if (p[0], p[1], p[2], tuple(p[3])) not in done]
    print(f"{len(plan)} runs planned, {len(plan) - len(todo)} already measured (fingerprint {fp})", flush=True)
    machine = {"cpu": _cpu_name(), "cores": os.cpu_count(), "flags": cpu_flags(), "kernels": kernels,
               "skipped_kernels": skipped}
    result = {"fingerprint": fp,
              "date": previous["date"] if args.from_results else datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": previous["machine"] if args.from_results else machine,
              "setup": {"seeds": seeds, "data_seeds": data_seeds, "extra_data_seeds": extra,
                        "kernels": list(kernels)}, "runs": runs}
    for kernel, seed, data_seed, only in tqdm(todo, desc="claim runs", unit="run"):
        with tempfile.TemporaryDirectory() as tmp:
            run = run_notebooks(kernel, seed, data_seed, only, Path(tmp))
        runs.append({"kernel": kernel, "capability": kernels[kernel], "seed": seed, "data_seed": data_seed,
                     "notebooks": list(only), **run})
        result["summary"] = summarize(runs)
        write_results(args.out, result)
        values = {c.key: round(c.value(run["metrics"][c.notebook]), 3) for c in claims.CLAIMS
                  if c.notebook in run["metrics"] and c.notebook != "03_aif_preferences"}
        tqdm.write(f"{kernel} seed {seed} data seed {data_seed}: {run['seconds']} s {values}")
    result["summary"] = summarize(runs)
    write_results(args.out, result)
    print(format_summary(result["summary"]))
    fragile = {k: v["problems"] for k, v in result["summary"]["claims"].items() if v["problems"]}
    for problems in fragile.values():
        for p in problems:
            print("NOT ROBUST:", p)
    if args.write_package:
        stats = claims.summarize_runs(runs)   # full precision: the thresholds are computed from these
        n_full = sum(len(r["notebooks"]) > 1 for r in runs)
        description = (f"{n_full} runs of notebooks 01-05: training seeds {seeds} x data seeds {data_seeds} x CPU "
                       f"kernels {list(kernels)}; notebook 03 also for data seeds {extra}; {result['date'][:10]}")
        package = {"setup": {"description": description, **result["setup"], "cpu_flags_avx512":
                             any(f.startswith("avx512") for f in result["machine"]["flags"]),
                             "fingerprint": fp, "date": result["date"]},
                   "claims": {c.key: stats[c.key] for c in claims.CLAIMS if c.key in stats},
                   "reported": {r.key: stats[r.key] for r in claims.REPORTED if r.key in stats}}
        write_results(claims.MEASURED_FILE, package)
        write_readme_tables(package)
        print(f"wrote {claims.MEASURED_FILE} and the tables in {README}")
    return 1 if fragile else 0


if __name__ == "__main__":
    sys.exit(main())
