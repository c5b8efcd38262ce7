"""What the dSFT and dDPO entry points share: reading a dataset split, and saving a finished run."""

from __future__ import annotations

import json
from pathlib import Path


def resolve_model_path(model_args):
    """Replace a toy model name (``toy``, ``toy-dsft``, ``toy-dsft-early``) by its directory; returns ``model_args``."""
    from .toy.students import resolve_toy_name

    model_args.model_name_or_path = resolve_toy_name(model_args.model_name_or_path)
    return model_args


def load_split(name: str, config: str | None, split: str):
    """One split of a dataset: a directory written by ``save_to_disk``, a .jsonl/.json file, or a hub id."""
    import datasets

    path = Path(name)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{name} has no split {split!r}; it has {list(loaded)}")
            return loaded[split]
        return loaded
    if path.suffix in (".jsonl", ".json") and path.exists():
        return datasets.load_dataset("json", data_files=str(path), split="train")
    return datasets.load_dataset(name, config, split=split)


def save_training_outputs(trainer, tokenizer, result, output_dir: str) -> None:
    """Model (a collective under ZeRO-3: every rank calls it), then tokenizer and logs from rank 0."""
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        out = Path(output_dir)
        (out / "train_results.json").write_text(json.dumps(result.metrics, indent=2))
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
