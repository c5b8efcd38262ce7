"""One loading path for models and tokenizers, used by notebooks, CLIs and tests.

A hub id or a local directory (or a directory plus a ``gguf_file``) goes in; a model and its
tokenizer come out, with the dtype, attention implementation, optional 4-/8-bit quantisation
(bitsandbytes) and LoRA (peft) that ``ModelArguments`` asks for, and optionally a chat template
override. The toy tier simply hands it the toy base's directory.

``ModelArguments`` extends TRL's ``ModelConfig`` (the fields TRL's scripts and the upstream
alignment-handbook recipes use) with the few this handbook adds, so the same YAML keys work here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch
from trl import ModelConfig

from .chat_templates import resolve_chat_template

logger = logging.getLogger(__name__)

__all__ = ["ModelArguments", "get_tokenizer", "get_model", "load_model_and_tokenizer",
           "get_peft_config", "resolve_attn_implementation", "resolve_device_and_precision", "limit_reporting",
           "torch_dtype"]


def get_peft_config(model_args):
    """TRL's ``get_peft_config`` (imported when called: ``trl.trainer.utils`` pulls in peft and bitsandbytes,
    ~3 s, which a notebook that never trains should not wait for)."""
    from trl.trainer.utils import get_peft_config as trl_get_peft_config

    return trl_get_peft_config(model_args)


def get_quantization_config(model_args):
    """TRL's ``get_quantization_config``, imported when called (see :func:`get_peft_config`)."""
    from trl.trainer.utils import get_quantization_config as trl_get_quantization_config

    return trl_get_quantization_config(model_args)


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ``ModelConfig`` plus the handbook's loading options."""

    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to load, if not the model's own."})
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "A GGUF file inside `model_name_or_path` to load (de-quantised) instead of safetensors. "
                          "Needs the `gguf` package."})
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Override the tokenizer's chat template: a name ('zephyr'; 'zephyr_upstream' adds BOS and "
                          "an empty system turn, as the Zephyr-7B-β run did) or a Jinja template string."})
    # `trust_remote_code` is not a field here: TRL's SFTConfig and DPOConfig already have it (default
    # False), and the loaders take it as an argument, so a recipe has one such key.


def torch_dtype(name: str | None, device: str = "cpu") -> torch.dtype | str:
    """``"auto"``/``None`` → float32 on the CPU (bf16 matmuls are slow and lossy there), else "auto"."""
    if name in (None, "auto"):
        return torch.float32 if device == "cpu" else "auto"
    if name not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be one of auto, bfloat16, float16, float32; got {name!r}")
    return getattr(torch, name)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def get_tokenizer(model_args: ModelArguments, trust_remote_code: bool = False):
    """The model's tokenizer (or ``tokenizer_name_or_path``), with a pad token and chat template."""
    from transformers import AutoTokenizer

    name = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if name is None:
        raise ValueError("ModelArguments.model_name_or_path is not set")
    kwargs = {}
    if model_args.gguf_file and model_args.tokenizer_name_or_path is None:
        kwargs["gguf_file"] = model_args.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(
        name, revision=model_args.model_revision, trust_remote_code=trust_remote_code, **kwargs)
    if model_args.chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(model_args.chat_template)
    if tokenizer.chat_template is None:
        raise ValueError(f"tokenizer of {name!r} has no chat template: set `chat_template` (e.g. 'zephyr')")
    if tokenizer.pad_token is None:
        # As the upstream handbook does: pad with eos when a tokenizer has no pad token. Padding is
        # masked out of the loss and attention, so which id it is does not matter.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def get_model(model_args: ModelArguments, *, apply_peft: bool = False, device_map=None,
              trust_remote_code: bool = False):
    """Load the causal LM ``model_args`` describes.

    With ``load_in_4bit``/``load_in_8bit`` the weights are quantised by bitsandbytes (on the GPU,
    or on the CPU with bitsandbytes' CPU backend). With ``apply_peft`` and ``use_peft`` a LoRA
    adapter is attached (after ``prepare_model_for_kbit_training`` for quantised weights); trainers
    instead take ``get_peft_config(model_args)`` and attach it themselves.
    """
    from transformers import AutoModelForCausalLM

    if model_args.model_name_or_path is None:
        raise ValueError("ModelArguments.model_name_or_path is not set")
    device = _device()
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None and quantization_config.load_in_4bit:
        compute = torch_dtype(model_args.dtype, device)
        quantization_config.bnb_4bit_compute_dtype = compute if isinstance(compute, torch.dtype) else torch.bfloat16
    kwargs = dict(
        revision=model_args.model_revision,
        dtype=torch_dtype(model_args.dtype, device),
        attn_implementation=resolve_attn_implementation(model_args.attn_implementation),
        trust_remote_code=trust_remote_code,
    )
    if model_args.gguf_file:
        kwargs["gguf_file"] = model_args.gguf_file
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = device_map or ({"": torch.cuda.current_device()} if device == "cuda" else "cpu")
    elif device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    if model_args.gguf_file and getattr(model, "hf_quantizer", None) is not None:
        # transformers de-quantises a GGUF's tensors into ordinary ones on load but keeps a GGUF "quantizer" on
        # the model, so Trainer refuses to fine-tune it ("purely quantized model") and save_pretrained writes a
        # quantization config. The weights are plain tensors now: the marker goes, the model is an ordinary one.
        model.hf_quantizer.remove_quantization_config(model)

    if apply_peft and model_args.use_peft:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if quantization_config is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, get_peft_config(model_args))
    return model


def load_model_and_tokenizer(model_args: ModelArguments, *, apply_peft: bool = False,
                             trust_remote_code: bool = False):
    """``(model, tokenizer)`` for ``model_args``; the model's pad/eos ids follow the tokenizer's.

    ``trust_remote_code`` stays off unless you trust the model repository's code.
    """
    tokenizer = get_tokenizer(model_args, trust_remote_code)
    model = get_model(model_args, apply_peft=apply_peft, trust_remote_code=trust_remote_code)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.generation_config.pad_token_id is None:
        base.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def resolve_device_and_precision(config_kwargs: dict) -> dict:
    """Make a training config's device and precision explicit, *before* the config is built.

    TRL's configs default to ``bf16=True`` even where there is no GPU, and transformers then
    refuses to build the config ("Your setup doesn't support bf16/gpu"). On a machine without
    CUDA this returns a copy of ``config_kwargs`` with ``use_cpu=True`` and ``bf16``/``fp16`` off
    (CPU bf16 autocast is slow and changes the numerics the toy tests check), logging each change.
    On a GPU it returns the keyword arguments as written. Use it as
    ``SFTConfig(**resolve_device_and_precision(kwargs))``.
    """
    kwargs = dict(config_kwargs)
    if torch.cuda.is_available():
        return kwargs
    changes = []
    if not kwargs.get("use_cpu", False):
        kwargs["use_cpu"] = True
        changes.append("use_cpu=True")
    for flag in ("bf16", "fp16"):
        if kwargs.get(flag, None) is not False:
            if kwargs.get(flag):
                changes.append(f"{flag}=False")
            kwargs[flag] = False
    if changes:
        logger.info("no CUDA device: training on the CPU in float32 (%s)", ", ".join(changes))
    return kwargs


_said: set[str] = set()


def _say_once(message: str, *args) -> None:
    text = message % args
    if text not in _said:
        _said.add(text)
        logger.warning(text)


def resolve_attn_implementation(name: str | None) -> str | None:
    """``flash_attention_2`` where it can run (the package importable and a CUDA device), else ``sdpa``,
    said once in the log; any other choice unchanged.

    The paper's recipes ask for FlashAttention-2 (and its variable-length kernels make packed batches
    cost nothing extra); it is a separate, compiled package (``pip install flash-attn
    --no-build-isolation`` on a CUDA machine), so a machine without it still runs every recipe, in
    PyTorch's own scaled-dot-product attention.
    """
    if name != "flash_attention_2":
        return name
    from transformers.utils import is_flash_attn_2_available

    if torch.cuda.is_available() and is_flash_attn_2_available():
        return name
    why = "no CUDA device" if not torch.cuda.is_available() else "the flash-attn package is not installed"
    _say_once("attn_implementation flash_attention_2 asked for, but %s: using sdpa (pip install flash-attn "
              "--no-build-isolation on a CUDA machine for the paper's speed)", why)
    return "sdpa"


def limit_reporting(training_args) -> None:
    """A built training config's ``report_to`` limited to the integrations installed here, in place — the training
    entry point's step before the model loads, not the parser's (parsing a recipe probes no installed package).

    Recipes log to TensorBoard as upstream's do; transformers refuses to start a run whose ``report_to`` names a
    package that is not installed (and on a cluster only after the model has loaded). Each missing integration is
    dropped with a warning that names the package; none left means no integration (``[]``).
    """
    wanted = training_args.report_to
    if not wanted:
        return
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    available = set(get_available_reporting_integrations())
    missing = [w for w in wanted if w not in available and w != "none"]
    for name in missing:
        _say_once("report_to: %s is not installed here, so this run does not log to it (pip install %s)",
                  name, {"comet_ml": "comet-ml"}.get(name, name))
    training_args.report_to = [w for w in wanted if w not in missing and w != "none"]
