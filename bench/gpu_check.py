"""The GPU check: the handbook's own dSFT and dDPO entry points on the Zephyr recipes, and the notebooks at
``tier=small``, measured — steady-state real tokens/s, MFU and peak memory per stage, into one JSON.

    python bench/gpu_check.py --out bench/results/gpu_check.json                 # on a GPU: ~1B model
    python bench/gpu_check.py --size tiny --steps 2 --warmup 1 --no-notebooks    # CPU smoke test (CI)

Only the model and the data are swapped, as in ``tests/test_recipes.py``: the model is a random-init
Mistral-architecture model (``--size 1b``: hidden 2048, 20 layers, MLP 5632, 16 heads, 8 KV heads — about
0.97 B non-embedding parameters; ``tiny`` for the CPU), saved to disk with the toy tokenizer; the data are
synthetic (``handbook.tools.synthetic``): dialogues with ultrachat_200k's schema and a lognormal length
spread (mean ``--sft-mean-tokens``, CV 0.6) and triples with ultrafeedback_binarized's schema (prompt ~48,
replies ~``--dpo-mean-tokens`` tokens, CV 0.6), under the recipes' split names. Each stage runs the recipe
through ``handbook.core.configs.parse_config`` and ``handbook.sft.train`` / ``handbook.dpo.train`` — what
``python -m handbook.sft`` / ``dpo`` run — for ``--steps`` optimizer steps (global batch = one device
batch: ``--global_batch_size`` = the recipe's per-device batch, so a step is one forward/backward; the
recipe's per-token work is unchanged), no evaluation, no checkpoints.

Measured per stage: a callback times every optimizer step (CUDA synchronised) and a forward hook counts the
tokens the model processed and the real (non-pad) ones (``handbook.tools.measure.TokenCounter``); steady
state = the steps after ``--warmup``. MFU = 6·N·real tokens/s / peak bf16 FLOP/s, N = parameters except the
input embedding table (dDPO with the recipes' precomputed reference: the step is the policy's 6N; the
reference pass before training, 2N per token once, falls in ``seconds_outside_steps`` with loading and
tokenizing).
Peak memory: CUDA's allocator peak (``handbook.tools.measure.PeakMemory``; resident set size on a CPU).
With ``--notebooks`` the tutorial runs at ``tier=small`` (``handbook.tutorial``) and its seconds per
notebook are recorded too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

try:
    import handbook  # noqa: F401
except ImportError:  # run from a checkout without an install (the GPU machine)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = {
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=20, num_attention_heads=16,
               num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
}
PEAK_TFLOPS = [("H200", 989.0), ("H100 SXM", 989.0), ("H100 80GB HBM3", 989.0), ("H100 PCIe", 756.0),
               ("H100", 989.0), ("A100", 312.0)]
RECIPES = {"sft": "zephyr-7b-beta/sft/config_full.yaml", "dpo": "zephyr-7b-beta/dpo/config_full.yaml"}


def peak_tflops() -> tuple[float | None, str]:
    import torch

    if not torch.cuda.is_available():
        return None, "no CUDA device"
    name = torch.cuda.get_device_name()
    return next(((t, name) for key, t in PEAK_TFLOPS if key in name), (None, name))


def build_inputs(root: Path, size: str, sft_rows: int, pairs: int, sft_mean: int, dpo_mean: int, max_length: int):
    """The random-init model and the synthetic datasets, saved where the recipes' keys can point."""
    from datasets import DatasetDict

    from handbook.tools.synthetic import random_mistral, synthetic_dialogues, synthetic_pairs
    from handbook.toy.build import toy_base_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_base_path())
    model = random_mistral(root / "model", tokenizer, {**SIZES[size]}, seed=0)
    n_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    dialogues = synthetic_dialogues(tokenizer, sft_rows, mean_tokens=sft_mean, max_length=max_length, seed=0)
    held_out = synthetic_dialogues(tokenizer, 2, mean_tokens=sft_mean, max_length=max_length, seed=1)  # not train rows
    DatasetDict(train_sft=dialogues, test_sft=held_out).save_to_disk(str(root / "sft_data"))

    def triple(row):
        prompt = row["prompt"][0]["content"]
        return {"prompt": prompt, "chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}

    triples, held_out = (synthetic_pairs(tokenizer, n, completion_mean=dpo_mean, max_length=max_length // 2, seed=seed)
                         for n, seed in ((pairs, 0), (2, 1)))
    triples, held_out = (d.map(triple, remove_columns=d.column_names) for d in (triples, held_out))
    DatasetDict(train_prefs=triples, test_prefs=held_out).save_to_disk(str(root / "dpo_data"))
    return n_params


class Measure(TrainerCallback):
    """Times every optimizer step (CUDA synchronised) and counts the tokens its forwards processed."""

    def __init__(self):
        self.steps: list[dict] = []
        self.counter = None

    @staticmethod
    def _sync():
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from handbook.tools.measure import TokenCounter

        self.counter = TokenCounter(model)

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start, self._seen = time.perf_counter(), self.counter.snapshot()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        now = self.counter.snapshot()
        self.steps.append({"seconds": time.perf_counter() - self._start, "real": now["real"] - self._seen["real"],
                           "processed": now["processed"] - self._seen["processed"]})


def run_stage(stage: str, root: Path, n_params: int, steps: int, warmup: int, peak: float | None) -> dict:
    import torch
    from trl import DPOConfig, SFTConfig

    import handbook.dpo
    import handbook.sft
    from handbook.core.configs import load_yaml, parse_config, recipe_path
    from handbook.core.models import ModelArguments
    from handbook.tools.measure import PeakMemory

    recipe = recipe_path(RECIPES[stage])
    per_device = load_yaml(recipe)["per_device_train_batch_size"]
    types = ([ModelArguments, handbook.sft.SFTDataArguments, SFTConfig] if stage == "sft"
             else [ModelArguments, handbook.dpo.DPODataArguments, DPOConfig])
    configs = parse_config(types, [
        "--config", str(recipe), "--model_name_or_path", str(root / "model"),
        "--dataset_name", str(root / f"{stage}_data"), "--output_dir", str(root / f"{stage}_out"),
        "--max_steps", str(steps), "--global_batch_size", str(per_device), "--eval_strategy", "no",
        "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1"])
    train = handbook.sft.train if stage == "sft" else handbook.dpo.train
    measure = Measure()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        trainer = train(*configs, callbacks=[measure])
    total = time.perf_counter() - start
    measured = measure.steps[warmup:]
    seconds = sum(s["seconds"] for s in measured)
    real = sum(s["real"] for s in measured)
    processed = sum(s["processed"] for s in measured)
    tokens_per_s = real / seconds if seconds else 0.0
    row = {"stage": stage, "recipe": RECIPES[stage], "steps": trainer.state.global_step, "measured_steps": len(measured),
           "step_seconds_median": round(statistics.median(s["seconds"] for s in measured), 4) if measured else None,
           "real_tokens_per_s": round(tokens_per_s, 1), "real_token_share": round(real / processed, 4) if processed else None,
           "non_embedding_parameters": n_params, "flops_per_token": "6N",
           "mfu": round(6 * n_params * tokens_per_s / (peak * 1e12), 4) if peak else None,
           "peak_memory_gb": round(memory.peak_bytes / 1e9, 3), "wall_seconds": round(total, 1)}
    # loading, tokenizing and (dDPO) the forward-only reference pass: everything but the optimizer steps
    row["seconds_outside_steps"] = round(total - sum(s["seconds"] for s in measure.steps), 1)
    return row


def run_notebooks(runs_dir: Path, parameters: dict) -> dict:
    from handbook.tutorial import run_tutorial

    _, summary = run_tutorial(runs_dir, parameters=parameters)
    return {name: entry["seconds"] for name, entry in summary["notebooks"].items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--sft-rows", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--sft-mean-tokens", type=int, default=1470)
    parser.add_argument("--dpo-mean-tokens", type=int, default=420)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--notebooks", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the notebooks at tier=small")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    from handbook.tools.measure import format_table, write_results
    from handbook.tutorial import SMALL_SMOKE_PARAMETERS

    peak, device_name = peak_tflops()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_params = build_inputs(root, args.size, args.sft_rows, args.pairs, args.sft_mean_tokens,
                                args.dpo_mean_tokens, args.max_length)
        rows = [run_stage(stage, root, n_params, args.steps, args.warmup, peak) for stage in ("sft", "dpo")]
        notebooks = run_notebooks(root / "runs", SMALL_SMOKE_PARAMETERS) if args.notebooks else None
    print(format_table(rows))
    if notebooks:
        print(json.dumps({"notebooks_small_tier_seconds": notebooks}, indent=2))
    write_results(args.out, {"device": device_name, "peak_bf16_tflops": peak, "size": args.size,
                             "date": time.strftime("%Y-%m-%d"), "stages": rows,
                             "notebooks_small_tier_seconds": notebooks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
