"""From rated completions to preference triples (x, y_w, y_l) in ``ultrafeedback_binarized``'s schema.

Five rules:

* ``zephyr`` — the paper's text (section 3, AIF: the best-scored response is y_w, a random lower-scored one
  y_l): the highest-scored completion is *chosen*, one of the strictly lower-scored ones,
  picked at random (seeded), is *rejected*; a prompt whose completions all score the same gives no pair.
  Random rather than the worst keeps the pairs diverse and the task harder. The score is the overall score
  (as the dataset card says; ``score="overall"``) or the mean of the aspect ratings (as the paper says;
  ``score="fine_grained"``). The default: a pair whose two replies score the same carries no preference.
* ``h4`` — what actually built ``HuggingFaceH4/ultrafeedback_binarized``, the data Zephyr-7B-β was trained
  on: its card says the highest ``overall_score`` is *chosen* and one of the remaining three, at random, is
  *rejected*, and its ``create_dataset.py`` draws from the other completions whatever their score — ties
  with the chosen are allowed, and a prompt whose completions all score the same still gives a pair. Use it to
  rebuild that dataset; ``zephyr`` is what the paper describes.
* ``argilla`` — Argilla's binarization, as the card of ``argilla/ultrafeedback-binarized-preferences``
  describes it: ignore ``overall_score``; score each completion by the mean of its aspect ratings;
  chosen = the completion with the best mean; rejected = a random other completion with a *lower*
  mean; pairs whose chosen and rejected means are equal are removed. A tie at the top is kept when a
  lower-rated completion exists; only a prompt where nothing is rated below the best gives no pair.
  (On the same rows this is ``zephyr`` with ``score="fine_grained"``: the card's fix is the score.)
* ``argilla_strict`` — a stricter variant of the handbook's own: as ``argilla``, but a prompt whose best
  mean is shared by two or more completions is dropped (a tie at the top says nothing about which is better).
* ``best_vs_worst`` — the highest against the lowest, for comparison.

As in ``ultrafeedback_binarized``: ``prompt_id`` is the SHA-256 hex digest of the prompt,
``chosen``/``rejected`` are whole conversations (the user turn, then the assistant's), ``messages``
is the chosen conversation, and prompts with fewer than two rated completions are skipped. Every
rule reports how many prompts it kept and how many it dropped, by reason.

``handbook.aif.ultrafeedback`` reads the raw ``openbmb/UltraFeedback`` schema into rated rows for
:func:`binarize`.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..core.data import prompt_id

RULES = ("zephyr", "h4", "argilla", "argilla_strict", "best_vs_worst")
MEAN_OF_ASPECTS_RULES = ("argilla", "argilla_strict")  # they score by the aspects' mean, never the overall score


@dataclass
class BinarizeReport:
    rule: str
    prompts: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    tied_pairs: int = 0  # kept pairs whose rejected scores as high as the chosen (only the h4 rule makes them)

    def __str__(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in self.dropped.most_common()) or "none"
        ties = f"; {self.tied_pairs} pairs with equal scores" if self.tied_pairs else ""
        return f"{self.rule}: {self.prompts} prompts → {self.kept} pairs (dropped: {reasons}{ties})"


def _score(completion: dict, score: str) -> float | None:
    """The completion's score under ``score``; None when it has no usable rating."""
    if completion.get("status", "ok") != "ok":
        return None
    if score == "overall":
        value = completion.get("overall")
    elif score == "fine_grained":
        value = completion.get("fine_grained")
        if value is None and completion.get("aspects"):
            ratings = [a["rating"] for a in completion["aspects"].values() if a.get("rating") is not None]
            value = statistics.mean(ratings) if ratings else None
    else:
        raise ValueError(f"score must be 'overall' or 'fine_grained', got {score!r}")
    return None if value is None else float(value)


def _conversation(prompt: str, response: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def binarize(rows: Iterable[dict], rule: str = "zephyr", score: str | None = None, seed: int = 42):
    """Preference triples from rated rows ``{"prompt", "completions": [{"model", "response", score fields}]}``.

    Returns ``(triples, report)``. ``score`` defaults to ``"overall"`` for ``zephyr``, ``h4`` and
    ``best_vs_worst`` and is always ``"fine_grained"`` for ``argilla`` and ``argilla_strict``.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    if rule in MEAN_OF_ASPECTS_RULES:
        if score not in (None, "fine_grained"):
            raise ValueError(f"the {rule} rule scores by the mean of the aspect ratings (fine_grained)")
        score = "fine_grained"
    score = score or "overall"
    rng = random.Random(seed)
    report = BinarizeReport(rule)
    out = []
    for n, row in enumerate(rows):
        report.prompts += 1
        for key in ("prompt", "completions"):
            if key not in row:
                raise ValueError(f"row {n}: field '{key}' is missing")
        prompt = row["prompt"]
        rated = [(s, c) for c in row["completions"] if (s := _score(c, score)) is not None]
        if len(rated) < 2:
            report.dropped["fewer than two rated completions"] += 1
            continue
        scores = [s for s, _ in rated]
        best = max(scores)
        if rule == "argilla_strict" and scores.count(best) > 1:
            report.dropped["best score tied"] += 1
            continue
        chosen_index = scores.index(best)                                    # the first best, as argmax
        chosen_score, chosen = rated[chosen_index]
        if rule == "h4":
            lower = [sc for i, sc in enumerate(rated) if i != chosen_index]   # the other completions, ties too
        else:
            lower = [(s, c) for s, c in rated if s < best]
        if not lower:
            report.dropped["all scores equal"] += 1
            continue
        if rule == "best_vs_worst":
            rejected_score, rejected = min(lower, key=lambda sc: sc[0])
        else:
            rejected_score, rejected = rng.choice(lower)
        chosen_conv = _conversation(prompt, chosen["response"])
        out.append({
            "prompt": prompt,
            "prompt_id": prompt_id(prompt),
            "chosen": chosen_conv,
            "rejected": _conversation(prompt, rejected["response"]),
            "messages": chosen_conv,
            "score_chosen": chosen_score,
            "score_rejected": rejected_score,
            "model_chosen": chosen.get("model"),
            "model_rejected": rejected.get("model"),
        })
        report.kept += 1
        report.tied_pairs += rejected_score == chosen_score
    return out, report


def validate_triples(rows: Sequence[dict]) -> None:
    """Raise ``ValueError`` naming the row and field of a malformed preference triple."""
    for n, row in enumerate(rows):
        for key in ("prompt", "chosen", "rejected"):
            if key not in row or row[key] in (None, "", []):
                raise ValueError(f"row {n}: field '{key}' is missing or empty")
        for key in ("chosen", "rejected"):
            conv = row[key]
            if not isinstance(conv, list) or len(conv) < 2 or conv[-1].get("role") != "assistant":
                raise ValueError(f"row {n}: field '{key}' must be a conversation ending with an assistant turn")
            if conv[0].get("role") != "user" or conv[0].get("content") != row["prompt"]:
                raise ValueError(f"row {n}: field '{key}': the first turn does not match the prompt")
            if not str(conv[-1].get("content", "")).strip():
                raise ValueError(f"row {n}: field '{key}': the assistant's reply is empty")
        if row["chosen"][-1]["content"] == row["rejected"][-1]["content"]:
            raise ValueError(f"row {n}: fields 'chosen' and 'rejected' have the same reply")
