"""``python -m handbook.aif_data``: AIF from the command line (the stage's code is :mod:`handbook.aif`; every
entry point lives at the package's top, beside ``dsft_data``, ``sft``, ``dpo`` and ``evaluate``).

    python -m handbook.aif_data generate --config recipes/toy/aif/config.yaml [--key value ...]
    python -m handbook.aif_data convert --input ultrafeedback.jsonl --output_dir data/uf_binarized --rule argilla

``generate`` runs pool → teacher ratings → preference triples (:mod:`handbook.aif.pipeline`) with the
recipe's names resolved (``prompts: toy``, ``{type: toy}`` backends, ``toy-dsft`` models);
``convert`` rebuilds ``ultrafeedback_binarized`` from raw ``openbmb/UltraFeedback`` rows. Both commands
take ``--config FILE`` and ``--key value`` options, parsed and checked by :mod:`handbook.core.configs`
(:class:`~handbook.aif.pipeline.AIFArguments`, :class:`~handbook.aif.pipeline.ConvertArguments`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from .aif.pipeline import AIFArguments, ConvertArguments, run_convert, run_generate
from .core.configs import parse_command
from .core.runner import reported_errors
from .tiers import build_backend, prompts_from

COMMANDS = {"generate": [AIFArguments], "convert": [ConvertArguments]}


def main(argv: Sequence[str] | None = None) -> None:
    command, (args,) = parse_command(COMMANDS, list(sys.argv[1:] if argv is None else argv),
                                     prog="python -m handbook.aif_data", description=__doc__)
    if command == "generate":
        prompts = prompts_from(args.prompts, args.toy_prompts_per_category, args.toy_prompt_seed)
        rated, triples, report = run_generate(args, prompts, build_backend)
        failed = sum(c["status"] != "ok" for r in rated for c in r["completions"])
        print(f"{len(rated)} prompts, {sum(len(r['completions']) for r in rated)} completions rated "
              f"({failed} failed ratings)\n{report}\ntriples saved to {Path(args.output_dir) / 'triples'}")
    else:
        triples, conv_report, report = run_convert(args.input, args.output_dir, args.rule, args.score, args.seed,
                                                   args.fix_overall, args.decontaminate)
        print(f"{conv_report}\n{report}\nsaved to {args.output_dir}")


if __name__ == "__main__":
    with reported_errors():  # an outage, a locked output, a changed producer: the message, exit status 1
        main()
