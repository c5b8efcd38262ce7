"""Batched chat generation with a local transformers model.

Conversations are rendered with the tokenizer's chat template (generation prompt added),
left-padded so that every row's last prompt token sits at the right edge, and decoded up to the
first end-of-sequence token. Greedy when ``temperature`` is 0, sampled otherwise (seeded).
"""

from __future__ import annotations

from typing import Sequence

import torch

Message = dict  # {"role": ..., "content": ...}


@torch.no_grad()
def generate_replies(
    model,
    tokenizer,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int | None = 0,
) -> list[str]:
    """One assistant reply per conversation (each a list of ``{"role", "content"}`` messages)."""
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    replies: list[str] = []
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start:start + batch_size]
            texts = [tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) for c in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            new = out[:, enc["input_ids"].shape[1]:]
            replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [r.strip() for r in replies]
