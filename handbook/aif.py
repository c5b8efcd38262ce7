"""AIF: AI feedback through preferences — a response pool, teacher ratings, preference triples.

For every prompt, each model of a pool writes a completion; the teacher rates every completion
(``handbook.rating``: four aspects and an overall score); a binarization rule turns the ratings into
(prompt, chosen, rejected) triples (``handbook.binarize``). Pool generation and rating are cached
call by call (``handbook.cache``), so a killed run restarted with the same arguments loses no row
and repeats no finished call.

    python -m handbook.aif generate --config recipes/toy/aif/config.yaml [--key value ...]
    python -m handbook.aif convert --input ultrafeedback.jsonl --output_dir data/uf_binarized --rule argilla
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .backends import ChatBackend, Sampling, build_backend
from .binarize import RULES, binarize, convert_ultrafeedback, prompt_id
from .cache import CallCache
from .rating import rate


@dataclass
class PoolMember:
    """One model of the response pool and how it samples."""

    name: str
    backend: ChatBackend
    sampling: Sampling = Sampling(temperature=1.0, max_new_tokens=256, seed=0)


def generate_pool(prompts: Sequence[str], members: Sequence[PoolMember], cache_path=None, batch_size: int = 64,
                  progress: bool = True) -> list[dict]:
    """``[{"prompt", "prompt_id", "completions": [{"model", "response"}, ...]}]``, one row per distinct prompt."""
    prompts = list(dict.fromkeys(prompts))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"pool member names must be unique: {names}")
    meta = {"members": [{"name": m.name, "backend": m.backend.name, "sampling": asdict(m.sampling)} for m in members],
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
    cache = CallCache(cache_path, meta, ("prompt_id", "model")) if cache_path else None
    done = {k: r["response"] for k, r in cache.records.items()} if cache else {}
    ids = [prompt_id(p) for p in prompts]
    bar = tqdm(total=len(prompts) * len(members), desc="AIF pool (completions)", disable=not progress, initial=len(done))
    for member in members:
        todo = [(p, pid) for p, pid in zip(prompts, ids) if (pid, member.name) not in done]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            replies = member.backend.chat([[{"role": "user", "content": p}] for p, _ in chunk], member.sampling)
            records = [{"prompt_id": pid, "model": member.name, "response": r} for (_, pid), r in zip(chunk, replies)]
            for r in records:
                done[(r["prompt_id"], r["model"])] = r["response"]
            if cache:
                cache.append(records)
            bar.update(len(records))
    bar.close()
    return [{"prompt": p, "prompt_id": pid,
             "completions": [{"model": m.name, "response": done[(pid, m.name)]} for m in members]}
            for p, pid in zip(prompts, ids)]


def rate_pool(rows: Sequence[dict], judge: ChatBackend, cache_path=None, max_retries: int = 2,
              sampling: Sampling = Sampling(temperature=0.0, max_new_tokens=400, seed=0), batch_size: int = 64,
              progress: bool = True) -> list[dict]:
    """Each completion gets its rating record (``status``, ``aspects``, ``overall``, ``fine_grained``,
    ``raw``, ``attempts``, ``error``); failed ratings stay in the rows with their raw reply."""
    meta = {"judge": judge.name, "max_retries": max_retries, "sampling": asdict(sampling),
            "items_sha256": hashlib.sha256(json.dumps(
                [[r["prompt"], [c["model"] for c in r["completions"]], [c["response"] for c in r["completions"]]]
                 for r in rows]).encode()).hexdigest()}
    cache = CallCache(cache_path, meta, ("prompt_id", "model")) if cache_path else None
    done = dict(cache.records) if cache else {}
    items = [(r["prompt_id"], r["prompt"], c["model"], c["response"]) for r in rows for c in r["completions"]]
    todo = [it for it in items if (it[0], it[2]) not in done]
    bar = tqdm(total=len(items), desc="AIF ratings", disable=not progress, initial=len(items) - len(todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        results = rate([(p, resp) for _, p, _, resp in chunk], judge, max_retries, sampling)
        records = [{"prompt_id": pid, "model": model, **res.to_record()} for (pid, _, model, _), res in zip(chunk, results)]
        for r in records:
            done[(r["prompt_id"], r["model"])] = r
        if cache:
            cache.append(records)
        bar.update(len(records))
    bar.close()
    out = []
    for r in rows:
        completions = []
        for c in r["completions"]:
            rec = {k: v for k, v in done[(r["prompt_id"], c["model"])].items() if k not in ("prompt_id", "model")}
            completions.append({**c, **rec})
        out.append({**r, "completions": completions})
    return out


# ---------------------------------------------------------------------------------------------
# Configured runs
# ---------------------------------------------------------------------------------------------
@dataclass
class AIFArguments:
    """``python -m handbook.aif generate``: pool → ratings → triples, saved with ``save_to_disk``."""

    output_dir: str
    prompts: str = "toy"                     # "toy" (train-split toy prompts) or a .txt / .jsonl file of prompts
    toy_prompts_per_category: int = 60
    toy_prompt_seed: int = 1                 # another sample than the dSFT data's (seed 0)
    pool: list = field(default_factory=list)  # [{name, backend: {...}, temperature, max_new_tokens, seed}]
    judge: dict = field(default_factory=lambda: {"type": "toy-judge"})
    max_retries: int = 2
    judge_max_new_tokens: int = 400
    rule: str = "zephyr"
    score: str = "overall"
    seed: int = 42
    batch_size: int = 64


def build_pool(pool_spec: Sequence[dict], shard: bool | None = None) -> list[PoolMember]:
    members, backends = [], {}
    for n, spec in enumerate(pool_spec):
        for key in ("name", "backend"):
            if key not in spec:
                raise ValueError(f"pool[{n}]: field '{key}' is missing")
        backend_spec = dict(spec["backend"])  # toy model names are resolved by build_backend
        cache_key = json.dumps(backend_spec, sort_keys=True)
        if cache_key not in backends:  # members sharing a model load it once
            backends[cache_key] = build_backend(backend_spec, shard=shard)
        sampling = Sampling(temperature=spec.get("temperature", 1.0), top_p=spec.get("top_p", 1.0),
                            max_new_tokens=spec.get("max_new_tokens", 256), seed=spec.get("seed", n))
        members.append(PoolMember(spec["name"], backends[cache_key], sampling))
    return members


def load_prompts(args: AIFArguments) -> list[str]:
    from .dsft_data import load_seed_prompts

    if args.prompts == "toy":
        from .toy import world

        return [p.text for p in world.sample_prompts(args.toy_prompts_per_category, "train", args.toy_prompt_seed,
                                                     allow_fewer=True)]
    return load_seed_prompts(args.prompts)


def run_generate(args: AIFArguments, progress: bool = True):
    from datasets import Dataset

    if args.rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {args.rule!r}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = load_prompts(args)
    pool = generate_pool(prompts, build_pool(args.pool), out / "pool.cache.jsonl", args.batch_size, progress)
    judge = build_backend(args.judge)
    rated = rate_pool(pool, judge, out / "ratings.cache.jsonl", args.max_retries,
                      Sampling(temperature=0.0, max_new_tokens=args.judge_max_new_tokens, seed=0), args.batch_size,
                      progress)
    (out / "rated.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rated))
    triples, report = binarize(rated, args.rule, args.score if args.rule != "argilla" else None, args.seed)
    Dataset.from_list(triples).save_to_disk(str(out / "triples"))
    (out / "report.json").write_text(json.dumps({"rule": report.rule, "prompts": report.prompts, "kept": report.kept,
                                                 "dropped": dict(report.dropped)}, indent=2))
    return rated, triples, report


def run_convert(input_path: str, output_dir: str, rule: str, score: str | None, seed: int,
                fix_overall: bool = True, decontaminate: bool = True):
    from datasets import Dataset

    raw = [json.loads(line) for line in Path(input_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rated, conv_report = convert_ultrafeedback(raw, fix_overall=fix_overall, decontaminate=decontaminate)
    triples, report = binarize(rated, rule, score, seed)
    Dataset.from_list(triples).save_to_disk(output_dir)
    return triples, conv_report, report


def _parse_generate(argv: Sequence[str]) -> AIFArguments:
    import yaml

    from .configs import check_keys, load_yaml

    args = list(argv)
    config: dict = {}
    if "--config" in args:
        i = args.index("--config")
        config = load_yaml(args[i + 1])
        check_keys(config, [AIFArguments], args[i + 1])
        del args[i:i + 2]
    overrides = {}
    for i in range(0, len(args), 2):
        if not args[i].startswith("--") or i + 1 >= len(args):
            raise SystemExit(f"expected --key value pairs, got {args[i:]}")
        overrides[args[i][2:]] = yaml.safe_load(args[i + 1])
    check_keys(overrides, [AIFArguments], "command line")
    config.update(overrides)
    if "output_dir" not in config:
        raise SystemExit("output_dir is required")
    return AIFArguments(**config)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("generate", "convert"):
        raise SystemExit("usage: python -m handbook.aif {generate --config FILE | convert --input FILE --output_dir DIR}")
    if argv[0] == "generate":
        args = _parse_generate(argv[1:])
        rated, triples, report = run_generate(args)
        failed = sum(c["status"] != "ok" for r in rated for c in r["completions"])
        print(f"{len(rated)} prompts, {sum(len(r['completions']) for r in rated)} completions rated "
              f"({failed} failed ratings)\n{report}\ntriples saved to {Path(args.output_dir) / 'triples'}")
    else:
        parser = argparse.ArgumentParser(prog="python -m handbook.aif convert")
        parser.add_argument("--input", required=True, help="raw openbmb/UltraFeedback rows, JSONL")
        parser.add_argument("--output_dir", required=True)
        parser.add_argument("--rule", choices=RULES, default="zephyr")
        parser.add_argument("--score", choices=("overall", "fine_grained"), default=None)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--no_fix_overall", action="store_true")
        parser.add_argument("--keep_benchmark_prompts", action="store_true")
        a = parser.parse_args(argv[1:])
        triples, conv_report, report = run_convert(a.input, a.output_dir, a.rule, a.score, a.seed,
                                                   not a.no_fix_overall, not a.keep_benchmark_prompts)
        print(f"{conv_report}\n{report}\nsaved to {a.output_dir}")


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------------------------
# The toy tier's preference data
# ---------------------------------------------------------------------------------------------
TOY_AIF_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "toy" / "aif" / "config.yaml"


def toy_preferences(split: str = "train", prompts_per_category: int = 60, seed: int = 1, data_dir=None,
                    rule: str = "zephyr", score: str | None = "overall", progress: bool = False):
    """Preference triples on toy prompts of ``split``, by the toy AIF recipe's pool and judge.

    ``train`` triples are for dDPO; ``heldout`` triples only measure it (held-out reward accuracy).
    Returns ``(triples, report)``; pool and ratings are cached under ``data_dir`` when given.
    """
    import yaml

    from .toy import world

    recipe = yaml.safe_load(TOY_AIF_RECIPE.read_text())
    args = AIFArguments(**{**recipe, "output_dir": str(data_dir or "."), "rule": rule})
    prompts = [p.text for p in world.sample_prompts(prompts_per_category, split, seed, allow_fewer=True)]
    cache = Path(data_dir) if data_dir is not None else None
    # shard=False: this runs on one process (rank 0 first, under `accelerate launch`), with no collectives
    pool = generate_pool(prompts, build_pool(args.pool, shard=False), cache / f"{split}.pool.jsonl" if cache else None,
                         args.batch_size, progress)
    rated = rate_pool(pool, build_backend(args.judge), cache / f"{split}.ratings.jsonl" if cache else None,
                      args.max_retries, Sampling(temperature=0.0, max_new_tokens=args.judge_max_new_tokens, seed=0),
                      args.batch_size, progress)
    return binarize(rated, rule, score if rule != "argilla" else None, args.seed)
