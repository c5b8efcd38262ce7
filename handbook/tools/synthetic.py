"""Synthetic data and random-init models for the benchmarks: realistic length spreads, no hub.

Chat data's lengths are wide-spread (UltraChat dialogues ~1,470 tokens on average; UltraFeedback
pairs ~900 real tokens with a long tail). :func:`lognormal_lengths` draws lengths with a chosen
mean and coefficient of variation; :func:`synthetic_pairs` and :func:`synthetic_dialogues` fill
them with words that are one token each in the toy tokenizer, so a text of ``n`` words is ``n``
tokens plus the chat template's few. In the pairs, a share of the chosen answers' words comes from
one half of the vocabulary and of the rejected answers' from the other: a preference a model can
learn, slowly, so loss curves mean something.
:func:`random_mistral` saves a randomly initialised Mistral-architecture model of a chosen size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Mistral-architecture sizes for the CPU benchmarks (the vocabulary is the toy tokenizer's, ~1.3 K).
MODEL_SIZES = {
    "toy": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2),  # the toy world's model, ~0.6 M parameters
    "medium": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8,
                   num_key_value_heads=4),  # ~20 M parameters: compute, not Python, dominates on a CPU
}


def model_size(size: str, overrides: dict | None = None) -> dict:
    """``MODEL_SIZES[size]`` with ``overrides`` (MistralConfig field names) applied."""
    if size not in MODEL_SIZES:
        raise ValueError(f"size must be one of {sorted(MODEL_SIZES)}, not {size!r}")
    unknown = set(overrides or {}) - set(MODEL_SIZES["medium"])
    if unknown:
        raise ValueError(f"unknown model size fields {sorted(unknown)}; known: {sorted(MODEL_SIZES['medium'])}")
    return {**MODEL_SIZES[size], **(overrides or {})}


def parse_size_overrides(text: str | None) -> dict:
    """``"hidden_size=768,num_hidden_layers=8"`` → ``{"hidden_size": 768, "num_hidden_layers": 8}``."""
    if not text:
        return {}
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 or not p[1].strip().isdigit() for p in pairs):
        raise ValueError(f"expected key=integer pairs separated by commas, got {text!r}")
    return {k.strip(): int(v) for k, v in pairs}


def lognormal_lengths(n: int, mean: float, cv: float, seed: int = 0, minimum: int = 1,
                      maximum: int | None = None) -> np.ndarray:
    """``n`` integer lengths, lognormal with the given mean and coefficient of variation, clipped."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(np.log1p(cv ** 2))
    lengths = rng.lognormal(np.log(mean) - sigma ** 2 / 2, sigma, n).round().astype(int)
    return np.clip(lengths, minimum, maximum if maximum is not None else lengths.max())


def one_token_words(tokenizer) -> list[str]:
    """Words that the tokenizer encodes as a single token when preceded by a space, sorted."""
    vocab = tokenizer.get_vocab()
    words = sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha())
    if len(words) < 20:
        raise ValueError(f"the tokenizer has only {len(words)} one-token words; the synthetic data needs a "
                         "byte-level BPE tokenizer like the toy world's")
    return words


def _text(rng: np.random.Generator, words: list[str], n: int) -> str:
    return " " + " ".join(rng.choice(words, size=max(1, int(n))))


def synthetic_pairs(tokenizer, n: int, prompt_mean: float = 48, completion_mean: float = 96, cv: float = 0.6,
                    max_length: int | None = None, seed: int = 0, signal: float = 0.1):
    """``n`` conversational preference pairs (TRL's format) with lognormal prompt and answer lengths.

    Answers are random words; a ``signal`` share of a chosen answer's words comes from one half of
    the vocabulary and the same share of a rejected answer's from the other half.
    """
    from datasets import Dataset

    words = one_token_words(tokenizer)
    good, bad = words[: len(words) // 2], words[len(words) // 2:]
    rng = np.random.default_rng(seed)
    cap = max_length // 2 if max_length else None
    prompts = lognormal_lengths(n, prompt_mean, cv, seed + 1, 1, cap)
    chosen = lognormal_lengths(n, completion_mean, cv, seed + 2, 1, cap)
    rejected = lognormal_lengths(n, completion_mean, cv, seed + 3, 1, cap)

    def answer(n_words, marked):
        return " " + " ".join(rng.choice(marked) if rng.random() < signal else rng.choice(words)
                              for _ in range(max(1, int(n_words))))

    rows = [{"prompt": [{"role": "user", "content": _text(rng, words, p)}],
             "chosen": [{"role": "assistant", "content": answer(c, good)}],
             "rejected": [{"role": "assistant", "content": answer(r, bad)}]}
            for p, c, r in zip(prompts, chosen, rejected)]
    return Dataset.from_list(rows)


def synthetic_dialogues(tokenizer, n: int, mean_tokens: float = 400, cv: float = 0.6, turns: int = 2,
                        max_length: int | None = None, seed: int = 0):
    """``n`` dialogues (``messages``, ultrachat_200k's schema) of ``turns`` user/assistant exchanges."""
    from datasets import Dataset

    words = one_token_words(tokenizer)
    rng = np.random.default_rng(seed)
    totals = lognormal_lengths(n, mean_tokens, cv, seed + 1, 8 * turns, max_length)
    rows = []
    for total in totals:
        per_message = max(1, int(total) // (2 * turns) - 3)  # the template adds ~3 tokens a message
        messages = []
        for _ in range(turns):
            messages.append({"role": "user", "content": _text(rng, words, per_message)})
            messages.append({"role": "assistant", "content": _text(rng, words, per_message)})
        rows.append({"messages": messages})
    return Dataset.from_list(rows)


def random_mistral_model(tokenizer, size: str | dict = "medium", seed: int = 0, max_position_embeddings: int = 4096):
    """A randomly initialised Mistral-architecture model (``MODEL_SIZES`` name or a dict of its fields),
    built the way the toy world builds its base (:func:`handbook.toy.build.init_model`)."""
    from ..toy.build import ToyModelConfig, init_model

    sizes = model_size(size) if isinstance(size, str) else dict(size)
    return init_model(tokenizer, ToyModelConfig(**sizes, max_position_embeddings=max_position_embeddings, seed=seed))


def random_mistral(path, tokenizer, size: str | dict = "medium", seed: int = 0):
    """:func:`random_mistral_model` saved with ``tokenizer`` to ``path`` (loadable by ``from_pretrained``);
    returns the model."""
    model = random_mistral_model(tokenizer, size, seed)
    model.save_pretrained(Path(path))
    tokenizer.save_pretrained(Path(path))
    return model


def parameter_count(model) -> int:
    """All parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
