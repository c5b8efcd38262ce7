"""Sizes: a notebook's size parameters resolved for its tier (:func:`size_choice`, :func:`answer_budget_choice`), a
recipe read with them (:func:`read_sized_recipe`) and notebook 06's throughput set-up (:func:`throughput_setup`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.configs import read_recipe, recipe_path
from .choices import Choice, choose, sft_data_choice
from .table import fallback, get_tier, require_hub, stage_setup

# The small tier's recipes are sized for one GPU: a dSFT step is 32 rows of 1,024 tokens of SmolLM2-135M. On a CPU
# that is slow beyond patience — measured on 2 cores (2026-12-04): 8 such rows took 5.5 minutes, so one step ~22
# minutes, notebook 06's 30 timed steps 11 hours and the seven notebooks more than a day. On a machine without CUDA
# a small-tier notebook therefore runs the recipe's own schedule (epochs, learning rate, warm-up, logging,
# evaluation, β) on these sizes wherever its size parameter is left at None, and says so in one line; a parameter
# given explicitly is kept. All seven notebooks at these sizes: 55 minutes and 7.1 GiB peak memory on 2 cores
# (measured 2026-12-04, README, "Three tiers").
SMALL_TIER_CPU_SIZES = {"max_samples": 64, "batch_size": 2, "max_length": 256, "max_new_tokens": 64}


def size_choice(tier: str, **sizes) -> Choice:
    """A notebook's size parameters (``max_samples``, ``batch_size``, ``max_length``; notebook 03's pool reply budget
    ``max_new_tokens``) with ``None`` resolved for ``tier``: ``None`` stays ``None`` (the recipe's size) at ``toy``,
    ``full`` and ``small`` on a GPU; at ``small`` without CUDA it becomes :data:`SMALL_TIER_CPU_SIZES`' value."""
    import torch

    get_tier(tier)
    unknown = set(sizes) - set(SMALL_TIER_CPU_SIZES)
    if unknown:
        raise ValueError(f"size_choice: unknown size parameter(s) {sorted(unknown)}; known: {sorted(SMALL_TIER_CPU_SIZES)}")

    def cpu() -> Choice | None:
        if torch.cuda.is_available():
            return None
        filled = {k: SMALL_TIER_CPU_SIZES[k] if v is None else v for k, v in sizes.items()}
        changed = {k: v for k, v in filled.items() if sizes[k] is None}
        if not changed:
            return Choice(filled, "given")
        return Choice(filled, "cpu", f"{tier} tier without a GPU: the recipe's schedule on CPU sizes {changed} (the "
                                     f"{tier} recipes are sized for one GPU; give these parameters to override)")

    return choose("sizes", tier, {"cpu": cpu, "recipe": lambda: Choice(dict(sizes), "recipe")})


# MT-Bench answers: FastChat's answer budget (fastchat/llm_judge/gen_model_answer.py, --max-new-token, default 1024)
# at full, and at small on a GPU, so that scores compare with FastChat's; the toy world's answers are a few words.
FASTCHAT_MAX_NEW_TOKENS = 1024


TOY_ANSWER_TOKENS = 48


def answer_budget_choice(tier: str, max_new_tokens: int | None = None) -> Choice:
    """Notebook 05's answer budget (MT-Bench turns and win-rate answers): ``max_new_tokens`` when given; else
    FastChat's 1,024 (:data:`FASTCHAT_MAX_NEW_TOKENS`) at ``full`` and at ``small`` on a GPU, and
    :data:`TOY_ANSWER_TOKENS` at ``toy`` and at ``small`` without CUDA (1,024 tokens × 160 turns × six models on 2
    CPU cores would take hours; the toy questions need a sentence)."""
    import torch

    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    compared = "fastchat" in fallback("answer_budget", tier)  # does this tier's MT-Bench compare with FastChat's?

    def given() -> Choice | None:
        if max_new_tokens is None:
            return None
        note = ("" if not compared or max_new_tokens == FASTCHAT_MAX_NEW_TOKENS else
                f"answers up to {max_new_tokens} new tokens (FastChat answers MT-Bench with up to "
                f"{FASTCHAT_MAX_NEW_TOKENS}: scores at another budget do not compare with FastChat's)")
        return Choice(max_new_tokens, "given", note)

    return choose("answer_budget", tier, {
        "given": given,
        "toy": lambda: Choice(TOY_ANSWER_TOKENS, "toy"),
        "cpu": lambda: None if torch.cuda.is_available() else Choice(
            TOY_ANSWER_TOKENS, "cpu", f"{tier} tier without a GPU: answers up to {TOY_ANSWER_TOKENS} new tokens "
                                      f"(FastChat's {FASTCHAT_MAX_NEW_TOKENS} on a GPU)"),
        "fastchat": lambda: Choice(FASTCHAT_MAX_NEW_TOKENS, "fastchat", f"answers up to {FASTCHAT_MAX_NEW_TOKENS} new "
                                                                        "tokens, as FastChat's gen_model_answer.py")})


def read_sized_recipe(recipe, dataclass_types, *, max_steps: int | None = None, max_length: int | None = None,
                      batch_size: int | None = None, max_samples: int | None = None, **overrides):
    """:func:`handbook.core.configs.read_recipe` with a notebook's size parameters applied; ``None`` keeps the
    recipe's value. ``max_steps``, ``max_length``; ``batch_size``: per device, for training and evaluation, and
    one optimizer step is one batch (no gradient accumulation); ``max_samples``: rows of training and
    evaluation data. Other keyword arguments override the recipe as ``read_recipe``'s do. A ``max_steps`` below the
    recipe's ``logging_steps`` / ``eval_steps`` brings them down to it, so a short run still logs and evaluates."""
    sizes = {}
    if max_steps is not None:
        sizes["max_steps"] = max_steps
    if max_length is not None:
        sizes["max_length"] = max_length
    if batch_size is not None:
        sizes.update(per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size)
    if max_samples is not None:
        sizes.update(max_train_samples=max_samples, max_eval_samples=max_samples)
    instances = read_recipe(recipe, dataclass_types, **{**sizes, **overrides})
    for instance in instances:
        if not hasattr(instance, "gradient_accumulation_steps"):
            continue
        if batch_size is not None:
            instance.gradient_accumulation_steps = 1
        if max_steps is not None and max_steps > 0:  # a short run still logs its loss and evaluates
            if instance.logging_steps > max_steps:
                instance.logging_steps = 1
            if instance.eval_steps is not None and instance.eval_steps > max_steps:
                instance.eval_steps = max_steps
    return instances


def throughput_setup(tier: str, output_dir: str | os.PathLike) -> tuple[Path, dict, str]:
    """``(recipe, overrides, note)`` of notebook 06's throughput measurement: the tier's dSFT recipe (toy, small)
    on its data (:func:`sft_data_choice`); at ``full`` the QLoRA recipe, which fits one GPU (the full recipe
    runs under ``accelerate launch`` on 8-16 GPUs)."""
    data = sft_data_choice(tier, output_dir)
    setup = stage_setup("sft", tier)
    if setup.single_gpu_recipe:  # the full tier: its recipe runs under `accelerate launch` on 8-16 GPUs
        require_hub(tier, "Mistral-7B and ultrachat_200k")
        return (recipe_path(setup.single_gpu_recipe), data.value,
                f"{tier} tier: timed with the QLoRA recipe on one GPU (the full recipe runs under `accelerate launch` "
                "on 8-16 GPUs)")
    return setup.recipe_file, data.value, data.note
