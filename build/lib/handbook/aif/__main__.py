"""``python -m handbook.aif``: AIF from the command line.

    python -m handbook.aif generate --config recipes/toy/aif/config.yaml [--key value ...]
    python -m handbook.aif convert --input ultrafeedback.jsonl --output_dir data/uf_binarized --rule argilla

``generate`` runs pool → teacher ratings → preference triples (:mod:`handbook.aif.pipeline`) with the
recipe's names resolved (``prompts: toy``, ``{type: toy}`` backends, ``toy-dsft`` models);
``convert`` rebuilds ``ultrafeedback_binarized`` from raw ``openbmb/UltraFeedback`` rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..core.configs import check_keys, load_yaml
from ..tiers import prompts_from
from ..toy.backends import build_backend
from .binarize import RULES
from .pipeline import AIFArguments, run_convert, run_generate


def _parse_generate(argv: Sequence[str]) -> AIFArguments:
    import yaml

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
        prompts = prompts_from(args.prompts, args.toy_prompts_per_category, args.toy_prompt_seed)
        rated, triples, report = run_generate(args, prompts, build_backend)
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
