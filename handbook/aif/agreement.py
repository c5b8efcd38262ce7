"""How far a judge can be trusted, and how the binarization rules compare, given a ground truth.

* :func:`judge_agreement` — the judge's scores against true scores: the share that are exactly equal
  and the Spearman rank correlation (Pearson's correlation of the ranks, ties given their mean rank).
* :func:`ground_truth_order` — the share of preference triples whose *chosen* reply is strictly better
  than the *rejected* one on the ground truth.
* :func:`compare_rules` — every rule of :mod:`handbook.aif.binarize` on the same rated rows: pairs,
  prompts dropped, pairs right on the ground truth, and the mean score margin of chosen over rejected
  **on both scales** — the overall score (1–10) and the mean of the aspect ratings (1–5), each pair
  measured on both, so that the rules compare on one scale at a time.

The ground truth is whatever ``truth(prompt, reply) -> score`` the caller passes (the toy world's
rubric in notebook 03: :mod:`handbook.toy.ground_truth`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .binarize import BinarizeReport, _score, binarize

Truth = Callable[[str, str], float]

# The variants notebook 03 compares: (rule, score); None = the rule's own score.
RULE_VARIANTS = (("zephyr", "overall"), ("zephyr", "fine_grained"), ("h4", "overall"), ("argilla", None),
                 ("argilla_strict", None), ("best_vs_worst", "overall"))


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation; NaN when either side is constant (no ranking to correlate)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} values against {len(y)}")
    if len(x) < 2:
        raise ValueError("spearman needs at least two pairs of values")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else float("nan")


@dataclass
class Agreement:
    """A judge's scores against the ground truth."""

    compared: int    # completions with a score from the judge
    unscored: int    # completions the judge gave no score (failed ratings): left out, counted here
    exact: float     # share of compared completions whose score equals the true score
    spearman: float  # rank correlation of scores and true scores over the compared completions


def judge_agreement(scores: Sequence[float | None], truths: Sequence[float]) -> Agreement:
    """Exact agreement and Spearman correlation of ``scores`` (None: no score) with ``truths``."""
    if len(scores) != len(truths):
        raise ValueError(f"judge_agreement: {len(scores)} scores against {len(truths)} true scores")
    pairs = [(float(s), float(t)) for s, t in zip(scores, truths) if s is not None and not _is_nan(s)]
    if len(pairs) < 2:
        raise ValueError(f"judge_agreement needs at least two scored completions, got {len(pairs)}")
    xs, ts = zip(*pairs)
    return Agreement(compared=len(pairs), unscored=len(scores) - len(pairs),
                     exact=sum(x == t for x, t in pairs) / len(pairs), spearman=spearman(xs, ts))


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def ground_truth_order(triples: Sequence[dict], truth: Truth) -> float:
    """Share of ``triples`` whose chosen reply scores strictly higher than the rejected one on ``truth``."""
    if not triples:
        raise ValueError("ground_truth_order: no triples")
    wins = [truth(t["prompt"], t["chosen"][-1]["content"]) > truth(t["prompt"], t["rejected"][-1]["content"])
            for t in triples]
    return sum(wins) / len(wins)


def variant_name(rule: str, score: str | None) -> str:
    """``zephyr``, ``zephyr (fine_grained)``, ...: the rule, with the score when it is not the rule's own."""
    return rule if score in (None, "overall") else f"{rule} ({score})"


@dataclass
class RuleResult:
    """One binarization rule on the rated rows."""

    name: str
    rule: str
    score: str | None
    triples: list[dict] = field(repr=False)
    report: BinarizeReport
    chosen_better: float | None         # share of pairs right on the ground truth (None: no truth, or no pair)
    margin_overall: float | None        # mean overall-score margin (1–10 scale) of chosen over rejected
    margin_fine_grained: float | None   # mean aspects'-mean margin (1–5 scale) of chosen over rejected

    def row(self) -> dict:
        """The comparison table's row."""
        out = {"pairs": len(self.triples), "dropped": sum(self.report.dropped.values())}
        if self.chosen_better is not None:
            out["chosen better by ground truth"] = self.chosen_better
        out["mean margin, overall (1–10)"] = self.margin_overall
        out["mean margin, aspects' mean (1–5)"] = self.margin_fine_grained
        return out


def _margins(triples: Sequence[dict], rows: Sequence[dict]) -> tuple[float | None, float | None]:
    """Mean margin of chosen over rejected on the overall score and on the aspects' mean, each completion
    found in ``rows`` by (prompt, model). Pairs where a completion lacks that score are left out of that mean."""
    index = {}
    for row in rows:
        for c in row["completions"]:
            index.setdefault((row["prompt"], c.get("model")), c)
    out = []
    for score in ("overall", "fine_grained"):
        margins = []
        for n, t in enumerate(triples):
            sides = []
            for side in ("chosen", "rejected"):
                model = t.get(f"model_{side}")
                if (t["prompt"], model) not in index:
                    raise ValueError(f"triple {n}: field 'model_{side}' ({model!r}) names no completion of its prompt "
                                     f"in the rated rows")
                sides.append(_score(index[(t["prompt"], model)], score))
            if None not in sides:
                margins.append(sides[0] - sides[1])
        out.append(statistics.fmean(margins) if margins else None)
    return out[0], out[1]


def compare_rules(rows: Iterable[dict], seed: int, truth: Truth | None = None,
                  variants: Sequence[tuple[str, str | None]] = RULE_VARIANTS) -> dict[str, RuleResult]:
    """Each ``(rule, score)`` of ``variants`` on the same rated ``rows`` and seed, by :func:`variant_name`."""
    rows = list(rows)
    results = {}
    for rule, score in variants:
        triples, report = binarize(rows, rule, score, seed)
        margin_overall, margin_fine = _margins(triples, rows)
        name = variant_name(rule, score)
        results[name] = RuleResult(
            name=name, rule=rule, score=score, triples=triples, report=report,
            chosen_better=ground_truth_order(triples, truth) if truth is not None and triples else None,
            margin_overall=margin_overall, margin_fine_grained=margin_fine)
    return results
