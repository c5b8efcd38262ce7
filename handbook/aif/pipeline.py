"""AIF from a recipe: pool → teacher ratings → preference triples, saved to disk; and raw UltraFeedback → triples.

    python -m handbook.aif_data generate --config recipes/toy/aif/config.yaml [--key value ...]
    python -m handbook.aif_data convert --input ultrafeedback.jsonl --output_dir data/uf_binarized --rule argilla

:class:`AIFArguments` and :class:`ConvertArguments` are parsed by ``handbook.core.configs`` (keys, types and
choices checked before any work); constructed directly, they check their values the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..core.backends import ChatBackend, Sampling, with_timeout
from ..core.backends import build_backend as core_build_backend
from ..core.configs import ConfigError, check_dataclass, check_time_bounds
from ..core.data import write_jsonl, write_text_atomic
from ..core.outputs import OVERWRITE_HELP, claim_output_dir
from ..core.runner import EmptyOutput, RunPolicy, guarded_run
from .binarize import MEAN_OF_ASPECTS_RULES, RULES, binarize
from .pool import PoolMemberSpec, build_pool, generate_pool
from .rating import rate_pool
from .ultrafeedback import convert_file


SCORES = ("overall", "fine_grained")


@dataclass
class AIFArguments:
    """``python -m handbook.aif_data generate``: pool → ratings → triples, saved with ``save_to_disk``."""

    output_dir: str = field(metadata={"help": "Where rated.jsonl, triples/ (save_to_disk), report.json and the "
                                              "call caches go."})
    prompts: str = field(default="toy", metadata={"help": "'toy' (train-split toy prompts) or a prompt file: "
                                                          ".txt, .jsonl, .json or .csv."})
    toy_prompts_per_category: int = field(default=60, metadata={"help": "Toy: prompts per category."})
    toy_prompt_seed: int = field(default=1, metadata={"help": "Toy: prompt sampling seed (the dSFT data's is 0)."})
    pool: list[dict] = field(
        default_factory=list,
        metadata={"help": "The response pool, one mapping per model: {name, backend: {type: ...}, temperature, top_p, "
                          "max_new_tokens, seed} (handbook.aif.pool.PoolMemberSpec)."})
    judge: dict = field(default_factory=lambda: {"type": "toy-judge"},
                        metadata={"help": "Backend spec of the judge (handbook.core.backends.build_backend)."})
    max_retries: int = field(default=2, metadata={"help": "Re-asks of the judge after an unparsable rating (>= 0)."})
    judge_max_new_tokens: int = field(default=400, metadata={"help": "Token budget of one rating."})
    rule: str = field(default="zephyr", metadata={"choices": list(RULES),
                                                  "help": "Binarization rule (handbook.aif.binarize)."})
    score: str = field(default="overall", metadata={"choices": list(SCORES),
                                                    "help": "Score of zephyr / best_vs_worst: the overall score (the "
                                                            "dataset card) or the aspects' mean (the paper); argilla "
                                                            "always uses fine_grained."})
    seed: int = field(default=42, metadata={"help": "Seed of the rejected completion's draw."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per backend call (>= 1)."})
    timeout: float | None = field(
        default=None, metadata={"help": "Seconds one request to an endpoint (a backend of type openai) may wait for "
                                        "its reply, for every endpoint whose spec sets no `timeout` of its own "
                                        "(default: the backend's, 60)."})
    max_total_seconds: float | None = field(
        default=None, metadata={"help": "Time bound of the whole run: past it no request is sent or retried and the "
                                        "run stops with an error; what finished is kept (default: none)."})
    allow_cache_reuse: bool = field(
        default=False, metadata={"help": "Reuse the caches even if a producer or an argument changed (the message of "
                                         "a refused cache says what changed); for the same weights or server under "
                                         "another name."})

    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self):
        check_dataclass(self)
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size`: invalid value {self.batch_size}; must be at least 1")
        if self.max_retries < 0:
            raise ConfigError(f"`max_retries`: invalid value {self.max_retries}; must be at least 0")
        check_time_bounds(self)
        PoolMemberSpec.from_pool(self.pool)  # every member's keys and values, as `pool[N].key`


@dataclass
class ConvertArguments:
    """``python -m handbook.aif_data convert``: raw openbmb/UltraFeedback rows → ultrafeedback_binarized triples."""

    input: str = field(metadata={"help": "Raw openbmb/UltraFeedback rows, JSONL."})
    output_dir: str = field(metadata={"help": "Where the triples are saved (datasets' save_to_disk)."})
    rule: str = field(default="zephyr", metadata={"choices": list(RULES),
                                                  "help": "Binarization rule (handbook.aif.binarize)."})
    score: str | None = field(default=None, metadata={"choices": list(SCORES),
                                                      "help": "Score (default: the rule's own; argilla: fine_grained)."})
    seed: int = field(default=42, metadata={"help": "Seed of the rejected completion's draw."})
    fix_overall: bool = field(default=True, metadata={"help": "Correct the known bad overall scores "
                                                              "(--no_fix_overall keeps them)."})
    decontaminate: bool = field(default=True, metadata={"help": "Drop prompts of the benchmarks the handbook evaluates "
                                                                "on (--no_decontaminate keeps them)."})

    def __post_init__(self):
        check_dataclass(self)
        if self.rule in MEAN_OF_ASPECTS_RULES and self.score not in (None, "fine_grained"):
            raise ConfigError(f"`score`: the {self.rule} rule scores by the mean of the aspect ratings "
                              f"(fine_grained); got {self.score!r}")


def rate_prompts(prompts: Sequence[str], members, judge: ChatBackend, args: AIFArguments, pool_cache=None,
                 ratings_cache=None, progress: bool = True, policy: RunPolicy = RunPolicy()) -> list[dict]:
    """Pool → teacher ratings, the stage's one flow: each prompt answered by every pool member
    (:func:`~handbook.aif.pool.generate_pool`), each answer rated by ``judge``
    (:func:`~handbook.aif.rating.rate_pool`, greedy, ``args.judge_max_new_tokens``), both resumable through their
    caches. ``python -m handbook.aif_data generate``, the toy world's preference data and notebook 03 all call it.
    ``policy``: the run's time bound and cache reuse (:class:`handbook.core.runner.RunPolicy`)."""
    pool = generate_pool(prompts, members, pool_cache, args.batch_size, progress, policy)
    sampling = Sampling(temperature=0.0, max_new_tokens=args.judge_max_new_tokens, seed=0)
    return rate_pool(pool, judge, ratings_cache, args.max_retries, sampling, args.batch_size, progress, policy)


def triples_of(rated: Sequence[dict], rule: str, score: str | None, seed: int):
    """:func:`~handbook.aif.binarize.binarize` with the score a rule takes: ``score`` for ``zephyr``, ``h4`` and
    ``best_vs_worst``; the aspects' mean, always, for ``argilla`` and ``argilla_strict``."""
    return binarize(rated, rule, None if rule in MEAN_OF_ASPECTS_RULES else score, seed)


def run_generate(args: AIFArguments, prompts: Sequence[str],
                 build_backend: Callable[..., ChatBackend] = core_build_backend, progress: bool = True):
    """Pool → ratings → triples for ``prompts`` into ``args.output_dir`` (``rated.jsonl``, ``triples/``,
    ``report.json``). ``build_backend(spec, shard=..., deadline=...)`` turns the recipe's backend specs into backends.

    The output folder is locked for the run (``<output_dir>/.lock``: a second run into it is refused with this
    run's pid); the run is bounded by ``max_total_seconds``. Requests that got no reply are never recorded: the
    run raises :class:`handbook.core.runner.CallsFailed` (what finished is cached; a rerun asks exactly the rest).
    No pair at all is :class:`handbook.core.runner.EmptyOutput`: ``rated.jsonl`` and ``report.json`` say why, and
    no ``triples/`` is written (an earlier run's is moved aside to ``triples.earlier-<time>``, never deleted)."""
    if args.rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {args.rule!r}")
    out = claim_output_dir(args.output_dir, "AIF data", args.overwrite_output_dir)
    with guarded_run(out / ".lock", f"the output folder {out}", args.max_total_seconds, args.allow_cache_reuse) as policy:
        return _generate(args, prompts, build_backend, progress, out, policy)


def _generate(args: AIFArguments, prompts, build_backend, progress: bool, out: Path, policy: RunPolicy):
    from datasets import Dataset

    pool_spec = [dict(m, backend=with_timeout(m["backend"], args.timeout)) if isinstance(m, dict) else m
                 for m in args.pool]
    judge = build_backend(with_timeout(args.judge, args.timeout), deadline=policy.deadline)
    rated = rate_prompts(prompts, build_pool(pool_spec, build_backend, deadline=policy.deadline), judge, args,
                         out / "pool.cache.jsonl", out / "ratings.cache.jsonl", progress, policy)
    write_jsonl(out / "rated.jsonl", rated)
    triples, report = triples_of(rated, args.rule, args.score, args.seed)
    write_text_atomic(out / "report.json", json.dumps({"rule": report.rule, "prompts": report.prompts, "kept": report.kept,
                                                 "dropped": dict(report.dropped)}, indent=2))
    if not triples:
        stale, moved = out / "triples", ""
        if stale.exists():  # an earlier run's pairs would pass for this run's; set aside, never deleted
            aside = out / f"triples.earlier-{time.strftime('%Y%m%d-%H%M%S')}"
            stale.rename(aside)
            moved = f" The earlier run's triples/ was moved to {aside} (they are not this run's pairs)."
        failed = sum(c.get("status") != "ok" for r in rated for c in r["completions"])
        raise EmptyOutput(f"0 preference pairs from {len(rated)} prompts ({report}; {failed} failed ratings): no "
                          f"dataset written to {stale}. See {out / 'rated.jsonl'} (each failed rating with the "
                          f"judge's raw reply and the reason) and {out / 'report.json'}.{moved}")
    Dataset.from_list(triples).save_to_disk(str(out / "triples"))
    return rated, triples, report


def run_convert(input_path: str, output_dir: str, rule: str, score: str | None, seed: int,
                fix_overall: bool = True, decontaminate: bool = True):
    from datasets import Dataset

    # every bad line named (file, line, field); identical pairs dropped and counted; no pair left → an error
    triples, conv_report, report = convert_file(input_path, rule, score, seed, fix_overall, decontaminate)
    Dataset.from_list(triples).save_to_disk(output_dir)
    return triples, conv_report, report
