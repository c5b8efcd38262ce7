"""Back-of-the-envelope memory and time for training at the paper's sizes.

Memory per GPU, in GB (10⁹ bytes), for mixed-precision training with AdamW:

* **full fine-tuning**: bf16 weights (2 B/param) + bf16 gradients (2) + fp32 master weights, Adam
  moments m and v (4 + 4 + 4) = 16 B/param; ZeRO-3 shards all of it over the GPUs.
* **QLoRA**: the base in 4-bit NF4 (0.5 B/param, plus ~0.127 bit/param of quantisation constants
  with nested quantisation); only the LoRA matrices train: 16 B per LoRA parameter.
* **activations** with activation checkpointing: one bf16 hidden state per layer per token kept
  (2·h bytes), plus one layer's full activations while it is recomputed (~34·h bytes per token,
  FlashAttention so no s² term).
* **dDPO** processes chosen and rejected together (twice the sequences); a live reference model
  adds its bf16 weights (sharded under ZeRO-3), a precomputed one adds nothing.

Time: training FLOPs ≈ 6·N per token (forward 2N + backward 4N); a live DPO reference adds a 2N
forward. Hours = FLOPs / (GPUs · peak FLOP/s · MFU).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Architecture:
    n_params: float
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    vocab: int


MISTRAL_7B = Architecture(n_params=7.24e9, n_layers=32, hidden=4096, intermediate=14336, n_heads=32, n_kv_heads=8,
                          vocab=32000)


def lora_params(arch: Architecture, r: int, modules=("q", "k", "v", "o", "gate", "up", "down")) -> float:
    """Parameters of LoRA adapters of rank ``r`` on the given projections of every layer."""
    head = arch.hidden // arch.n_heads
    kv = arch.n_kv_heads * head
    shapes = {"q": (arch.hidden, arch.hidden), "k": (arch.hidden, kv), "v": (arch.hidden, kv),
              "o": (arch.hidden, arch.hidden), "gate": (arch.hidden, arch.intermediate),
              "up": (arch.hidden, arch.intermediate), "down": (arch.intermediate, arch.hidden)}
    return arch.n_layers * sum(r * (i + o) for i, o in (shapes[m] for m in modules))


def activations_gb(arch: Architecture, seq_len: int, micro_batch: int, checkpointing: bool = True) -> float:
    tokens = seq_len * micro_batch
    if checkpointing:
        return (arch.n_layers * 2 * arch.hidden + 34 * arch.hidden) * tokens / GB
    return arch.n_layers * 34 * arch.hidden * tokens / GB


def training_memory(arch: Architecture = MISTRAL_7B, method: str = "full", n_gpus: int = 8, seq_len: int = 2048,
                    micro_batch: int = 1, stage: str = "sft", reference: str = "precomputed", lora_r: int = 16,
                    zero3: bool = True) -> dict[str, float]:
    """Memory per GPU (GB) by part: ``method`` "full" (ZeRO-3 over ``n_gpus`` unless ``zero3=False``)
    or "qlora" (one GPU's copy); ``stage`` "sft" or "dpo"; ``reference`` "precomputed" or "live"."""
    if method not in ("full", "qlora") or stage not in ("sft", "dpo") or reference not in ("precomputed", "live"):
        raise ValueError("method: full | qlora; stage: sft | dpo; reference: precomputed | live")
    shard = n_gpus if (method == "full" and zero3) else 1
    sequences = 2 * micro_batch if stage == "dpo" else micro_batch
    if method == "full":
        parts = {"weights": 2 * arch.n_params / shard / GB, "gradients": 2 * arch.n_params / shard / GB,
                 "optimizer (fp32 master + Adam)": 12 * arch.n_params / shard / GB}
    else:
        trainable = lora_params(arch, lora_r)
        parts = {"weights": (0.5 + 0.127 / 8) * arch.n_params / GB + 2 * trainable / GB,
                 "gradients": 2 * trainable / GB, "optimizer (fp32 master + Adam)": 12 * trainable / GB}
    parts["activations"] = activations_gb(arch, seq_len, sequences)
    if stage == "dpo" and reference == "live":
        parts["reference model"] = (2 * arch.n_params / shard if method == "full" else 0.0) / GB  # QLoRA: adapter off
    parts["total"] = sum(parts.values())
    return {k: round(v, 2) for k, v in parts.items()}


def training_hours(tokens: float, n_params: float = MISTRAL_7B.n_params, n_gpus: int = 16, peak_tflops: float = 312.0,
                   mfu: float = 0.4, flops_per_token: float = 6.0) -> float:
    """Hours for ``tokens`` processed tokens at ``mfu`` of ``peak_tflops`` per GPU (A100 bf16: 312)."""
    return tokens * flops_per_token * n_params / (n_gpus * peak_tflops * 1e12 * mfu) / 3600
