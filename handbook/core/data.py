"""Files and datasets every stage reads and writes: JSONL, dataset splits, prompt ids, finished runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def prompt_id(prompt: str) -> str:
    """The SHA-256 hex digest of the prompt text, as in ultrachat_200k and ultrafeedback_binarized."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def read_jsonl(path) -> list[dict]:
    """The JSON objects of a JSONL file, one per non-empty line; a bad line is an error naming file and line."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc})") from None
    return rows


def write_jsonl(path, rows) -> None:
    """Write ``rows`` as JSONL (parents created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def read_prompts(path) -> list[str]:
    """Prompts from a JSONL file (a ``prompt`` field per row) or a text file (one per non-empty line);
    a missing file, a bad line or an empty prompt is an error naming file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    if path.suffix != ".jsonl":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompt = json.loads(line).get("prompt")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{path}, line {n}: not a JSON object ({exc})") from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{path}, line {n}: field 'prompt' is missing or empty")
        prompts.append(prompt)
    return prompts


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


def last_checkpoint(training_args):
    """The checkpoint to resume from: the newest in ``output_dir`` when ``resume_from_checkpoint`` is true,
    a path when it is one, else ``None``."""
    resume = getattr(training_args, "resume_from_checkpoint", None)
    if resume in (None, False, "false", "False"):
        return None
    if resume not in (True, "true", "True"):
        return resume
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None


def save_training_outputs(trainer, tokenizer, result, output_dir: str) -> None:
    """Model (a collective under ZeRO-3: every rank calls it), then tokenizer and logs from rank 0."""
    trainer.save_model(output_dir)
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        out = Path(output_dir)
        (out / "train_results.json").write_text(json.dumps(result.metrics, indent=2))
        (out / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
