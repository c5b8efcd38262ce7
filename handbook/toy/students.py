"""Trained toy students, built once and cached, for the stages after dSFT.

Notebook 02 teaches dSFT by training a student in front of the reader. The later stages need such a
student too (the AIF pool samples from it; dDPO starts from it), and a weaker one (the same run
after 100 of its 400 steps) for the pool. ``toy_students()`` trains them with the toy recipe on
first use, keeps them in the cache next to the toy base, and reuses them afterwards; any change to
the recipe or to the toy base gives a new fingerprint and a new build. Notebook 02's toy run is that
same run, so :func:`cached_student_for` lets it reuse the cached student (and its logs) instead of
training the same 400 steps a second time on a machine that already has them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from ..core.configs import read_recipe, recipe_path
from ..core.distributed import main_process_first, world_size
from ..core.models import ModelArguments
from ..dsft.training import SFTDataArguments, train
from .build import build_once, default_cache_dir, toy_base_dir, toy_base_path
from .dialogues import toy_sft_datasets

logger = logging.getLogger(__name__)

RECIPE = recipe_path("toy/sft/config.yaml")
EARLY_STEP = 100
BUILD_VERSION = b"2"  # 2: the build evaluates as the recipe says, so its logs are the notebook's
# What decides the student's weights: a run that matches these is the cached run.
_TRAINING_FIELDS = ("max_steps", "num_train_epochs", "seed", "data_seed", "learning_rate", "lr_scheduler_type",
                    "warmup_steps", "weight_decay", "per_device_train_batch_size", "gradient_accumulation_steps",
                    "max_length", "packing", "assistant_only_loss", "train_sampling_strategy", "optim")
_DATA_FIELDS = ("dataset_name", "toy_prompts_per_category", "toy_replies_per_prompt", "toy_eval_prompts_per_category",
                "toy_data_seed")


TOY_MODEL_NAMES = ("toy", "toy-dsft", "toy-dsft-early")


def toy_model_paths(cache_dir: str | os.PathLike | None = None, recipe: str | os.PathLike = RECIPE) -> dict[str, str]:
    """Where each toy model name's model lives on this machine, built or not (pure: nothing is built):
    ``toy`` the toy base, ``toy-dsft`` / ``toy-dsft-early`` the cached students (:func:`build_toy_model` builds)."""
    base, target = _students_dir(cache_dir, recipe)
    return {"toy": str(base), "toy-dsft": str(target / "final"), "toy-dsft-early": str(target / "early")}


def resolve_toy_name(name: str | None) -> str | None:
    """``toy`` → the toy base's directory; ``toy-dsft`` / ``toy-dsft-early`` → the cached students'; any other
    name or path unchanged. Pure: what the name means, never a build (:func:`build_toy_model` is the build step)."""
    return toy_model_paths().get(name, name) if name in TOY_MODEL_NAMES else name


def build_toy_model(name_or_path: str | os.PathLike | None) -> bool:
    """The build step of the toy models: when ``name_or_path`` is a toy model name (or where
    :func:`resolve_toy_name` puts it) and this machine has not built it yet, build it here — the toy base in under
    a second; the students, a 400-step dSFT run of the toy recipe, in about a minute, by rank 0 first under
    ``accelerate launch`` — and log it. ``True`` for a toy model (built now or before), ``False`` for anything
    else."""
    paths = toy_model_paths()
    name = next((n for n, p in paths.items() if str(name_or_path) in (n, p)), None)
    if name is None:
        return False
    if name == "toy":
        toy_base_path()
    elif not toy_students_built():
        logger.info("building the toy dSFT students (the toy recipe's 400 steps, once per machine): %s",
                    Path(paths[name]).parent)
        with main_process_first():
            toy_students()
    return True


def _students_dir(cache_dir: str | os.PathLike | None, recipe: str | os.PathLike) -> tuple[Path, Path]:
    """(the toy base, the students' cache folder) for ``recipe``: a new recipe or base is a new folder (pure)."""
    base = toy_base_dir(cache_dir=cache_dir)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fp = hashlib.sha256(Path(recipe).read_bytes() + base.name.encode() + BUILD_VERSION).hexdigest()[:12]
    return base, root / f"toy-dsft-{fp}"


def toy_students_built(cache_dir: str | os.PathLike | None = None, recipe: str | os.PathLike = RECIPE) -> bool:
    """Whether :func:`toy_students` would reuse a finished build (``False``: its first call trains them)."""
    return (_students_dir(cache_dir, recipe)[1] / "BUILD_OK").exists()


def toy_students(cache_dir: str | os.PathLike | None = None, recipe: str | os.PathLike = RECIPE) -> dict[str, str]:
    """``{"dsft": <dir>, "dsft_early": <dir>}``: the toy dSFT student and its step-100 checkpoint."""
    from trl import SFTConfig

    base, target = _students_dir(cache_dir, recipe)
    paths = {"dsft": str(target / "final"), "dsft_early": str(target / "early")}
    if (target / "BUILD_OK").exists():
        return paths
    if world_size() > 1:
        raise RuntimeError(
            "the toy students are not built yet, and they cannot be trained inside a multi-process launch: build them "
            "first with `python -c 'from handbook.toy.students import toy_students; toy_students()'`")

    def build(tmp: Path) -> None:
        toy_base_path(cache_dir=cache_dir)
        model_args, data_args, training_args = read_recipe(
            recipe, [ModelArguments, SFTDataArguments, SFTConfig], output_dir=str(tmp / "final"),
            save_strategy="steps", save_steps=EARLY_STEP, save_only_model=True)
        model_args.model_name_or_path = str(base)
        data_args.toy_data_dir = str(tmp / "data")
        train_ds, eval_ds, _ = toy_sft_datasets(data_args)
        train(model_args, data_args, training_args, datasets=(train_ds, eval_ds))
        os.replace(tmp / "final" / f"checkpoint-{EARLY_STEP}", tmp / "early")
        for ckpt in (tmp / "final").glob("checkpoint-*"):
            shutil.rmtree(ckpt)

    build_once(target, build)
    return paths


def cached_student_for(model_args, data_args, training_args, train_rows=None,
                       recipe: str | os.PathLike = RECIPE) -> str | None:
    """The cached toy dSFT student's directory if ``(model_args, data_args, training_args)`` would train
    exactly it (same base, data and every training field that decides the weights), else ``None``.

    The data is the same when the recipe's data fields are, or — for data from elsewhere, e.g. the dialogues
    notebook 01 wrote — when ``train_rows`` holds exactly the recipe's training dialogues, in the same order.
    Notebook 02 uses it so that the reader's run and the students' build are one run, not two.
    """
    from trl import SFTConfig

    ref_model, ref_data, ref_training = read_recipe(recipe, [ModelArguments, SFTDataArguments, SFTConfig])
    if resolve_toy_name(model_args.model_name_or_path) != resolve_toy_name(ref_model.model_name_or_path):
        return None
    if any(getattr(training_args, f) != getattr(ref_training, f) for f in _TRAINING_FIELDS):
        return None
    if all(getattr(data_args, f) == getattr(ref_data, f) for f in _DATA_FIELDS):
        return toy_students()["dsft"]
    if train_rows is None or data_args.max_train_samples != ref_data.max_train_samples:
        return None
    ref_train, _, _ = toy_sft_datasets(ref_data)  # the toy teacher is scripted: rebuilt in memory in about a second
    if _dialogues_digest(train_rows) != _dialogues_digest(ref_train):
        return None
    return toy_students()["dsft"]


def _dialogues_digest(rows) -> str:
    """What training sees of a dialogue dataset: the ``messages`` of every row, in order."""
    import json

    digest = hashlib.sha256()
    for messages in rows["messages"]:
        digest.update(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()
