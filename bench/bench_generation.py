"""Generation throughput for dSFT data and the AIF pool (issue 8).

Two measurements, each on the same single-turn toy-world prompts:

a) the local backend (:class:`handbook.core.backends.TransformersBackend`): one request at a time
   (``batch_size=1``) against batched, left-padded generation, greedy, a fixed ``max_new_tokens``,
   for the toy dSFT student and a random-init Mistral-architecture model of tens of millions of
   parameters (``--hidden/--layers/--intermediate/--heads/--kv-heads``, the toy tokenizer).
   Generated tokens are counted from ``model.generate``'s output: each row's new tokens up to and
   including its first end-of-sequence token (padding after it is not counted). A correctness
   column says whether the batched replies equal the one-at-a-time replies.
b) the HTTP backend (:class:`handbook.core.backends.OpenAIBackend`) against llama.cpp's server
   (``handbook.tools.serving``, the SmolLM2-135M GGUF): concurrency 1 against 4; tokens are the
   server's ``usage.completion_tokens``. ``llama_cpp.server`` answers one request at a time (one
   model context behind a lock, no parallel slots), so concurrency can only overlap HTTP overhead.

The headline ``generation_batched_speedup`` is the medium (tens-of-M) model's best batched speedup,
where compute dominates; the toy model's, which is mostly per-step overhead, is reported beside it.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python bench/bench_generation.py
    ... --sizes toy --prompts 16 --max-new-tokens 16 --batch-sizes 1,16 --no-http
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from contextlib import contextmanager
from typing import Sequence

import torch

DEFAULT_BATCH_SIZES = (1, 16, 64)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def toy_conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """``n`` single-turn conversations of toy-world train prompts, mixed over the categories."""
    from handbook.toy import world

    per_category = -(-n // len(world.CATEGORIES))
    prompts = world.sample_prompts(per_category, "train", seed=seed, allow_fewer=True)
    random.Random(seed).shuffle(prompts)
    if len(prompts) < n:
        raise ValueError(f"the toy world has only {len(prompts)} train prompts of this draw, asked for {n}")
    return [[{"role": "user", "content": p.text}] for p in prompts[:n]]


def medium_model(tokenizer, hidden: int = 512, layers: int = 6, intermediate: int = 1536, heads: int = 8,
                 kv_heads: int = 4, max_positions: int = 512, seed: int = 0):
    """A random-init Mistral-architecture model on the toy tokenizer (defaults: the ~20 M
    ``handbook.tools.synthetic.MODEL_SIZES["medium"]``), built by ``handbook.tools.synthetic.random_mistral_model``."""
    from handbook.tools.synthetic import random_mistral_model

    if hidden % heads or heads % kv_heads:
        raise ValueError(f"--hidden ({hidden}) must be a multiple of --heads ({heads}), and --heads of --kv-heads ({kv_heads})")
    sizes = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                 num_attention_heads=heads, num_key_value_heads=kv_heads)
    return random_mistral_model(tokenizer, sizes, seed, max_position_embeddings=max_positions).eval()


# ---------------------------------------------------------------------------------------------
# a) the local backend
# ---------------------------------------------------------------------------------------------
def count_new_tokens(new: torch.Tensor, eos_token_id) -> list[int]:
    """Per row of generated ids: tokens up to and including the first EOS (all of them if none)."""
    eos_ids = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    is_eos = torch.isin(new, torch.tensor(eos_ids, device=new.device))
    width = new.shape[1]
    first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, torch.full_like(new[:, 0], width))
    return first.tolist()


@contextmanager
def recording_generate(model, eos_token_id):
    """Patch ``model.generate`` for the block; yields a list that collects each row's new-token count."""
    counts: list[int] = []
    original = model.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        prompt_len = (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1]
        counts.extend(count_new_tokens(out[:, prompt_len:], eos_token_id))
        return out

    model.generate = generate
    try:
        yield counts
    finally:
        del model.generate  # the class's method again


def bench_local(model, tokenizer, conversations, max_new_tokens: int, batch_sizes: Sequence[int]) -> list[dict]:
    """One row per batch size (1 first): prompts, new tokens, seconds, tokens/s, speedup, same replies."""
    from handbook.core.backends import Sampling, TransformersBackend

    sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens, seed=0)
    sizes = sorted({1, *batch_sizes})
    TransformersBackend(model, tokenizer, batch_size=2).chat(conversations[:2], Sampling(temperature=0.0, max_new_tokens=2))
    rows, baseline = [], None
    for bs in sizes:
        backend = TransformersBackend(model, tokenizer, batch_size=bs)
        with recording_generate(model, tokenizer.eos_token_id) as counts:
            start = time.perf_counter()
            replies = backend.chat(conversations, sampling)
            seconds = time.perf_counter() - start
        tokens = sum(counts)
        row = {"batch_size": bs, "prompts": len(conversations), "new_tokens": tokens, "seconds": seconds,
               "tokens_per_s": tokens / seconds, "replies": replies}
        if baseline is None:
            baseline = row
        row["speedup"] = row["tokens_per_s"] / baseline["tokens_per_s"]
        same = sum(a == b for a, b in zip(replies, baseline["replies"]))
        row["same_as_one_at_a_time"] = same == len(replies)
        row["same_count"] = same
        rows.append(row)
    return rows


def _local_summary(rows: list[dict], **extra) -> dict:
    batched = [r for r in rows if r["batch_size"] > 1]
    best = max(batched, key=lambda r: r["speedup"]) if batched else rows[0]
    return {**extra, "rows": rows, "best_speedup": best["speedup"], "best_batch_size": best["batch_size"],
            "batched_equals_one_at_a_time": all(r["same_as_one_at_a_time"] for r in rows)}


# ---------------------------------------------------------------------------------------------
# b) the HTTP backend against llama.cpp's server
# ---------------------------------------------------------------------------------------------
@contextmanager
def usage_meter(backend):
    """Count the server's ``usage`` of every completion the backend makes, for the block.

    Wraps the backend's openai client (a private attribute): ``OpenAIBackend.chat`` returns text only.
    """
    completions = backend._client.chat.completions
    original = completions.create
    lock = threading.Lock()
    totals = {"completion_tokens": 0, "prompt_tokens": 0, "responses": 0, "without_usage": 0}

    def create(*args, **kwargs):
        response = original(*args, **kwargs)
        usage = getattr(response, "usage", None)
        with lock:
            totals["responses"] += 1
            if usage is None:
                totals["without_usage"] += 1
            else:
                totals["completion_tokens"] += usage.completion_tokens or 0
                totals["prompt_tokens"] += usage.prompt_tokens or 0
        return response

    completions.create = create
    try:
        yield totals
    finally:
        del completions.create


def bench_http(conversations, max_new_tokens: int, concurrencies: Sequence[int], n_threads: int = 2) -> dict:
    """Rows per concurrency (1 first) against a fresh llama.cpp server, or ``{"skipped": reason}``."""
    from handbook.core.backends import OpenAIBackend, Sampling
    from handbook.tools.serving import llama_cpp_server, unavailable_reason

    reason = unavailable_reason()
    if reason:
        return {"skipped": reason}
    sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens, seed=0)
    rows, baseline = [], None
    with llama_cpp_server(n_threads=n_threads) as (base_url, model):
        OpenAIBackend(base_url, model, api_key_env=None).chat(conversations[:1], Sampling(temperature=0.0, max_new_tokens=4))
        for c in sorted({1, *concurrencies}):
            backend = OpenAIBackend(base_url, model, api_key_env=None, max_concurrency=c, max_retries=2, timeout=300)
            with usage_meter(backend) as usage:
                start = time.perf_counter()
                replies = backend.chat(conversations, sampling)
                seconds = time.perf_counter() - start
            tokens = usage["completion_tokens"] if not usage["without_usage"] else None
            row = {"concurrency": c, "requests": len(conversations), "completion_tokens": tokens,
                   "chars": sum(len(r) for r in replies), "seconds": seconds,
                   "requests_per_s": len(conversations) / seconds,
                   "tokens_per_s": tokens / seconds if tokens is not None else None, "replies": replies}
            if baseline is None:
                baseline = row
            key = "tokens_per_s" if tokens is not None and baseline["tokens_per_s"] else "requests_per_s"
            row["speedup"] = row[key] / baseline[key]
            row["same_as_concurrency_1"] = replies == baseline["replies"]
            rows.append(row)
    return {"rows": rows, "server": "llama_cpp.server (llama-cpp-python), SmolLM2-135M-Instruct Q4_1 GGUF",
            "server_n_threads": n_threads,
            "server_parallelism": "none: one model context behind a global lock, requests are served one at a time"}


# ---------------------------------------------------------------------------------------------
def run(prompts: int = 64, max_new_tokens: int = 32, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
        sizes: Sequence[str] = ("toy", "medium"), toy_model: str = "dsft", hidden: int = 512, layers: int = 6,
        intermediate: int = 1536, heads: int = 8, kv_heads: int = 4, http: bool = True, http_prompts: int = 8,
        http_max_new_tokens: int = 32, concurrencies: Sequence[int] = (1, 4), server_threads: int = 2,
        threads: int | None = None, seed: int = 0) -> dict:
    """Run the benchmark; returns the measurements (see the module docstring).

    Keys: ``generation_batched_speedup`` (headline: medium if run, else toy) with
    ``generation_batched_speedup_model``, ``toy_batched_speedup`` / ``medium_batched_speedup``,
    ``toy_batched_equals_one_at_a_time``, ``local`` (per size: params, rows, ...), ``http`` and
    ``http_concurrency_speedup`` (``None`` when the HTTP part is skipped).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from handbook.tools.synthetic import parameter_count
    from handbook.toy import toy_base_path

    unknown = set(sizes) - {"toy", "medium"}
    if unknown:
        raise ValueError(f"--sizes must be toy and/or medium, got {sorted(unknown)}")
    if threads:
        torch.set_num_threads(threads)
    conversations = toy_conversations(prompts, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(toy_base_path())
    result: dict = {"settings": {"prompts": prompts, "max_new_tokens": max_new_tokens, "batch_sizes": list(batch_sizes),
                                 "sizes": list(sizes), "torch_threads": torch.get_num_threads(), "decoding": "greedy"},
                    "local": {}}
    for size in sizes:
        if size == "toy":
            if toy_model == "dsft":
                from handbook.toy.students import toy_students

                path, label = toy_students()["dsft"], "toy dSFT student"
            else:
                path, label = str(toy_base_path()), "toy base (random init)"
            model = AutoModelForCausalLM.from_pretrained(path).eval()
        else:
            model = medium_model(tokenizer, hidden=hidden, layers=layers, intermediate=intermediate, heads=heads,
                                 kv_heads=kv_heads, max_positions=max(512, 128 + max_new_tokens), seed=seed)
            label = f"random-init Mistral h{hidden} L{layers} i{intermediate} heads {heads}/{kv_heads}"
        rows = bench_local(model, tokenizer, conversations, max_new_tokens, batch_sizes)
        result["local"][size] = _local_summary(rows, model=label, params=parameter_count(model))
        result[f"{size}_batched_speedup"] = result["local"][size]["best_speedup"]
        del model
    if "toy" in result["local"]:
        result["toy_batched_equals_one_at_a_time"] = result["local"]["toy"]["batched_equals_one_at_a_time"]
    headline = "medium" if "medium" in result["local"] else ("toy" if "toy" in result["local"] else None)
    result["generation_batched_speedup"] = result["local"][headline]["best_speedup"] if headline else None
    result["generation_batched_speedup_model"] = headline
    if http:
        result["http"] = bench_http(toy_conversations(http_prompts, seed=seed), http_max_new_tokens, concurrencies,
                                    n_threads=server_threads)
    else:
        result["http"] = {"skipped": "--no-http"}
    rows = result["http"].get("rows")
    result["http_concurrency_speedup"] = max(r["speedup"] for r in rows if r["concurrency"] > 1) if rows and len(rows) > 1 else None
    return result


def format_tables(result: dict) -> str:
    from handbook.tools.measure import format_table

    s = result["settings"]
    lines = [f"Local backend (TransformersBackend), {s['prompts']} prompts, greedy, max_new_tokens={s['max_new_tokens']}, "
             f"torch threads={s['torch_threads']}",
             format_table([{"model": size, "params (M)": info["params"] / 1e6, "batch": r["batch_size"],
                            "prompts": r["prompts"], "new tok": r["new_tokens"], "seconds": r["seconds"],
                            "tok/s": r["tokens_per_s"], "speedup": r["speedup"],
                            "same as bs=1": "yes" if r["same_as_one_at_a_time"] else f"no ({r['same_count']}/{r['prompts']})"}
                           for size, info in result["local"].items() for r in info["rows"]])]
    for size, info in result["local"].items():
        lines.append(f"  {size}: {info['model']}")
    if result.get("generation_batched_speedup") is not None:
        lines.append(f"Headline generation_batched_speedup = {result['generation_batched_speedup']:.2f}x "
                     f"({result['generation_batched_speedup_model']}, best batch size "
                     f"{result['local'][result['generation_batched_speedup_model']]['best_batch_size']})")
    lines.append("")
    http = result["http"]
    if "skipped" in http:
        lines.append(f"HTTP backend: skipped ({http['skipped']})")
    else:
        lines.append(f"HTTP backend (OpenAIBackend) -> {http['server']}, server n_threads={http['server_n_threads']}")
        lines.append(format_table([{"concurrency": r["concurrency"], "requests": r["requests"],
                                    "compl tok": r["completion_tokens"], "seconds": r["seconds"],
                                    "req/s": r["requests_per_s"], "tok/s": r["tokens_per_s"], "speedup": r["speedup"],
                                    "same as c=1": "yes" if r["same_as_concurrency_1"] else "no"}
                                   for r in http["rows"]]))
        lines.append(f"Server parallelism: {http['server_parallelism']}")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64, help="prompts for the local backend (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="new tokens per reply, local backend (default 32)")
    p.add_argument("--batch-sizes", type=_ints, default=list(DEFAULT_BATCH_SIZES), help="comma list; 1 is always run (default 1,16,64)")
    p.add_argument("--sizes", default="toy,medium", help="toy and/or medium (default toy,medium)")
    p.add_argument("--toy-model", choices=("dsft", "base"), default="dsft", help="the toy dSFT student (cached) or the toy base")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--no-http", action="store_true", help="skip the llama.cpp server part")
    p.add_argument("--http-prompts", type=int, default=8, help="requests per concurrency setting (default 8)")
    p.add_argument("--http-max-new-tokens", type=int, default=32, help="max_tokens per request (default 32)")
    p.add_argument("--concurrency", type=_ints, default=[1, 4], help="comma list; 1 is always run (default 1,4)")
    p.add_argument("--server-threads", type=int, default=2, help="llama.cpp server n_threads (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    result = run(prompts=a.prompts, max_new_tokens=a.max_new_tokens, batch_sizes=a.batch_sizes,
                 sizes=[x.strip() for x in a.sizes.split(",") if x.strip()], toy_model=a.toy_model, hidden=a.hidden,
                 layers=a.layers, intermediate=a.intermediate, heads=a.heads, kv_heads=a.kv_heads, http=not a.no_http,
                 http_prompts=a.http_prompts, http_max_new_tokens=a.http_max_new_tokens, concurrencies=a.concurrency,
                 server_threads=a.server_threads, threads=a.threads, seed=a.seed)
    print(format_tables(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
