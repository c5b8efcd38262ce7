"""dSFT: supervised fine-tuning on teacher-written dialogues, through TRL's ``SFTTrainer``.

    python -m handbook.sft --config recipes/zephyr-7b-beta/sft/config_full.yaml [--key value ...]
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml -m handbook.sft --config ...

The recipe holds three groups of keys: the model (``handbook.models.ModelArguments``), the data
(:class:`SFTDataArguments`) and the trainer (TRL's ``SFTConfig``). The loss is on assistant tokens
only (``assistant_only_loss``; the chat template must carry ``{% generation %}`` markers, as the
handbook's Zephyr template does); packing, LoRA (``use_peft``) and QLoRA (``load_in_4bit`` +
``use_peft``) are switches in the recipe. Notebook 02 calls :func:`train` directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .filters import FilterReport, ultrachat_filters, validate_dialogues
from .models import ModelArguments
from .training import load_split, resolve_model_path, save_training_outputs

logger = logging.getLogger(__name__)


@dataclass
class SFTDataArguments:
    """Where the dialogues come from."""

    dataset_name: str = field(
        default="HuggingFaceH4/ultrachat_200k",
        metadata={"help": "A hub dataset id, a directory written by `save_to_disk`, a .jsonl file, or 'toy' "
                          "(dialogues written by the toy teacher, generated on first use and cached)."})
    dataset_config: str | None = field(default=None, metadata={"help": "The hub dataset's configuration name."})
    dataset_train_split: str = field(default="train_sft", metadata={"help": "Training split."})
    dataset_test_split: str | None = field(default="test_sft", metadata={"help": "Evaluation split (none: no eval)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation rows."})
    apply_ultrachat_filters: bool = field(
        default=False,
        metadata={"help": "Truecase, drop self-disclaiming dialogues and de-duplicate (ultrachat_200k is already "
                          "filtered; turn this on for raw teacher output)."})
    toy_prompts_per_category: int = field(default=150, metadata={"help": "Toy: seed prompts per category."})
    toy_replies_per_prompt: int = field(default=2, metadata={"help": "Toy: dialogues per seed prompt."})
    toy_eval_prompts_per_category: int = field(default=8, metadata={"help": "Toy: held-out prompts for eval loss."})
    toy_data_seed: int = field(default=0, metadata={"help": "Toy: seed of prompt sampling and the teacher."})
    toy_data_dir: str | None = field(
        default=None, metadata={"help": "Toy: where generated dialogues are cached (default: <output_dir>/data)."})


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def toy_dsft_dataset(prompts_per_category: int = 150, replies_per_prompt: int = 2,
                     eval_prompts_per_category: int = 8, seed: int = 0, data_dir: str | Path | None = None,
                     progress: bool = False):
    """The toy dSFT data: dialogues by the toy teacher, filtered like ultrachat_200k.

    ``train`` dialogues start from train-split prompts (the teacher, playing the user, also asks
    only train-split follow-ups); ``test`` dialogues from held-out prompts, for the eval loss.
    Returns ``(DatasetDict, reports)`` with the filter reports of the training rows.
    """
    from datasets import Dataset, DatasetDict

    from .backends import ToyTeacher
    from .dsft_data import DialogueConfig, generate_dialogues
    from .toy import world

    teacher = ToyTeacher()
    cache = Path(data_dir) if data_dir is not None else None
    train_prompts = [p.text for p in world.sample_prompts(prompts_per_category, "train", seed, allow_fewer=True)]
    rows = []
    for r in range(replies_per_prompt):
        cfg = DialogueConfig(num_turns=2, seed=seed + 1000 * r, batch_size=256)
        path = cache / f"train.{r}.cache.jsonl" if cache else None
        rows += generate_dialogues(train_prompts, teacher, cfg, path, progress=progress).to_list()
    rows, reports = ultrachat_filters(rows)
    # eval dialogues: single-turn answers to held-out prompts (the user simulator would draw train prompts)
    eval_prompts = world.sample_prompts(eval_prompts_per_category, "heldout", seed)
    rng = world.random.Random(seed)
    perfect = world.TeacherConfig(lowercase_rate=0.0, disclaimer_rate=0.0)
    test = [{"prompt": p.text, "prompt_id": _pid(p.text),
             "messages": [{"role": "user", "content": p.text},
                          {"role": "assistant", "content": world.teacher_reply(p, rng, perfect)}]} for p in eval_prompts]
    return DatasetDict(train=Dataset.from_list(rows), test=Dataset.from_list(test)), reports


def _pid(text: str) -> str:
    from .dsft_data import prompt_id

    return prompt_id(text)


def load_sft_datasets(data_args: SFTDataArguments, output_dir: str | None = None):
    """``(train, eval or None, filter reports)``; every row validated, only ``messages`` kept."""
    reports: list[FilterReport] = []
    if data_args.dataset_name == "toy":
        from .distributed import main_process_first

        data_dir = data_args.toy_data_dir or (str(Path(output_dir) / "data") if output_dir else None)
        with main_process_first():  # rank 0 writes the cache, the others read it
            dd, reports = toy_dsft_dataset(data_args.toy_prompts_per_category, data_args.toy_replies_per_prompt,
                                           data_args.toy_eval_prompts_per_category, data_args.toy_data_seed, data_dir)
        train, test = dd["train"], dd["test"]
    else:
        train = load_split(data_args.dataset_name, data_args.dataset_config, data_args.dataset_train_split)
        test = (load_split(data_args.dataset_name, data_args.dataset_config, data_args.dataset_test_split)
                if data_args.dataset_test_split else None)
        if data_args.apply_ultrachat_filters:
            from datasets import Dataset

            rows, reports = ultrachat_filters(train.to_list())
            train = Dataset.from_list(rows)
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    if test is not None and data_args.max_eval_samples is not None:
        test = test.select(range(min(data_args.max_eval_samples, len(test))))
    for split_name, ds in (("train", train), ("eval", test)):
        if ds is None:
            continue
        if "messages" not in ds.column_names:
            raise ValueError(f"{data_args.dataset_name} ({split_name}): row 0: field 'messages' is missing "
                             f"(columns: {ds.column_names})")
        validate_dialogues(ds)
    keep = lambda ds: ds.remove_columns([c for c in ds.column_names if c != "messages"])  # noqa: E731
    return keep(train), (keep(test) if test is not None else None), reports


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train(model_args: ModelArguments, data_args: SFTDataArguments, training_args, datasets=None):
    """Fine-tune ``model_args``' model on the dialogues; save model, tokenizer and logs to ``output_dir``.

    ``datasets`` may pass ``(train, eval)`` directly (the notebook does); otherwise they are loaded
    from ``data_args``. Returns the trainer.
    """
    from trl import SFTTrainer

    from .models import get_model, get_peft_config, get_tokenizer

    resolve_model_path(model_args)
    tokenizer = get_tokenizer(model_args, training_args.trust_remote_code)
    if training_args.assistant_only_loss and "{% generation %}" not in (tokenizer.chat_template or ""):
        raise ValueError(
            f"assistant_only_loss needs {{% generation %}} markers in the chat template, and the template of "
            f"{model_args.model_name_or_path!r} has none: set `chat_template: zephyr` in the recipe")
    if datasets is None:
        train_ds, eval_ds, reports = load_sft_datasets(data_args, training_args.output_dir)
        for r in reports:
            logger.info("%s", r)
    else:
        train_ds, eval_ds = datasets
        validate_dialogues(train_ds)
    model = get_model(model_args, trust_remote_code=training_args.trust_remote_code)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    result = trainer.train(resume_from_checkpoint=_last_checkpoint(training_args))
    save_training_outputs(trainer, tokenizer, result, training_args.output_dir)
    return trainer


def _last_checkpoint(training_args):
    """Resume from the newest checkpoint in ``output_dir`` when ``resume_from_checkpoint`` is true."""
    resume = getattr(training_args, "resume_from_checkpoint", None)
    if resume in (None, False, "false", "False"):
        return None
    if resume not in (True, "true", "True"):
        return resume
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None


def main(argv: list[str] | None = None) -> None:
    from trl import SFTConfig

    from .configs import parse_config
    from .distributed import finish

    model_args, data_args, training_args = parse_config([ModelArguments, SFTDataArguments, SFTConfig], argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trainer = train(model_args, data_args, training_args)
    if trainer.accelerator.is_main_process:
        print(f"dSFT model saved to {training_args.output_dir}")
    finish(trainer)


if __name__ == "__main__":
    main()
