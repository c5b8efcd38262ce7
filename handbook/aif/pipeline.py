"""AIF from a recipe: pool → teacher ratings → preference triples, saved to disk; and raw UltraFeedback → triples.

    python -m handbook.aif generate --config recipes/toy/aif/config.yaml [--key value ...]
    python -m handbook.aif convert --input ultrafeedback.jsonl --output_dir data/uf_binarized --rule argilla
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..core.backends import ChatBackend, Sampling
from ..core.backends import build_backend as core_build_backend
from .binarize import RULES, binarize
from .pool import build_pool, generate_pool
from .rating import rate_pool
from .ultrafeedback import convert_ultrafeedback


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


def run_generate(args: AIFArguments, prompts: Sequence[str],
                 build_backend: Callable[..., ChatBackend] = core_build_backend, progress: bool = True):
    """Pool → ratings → triples for ``prompts`` into ``args.output_dir`` (``rated.jsonl``, ``triples/``,
    ``report.json``). ``build_backend`` turns the recipe's backend specs into backends."""
    from datasets import Dataset

    if args.rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {args.rule!r}")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool = generate_pool(prompts, build_pool(args.pool, build_backend), out / "pool.cache.jsonl", args.batch_size, progress)
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
