"""Evaluate any model with any judge from the command line.

    # MT-Bench: FastChat's files (the full tier downloads them), a GPT-4-class judge over HTTP
    python -m handbook.evaluate mt-bench --model data/zephyr-7b-dpo-full --model_id zephyr \
        --questions question.jsonl --judge_prompts judge_prompts.jsonl --reference_answers gpt-4.jsonl \
        --judge_base_url https://api.openai.com/v1 --judge_model gpt-4 --output_dir runs/mt_bench

    # the toy tier: the toy MT-Bench set and the toy rubric judge, offline
    python -m handbook.evaluate mt-bench --model toy-dsft --model_id dsft --output_dir runs/mt_bench_toy

    # AlpacaEval-style win rate of one model against a reference model (both orders judged)
    python -m handbook.evaluate win-rate --model A --reference_model B --prompts prompts.txt ...

Options are ``--key value`` (or ``--config FILE`` with the same keys in YAML), parsed and checked by
:mod:`handbook.core.configs` into :class:`MTBenchArguments` / :class:`WinRateArguments`.

Outputs follow FastChat's layout: ``<output_dir>/model_answer/<model_id>.jsonl`` and
``<output_dir>/model_judgment/<judge>_single.jsonl`` (FastChat's ``show_result.py`` reads them),
plus ``results.json`` with the mean score per turn and per category.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .core.backends import OpenAIBackend, Sampling
from .core.deadline import Deadline
from .core.configs import ConfigError, check_time_bounds, parse_command
from .core.data import read_prompts, write_jsonl, write_text_atomic
from .core.outputs import OVERWRITE_HELP, check_safe_name, claim_output_dir
from .core.runner import EmptyOutput, RunPolicy, guarded_run, reported_errors
from .evaluation.judge_prompts import load_judge_prompts
from .evaluation.mt_bench import aggregate, load_questions, reference_answers_for, run_models
from .evaluation.win_rate import pairwise_win_rate
from .tiers import model_backend
from .toy import world
from .toy.judges import ToyMTJudge, toy_questions


def judge_backend(base_url: str | None, model: str | None, api_key_env: str, max_concurrency: int,
                  timeout: float | None = None, deadline: Deadline | None = None):
    if base_url is None:
        return ToyMTJudge(), "toy-rubric"
    if not model:
        raise ConfigError("--judge_model is required with --judge_base_url")
    extra = {} if timeout is None else {"timeout": timeout}
    return OpenAIBackend(base_url, model, api_key_env=api_key_env, max_concurrency=max_concurrency, deadline=deadline,
                         **extra), model


def _guarded(output_dir: Path, max_total_seconds: float | None, allow_reuse: bool, overwrite: bool = False):
    """The output folder claimed (:func:`handbook.core.outputs.claim_output_dir`: not a foreign folder unless
    ``overwrite``) and locked as ``<output_dir>/.lock`` for the run (:func:`handbook.core.runner.guarded_run`, which
    gives the body the run's :class:`~handbook.core.runner.RunPolicy`)."""
    claim_output_dir(output_dir, "evaluation", overwrite)
    return guarded_run(output_dir / ".lock", f"the output folder {output_dir}", max_total_seconds, allow_reuse)


def run_mt_bench(model: str, model_id: str, output_dir: str, questions_path=None, judge_prompts_path=None,
                 reference_answers_path=None, judge_base_url=None, judge_model=None, api_key_env="OPENAI_API_KEY",
                 max_new_tokens: int = 1024, max_concurrency: int = 8, progress: bool = True,
                 timeout: float | None = None, max_total_seconds: float | None = None,
                 allow_reuse: bool = False, overwrite_output_dir: bool = False) -> dict:
    """MT-Bench of ``model`` into ``output_dir`` (FastChat's layout, ``results-<model_id>.json``).

    The output folder is locked for the run; answers and judgments are cached under ``cache/`` with their
    producers' identity (a model retrained into the same folder is refused, naming what changed). A judge
    request that got no reply ends the run with :class:`handbook.core.runner.CallsFailed` (a rerun asks exactly
    those); no judgment with a rating at all is :class:`handbook.core.runner.EmptyOutput` (the judgments are
    written, with their raw replies; no results file)."""
    check_safe_name(model_id, "model_id")  # it names files: model_answer/<model_id>.jsonl, results-<model_id>.json
    out = Path(output_dir)
    with _guarded(out, max_total_seconds, allow_reuse, overwrite_output_dir) as policy:
        return _mt_bench(model, model_id, out, questions_path, judge_prompts_path, reference_answers_path,
                         judge_base_url, judge_model, api_key_env, max_new_tokens, max_concurrency, progress, timeout,
                         policy)


def _mt_bench(model, model_id, out: Path, questions_path, judge_prompts_path, reference_answers_path, judge_base_url,
              judge_model, api_key_env, max_new_tokens, max_concurrency, progress, timeout, policy: RunPolicy) -> dict:
    questions = load_questions(questions_path) if questions_path else toy_questions()
    # FastChat's rule: math/reasoning/coding against GPT-4's reference answers, refused before any work without them
    references = reference_answers_for(questions, questions_path, reference_answers_path)
    judge, judge_name = judge_backend(judge_base_url, judge_model, api_key_env, max_concurrency, timeout,
                                      policy.deadline)
    _, judgments = run_models(questions, {model_id: model_backend(model)}, judge, judge_name, out, max_new_tokens,
                              load_judge_prompts(judge_prompts_path), references, progress=progress, policy=policy)
    path = out / "model_judgment" / f"{judge_name}_single.jsonl"
    results = aggregate(judgments, questions)[model_id]
    if results["score"] is None:
        raise EmptyOutput(f"MT-Bench of {model_id}: none of the {results['judged']} judgments has a rating (the judge "
                          f"never answered in the [[rating]] format), so there is no score; see {path} (each "
                          "judgment with the judge's raw reply). No results file written.")
    write_text_atomic(out / f"results-{model_id}.json", json.dumps(results, indent=2))  # whole or not at all
    return results


@dataclass
class JudgeArguments:
    """The judge and generation options both commands share."""

    judge_base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible judge endpoint (default: the toy rubric judge)."})
    judge_model: str | None = field(default=None, metadata={"help": "The judge's model name (with judge_base_url)."})
    api_key_env: str = field(default="OPENAI_API_KEY",
                             metadata={"help": "Environment variable holding the judge's key."})
    max_concurrency: int = field(default=8, metadata={"help": "Judge requests in flight at once (>= 1)."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Token budget of one answer (>= 1)."})
    timeout: float | None = field(
        default=None, metadata={"help": "Seconds one request to the judge's endpoint may wait for its reply "
                                        "(default: 60)."})
    max_total_seconds: float | None = field(
        default=None, metadata={"help": "Time bound of the whole run: past it no request is sent or retried and the "
                                        "run stops with an error; what finished is kept (default: none)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})

    def __post_init__(self):
        check_time_bounds(self)
        if self.judge_base_url and not self.judge_model:
            raise ConfigError("`judge_model` is required with `judge_base_url`")
        for key in ("max_concurrency", "max_new_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"`{key}`: invalid value {getattr(self, key)}; must be at least 1")


@dataclass(kw_only=True)
class MTBenchArguments(JudgeArguments):
    """``python -m handbook.evaluate mt-bench``: answer MT-Bench's questions, have the judge grade them."""

    model: str = field(metadata={"help": "Model directory, hub id, or toy / toy-dsft."})
    output_dir: str = field(metadata={"help": "Where model_answer/, model_judgment/ and results-<model_id>.json go."})
    model_id: str | None = field(default=None,
                                 metadata={"help": "Name in the output files (default: the model path's last part)."})
    questions: str | None = field(default=None,
                                  metadata={"help": "FastChat question.jsonl (default: the toy MT-Bench set)."})
    judge_prompts: str | None = field(
        default=None, metadata={"help": "FastChat judge_prompts.jsonl (default: the handbook's own)."})
    reference_answers: str | None = field(default=None, metadata={"help": "FastChat reference_answer/gpt-4.jsonl."})
    allow_cache_reuse: bool = field(
        default=False, metadata={"help": "Reuse the answer and judgment caches even if the model's weights, the judge "
                                         "or an argument changed (the message of a refused cache says what changed)."})


@dataclass(kw_only=True)
class WinRateArguments(JudgeArguments):
    """``python -m handbook.evaluate win-rate``: AlpacaEval-style win rate of a model against a reference model."""

    model: str = field(metadata={"help": "Model directory, hub id, or toy / toy-dsft."})
    reference_model: str = field(metadata={"help": "The model to compare against (same forms as `model`)."})
    output_dir: str = field(metadata={"help": "Where pairwise_judgments.jsonl goes."})
    prompts: str | None = field(
        default=None, metadata={"help": "A text file, one prompt per line (default: held-out toy prompts)."})


COMMANDS = {"mt-bench": [MTBenchArguments], "win-rate": [WinRateArguments]}


def main(argv=None) -> None:
    command, (args,) = parse_command(COMMANDS, list(sys.argv[1:] if argv is None else argv),
                                     prog="python -m handbook.evaluate", description=__doc__)
    if command == "mt-bench":
        model_id = args.model_id or Path(args.model.rstrip("/")).name
        results = run_mt_bench(args.model, model_id, args.output_dir, args.questions, args.judge_prompts,
                               args.reference_answers, args.judge_base_url, args.judge_model, args.api_key_env,
                               args.max_new_tokens, args.max_concurrency, timeout=args.timeout,
                               max_total_seconds=args.max_total_seconds, allow_reuse=args.allow_cache_reuse,
                               overwrite_output_dir=args.overwrite_output_dir)
        print(json.dumps({model_id: results}, indent=2))
    else:
        rate = run_win_rate(args)
        print(f"win rate of {args.model} against {args.reference_model}: {rate}")


def run_win_rate(args: WinRateArguments):
    """The win rate of ``args.model`` against ``args.reference_model`` (``pairwise_judgments.jsonl`` in
    ``output_dir``, locked for the run, bounded by ``max_total_seconds``). No prompts, or no pair with a verdict
    in both orders, is :class:`handbook.core.runner.EmptyOutput` (the judgments are written with their raw
    replies); a judge request that got no reply is :class:`handbook.core.runner.CallsFailed`."""
    if args.prompts:
        prompts = read_prompts(args.prompts)
    else:
        prompts = [p.text for p in world.sample_prompts(12, "heldout", 0)]
    if not prompts:
        raise EmptyOutput(f"{args.prompts}: no prompts, so no win rate (nothing judged, nothing written)")
    out = Path(args.output_dir)
    with _guarded(out, args.max_total_seconds, False, args.overwrite_output_dir) as policy:
        convs = [[{"role": "user", "content": p}] for p in prompts]
        sampling = Sampling(0.0, 1.0, args.max_new_tokens, 0)
        answers = model_backend(args.model).chat(convs, sampling)
        reference = model_backend(args.reference_model).chat(convs, sampling)
        judge, _ = judge_backend(args.judge_base_url, args.judge_model, args.api_key_env, args.max_concurrency,
                                 args.timeout, policy.deadline)
        rate, records = pairwise_win_rate(prompts, answers, reference, judge)
        write_jsonl(out / "pairwise_judgments.jsonl", records)
    if rate is None:
        raise EmptyOutput(f"win rate of {args.model} against {args.reference_model}: no pair of the {len(prompts)} got "
                          "a verdict in both orders, so there is no win rate; see "
                          f"{out / 'pairwise_judgments.jsonl'} (the judge's raw replies)")
    return rate


if __name__ == "__main__":
    with reported_errors():  # an outage, a locked output, a changed producer, nothing to score: exit status 1
        sys.exit(main())
