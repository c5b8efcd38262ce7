"""Evaluate any model with any judge from the command line.

    # MT-Bench: FastChat's files (the full tier downloads them), a GPT-4-class judge over HTTP
    python -m handbook.evaluate mt-bench --model data/zephyr-7b-dpo-full --model-id zephyr \
        --questions question.jsonl --judge-prompts judge_prompts.jsonl --reference-answers gpt-4.jsonl \
        --judge-base-url https://api.openai.com/v1 --judge-model gpt-4 --output-dir runs/mt_bench

    # the toy tier: the toy MT-Bench set and the toy rubric judge, offline
    python -m handbook.evaluate mt-bench --model toy-dsft --model-id dsft --output-dir runs/mt_bench_toy

    # AlpacaEval-style win rate of one model against a reference model (both orders judged)
    python -m handbook.evaluate win-rate --model A --reference-model B --prompts prompts.txt ...

Outputs follow FastChat's layout: ``<output-dir>/model_answer/<model-id>.jsonl`` and
``<output-dir>/model_judgment/<judge>_single.jsonl`` (FastChat's ``show_result.py`` reads them),
plus ``results.json`` with the mean score per turn and per category.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.backends import OpenAIBackend, Sampling, TransformersBackend
from .core.data import read_jsonl, write_jsonl
from .core.models import ModelArguments
from .evaluation.judge_prompts import load_judge_prompts
from .evaluation.mt_bench import aggregate, generate_answers, judge_answers, load_questions, load_reference_answers
from .evaluation.win_rate import pairwise_win_rate
from .tiers import resolve_model_args
from .toy import world
from .toy.judges import ToyMTJudge, toy_questions


def model_backend(path: str, batch_size: int = 32):
    """A local model: a directory, a hub id, or the toy names ``toy``, ``toy-dsft``."""
    args = resolve_model_args(ModelArguments(model_name_or_path=path))
    return TransformersBackend.from_model_args(args, batch_size=batch_size, name=path)


def judge_backend(base_url: str | None, model: str | None, api_key_env: str, max_concurrency: int):
    if base_url is None:
        return ToyMTJudge(), "toy-rubric"
    if not model:
        raise SystemExit("--judge-model is required with --judge-base-url")
    return OpenAIBackend(base_url, model, api_key_env=api_key_env, max_concurrency=max_concurrency), model


def run_mt_bench(model: str, model_id: str, output_dir: str, questions_path=None, judge_prompts_path=None,
                 reference_answers_path=None, judge_base_url=None, judge_model=None, api_key_env="OPENAI_API_KEY",
                 max_new_tokens: int = 1024, max_concurrency: int = 8, progress: bool = True) -> dict:
    out = Path(output_dir)
    questions = load_questions(questions_path) if questions_path else toy_questions()
    references = load_reference_answers(reference_answers_path) if reference_answers_path else None
    judge, judge_name = judge_backend(judge_base_url, judge_model, api_key_env, max_concurrency)
    answers = generate_answers(questions, model_backend(model), model_id, max_new_tokens,
                               cache_path=out / "cache" / f"answers-{model_id}.jsonl", progress=progress)
    write_jsonl(out / "model_answer" / f"{model_id}.jsonl", answers)
    judgments = judge_answers(questions, answers, judge, judge_name, load_judge_prompts(judge_prompts_path), references,
                              cache_path=out / "cache" / f"judgments-{model_id}.jsonl", progress=progress)
    path = out / "model_judgment" / f"{judge_name}_single.jsonl"
    kept = [j for j in read_jsonl(path) if j["model"] != model_id] if path.exists() else []
    write_jsonl(path, kept + judgments)  # one file for all models, as FastChat keeps it
    results = aggregate(judgments, questions)[model_id]
    (out / f"results-{model_id}.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m handbook.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("mt-bench", "win-rate"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True, help="model directory, hub id, or toy / toy-dsft")
        p.add_argument("--output-dir", required=True)
        p.add_argument("--judge-base-url", help="OpenAI-compatible judge endpoint (default: the toy rubric judge)")
        p.add_argument("--judge-model")
        p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the judge's key")
        p.add_argument("--max-concurrency", type=int, default=8)
        p.add_argument("--max-new-tokens", type=int, default=1024)
    mt = sub.choices["mt-bench"]
    mt.add_argument("--model-id", help="name in the output files (default: the model path's last part)")
    mt.add_argument("--questions", help="FastChat question.jsonl (default: the toy MT-Bench set)")
    mt.add_argument("--judge-prompts", help="FastChat judge_prompts.jsonl (default: the handbook's own)")
    mt.add_argument("--reference-answers", help="FastChat reference_answer/gpt-4.jsonl")
    wr = sub.choices["win-rate"]
    wr.add_argument("--reference-model", required=True)
    wr.add_argument("--prompts", help="a text file, one prompt per line (default: held-out toy prompts)")
    args = parser.parse_args(argv)

    if args.command == "mt-bench":
        model_id = args.model_id or Path(args.model.rstrip("/")).name
        results = run_mt_bench(args.model, model_id, args.output_dir, args.questions, args.judge_prompts,
                               args.reference_answers, args.judge_base_url, args.judge_model, args.api_key_env,
                               args.max_new_tokens, args.max_concurrency)
        print(json.dumps({model_id: results}, indent=2))
    else:
        if args.prompts:
            prompts = [x for x in Path(args.prompts).read_text().splitlines() if x.strip()]
        else:
            prompts = [p.text for p in world.sample_prompts(12, "heldout", 0)]
        convs = [[{"role": "user", "content": p}] for p in prompts]
        sampling = Sampling(0.0, 1.0, args.max_new_tokens, 0)
        answers = model_backend(args.model).chat(convs, sampling)
        reference = model_backend(args.reference_model).chat(convs, sampling)
        judge, _ = judge_backend(args.judge_base_url, args.judge_model, args.api_key_env, args.max_concurrency)
        rate, records = pairwise_win_rate(prompts, answers, reference, judge)
        write_jsonl(Path(args.output_dir) / "pairwise_judgments.jsonl", records)
        print(f"win rate of {args.model} against {args.reference_model}: {rate}")


if __name__ == "__main__":
    sys.exit(main())
