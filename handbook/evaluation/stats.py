"""Uncertainty of a benchmark score: how far a mean over questions could move with other questions."""

from __future__ import annotations

import statistics
from typing import Iterable


def per_question_standard_error(judgments: Iterable[dict], model: str) -> float | None:
    """The standard error of ``model``'s MT-Bench score over questions: each question's mean grade (its turns,
    failed judgments with score -1 left out, as FastChat's ``show_result.py`` leaves them out), then the sample
    standard deviation of those means over √(number of questions). ``None`` with fewer than two questions."""
    by_question: dict = {}
    for j in judgments:
        if j["model"] == model and j["score"] != -1:
            by_question.setdefault(j["question_id"], []).append(j["score"])
    means = [statistics.mean(v) for v in by_question.values()]
    if len(means) < 2:
        return None
    return statistics.stdev(means) / len(means) ** 0.5
