"""Score a model on toy prompts with the rubric judge: per reply, per category, overall."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Sequence

from . import world


def rubric_eval(model, tokenizer, prompts: Sequence[world.Prompt], max_new_tokens: int = 32,
                batch_size: int = 128) -> list[dict]:
    """Greedy replies to ``prompts`` and their rubric verdicts, one dict per prompt."""
    from ..core.generation import generate_replies

    replies = generate_replies(model, tokenizer, [[{"role": "user", "content": p.text}] for p in prompts],
                               max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    rows = []
    for p, r in zip(prompts, replies):
        verdict = world.judge(p, r)
        rows.append({"category": p.category, "constraint": p.constraint, "prompt": p.text, "reply": r,
                     **asdict(verdict)})
    return rows


def summarize(rows: Sequence[dict]) -> dict:
    """Mean score, share correct, share of constrained prompts followed, share perfect; and per category."""
    def stats(rs):
        constrained = [r for r in rs if r["followed"] is not None]
        return {
            "mean_score": round(statistics.mean(r["score"] for r in rs), 3),
            "correct": round(statistics.mean(r["correctness"] == "correct" for r in rs), 3),
            "followed": round(statistics.mean(bool(r["followed"]) for r in constrained), 3) if constrained else None,
            "perfect": round(statistics.mean(r["score"] == 10 for r in rs), 3),
            "n": len(rs),
        }

    out = stats(rows)
    out["by_category"] = {c: stats([r for r in rows if r["category"] == c])
                          for c in world.CATEGORIES if any(r["category"] == c for r in rows)}
    return out
