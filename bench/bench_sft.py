"""An SFT run with and without packing, side by side in one process, on UltraChat-like lengths.

    python bench/bench_sft.py                          # toy and medium (~20 M) models, ~2 min on 2 CPU cores
    python bench/bench_sft.py --sizes toy --dialogues 128

Same synthetic dialogues (``handbook.tools.synthetic``: two user/assistant exchanges, total length
lognormal with a coefficient of variation of 0.6, scaled down from UltraChat's ~1,470 tokens for a
CPU), same random-init weights, seed and tokens seen (one epoch):

* ``padded``: random batches padded to their longest dialogue (TRL's ``SFTTrainer`` default).
* ``grouped``: + ``train_sampling_strategy: group_by_length``.
* ``packed``: ``packing: true`` — TRL's best-fit-decreasing packing into rows of ``max_length``,
  padding-free (the rows of a batch are concatenated and ``position_ids`` restart at every
  dialogue, so attention stays within a dialogue; checked in tests/test_bench.py).

Measured: wall time, real tokens per second, the real-token share of the tokens the model
processed, how full the packed rows are (real tokens / (rows × max_length)), peak resident
memory above the start, and the last loss. Packing changes how many dialogues make one step, so
the loss curves are not comparable step by step; every run sees every dialogue once.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "padded": dict(packing=False, group=False),
    "grouped": dict(packing=False, group=True),
    "packed": dict(packing=True, group=False),
}

DATA = {
    "toy": dict(dialogues=512, mean_tokens=256, max_length=1024, batch_size=8, learning_rate=1e-3),
    "medium": dict(dialogues=96, mean_tokens=192, max_length=768, batch_size=8, learning_rate=3e-4),
}


def run_variant(variant, model_dir, tokenizer, train, data, seed=0) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from handbook.tools.measure import PeakMemory, TokenCounter

    v = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        # Packed rows hold several dialogues: fewer rows a step, the same tokens a step on average.
        config = SFTConfig(
            output_dir=tmp, learning_rate=data["learning_rate"], lr_scheduler_type="cosine", num_train_epochs=1,
            per_device_train_batch_size=data["batch_size"] if not v["packing"] else max(1, data["batch_size"] // 4),
            max_length=data["max_length"], packing=v["packing"], assistant_only_loss=True,
            train_sampling_strategy="group_by_length" if v["group"] else "random",
            logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, bf16=False, seed=seed)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        counter = TokenCounter(model)
        with PeakMemory() as memory:
            start = time.perf_counter()
            trainer = SFTTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer)
            trainer.remove_callback(PrinterCallback)  # the tables below say it all
            ready = time.perf_counter()
            trainer.train()
            end = time.perf_counter()
        counter.remove()
        rows = len(trainer.train_dataset)
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        del trainer, model
        gc.collect()
    return {"variant": variant, "wall_s": end - start, "setup_s": ready - start, "train_s": end - ready,
            "real_tokens": counter.real, "real_tokens_per_s": counter.real / (end - start),
            "real_token_share": counter.share, "rows": rows, "steps": len(losses),
            "row_fill": counter.real / (rows * data["max_length"]) if v["packing"] else None,
            "peak_memory_mb": memory.peak_bytes / 2 ** 20, "last_loss": losses[-1] if losses else None}


def run(sizes=("toy", "medium"), variants=tuple(VARIANTS), dialogues=None, seed=0, verbose=True,
        medium=None) -> dict:
    from transformers import AutoTokenizer

    from handbook.tools.synthetic import model_size, parameter_count, random_mistral, synthetic_dialogues
    from handbook.toy.build import toy_base_path

    tokenizer = AutoTokenizer.from_pretrained(toy_base_path())
    results = {"sizes": {}}
    for size in sizes:
        data = dict(DATA[size])
        if dialogues:
            data["dialogues"] = dialogues
        train = synthetic_dialogues(tokenizer, data["dialogues"], data["mean_tokens"], 0.6, turns=2,
                                    max_length=data["max_length"], seed=seed)
        with tempfile.TemporaryDirectory() as model_dir:
            sizes = model_size(size, medium if size == "medium" else None)
            n_params = parameter_count(random_mistral(model_dir, tokenizer, sizes, seed=seed))
            rows = [run_variant(v, model_dir, tokenizer, train, data, seed) for v in variants]
        by_name = {r["variant"]: r for r in rows}
        if "padded" in by_name:
            for r in rows:
                r["speedup"] = by_name["padded"]["wall_s"] / r["wall_s"]
        results["sizes"][size] = {"size": size, "parameters": n_params, "dialogues": data["dialogues"],
                                  "max_length": data["max_length"], "runs": rows}
        if verbose:
            print(_report(results["sizes"][size]), flush=True)
    headline = results["sizes"].get("medium") or next(iter(results["sizes"].values()))
    by_name = {r["variant"]: r for r in headline["runs"]}
    results["sft_headline_size"] = headline["size"]
    if "packed" in by_name:
        results["sft_padding_efficiency_packed"] = by_name["packed"]["real_token_share"]
        results["sft_packed_row_fill"] = by_name["packed"]["row_fill"]
    if "padded" in by_name:
        results["sft_padding_efficiency_padded"] = by_name["padded"]["real_token_share"]
    if "packed" in by_name and "padded" in by_name:
        results["sft_packed_speedup"] = by_name["packed"]["speedup"]
    return results


def _report(summary) -> str:
    from handbook.tools.measure import format_table

    head = (f"\nSFT run, {summary['size']} model ({summary['parameters'] / 1e6:.1f} M parameters), "
            f"{summary['dialogues']} synthetic dialogues, 1 epoch, max_length {summary['max_length']}")
    table = format_table([{
        "run": r["variant"], "wall s": r["wall_s"], "steps": r["steps"], "real tok/s": r["real_tokens_per_s"],
        "real share": r["real_token_share"], "row fill": r["row_fill"], "peak MB": r["peak_memory_mb"],
        "speedup": r.get("speedup"), "last loss": r["last_loss"]} for r in summary["runs"]])
    return f"{head}\n{table}"


def main(argv=None) -> dict:
    from handbook.tools.synthetic import parse_size_overrides

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="toy,medium", help="comma-separated: toy, medium")
    parser.add_argument("--medium", default=None, help="the medium model's sizes, e.g. "
                        "hidden_size=768,intermediate_size=2048,num_hidden_layers=8 (MistralConfig fields)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--dialogues", type=int, default=None, help="training dialogues (default: per size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args.sizes.split(","), args.variants.split(","), args.dialogues, args.seed,
                  medium=parse_size_overrides(args.medium))
    if args.out:
        from handbook.tools.measure import write_results

        write_results(args.out, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
