"""GPU benchmark: dDPO's batching, TRL's default against the handbook's, on a ~1B Mistral-architecture model in bf16.

What it measures
----------------
A random-init Mistral-architecture model (``--size 1b``: hidden 2048, 20 layers, MLP 5632, 16 heads,
8 KV heads, vocab 32000, untied embeddings, bf16 weights, SDPA attention, ~1.08B parameters) is
trained with AdamW (``fused=True`` on CUDA, pure bf16 parameters and optimizer states) on random
token ids. Two benchmarks, each on a freshly built model, one A/B:

* **dpo_trl_default** — dDPO as TRL's ``DPOTrainer`` runs it by default: batches of
  ``--dpo-batch-size`` pairs drawn at random, chosen and rejected rows concatenated and right-padded to
  the batch's longest row, and a **live reference model** (a frozen copy, forward under ``no_grad``
  on every step).
* **dpo_handbook** — dDPO as the handbook runs it: **length-grouped batches** drawn by the very sampler
  ``HandbookDPOTrainer`` trains with (``handbook.ddpo.batching.length_grouped_sampler``: transformers'
  ``LengthGroupedSampler`` — a seeded random permutation cut into mega-batches of up to 50 batches,
  each sorted by length, the longest batch first) and **precomputed reference log-probabilities**
  (one forward-only pass over every pair before training, timed separately, in the trainer's order:
  ``handbook.ddpo.batching.reference_pass_order``, longest pair first).

What it does not measure: the shipped entry points end to end. ``bench/gpu_check.py`` runs
``handbook.sft.train`` (TRL's packing, ``packing_strategy: bfd_split`` as the Zephyr recipes set it) and ``handbook.dpo.train`` on the
Zephyr recipes and measures their tokens/s, MFU and memory; an SFT benchmark that stood here (plain full rows
through a hand-written loop: the padded path, no longer what trains) was removed in its favour.

The synthetic preference set has ``--pairs`` pairs; a row (prompt + reply) has a lognormal-like
length with mean ``--dpo-mean-len`` (default 0.44 · seq-len = 900 at 2048) and CV 0.6 before the
cap at ``--seq-len``: a lognormal prompt (~30 % of the tokens) shared by the chosen and rejected rows
plus an independent lognormal reply for each. Every dDPO forward is the handbook's own code,
``handbook.ddpo.objective``: ``sequence_logps`` (log-probs summed over reply tokens) and
``dpo_batch`` (Eq. 1, ``-logsigmoid(beta * ((pc - rc) - (pr - rr)))``, beta 0.1).

FLOPs conventions
-----------------
N = every parameter **except the input embedding table** (so the untied ``lm_head`` counts; an
embedding lookup is not a matmul). Per token: a training step = 6N (forward 2N + backward 4N); a live DPO
reference adds a 2N forward → 8N; with precomputed reference log-probs a training step is 6N and the
reference pass costs 2N per token once. Gradient checkpointing's recomputation is not counted.
MFU = FLOPs_per_token · tokens/s / peak dense bf16 FLOP/s (H100 SXM and H200: 989 TFLOP/s, H100
PCIe: 756, A100: 312; ``--peak-tflops`` overrides). The attention score/value matmuls are not in
6N; ``mfu_incl_attn`` adds them (causal, fwd+bwd: 6 · layers · hidden · T per token of a row of T).

For dDPO "real tokens" are non-pad tokens (prompt + reply of both rows); **MFU on real tokens**
counts only those, so padding shows up as lost MFU. ``real_token_share`` = real / processed
(padded) tokens.

Whole-run figures (``--epochs``, default 3 as in the recipe) are **extrapolated**: only a fixed number
of steps is timed; each configuration's epoch time = its epoch's processed (padded) tokens / its
measured processed tokens/s (the timed steps are a random sample of that epoch's batches, the
longest batch always included in the warm-up so that the peak memory is the epoch's worst case).
The handbook's reference pass over all ``--pairs`` pairs is measured, not extrapolated.
Whole-run real tokens/s = real tokens · epochs / (reference pass + epochs · epoch time).

Running it
----------
On the GPU machine (torch + transformers, and this checkout's ``handbook`` package, which the script
finds beside it when it is not installed; no TRL, no datasets, no network), from the repo root::

    python3 bench/gpu_bench.py --out $OUT/gpu_bench.json

about 2-4 minutes on an H100 with the defaults. CPU smoke test (a tiny model, seconds)::

    python bench/gpu_bench.py --size tiny --device cpu

A CUDA out-of-memory error in a benchmark is recorded (``"oom_first_try"``), the cache emptied, and
the benchmark retried once at half its batch size; a second OOM is recorded as ``"status": "oom"``
and the next benchmark runs. The JSON is rewritten after every benchmark, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import random
import sys
import time
import traceback
from importlib.util import find_spec
from pathlib import Path

import torch

if find_spec("handbook") is None:  # run as `python bench/gpu_bench.py` from a checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The code that ships: needs torch and transformers only (no TRL, no datasets).
from handbook.ddpo.batching import length_grouped_sampler, reference_pass_order  # noqa: E402
from handbook.ddpo.objective import dpo_batch, sequence_logps  # noqa: E402

# --------------------------------------------------------------------------------------------
# model

SIZES = {
    # ~1.08B parameters, TinyLlama-like widths with Mistral's GQA (head_dim 128).
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=20,
               num_attention_heads=16, num_key_value_heads=8),
    # A few layers at hidden 64: the whole script runs on a CPU in seconds.
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
}

DEFAULTS = {  # per size: max length, pairs per step, pairs, dDPO warm-up and timed steps
    "1b": dict(seq_len=2048, dpo_batch_size=4, pairs=1024, dpo_warmup=5, dpo_steps=20),
    "tiny": dict(seq_len=128, dpo_batch_size=4, pairs=32, dpo_warmup=1, dpo_steps=3),
}

PEAK_TFLOPS = [  # (substring of torch.cuda.get_device_name(), dense bf16 TFLOP/s), first match wins
    ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0),
]

BETA = 0.1
PAD_ID = 0


def mistral_config(size: str, seq_len: int):
    from transformers import MistralConfig

    return MistralConfig(**SIZES[size], max_position_embeddings=max(4096, seq_len), sliding_window=None,
                         tie_word_embeddings=False, attn_implementation="sdpa", use_cache=False)


def build_model(config, device: torch.device, dtype: torch.dtype, seed: int, grad_ckpt: bool):
    from transformers import MistralForCausalLM

    torch.manual_seed(seed)
    try:
        with torch.device(device):  # initialise on the device: fast for 1B parameters
            model = MistralForCausalLM(config)
    except Exception:  # noqa: BLE001 - fall back to a CPU init and a copy
        torch.manual_seed(seed)
        model = MistralForCausalLM(config)
    model = model.to(device=device, dtype=dtype)
    model.config.use_cache = False
    if grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    return model


def param_counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    return {"n_params_total": total, "n_params_input_embedding": embed, "n_params_lm_head": head,
            "n_params_flops": total - embed,            # N in 6N: everything but the input embedding
            "n_params_non_embedding": total - embed - head}


def maybe_compile(model, enabled: bool):
    return torch.compile(model) if enabled else model


# --------------------------------------------------------------------------------------------
# device helpers


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mem_gb(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9


def peak_reserved_gb(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_reserved(device) / 1e9


def free_memory(device: torch.device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def detect_peak_tflops(device: torch.device, override: float | None):
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown (not CUDA; pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS:
        if key in name:
            return tflops, f"table: {key}"
    return None, f"unknown GPU {name!r} (pass --peak-tflops)"


def mfu(flops_per_s: float, peak_tflops: float | None):
    return None if not peak_tflops else flops_per_s / (peak_tflops * 1e12)


def timed_steps(step, warmup: int, total: int, device: torch.device):
    """Run ``step(0..warmup-1)`` untimed, then ``step(warmup..total-1)`` timed; (last loss, seconds).

    The peak-memory counter is reset first, so it covers warm-up and timed steps alike.
    """
    reset_peak(device)
    for i in range(warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    loss = None
    for i in range(warmup, total):
        loss = step(i)
    sync(device)
    return loss, time.perf_counter() - start


def make_optimizer(model, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0, **kwargs)


# --------------------------------------------------------------------------------------------
# dDPO data


def make_pairs(n_pairs: int, max_len: int, mean_len: float, cv: float, prompt_share: float, vocab: int,
               seed: int) -> dict:
    """Synthetic pairs with random token ids: row = shared prompt + its own reply, capped at ``max_len``.

    Prompt and reply lengths are lognormal with means ``prompt_share · mean_len`` and
    ``(1 - prompt_share) · mean_len`` and one CV chosen so that a row's length has CV ``cv``
    (before the cap); the chosen and rejected rows of a pair share the prompt, as in real data.
    """
    rng = random.Random(seed)
    part_cv = cv / math.sqrt(prompt_share ** 2 + (1 - prompt_share) ** 2)

    def lognormal(mean):
        sigma = math.sqrt(math.log(1 + part_cv * part_cv))
        return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)

    chosen, rejected, prompt = [], [], []
    for _ in range(n_pairs):
        p = int(min(max_len // 2, max(1, round(lognormal(prompt_share * mean_len)))))
        c, r = (int(min(max_len, p + max(1, round(lognormal((1 - prompt_share) * mean_len))))) for _ in range(2))
        chosen.append(c)
        rejected.append(r)
        prompt.append(p)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    tokens = torch.randint(1, vocab, (n_pairs, 2, max_len), generator=gen)
    tokens[:, 1, :] = torch.where(torch.arange(max_len) < torch.tensor(prompt)[:, None],
                                  tokens[:, 0, :], tokens[:, 1, :])  # the two rows share the prompt
    return {"chosen_len": chosen, "rejected_len": rejected, "prompt_len": prompt, "tokens": tokens}


def pair_len(data: dict, i: int) -> int:
    """Tokens the pair occupies in a padded batch: prompt + the longer reply (``pair_lengths``' measure)."""
    return max(data["chosen_len"][i], data["rejected_len"][i])


def pair_lengths(data: dict) -> list[int]:
    return [pair_len(data, i) for i in range(len(data["chosen_len"]))]


def chunks(order, bs: int) -> list[list[int]]:
    order = [int(i) for i in order]
    return [order[i:i + bs] for i in range(0, len(order), bs)]


def random_batches(n: int, bs: int, seed: int) -> list[list[int]]:
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return chunks(idx, bs)


def handbook_batches(data: dict, bs: int, seed: int) -> list[list[int]]:
    """One epoch's batches as ``HandbookDPOTrainer`` draws them on one process (global batch = ``bs``):
    its sampler's order, cut by the data loader into consecutive batches of ``bs`` (the last may be short)."""
    return chunks(length_grouped_sampler(pair_lengths(data), bs, seed), bs)


def reference_batches(data: dict, bs: int) -> list[list[int]]:
    """The precomputed reference pass as ``HandbookDPOTrainer`` runs it: pairs longest first, in batches of ``bs``."""
    return chunks(reference_pass_order(pair_lengths(data)), bs)


def batch_stats(data: dict, batch: list[int]) -> tuple[int, int]:
    """(real tokens, processed tokens) of one collated batch: chosen + rejected rows padded to the max."""
    real = sum(data["chosen_len"][i] + data["rejected_len"][i] for i in batch)
    return real, 2 * len(batch) * max(pair_len(data, i) for i in batch)


def batch_attn_flops(data: dict, batch: list[int], config) -> float:
    """Causal attention matmul FLOPs (fwd+bwd) on the real tokens of a batch: 6·layers·hidden·T² per row."""
    k = 6 * config.num_hidden_layers * config.hidden_size
    return k * sum(data["chosen_len"][i] ** 2 + data["rejected_len"][i] ** 2 for i in batch)


def collate(data: dict, batch: list[int], device: torch.device) -> dict:
    """TRL's layout: the chosen rows then the rejected rows, right-padded to the longest row."""
    T = max(pair_len(data, i) for i in batch)
    lens = torch.tensor([data["chosen_len"][i] for i in batch] + [data["rejected_len"][i] for i in batch])
    prompts = torch.tensor([data["prompt_len"][i] for i in batch] * 2)
    ids = torch.cat([data["tokens"][batch, 0, :T], data["tokens"][batch, 1, :T]])
    pos = torch.arange(T)
    attn = (pos[None, :] < lens[:, None]).long()
    completion = attn * (pos[None, :] >= prompts[:, None]).long()
    ids = ids.masked_fill(attn == 0, PAD_ID)
    return {"input_ids": ids.to(device), "attention_mask": attn.to(device),
            "completion_mask": completion.to(device)}


# --------------------------------------------------------------------------------------------
# dDPO benchmarks


def _dpo_train(args, config, device, data, batches, model, fwd, ref_fwd, ref_logps) -> dict:
    """Warm-up (longest batch first) then timed steps; returns timings and token counts."""
    opt = make_optimizer(model, device)
    longest = max(range(len(batches)), key=lambda b: batch_stats(data, batches[b])[1])
    n_run = min(len(batches), args.dpo_warmup + args.dpo_steps)
    if n_run <= args.dpo_warmup:
        raise ValueError(f"--pairs too small: {len(batches)} batches for {args.dpo_warmup} warm-up + "
                         f"{args.dpo_steps} timed steps")
    # The longest batch, then a seeded random sample of the epoch's other batches: the sampler's own order
    # runs through sorted mega-batches, so its first batches would not stand for the epoch.
    others = [b for b in range(len(batches)) if b != longest]
    order = [longest] + random.Random(args.seed + 5).sample(others, n_run - 1)
    collated = [collate(data, batches[b], device) for b in order]  # made before timing
    if ref_logps is not None:
        idx = [torch.tensor(batches[b], device=device) for b in order]
        pre = [(ref_logps[0][i], ref_logps[1][i]) for i in idx]

    def step(k):  # Eq. 1 as handbook.ddpo.objective computes it: a live reference, or the precomputed log-probs
        loss = dpo_batch(fwd, ref_fwd, collated[k], BETA, ref_logps=None if ref_logps is None else pre[k]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    loss, elapsed = timed_steps(step, args.dpo_warmup, n_run, device)
    timed = [batches[b] for b in order[args.dpo_warmup:]]
    real = sum(batch_stats(data, b)[0] for b in timed)
    processed = sum(batch_stats(data, b)[1] for b in timed)
    attn = sum(batch_attn_flops(data, b, config) for b in timed)
    out = {"timed_steps": len(timed), "warmup_steps": args.dpo_warmup, "elapsed_s": elapsed,
           "step_time_s": elapsed / len(timed), "real_tokens": real, "processed_tokens": processed,
           "attn_flops": attn, "peak_mem_gb": peak_mem_gb(device), "peak_reserved_gb": peak_reserved_gb(device),
           "final_loss": float(loss.item())}
    return out


def _epoch_tokens(data, batches) -> tuple[int, int]:
    real = processed = 0
    for b in batches:
        r, p = batch_stats(data, b)
        real += r
        processed += p
    return real, processed


def _summarise(train: dict, fpt: float, n_label: str, peak_tflops, data, epoch_batches, attn_mult: float) -> dict:
    el = train["elapsed_s"]
    real_s = train["real_tokens"] / el
    proc_s = train["processed_tokens"] / el
    ep_real, ep_proc = _epoch_tokens(data, epoch_batches)
    return {
        "status": "ok",
        "step_time_s": train["step_time_s"], "timed_steps": train["timed_steps"],
        "warmup_steps": train["warmup_steps"],
        "real_tokens_per_s": real_s, "processed_tokens_per_s": proc_s, "tokens_per_s": real_s,
        "real_token_share": train["real_tokens"] / train["processed_tokens"],
        "epoch_real_token_share": ep_real / ep_proc,
        "flops_per_token": fpt, "flops_convention": n_label,
        "mfu_real": mfu(fpt * real_s, peak_tflops),            # the headline: MFU on real tokens
        "mfu_processed": mfu(fpt * proc_s, peak_tflops),       # what the GPU did, padding included
        # attention matmuls on the real tokens: fwd+bwd for the policy, plus a forward (1/3) for a live reference
        "mfu_incl_attn": mfu((fpt * train["real_tokens"] + train["attn_flops"] * attn_mult) / el, peak_tflops),
        "peak_mem_gb": train["peak_mem_gb"], "peak_reserved_gb": train["peak_reserved_gb"],
        "steps_per_epoch": len(epoch_batches),
        "epoch_real_tokens": ep_real, "epoch_processed_tokens": ep_proc,
        "epoch_train_time_s_extrapolated": ep_proc / proc_s,
        "final_loss": train["final_loss"],
    }


def bench_dpo_default(args, config, device, dtype, peak_tflops, counts, data) -> dict:
    """TRL's default: random batches, padded to the batch max, a live frozen reference model (8N)."""
    batches = random_batches(args.pairs, args.dpo_batch_size, args.seed + 2)
    model = build_model(config, device, dtype, args.seed, args.grad_ckpt)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    if args.grad_ckpt:
        ref.gradient_checkpointing_disable()
    fwd, ref_fwd = maybe_compile(model, args.compile), maybe_compile(ref, args.compile)
    train = _dpo_train(args, config, device, data, batches, model, fwd, ref_fwd, None)
    n = counts["n_params_flops"]
    out = _summarise(train, 8 * n, "8N (6N policy + 2N live reference)", peak_tflops, data, batches, 4 / 3)
    ep = out["epoch_train_time_s_extrapolated"]
    run_time = args.epochs * ep
    out["whole_run"] = {
        "epochs": args.epochs, "ref_pass_s": 0.0, "train_s": run_time, "total_s": run_time,
        "real_tokens_per_s": out["epoch_real_tokens"] * args.epochs / run_time,
        "mfu_real": mfu(out["epoch_real_tokens"] * args.epochs * 8 * n / run_time, peak_tflops),
        "extrapolated": True,
    }
    del model, ref, fwd, ref_fwd
    return out


def bench_dpo_handbook(args, config, device, dtype, peak_tflops, counts, data) -> dict:
    """The handbook: length-grouped batches, reference log-probs precomputed once (6N + 2N once)."""
    batches = handbook_batches(data, args.dpo_batch_size, args.seed + 3)
    model = build_model(config, device, dtype, args.seed, args.grad_ckpt)
    fwd = maybe_compile(model, args.compile)
    n = counts["n_params_flops"]

    # Reference pass: the same (initial) weights, forward only, over every pair, longest first.
    ref_batches = reference_batches(data, args.ref_batch_size or args.dpo_batch_size)
    rc_all = torch.zeros(args.pairs, device=device, dtype=torch.float32)
    rr_all = torch.zeros(args.pairs, device=device, dtype=torch.float32)
    model.eval()
    reset_peak(device)
    with torch.no_grad():
        for b in ref_batches[:2]:  # kernel warm-up, untimed
            sequence_logps(fwd, **collate(data, b, device))
        sync(device)
        t0 = time.perf_counter()
        for b in ref_batches:
            rc, rr = sequence_logps(fwd, **collate(data, b, device)).chunk(2)
            idx = torch.tensor(b, device=device)
            rc_all[idx] = rc
            rr_all[idx] = rr
        sync(device)
    ref_s = time.perf_counter() - t0
    ref_real, ref_proc = _epoch_tokens(data, ref_batches)
    ref_out = {"pairs": args.pairs, "batches": len(ref_batches), "time_s": ref_s, "measured": True,
               "real_tokens_per_s": ref_real / ref_s, "processed_tokens_per_s": ref_proc / ref_s,
               "real_token_share": ref_real / ref_proc, "flops_per_token": 2 * n,
               "mfu_real": mfu(2 * n * ref_real / ref_s, peak_tflops),
               "peak_mem_gb": peak_mem_gb(device)}
    model.train()

    train = _dpo_train(args, config, device, data, batches, model, fwd, None, (rc_all, rr_all))
    out = _summarise(train, 6 * n, "6N (reference precomputed)", peak_tflops, data, batches, 1.0)
    out["ref_pass"] = ref_out
    ep = out["epoch_train_time_s_extrapolated"]
    total = ref_s + args.epochs * ep
    ep_real = out["epoch_real_tokens"]
    out["whole_run"] = {
        "epochs": args.epochs, "ref_pass_s": ref_s, "train_s": args.epochs * ep, "total_s": total,
        "real_tokens_per_s": ep_real * args.epochs / total,
        "mfu_real": mfu(ep_real * (args.epochs * 6 * n + 2 * n) / total, peak_tflops),
        "extrapolated": True,
    }
    del model, fwd, rc_all, rr_all
    return out


# --------------------------------------------------------------------------------------------
# printing


def _fmt(v, kind=""):
    if v is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * v:.1f} %"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "s":
        return f"{v:.3f} s"
    if kind == "gb":
        return f"{v:.2f} GB"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_table(title: str, columns: list[str], rows: list[tuple]):
    """rows: (label, kind, [value per column])."""
    cells = [[label] + [_fmt(v, kind) for v in vals] for label, kind, vals in rows]
    header = [""] + columns
    widths = [max(len(r[i]) for r in cells + [header]) for i in range(len(header))]
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header))
    print(f"\n== {title} ==")
    print(line)
    print("-" * len(line))
    for r in cells:
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    sys.stdout.flush()


def print_dpo(res: dict, epochs: int):
    names = [("dpo_trl_default", "TRL default"), ("dpo_handbook", "handbook")]
    ok = [(k, lab) for k, lab in names if res.get(k, {}).get("status") == "ok"]
    for k, lab in names:
        if k in res and res[k].get("status") != "ok":
            print(f"\n== dDPO {lab}: {res[k].get('status')} == {res[k].get('error', '')}")
    if not ok:
        return
    d = res["dataset"]
    g = [res[k] for k, _ in ok]

    def col(f):
        return [f(r) for r in g]

    def wr(key):
        return col(lambda r: r["whole_run"][key])

    rows = [
        ("pairs/step", "", col(lambda r: r["dpo_batch_size"])),
        ("step time", "s", col(lambda r: r["step_time_s"])),
        ("real tokens/s (training steps)", "int", col(lambda r: r["real_tokens_per_s"])),
        ("processed tokens/s (incl. pad)", "int", col(lambda r: r["processed_tokens_per_s"])),
        ("real-token share (timed steps)", "pct", col(lambda r: r["real_token_share"])),
        ("real-token share (whole epoch)", "pct", col(lambda r: r["epoch_real_token_share"])),
        ("FLOPs/token", "", col(lambda r: r["flops_convention"].split(" ")[0])),
        ("MFU on real tokens", "pct", col(lambda r: r["mfu_real"])),
        ("MFU on processed tokens", "pct", col(lambda r: r["mfu_processed"])),
        ("MFU real incl. attention", "pct", col(lambda r: r["mfu_incl_attn"])),
        ("peak memory allocated (training)", "gb", col(lambda r: r["peak_mem_gb"])),
        ("reference pass (measured)", "s", col(lambda r: r["whole_run"]["ref_pass_s"] if "ref_pass" in r else None)),
        (f"train time, {epochs} epochs (extrapolated)", "s", wr("train_s")),
        ("whole run (extrapolated)", "s", wr("total_s")),
        ("whole-run real tokens/s", "int", wr("real_tokens_per_s")),
        ("whole-run MFU on real tokens", "pct", wr("mfu_real")),
    ]
    print_table(f"dDPO: {d['pairs']} pairs, row length mean "
                f"{d['mean_row_len']:.0f} (CV {d['cv_row_len']:.2f}, cap {d['max_len']}), prompt share "
                f"{d['prompt_share']:.0%}", [lab for _, lab in ok], rows)
    if "comparison" in res:
        c = res["comparison"]
        print(f"handbook vs TRL default: whole run x{c['whole_run_speedup']:.2f} faster, training steps "
              f"x{c['train_real_tokens_per_s_ratio']:.2f} real tokens/s")
    print(f"(Whole-run times are extrapolated from the timed steps: epoch time = the epoch's padded tokens / "
          f"measured padded tokens/s, x {epochs} epochs; the handbook's reference pass over all pairs is "
          f"measured.)")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda if available, else cpu")
    p.add_argument("--size", choices=sorted(SIZES), default="1b")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--seq-len", type=int, default=None, help="dDPO max length of a row (1b: 2048)")
    p.add_argument("--pairs", type=int, default=None, help="dDPO synthetic preference pairs (1b: 1024)")
    p.add_argument("--dpo-batch-size", type=int, default=None, help="pairs per dDPO step (1b: 4, i.e. 8 rows)")
    p.add_argument("--ref-batch-size", type=int, default=None, help="pairs per reference-pass batch "
                   "(default: --dpo-batch-size)")
    p.add_argument("--dpo-warmup", type=int, default=None, help="dDPO warm-up steps (1b: 5)")
    p.add_argument("--dpo-steps", type=int, default=None, help="dDPO timed steps (1b: 20)")
    p.add_argument("--dpo-mean-len", type=float, default=None, help="mean row length (default 0.44 x seq-len)")
    p.add_argument("--dpo-cv", type=float, default=0.6, help="coefficient of variation of row lengths")
    p.add_argument("--prompt-share", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=3, help="dDPO epochs for the whole-run extrapolation")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (off by default)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s for MFU")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (CPU runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write all results as JSON here")
    args = p.parse_args(argv)
    for k, v in DEFAULTS[args.size].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.dpo_mean_len is None:
        args.dpo_mean_len = args.seq_len * 900 / 2048
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def _run_once(fn, args) -> dict:
    try:
        return fn(args)
    except OOM_ERRORS as e:
        return {"status": "oom", "error": str(e).split("\n")[0][:300]}
    except Exception as e:  # noqa: BLE001 - record it and go on with the next benchmark
        traceback.print_exc()
        return {"status": "error", "error": f"{type(e).__name__}: {e}"[:500]}


def _run(name, fn, args, device, batch_arg: str) -> dict:
    """Run one benchmark; on CUDA OOM record it, free the cache, and retry once at half the batch size."""
    t0 = time.perf_counter()
    print(f"\n[{name}] running ...", flush=True)
    res = _run_once(fn, args)
    free_memory(device)  # outside the except block: the failed attempt's tensors are unreachable now
    bs = used = getattr(args, batch_arg)
    if res["status"] == "oom" and bs > 1:
        used = bs // 2
        print(f"[{name}] CUDA OOM at {batch_arg}={bs}; retrying at {bs // 2}", flush=True)
        retry_args = copy.copy(args)
        setattr(retry_args, batch_arg, used)
        first = res
        res = _run_once(fn, retry_args)
        free_memory(device)
        res["oom_first_try"] = {batch_arg: bs, "error": first.get("error")}
    res[batch_arg] = used
    res["wall_s"] = time.perf_counter() - t0
    print(f"[{name}] {res['status']} in {res['wall_s']:.1f} s", flush=True)
    return res


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    old_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _main(args, device, dtype)
    finally:
        torch.set_num_threads(old_threads)


def _main(args, device, dtype) -> dict:
    import transformers

    t_start = time.perf_counter()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    peak_tflops, peak_source = detect_peak_tflops(device, args.peak_tflops)
    config = mistral_config(args.size, args.seq_len)
    with torch.device("meta"):  # counts only, no memory
        counts = param_counts(transformers.MistralForCausalLM(config))
    n = counts["n_params_flops"]
    meta = {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        platform.processor() or platform.machine(),
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "device_memory_gb": torch.cuda.get_device_properties(device).total_memory / 1e9 if device.type == "cuda"
        else None,
        "dtype": args.dtype, "peak_tflops": peak_tflops, "peak_source": peak_source,
        "model": {"size": args.size, **SIZES[args.size], "attn_implementation": "sdpa", "tied": False, **counts},
        "flops_convention": "N = all parameters except the input embedding (lm_head included); "
                            "dDPO 8N per token with a live reference, 6N with precomputed reference "
                            "log-probs (+2N per token once for the reference pass); MFU = FLOPs/s / peak dense "
                            "bf16; dDPO MFU on real (non-pad) tokens",
        "optimizer": "AdamW" + (" fused" if device.type == "cuda" else "") + f", {args.dtype} params and states",
        "args": vars(args),
    }
    print(f"device {meta['device_name']} ({device}), torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {args.dtype}, peak {peak_tflops} TFLOP/s [{peak_source}]")
    c = SIZES[args.size]
    print(f"model: Mistral {args.size}: hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, MLP "
          f"{c['intermediate_size']}, {c['num_attention_heads']} heads / {c['num_key_value_heads']} KV heads, "
          f"vocab {c['vocab_size']}, untied; params total {counts['n_params_total'] / 1e6:,.1f}M, "
          f"non-embedding {counts['n_params_non_embedding'] / 1e6:,.1f}M, "
          f"N for FLOPs (all but input embedding) {n / 1e6:,.1f}M")
    results = {"meta": meta}

    def save():
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2, default=str)

    data = make_pairs(args.pairs, args.seq_len, args.dpo_mean_len, args.dpo_cv, args.prompt_share,
                      c["vocab_size"], args.seed + 10)
    rows = data["chosen_len"] + data["rejected_len"]
    mean = sum(rows) / len(rows)
    std = math.sqrt(sum((x - mean) ** 2 for x in rows) / len(rows))
    dpo = {"dataset": {"pairs": args.pairs, "dpo_batch_size": args.dpo_batch_size, "max_len": args.seq_len,
                       "target_mean_len": args.dpo_mean_len, "target_cv": args.dpo_cv,
                       "mean_row_len": mean, "cv_row_len": std / mean,
                       "capped_share": sum(x >= args.seq_len for x in rows) / len(rows),
                       "prompt_share": sum(data["prompt_len"]) * 2 / sum(rows),
                       "real_tokens": sum(rows), "epochs": args.epochs, "beta": BETA}}
    results["dpo"] = dpo
    dpo["dpo_trl_default"] = _run("dpo_trl_default", lambda a: bench_dpo_default(
        a, config, device, dtype, peak_tflops, counts, data), args, device, "dpo_batch_size")
    save()
    dpo["dpo_handbook"] = _run("dpo_handbook", lambda a: bench_dpo_handbook(
        a, config, device, dtype, peak_tflops, counts, data), args, device, "dpo_batch_size")
    a, b = dpo["dpo_trl_default"], dpo["dpo_handbook"]
    if a.get("status") == "ok" and b.get("status") == "ok":
        dpo["comparison"] = {
            "whole_run_speedup": a["whole_run"]["total_s"] / b["whole_run"]["total_s"],
            "train_real_tokens_per_s_ratio": b["real_tokens_per_s"] / a["real_tokens_per_s"],
            "peak_mem_saving_gb": (a["peak_mem_gb"] - b["peak_mem_gb"]) if a["peak_mem_gb"] is not None
            else None,
        }
    print_dpo(dpo, args.epochs)
    save()
    results["meta"]["total_wall_s"] = time.perf_counter() - t_start
    if device.type == "cuda" and peak_tflops:
        h = results["dpo"].get("dpo_handbook", {})
        goals = {"dpo_mfu_real_goal": 0.30, "dpo_handbook_mfu_real": h.get("mfu_real"),
                 "dpo_meets_goal": None if h.get("mfu_real") is None else h["mfu_real"] >= 0.30}
        results["goals"] = goals
        print(f"\ngoal (H100): dDPO (handbook) MFU on real tokens >= 30 %: {goals['dpo_meets_goal']}")
    print(f"\ntotal wall time {results['meta']['total_wall_s']:.1f} s" + (f"; JSON: {args.out}" if args.out else ""))
    save()
    return results


if __name__ == "__main__":
    main()
