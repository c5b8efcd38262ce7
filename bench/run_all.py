"""Every CPU benchmark in one go (``make bench``): results to ``bench/results/latest.json``.

    python bench/run_all.py [--only dpo,sft,generation,tutorial,setup [--update]] [--out bench/results/latest.json]

Runs bench_dpo, bench_sft, bench_generation, bench_tutorial and bench_setup at their defaults (~19 min
on 2 CPU cores) and writes one JSON: the machine it ran on, each benchmark's full results, and the
headline figures at the top level — ``dpo_run_speedup_vs_trl_default``, ``dpo_real_token_share``,
``sft_padding_efficiency_packed``, ``generation_batched_speedup``, ``tutorial_seconds``,
``setup_to_first_notebook_seconds`` and more.
The file is written after every benchmark, so an interrupted run keeps what it measured.
Run nothing else on the machine meanwhile: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HEADLINES = {
    "dpo": ["dpo_run_speedup_vs_trl_default", "dpo_real_token_share", "dpo_run_cpu_speedup_vs_trl_default",
            "dpo_run_speedup_vs_handbook_padded", "dpo_real_token_share_padded", "dpo_step_loss_max_diff_vs_padded",
            "dpo_run_speedup_vs_trl_default_random_batches", "dpo_step_loss_max_diff_random_vs_trl",
            "dpo_headline_size"],
    "sft": ["sft_padding_efficiency_packed", "sft_padding_efficiency_padded", "sft_packed_row_fill",
            "sft_packed_speedup", "sft_headline_size"],
    "generation": ["generation_batched_speedup", "generation_batched_speedup_model", "http_concurrency_speedup"],
    "tutorial": ["tutorial_seconds"],
    "setup": ["setup_to_first_notebook_seconds"],
}


def machine() -> dict:
    import torch
    import transformers
    import trl

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="dpo,sft,generation,tutorial,setup", help="comma-separated benchmarks to run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--update", action="store_true",
                        help="keep the other benchmarks' results already in --out (with --only)")
    args = parser.parse_args(argv)
    import bench_dpo
    import bench_generation
    import bench_setup
    import bench_sft
    import bench_tutorial

    from handbook.tools.measure import write_results

    def generation():
        result = bench_generation.run()
        print(bench_generation.format_tables(result), flush=True)
        return result

    runners = {"dpo": bench_dpo.run, "sft": bench_sft.run, "generation": generation, "tutorial": bench_tutorial.run,
               "setup": bench_setup.run}
    results = {"benchmarks": {}}
    if args.update and args.out.exists():
        results = json.loads(args.out.read_text())
    results.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine=machine(),
                   command="make bench")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        result = runners[name]()
        result["bench_seconds"] = round(time.perf_counter() - start, 1)
        results["benchmarks"][name] = result
        for key in HEADLINES[name]:
            if key in result:
                results[key] = result[key]
        write_results(args.out, results)
    print("\n" + "\n".join(f"{k}: {results[k]}" for k in sum(HEADLINES.values(), []) if k in results))
    print(f"written: {args.out}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
