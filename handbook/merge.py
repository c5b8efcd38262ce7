"""``python -m handbook.merge``: fold a LoRA / QLoRA adapter into its base model, so the next stage can start from it.

    python -m handbook.merge --adapter_dir data/zephyr-7b-sft-qlora --output_dir data/zephyr-7b-sft-qlora-merged

The one-GPU chain is QLoRA dSFT → merge → QLoRA dDPO → evaluate: dSFT saves only an adapter; dDPO
needs the dSFT model itself, as its starting point *and* as its frozen reference (with QLoRA, the
reference is that model with dDPO's own adapter switched off). The base named in the adapter's
``adapter_config.json`` is loaded unquantised in ``dtype`` (merging into 4-bit weights would round the
adapter away), the adapter is added into its weights (``merge_and_unload``), and the result is saved
with the adapter's tokenizer — a plain checkpoint that the dDPO recipe loads in 4-bit again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .core.configs import parse_config
from .core.models import ModelArguments, get_model, get_tokenizer
from .core.outputs import OVERWRITE_HELP, OutputRefused, claim_output_dir
from .core.runner import reported_errors
from .tiers import resolve_and_build

logger = logging.getLogger(__name__)


@dataclass
class MergeArguments:
    """What to merge and where to."""

    adapter_dir: str = field(metadata={"help": "A directory with adapter_config.json and the adapter's weights "
                                               "(what a `use_peft` run saves to its output_dir)."})
    output_dir: str = field(metadata={"help": "Where the merged model and its tokenizer are saved."})
    dtype: str = field(default="bfloat16", metadata={"help": "Precision of the merged weights.",
                                                     "choices": ["bfloat16", "float16", "float32"]})
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The base to merge into (default: the one adapter_config.json names)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": OVERWRITE_HELP})


def merge_adapter(args: MergeArguments) -> Path:
    """Merge ``args.adapter_dir`` into its base and save it to ``args.output_dir``; returns that directory."""
    from peft import PeftModel

    config_file = Path(args.adapter_dir) / "adapter_config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} does not exist: {args.adapter_dir} is not a LoRA adapter directory")
    adapter, out = Path(args.adapter_dir).resolve(), Path(args.output_dir).resolve()
    if out == adapter or adapter in out.parents:
        # the merged weights beside adapter_config.json would load as base + adapter: the delta applied twice
        raise OutputRefused(f"`output_dir` {args.output_dir} is the adapter's own folder (or inside it); the merged "
                            "model must go to a folder of its own")
    claim_output_dir(args.output_dir, "merged model", args.overwrite_output_dir)
    base = args.base_model_name_or_path or json.loads(config_file.read_text())["base_model_name_or_path"]
    base_args = resolve_and_build(ModelArguments(model_name_or_path=base, dtype=args.dtype))
    model = get_model(base_args)
    merged = PeftModel.from_pretrained(model, args.adapter_dir).merge_and_unload()
    out = Path(args.output_dir)
    merged.save_pretrained(out)
    get_tokenizer(ModelArguments(model_name_or_path=args.adapter_dir)).save_pretrained(out)
    logger.info("merged %s into %s → %s", args.adapter_dir, base, out)
    return out


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_config([MergeArguments], argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(f"merged model saved to {merge_adapter(args)}")


if __name__ == "__main__":
    with reported_errors():  # a user's mistake: one `error:` line, exit status 1 (--debug: the traceback)
        main()
