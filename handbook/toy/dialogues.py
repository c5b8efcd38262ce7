"""The toy world's dSFT data, written by the toy teacher through the stage's own dialogue code.

Two-turn dialogues (the teacher also plays the user), filtered like ultrachat_200k; cached call by
call under a data directory, so a second run asks nothing twice.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..core.data import prompt_id
from ..core.distributed import main_process_first
from ..dsft.dialogues import DialogueConfig, generate_dialogue_sets
from ..dsft.filters import ultrachat_filters
from ..dsft.training import SFTDataArguments, prepare_sft_splits
from . import world
from .teacher import ToyTeacher


def toy_dsft_dataset(prompts_per_category: int = 150, replies_per_prompt: int = 2,
                     eval_prompts_per_category: int = 8, seed: int = 0, data_dir: str | Path | None = None,
                     progress: bool = False):
    """The toy dSFT data: dialogues by the toy teacher, filtered like ultrachat_200k.

    ``train`` dialogues start from train-split prompts (the teacher, playing the user, also asks
    only train-split follow-ups); ``test`` dialogues from held-out prompts, for the eval loss.
    Returns ``(DatasetDict, reports)`` with the filter reports of the training rows.
    """
    from datasets import Dataset, DatasetDict

    teacher = ToyTeacher()
    cache = Path(data_dir) if data_dir is not None else None
    train_prompts = [p.text for p in world.sample_prompts(prompts_per_category, "train", seed, allow_fewer=True)]
    caches = [cache / f"train.{r}.cache.jsonl" if cache else None for r in range(replies_per_prompt)]
    rows = generate_dialogue_sets(train_prompts, teacher, DialogueConfig(num_turns=2, seed=seed, batch_size=256),
                                  replies_per_prompt, caches, progress=progress).to_list()
    rows, reports = ultrachat_filters(rows)
    # eval dialogues: single-turn answers to held-out prompts (the user simulator would draw train prompts)
    eval_prompts = world.sample_prompts(eval_prompts_per_category, "heldout", seed)
    rng = random.Random(seed)
    perfect = world.TeacherConfig(lowercase_rate=0.0, disclaimer_rate=0.0)
    test = [{"prompt": p.text, "prompt_id": prompt_id(p.text),
             "messages": [{"role": "user", "content": p.text},
                          {"role": "assistant", "content": world.teacher_reply(p, rng, perfect)}]} for p in eval_prompts]
    return DatasetDict(train=Dataset.from_list(rows), test=Dataset.from_list(test)), reports


def toy_sft_datasets(data_args: SFTDataArguments, output_dir: str | None = None):
    """``(train, eval, filter reports)`` for an SFT recipe whose ``dataset_name`` is ``toy``; rank 0 writes
    the cache (``toy_data_dir``, default ``<output_dir>/data``), the other processes read it."""
    data_dir = data_args.toy_data_dir or (str(Path(output_dir) / "data") if output_dir else None)
    with main_process_first():
        dd, reports = toy_dsft_dataset(data_args.toy_prompts_per_category, data_args.toy_replies_per_prompt,
                                       data_args.toy_eval_prompts_per_category, data_args.toy_data_seed, data_dir)
    train, test = prepare_sft_splits(dd["train"], dd["test"], data_args)
    return train, test, reports
