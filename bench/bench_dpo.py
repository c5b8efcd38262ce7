"""A whole dDPO run, the handbook's setup vs TRL's ``DPOTrainer`` defaults, side by side in one process.

    python bench/bench_dpo.py                        # toy and medium (~20 M) models, ~13 min on 2 CPU cores
    python bench/bench_dpo.py --sizes toy --pairs 128 --epochs 1   # quick look

Same data, same random-init weights, same seed, same optimiser and schedule, 3 epochs:

* ``trl-default``: ``DPOTrainer`` as it comes — a live reference model scoring every batch of every
  epoch, random batches padded to their longest sequence.
* ``precompute``: + the reference scores every pair once, forward only, before training
  (``precompute_ref_log_probs``; the handbook sorts that pass by length).
* ``handbook-padded``: + ``train_sampling_strategy: group_by_length`` for pairs
  (``handbook.ddpo.batching``), batches still padded: the handbook before padding-free rows
  (``HandbookDPOTrainer(pack_rows=False)``).
* ``handbook``: + every forward (policy, reference pass) on the batch's rows packed into one
  sequence, no padding computed (``handbook.ddpo.packing``; ``pack_rows``, on by default): what
  ``python -m handbook.dpo`` with the handbook's recipes runs. Its batches are ``handbook-padded``'s,
  so its per-step losses must be those (``step_loss_max_diff_vs_padded``).
* ``handbook-random``: ``handbook`` with TRL's random batches (``train_sampling_strategy: random``):
  packed rows cost their real tokens whatever the batch, so grouping is no longer needed for speed.
  Its batches are ``trl-default``'s, so its per-step losses must be those (``step_loss_max_diff_vs_trl``;
  a precomputed reference differs from a live one by float rounding only).

Every run is the shipped classes (TRL's ``DPOTrainer``, ``handbook.ddpo.batching.HandbookDPOTrainer``)
configured as listed; nothing is re-implemented here. The variants run interleaved — each seed runs
all of them, in alternating order — so that load from other processes falls on all alike, and each
run records its CPU time and the load average before and after.

The pairs are synthetic (``handbook.tools.synthetic``): prompt and answer lengths lognormal with a
coefficient of variation of 0.6, like UltraFeedback's spread, scaled down for a CPU. Measured per
run: wall time (set-up, reference pass and training; the tokenisation is common to all), real
tokens per second (the pairs' real tokens × epochs / wall time), the real-token share of every
token the transformer processed (counted at the backbone, policy and reference, reference pass
included: a packed call counts what it computes), peak resident memory above the start, and the
loss curve. The curves are compared by epoch means (in standard errors of the default's, seed by
seed) and by the held-out loss and reward accuracy, computed afterwards the same way for all runs.
Grouping changes which pairs share a batch, so its curve differs from the default's as another
seed's would: the toy size runs three seeds (batch orders) to show that spread; an untimed
warm-up run comes first so that no timed run pays for first calls.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "trl-default": dict(handbook=False, precompute=False, group=False, pack=False),
    "precompute": dict(handbook=True, precompute=True, group=False, pack=False),
    "handbook-padded": dict(handbook=True, precompute=True, group=True, pack=False),
    "handbook": dict(handbook=True, precompute=True, group=True, pack=True),
    "handbook-random": dict(handbook=True, precompute=True, group=False, pack=True),
}

# Per size: data scaled so that a size takes a few minutes on 2 CPU cores. The toy size runs three
# seeds (batch orders), so that the loss and held-out figures come with their run-to-run spread;
# the medium size runs the two ends, one seed.
DATA = {
    "toy": dict(pairs=256, prompt_mean=40, completion_mean=80, max_length=512, batch_size=8, learning_rate=5e-4,
                variants=tuple(VARIANTS), seeds=(0, 1, 2)),
    "medium": dict(pairs=128, prompt_mean=24, completion_mean=48, max_length=256, batch_size=8, learning_rate=1e-4,
                   variants=("trl-default", "handbook-padded", "handbook", "handbook-random"), seeds=(0,)),
}


def _dpo_config(output_dir, variant, data, epochs, beta, seed):
    from trl import DPOConfig

    v = VARIANTS[variant]
    return DPOConfig(
        output_dir=output_dir, beta=beta, learning_rate=data["learning_rate"], lr_scheduler_type="linear",
        warmup_steps=0.1, num_train_epochs=epochs, per_device_train_batch_size=data["batch_size"],
        max_length=data["max_length"], precompute_ref_log_probs=v["precompute"],
        precompute_ref_batch_size=2 * data["batch_size"] if v["precompute"] else None,
        train_sampling_strategy="group_by_length" if v["group"] else "random",
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, bf16=False, seed=seed)


def run_variant(variant, model_dir, tokenizer, train, heldout, data, epochs=3, beta=0.1, seed=0) -> dict:
    """One whole run; returns its measurements, loss curve and held-out metrics."""
    import torch
    from transformers import AutoModelForCausalLM, PrinterCallback
    from trl import DPOTrainer

    from handbook.ddpo.batching import HandbookDPOTrainer
    from handbook.tools.measure import PeakMemory, TokenCounter

    v = VARIANTS[variant]
    cls, extra = (HandbookDPOTrainer, dict(pack_rows=v["pack"])) if v["handbook"] else (DPOTrainer, {})
    with tempfile.TemporaryDirectory() as tmp:
        config = _dpo_config(tmp, variant, data, epochs, beta, seed)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        policy = TokenCounter(model.base_model)  # the backbone: what the transformer computes, packed or padded
        load_before = os.getloadavg()[0]
        with PeakMemory() as memory:
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer = cls(model=model, args=config, train_dataset=train, processing_class=tokenizer, **extra)
            trainer.remove_callback(PrinterCallback)  # the tables below say it all
            reference = TokenCounter(trainer.ref_model.base_model) if trainer.ref_model is not None else None
            ready = time.perf_counter()
            trainer.train()
            end, cpu_end = time.perf_counter(), time.process_time()
        packed = len(getattr(trainer, "packed_models", []))
        policy.remove()
        counts = [policy] + ([reference] if reference else [])
        if reference:
            reference.remove()
        cap = data["max_length"]
        trained_real = sum(min(len(p) + len(c), cap) + min(len(p) + len(r), cap) for p, c, r in zip(
            trainer.train_dataset["prompt_ids"], trainer.train_dataset["chosen_ids"], trainer.train_dataset["rejected_ids"]))
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        held_out = evaluate_pairs(trainer, model_dir, heldout, beta)
        del trainer, model
        gc.collect()
    real = sum(c.real for c in counts)
    processed = sum(c.processed for c in counts)
    steps_per_epoch = math.ceil(len(train) / data["batch_size"])
    epoch_losses = [losses[i * steps_per_epoch:(i + 1) * steps_per_epoch] for i in range(epochs)]
    return {
        "variant": variant, "seed": seed, "wall_s": end - start, "setup_and_reference_s": ready - start, "train_s": end - ready,
        "cpu_s": cpu_end - cpu_start, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
        "packed_models": packed,
        "real_tokens_per_s": trained_real * epochs / (end - start), "real_token_share": real / processed,
        "processed_tokens": processed, "peak_memory_mb": memory.peak_bytes / 2 ** 20,
        "losses": losses, "epoch_mean_loss": [statistics.mean(e) for e in epoch_losses],
        "epoch_loss_se": [_se(e) for e in epoch_losses], **held_out}


def _se(values):
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def evaluate_pairs(trainer, reference_dir, heldout, beta) -> dict:
    """Held-out DPO loss and reward accuracy of the trained policy against the initial model (Eq. 1 by hand)."""
    import torch
    from transformers import AutoModelForCausalLM

    from handbook.ddpo.objective import dpo_batch

    tokenized = trainer._prepare_dataset(heldout, trainer.processing_class, trainer.args, "heldout")
    reference = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32).eval()
    policy = trainer.model.eval()
    losses, accuracies = [], []
    with torch.no_grad():
        for start in range(0, len(tokenized), 16):
            batch = trainer.data_collator([tokenized[i] for i in range(start, min(start + 16, len(tokenized)))])
            m = dpo_batch(policy, reference, batch, beta).metrics()
            n = len(batch["input_ids"]) // 2
            losses.append(m["loss"] * n)
            accuracies.append(m["rewards/accuracies"] * n)
    return {"heldout_loss": sum(losses) / len(tokenized), "heldout_reward_accuracy": sum(accuracies) / len(tokenized)}


def run(sizes=("toy", "medium"), variants=None, epochs=3, pairs=None, beta=0.1, seeds=None,
        heldout_pairs=256, verbose=True, medium=None) -> dict:
    """Every variant on every size (for each seed); returns ``{"sizes": {size: {...}}, headline figures}``."""
    from transformers import AutoTokenizer

    from handbook.tools.synthetic import model_size, parameter_count, random_mistral, synthetic_pairs
    from handbook.toy.build import toy_base_path

    tokenizer = AutoTokenizer.from_pretrained(toy_base_path())
    results = {"sizes": {}}
    for size in sizes:
        data = dict(DATA[size])
        if pairs:
            data["pairs"] = pairs
        train = synthetic_pairs(tokenizer, data["pairs"], data["prompt_mean"], data["completion_mean"], 0.6,
                                data["max_length"], seed=0)
        heldout = synthetic_pairs(tokenizer, heldout_pairs, data["prompt_mean"], data["completion_mean"], 0.6,
                                  data["max_length"], seed=100)
        with tempfile.TemporaryDirectory() as model_dir:
            sizes = model_size(size, medium if size == "medium" else None)
            n_params = parameter_count(random_mistral(model_dir, tokenizer, sizes, seed=0))
            # untimed warm-ups, so that no timed run pays for first calls (allocations, thread pools, kernels)
            chosen = variants or data["variants"]
            for v in [v for v in ("trl-default", "handbook") if v in chosen] or ["trl-default"]:
                run_variant(v, model_dir, tokenizer, train.select(range(2 * data["batch_size"])),
                            heldout.select(range(4)), data, 1, beta, 0)
            rows = [run_variant(v, model_dir, tokenizer, train, heldout, data, epochs, beta, seed)
                    for seed, order in interleaved(seeds or data["seeds"], variants or data["variants"])
                    for v in order]
        results["sizes"][size] = _summarise(size, n_params, data, epochs, rows)
        if verbose:
            print(_report(results["sizes"][size]), flush=True)
    headline = results["sizes"].get("medium") or next(iter(results["sizes"].values()))
    shipped = _shipped(headline["variants"])
    results["dpo_run_speedup_vs_trl_default"] = headline.get("speedup_vs_trl_default")
    results["dpo_run_cpu_speedup_vs_trl_default"] = shipped.get("cpu_speedup")
    results["dpo_real_token_share"] = shipped["real_token_share"]
    results["dpo_step_loss_max_diff_vs_padded"] = shipped.get("step_loss_max_diff_vs_padded")
    random = [v for v in headline["variants"] if v["variant"] == "handbook-random"]
    if random:
        results["dpo_run_speedup_vs_trl_default_random_batches"] = random[0].get("speedup")
        results["dpo_step_loss_max_diff_random_vs_trl"] = random[0].get("step_loss_max_diff_vs_trl")
    padded = [v for v in headline["variants"] if v["variant"] == "handbook-padded"]
    if padded:
        results["dpo_run_speedup_vs_handbook_padded"] = padded[0]["wall_s"] / shipped["wall_s"]
        results["dpo_real_token_share_padded"] = padded[0]["real_token_share"]
    results["dpo_headline_size"] = headline["size"]
    return results


def interleaved(seeds, variants):
    """``[(seed, variants in the order to run them)]``: every seed runs every variant, the order reversed
    from one seed to the next, so that a slow stretch of the machine falls on all variants alike."""
    return [(seed, list(variants) if i % 2 == 0 else list(variants)[::-1]) for i, seed in enumerate(seeds)]


def _summarise(size, n_params, data, epochs, rows) -> dict:
    """Per variant: means over seeds (wall time, throughput, share, memory, held-out), spreads, speedups.

    ``epoch_loss_diff_in_se``: the largest gap, over epochs and seeds, between a variant's epoch-mean
    training loss and the default's with the same seed, in standard errors of the default's mean.
    """
    names = list(dict.fromkeys(r["variant"] for r in rows))
    default = {r["seed"]: r for r in rows if r["variant"] == "trl-default"}
    variants = []
    for name in names:
        runs = [r for r in rows if r["variant"] == name]
        v = {"variant": name, "seeds": [r["seed"] for r in runs]}
        for key in ("wall_s", "setup_and_reference_s", "train_s", "cpu_s", "real_tokens_per_s", "real_token_share",
                    "processed_tokens", "peak_memory_mb", "heldout_loss", "heldout_reward_accuracy"):
            v[key] = statistics.mean([r[key] for r in runs])
        v["heldout_loss_sd"] = statistics.stdev([r["heldout_loss"] for r in runs]) if len(runs) > 1 else None
        v["epoch_mean_loss"] = [statistics.mean(x) for x in zip(*(r["epoch_mean_loss"] for r in runs))]
        if default:
            v["speedup"] = statistics.mean([d["wall_s"] for d in default.values()]) / v["wall_s"]
            v["cpu_speedup"] = statistics.mean([d["cpu_s"] for d in default.values()]) / v["cpu_s"]
            v["epoch_loss_diff_in_se"] = max(
                abs(a - b) / se for r in runs if r["seed"] in default
                for a, b, se in zip(r["epoch_mean_loss"], default[r["seed"]]["epoch_mean_loss"],
                                    default[r["seed"]]["epoch_loss_se"]))
        for packed, same_batches, key in (("handbook", "handbook-padded", "step_loss_max_diff_vs_padded"),
                                          ("handbook-random", "trl-default", "step_loss_max_diff_vs_trl")):
            twin = {r["seed"]: r for r in rows if r["variant"] == same_batches}
            if name == packed and twin:  # the same batches: packing must change no loss
                v[key] = max(abs(a - b) for r in runs if r["seed"] in twin
                             for a, b in zip(r["losses"], twin[r["seed"]]["losses"]))
        variants.append(v)
    summary = {"size": size, "parameters": n_params, "pairs": data["pairs"], "epochs": epochs,
               "batch_size": data["batch_size"], "variants": variants, "runs": rows}
    if default:
        summary["speedup_vs_trl_default"] = _shipped(variants)["speedup"]
    return summary


def _shipped(variants):
    """The ``handbook`` variant (what the handbook runs) if it ran, else the last one."""
    return next((v for v in variants if v["variant"] == "handbook"), variants[-1])


def _report(summary) -> str:
    from handbook.tools.measure import format_table

    head = (f"\ndDPO run, {summary['size']} model ({summary['parameters'] / 1e6:.1f} M parameters), "
            f"{summary['pairs']} synthetic pairs × {summary['epochs']} epochs, batch {summary['batch_size']}; "
            f"means over seeds {summary['variants'][0]['seeds']}")
    table = format_table([{
        "run": v["variant"], "wall s": v["wall_s"], "cpu s": v["cpu_s"], "ref pass+setup s": v["setup_and_reference_s"],
        "real tok/s": v["real_tokens_per_s"], "real share": v["real_token_share"],
        "peak MB": v["peak_memory_mb"], "speedup": v.get("speedup"),
        "epoch losses": " ".join(f"{x:.4f}" for x in v["epoch_mean_loss"]),
        "max Δ/SE": v.get("epoch_loss_diff_in_se"), "step Δ vs same batches": v.get("step_loss_max_diff_vs_padded", v.get("step_loss_max_diff_vs_trl")),
        "held-out loss": v["heldout_loss"], "± sd": v["heldout_loss_sd"],
        "held-out acc": v["heldout_reward_accuracy"]} for v in summary["variants"]])
    return f"{head}\n{table}"


def main(argv=None) -> dict:
    from handbook.tools.synthetic import parse_size_overrides

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="toy,medium", help="comma-separated: toy, medium")
    parser.add_argument("--medium", default=None, help="the medium model's sizes, e.g. "
                        "hidden_size=768,intermediate_size=2048,num_hidden_layers=8 (MistralConfig fields)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated, of: " + ", ".join(VARIANTS) + " (default: per size)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=None, help="training pairs (default: per size)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (batch orders; default: per size)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args.sizes.split(","), args.variants.split(",") if args.variants else None, args.epochs,
                  args.pairs, args.beta, [int(x) for x in args.seeds.split(",")] if args.seeds else None,
                  medium=parse_size_overrides(args.medium))
    if args.out:
        from handbook.tools.measure import write_results

        write_results(args.out, results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
