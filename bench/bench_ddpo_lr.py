"""The toy dDPO recipe's learning rate against seeds: why the toy recipe uses 2e-4, not 5e-4.

    python bench/bench_ddpo_lr.py                                   # lr 5e-4 vs 2e-4, 5 seeds x 2 data seeds (~25 min)
    python bench/bench_ddpo_lr.py --lrs 5e-4 --seeds 0,1 --data-seeds 0 --epochs 3

For each training seed and data seed it trains the toy dSFT student with the toy SFT recipe (cached under
``--cache``, one per seed, data seed and CPU kernel), builds the toy AIF recipe's pairs for that data seed (train
prompts to train, held-out prompts to measure), trains dDPO from the student with the toy dDPO recipe at each
learning rate (everything else the recipe's: β 0.1, 3 epochs, linear schedule, precomputed reference), and scores
both on the same 96 held-out prompts with the toy rubric. The functions are the handbook's own (``handbook.sft``,
``handbook.dpo``, ``handbook.toy``); the pairs are the AIF recipe's train/held-out triples rather than notebook 04's
quarter of notebook 03's, and the student is trained here rather than in notebook 02 — so its numbers are the
recipe's, and the notebooks' own distribution is ``bench/bench_claims.py``'s.

Writes ``bench/results/ddpo_lr.json``: per run the dSFT and dSFT + dDPO scores, correctness and constraint share,
and per learning rate the distribution of the gain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "ddpo_lr.json"


def score(path) -> dict:
    from handbook.core.models import ModelArguments, load_model_and_tokenizer
    from handbook.toy.evaluate import heldout_prompts, rubric_eval, summarize

    model, tokenizer = load_model_and_tokenizer(ModelArguments(model_name_or_path=str(path)))
    s = summarize(rubric_eval(model, tokenizer, heldout_prompts(12), max_new_tokens=32))
    return {k: s[k] for k in ("mean_score", "correct", "followed")}


def student(seed: int, data_seed: int, cache: Path) -> tuple[Path, dict]:
    """The toy dSFT recipe's student for ``seed`` and ``data_seed`` under this CPU's kernels (trained once)."""
    import torch
    from trl import SFTConfig

    from handbook.core.configs import read_recipe, recipe_path
    from handbook.core.models import ModelArguments
    from handbook.dsft.training import SFTDataArguments, prepare_sft_splits, train
    from handbook.toy.build import toy_base_path
    from handbook.toy.dialogues import toy_dsft_dataset

    out = cache / f"sft-s{seed}-d{data_seed}-{torch.backends.cpu.get_cpu_capability()}"
    if not (out / "score.json").exists():
        m_args, d_args, s_args = read_recipe(recipe_path("toy/sft/config.yaml"),
                                             [ModelArguments, SFTDataArguments, SFTConfig],
                                             output_dir=str(out), seed=seed, eval_strategy="no")
        m_args.model_name_or_path = str(toy_base_path())
        dd, _ = toy_dsft_dataset(150, 2, 8, seed=data_seed, data_dir=cache / f"sftdata-d{data_seed}")
        train_ds, _ = prepare_sft_splits(dd["train"], dd["test"], d_args)
        train(m_args, d_args, s_args, datasets=(train_ds, None))
        (out / "score.json").write_text(json.dumps(score(out)))
    return out, json.loads((out / "score.json").read_text())


def pairs(data_seed: int, cache: Path):
    from datasets import Dataset
    from trl import DPOConfig

    from handbook.core.configs import read_recipe, recipe_path
    from handbook.core.models import ModelArguments
    from handbook.ddpo.training import DPODataArguments, prepare_dpo_splits
    from handbook.toy.preferences import toy_preferences

    _, d_args, _ = read_recipe(recipe_path("toy/dpo/config.yaml"), [ModelArguments, DPODataArguments, DPOConfig])
    train_rows, _ = toy_preferences("train", 60, 1 + data_seed, cache / f"triples-d{data_seed}")
    eval_rows, _ = toy_preferences("heldout", 12, 1 + data_seed, cache / f"triples-d{data_seed}")
    return prepare_dpo_splits(Dataset.from_list(train_rows), Dataset.from_list(eval_rows), d_args)


def ddpo(start: Path, train_pairs, eval_pairs, seed: int, lr: float, epochs: float | None, out: Path) -> dict:
    import shutil

    from trl import DPOConfig

    from handbook.core.configs import read_recipe, recipe_path
    from handbook.core.models import ModelArguments
    from handbook.ddpo.training import DPODataArguments, train

    extra = {} if epochs is None else {"num_train_epochs": epochs}
    m_args, d_args, b_args = read_recipe(recipe_path("toy/dpo/config.yaml"), [ModelArguments, DPODataArguments, DPOConfig],
                                         output_dir=str(out), seed=seed, model_name_or_path=str(start),
                                         learning_rate=lr, **extra)
    start_time = time.perf_counter()
    trainer = train(m_args, d_args, b_args, datasets=(train_pairs, eval_pairs))
    held_out = trainer.evaluate()
    result = {**score(out), "seconds": round(time.perf_counter() - start_time, 1),
              "heldout_reward_accuracy": round(held_out["eval_rewards/accuracies"], 4)}
    shutil.rmtree(out, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lrs", default="5e-4,2e-4")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--data-seeds", default="0,1")
    parser.add_argument("--epochs", type=float, default=None, help="dDPO epochs (default: the recipe's)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "handbook-ddpo-lr")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch
    from tqdm.auto import tqdm

    from handbook.tools.measure import write_results

    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    data_seeds = [int(x) for x in args.data_seeds.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    runs = []
    for data_seed in data_seeds:
        train_pairs, eval_pairs = pairs(data_seed, args.cache)
        for seed in tqdm(seeds, desc=f"data seed {data_seed}", unit="seed"):
            path, dsft = student(seed, data_seed, args.cache)
            for lr in lrs:
                r = ddpo(path, train_pairs, eval_pairs, seed, lr, args.epochs, args.cache / "ddpo")
                runs.append({"seed": seed, "data_seed": data_seed, "lr": lr, "dsft": dsft, "ddpo": r,
                             "gain": round(r["mean_score"] - dsft["mean_score"], 3),
                             "correct_change": round(r["correct"] - dsft["correct"], 3)})
                tqdm.write(json.dumps(runs[-1]))
    summary = {}
    for lr in lrs:
        gains = [r["gain"] for r in runs if r["lr"] == lr]
        corrects = [r["correct_change"] for r in runs if r["lr"] == lr]
        summary[str(lr)] = {"n": len(gains), "gain_mean": round(statistics.fmean(gains), 3),
                            "gain_sd": round(statistics.stdev(gains), 3) if len(gains) > 1 else 0.0,
                            "gain_min": min(gains), "gain_max": max(gains), "runs_with_a_loss": sum(g < 0 for g in gains),
                            "correct_change_min": min(corrects),
                            "runs_losing_correctness_over_0.1": sum(c < -0.1 for c in corrects)}
    write_results(args.out, {"cpu_kernel": torch.backends.cpu.get_cpu_capability(), "lrs": lrs, "seeds": seeds,
                             "data_seeds": data_seeds, "epochs": args.epochs or "the recipe's", "runs": runs,
                             "summary": summary})
    for lr, s in summary.items():
        print(f"lr {lr}: dSFT + dDPO - dSFT {s['gain_mean']:+.2f} ± {s['gain_sd']:.2f} "
              f"[{s['gain_min']:+.2f}, {s['gain_max']:+.2f}] over {s['n']} runs; {s['runs_with_a_loss']} below dSFT; "
              f"{s['runs_losing_correctness_over_0.1']} lost more than 0.1 correctness")
    return 0


if __name__ == "__main__":
    sys.exit(main())
