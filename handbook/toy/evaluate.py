"""Score a model on toy prompts with the rubric judge: per reply, per category, overall."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Sequence

from . import world


EVAL_SEED = 0   # the held-out evaluation set is drawn with this seed whatever the run's seed: a benchmark is fixed


def heldout_prompts(per_category: int = 12) -> list[world.Prompt]:
    """The held-out evaluation set of notebooks 02 and 04: ``per_category`` held-out prompts of each category,
    the same set for every training and data seed (so that two runs differ by their models, not their questions)."""
    return world.sample_prompts(per_category, "heldout", EVAL_SEED)


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


def judge_dialogues(rows: Sequence[dict]) -> list[tuple[world.Prompt, world.Judgement]]:
    """Every (user, assistant) turn of toy dialogues (``messages`` alternating from the user), judged by the toy
    rubric: ``(the parsed prompt, the verdict)`` per assistant turn. The rubric knows only the toy world: a turn
    whose prompt is not a toy prompt raises ``ValueError`` naming the row."""
    verdicts = []
    for n, r in enumerate(rows):
        msgs = r["messages"]
        for u, a in zip(msgs[0::2], msgs[1::2]):
            if u["role"] != "user" or a["role"] != "assistant":
                raise ValueError(f"row {n}: field 'messages' does not alternate user / assistant")
            try:
                prompt = world.parse_prompt(u["content"])
            except ValueError as exc:
                raise ValueError(f"row {n}: not a toy prompt ({exc})") from None
            verdicts.append((prompt, world.judge(u["content"], a["content"])))
    return verdicts


def teacher_quality(verdicts: Sequence[tuple[world.Prompt, world.Judgement]]) -> dict:
    """Mean rubric score, share correct, and share of constrained turns whose constraint was followed."""
    constrained = [v for _, v in verdicts if v.followed is not None]
    return {"mean_score": statistics.mean(v.score for _, v in verdicts),
            "correct": statistics.mean(v.correctness == "correct" for _, v in verdicts),
            "followed": statistics.mean(bool(v.followed) for v in constrained) if constrained else None,
            "turns": len(verdicts)}
