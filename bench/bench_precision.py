"""fp32 master weights vs bf16 weights for the small tier's dSFT: how many updates round away.

    python bench/bench_precision.py            # SmolLM2-135M-Instruct (the offline GGUF), 20 steps, ~3 min on 2 CPU cores

The small-tier recipe once loaded SmolLM2 in bfloat16 *and* trained it so (``dtype: bfloat16``): the
optimizer then adds its update to bf16 weights. bf16 keeps 8 significant bits, so a weight w moves only
if the update is at least about |w|·2⁻⁹; AdamW's update is about the learning rate (2e-5) in size,
below that for most weights of magnitude ~0.01–0.1. This runs the handbook's own SFT path
(``handbook.sft.train``) on the recipe ``recipes/smollm2-135m/sft/config.yaml`` twice, from the same
weights, data and seed, for 20 optimizer steps — ``dtype: float32`` (the recipe now; bf16 is then
autocast only) and ``dtype: bfloat16`` — and measures, per run, the share of weights that did not move
at all, the mean relative change, and the loss. On a GPU the fp32 run also autocasts to bf16; here
(CPU) it computes in fp32, so the comparison isolates the *storage* of the weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def run(dtype: str, steps: int, out: Path, max_length: int, batch: int):
    from trl import SFTConfig

    from handbook.core.configs import read_recipe, recipe_path
    from handbook.core.models import ModelArguments, get_model
    from handbook.sft import SFTDataArguments, train
    from handbook.tiers import resolve_model_args

    model_args, data_args, training_args = read_recipe(
        recipe_path("smollm2-135m/sft/config.yaml"), [ModelArguments, SFTDataArguments, SFTConfig],
        dtype=dtype, dataset_name="toy", toy_prompts_per_category=8, toy_replies_per_prompt=1,
        toy_eval_prompts_per_category=1, toy_data_dir=str(out.parent / "data"), max_train_samples=None,
        max_eval_samples=None, output_dir=str(out), max_steps=steps, max_length=max_length,
        per_device_train_batch_size=batch, global_batch_size=batch, eval_strategy="no", logging_steps=1,
        warmup_steps=0, lr_scheduler_type="constant")
    before = {k: v.detach().float().clone() for k, v in get_model(resolve_model_args(
        ModelArguments(model_name_or_path=model_args.model_name_or_path, dtype=dtype))).named_parameters()}
    start = time.perf_counter()
    trainer = train(model_args, data_args, training_args)
    seconds = time.perf_counter() - start
    after = dict(trainer.model.named_parameters())
    unchanged = total = 0
    rel = []
    for name, w0 in before.items():
        w1 = after[name].detach().float()
        unchanged += int((w1 == w0).sum())
        total += w0.numel()
        rel.append(((w1 - w0).abs().sum() / w0.abs().sum().clamp_min(1e-12)).item())
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"dtype": dtype, "steps": steps, "weights_unchanged_share": round(unchanged / total, 4),
            "mean_relative_change": float(f"{sum(rel) / len(rel):.3g}"), "first_loss": round(losses[0], 4),
            "last_loss": round(losses[-1], 4), "seconds": round(seconds, 1), "parameters": total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precision.json")
    args = parser.parse_args(argv)
    from handbook.tools.measure import format_table, write_results

    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(dtype, args.steps, Path(tmp) / dtype, args.max_length, args.batch)
                for dtype in ("float32", "bfloat16")]
    print(format_table(rows))
    write_results(args.out, {"model": "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised)", "learning_rate": 2e-5,
                             "max_length": args.max_length, "batch": args.batch, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
