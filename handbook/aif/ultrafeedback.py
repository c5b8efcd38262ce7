"""The raw ``openbmb/UltraFeedback`` schema → rated rows for :func:`handbook.aif.binarize.binarize`.

Raw rows: ``instruction``, ``source``, ``completions[]`` with ``model``, ``response``,
``annotations`` per aspect (``Rating``, ``Rationale``) and ``overall_score``; so that
``ultrafeedback_binarized`` can be rebuilt from the source, decontamination included.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..core.data import iter_jsonl

RAW_ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
EVAL_SOURCES = ("truthful_qa",)  # benchmarks the handbook evaluates on: their prompts must not be trained on
EMPTY_RESPONSE = "completions with an empty response (left out of the ratings)"
EMPTY_INSTRUCTION = "rows with an empty instruction"
IDENTICAL_PAIR = "pairs whose chosen and rejected replies are identical"


@dataclass
class ConvertReport:
    rows: int = 0
    decontaminated: int = 0
    overall_fixed: int = 0
    unreadable_ratings: int = 0
    excluded: Counter = field(default_factory=Counter)  # reason → how many rows / completions / pairs
    first_excluded: dict = field(default_factory=dict)  # reason → where the first one is (file and line, or row)

    def exclude(self, reason: str, where: str) -> None:
        self.excluded[reason] += 1
        self.first_excluded.setdefault(reason, where)

    def __str__(self) -> str:
        text = (f"{self.rows} raw rows: {self.decontaminated} removed as benchmark prompts ({', '.join(EVAL_SOURCES)}), "
                f"{self.overall_fixed} overall scores corrected, {self.unreadable_ratings} unreadable aspect ratings")
        for reason, n in self.excluded.items():
            text += f"; {n} {reason} (first: {self.first_excluded[reason]})"
        return text


def _raw_rating(value, where: str) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if text.upper() in ("N/A", "NA", ""):
        return None
    try:
        rating = int(float(text))
    except ValueError:
        raise ValueError(f"{where}: rating {value!r} is not a number or N/A") from None
    if not 1 <= rating <= 5:
        raise ValueError(f"{where}: rating {rating} outside 1-5")
    return rating


def convert_ultrafeedback(raw_rows: Iterable[dict], fix_overall: bool = True, decontaminate: bool = True,
                          where: Sequence[str] | None = None):
    """Raw UltraFeedback rows → rated rows for :func:`binarize`, plus a :class:`ConvertReport`.

    * ``decontaminate`` removes rows whose ``source`` is an evaluation benchmark (TruthfulQA), as
      the later ``ultrafeedback_binarized`` does. That is all it removes: it matches the ``source`` field, not
      the text, so a TruthfulQA question that reached UltraFeedback through another source (a ShareGPT or FLAN
      prompt that quotes it) stays — as it stayed in ``ultrafeedback_binarized``.
    * ``fix_overall`` repairs the known ``overall_score`` defect: ~2,600 completions had overall 10
      where the critique meant 1. As in the dataset's own fix, a completion with overall 10 and a
      fine-grained score ≤ 2 gets overall 1.
    * A completion with an empty response is left out of the ratings (``status: "empty response"``) and a
      row with an empty instruction is left out; the report counts each reason and names the first.

    A malformed row or value (a missing field, an ``overall_score`` that is not a number) is an error naming
    the row (``where[n]``, e.g. the file and line, when given) and the field.
    """
    rated, report, _ = _convert(raw_rows, fix_overall, decontaminate, where)
    return rated, report


def _convert(raw_rows, fix_overall, decontaminate, where):
    report = ConvertReport()
    out, out_where = [], []
    for n, row in enumerate(raw_rows):
        at = where[n] if where is not None else f"row {n}"
        report.rows += 1
        if not isinstance(row, dict):
            raise ValueError(f"{at}: not a JSON object")
        for key in ("instruction", "completions"):
            if key not in row:
                raise ValueError(f"{at}: field '{key}' is missing")
        if decontaminate and row.get("source") in EVAL_SOURCES:
            report.decontaminated += 1
            continue
        if row["instruction"] is not None and not isinstance(row["instruction"], str):
            raise ValueError(f"{at}: field 'instruction' must be a string, got {row['instruction']!r}")
        if not isinstance(row["completions"], list):
            raise ValueError(f"{at}: field 'completions' must be a list")
        if not (row["instruction"] or "").strip():
            report.exclude(EMPTY_INSTRUCTION, at)
            continue
        completions = []
        for j, c in enumerate(row["completions"]):
            cw = f"{at}: completions[{j}]"
            if not isinstance(c, dict):
                raise ValueError(f"{cw}: not a JSON object")
            if "response" not in c:
                raise ValueError(f"{cw}: field 'response' is missing")
            if c["response"] is not None and not isinstance(c["response"], str):
                raise ValueError(f"{cw}: field 'response' must be a string, got {c['response']!r}")
            annotations = c.get("annotations") or {}
            aspects = {}
            for a in RAW_ASPECTS:
                ann = annotations.get(a) or {}
                try:
                    rating = _raw_rating(ann.get("Rating"), f"{cw}.annotations.{a}")
                except ValueError:
                    report.unreadable_ratings += 1
                    rating = None
                aspects[a] = {"rating": rating, "rationale": ann.get("Rationale", "")}
            values = [v["rating"] for v in aspects.values() if v["rating"] is not None]
            fine = round(statistics.mean(values), 4) if values else None
            overall = _overall(c.get("overall_score"), cw)
            if fix_overall and overall == 10 and fine is not None and fine <= 2:
                overall = 1.0
                report.overall_fixed += 1
            status = "ok" if overall is not None or fine is not None else "failed"
            if not (c["response"] or "").strip():
                status = "empty response"
                report.exclude(EMPTY_RESPONSE, cw)
            completions.append({"model": c.get("model"), "response": c["response"] or "", "aspects": aspects,
                                "overall": overall, "fine_grained": fine, "status": status})
        out.append({"prompt": row["instruction"], "source": row.get("source"), "completions": completions})
        out_where.append(at)
    return out, report, out_where


def _overall(value, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: field 'overall_score': {value!r} is not a number")
    try:
        overall = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: field 'overall_score': {value!r} is not a number") from None
    if not math.isfinite(overall):
        raise ValueError(f"{where}: field 'overall_score': {value!r} is not a finite number")
    return overall


def convert_file(path, rule: str = "zephyr", score: str | None = None, seed: int = 42, fix_overall: bool = True,
                 decontaminate: bool = True):
    """Raw UltraFeedback rows in the JSONL file ``path`` → preference triples: ``(triples, convert report,
    binarize report)``. Every bad line, row or value is an error naming the file, line and field; a pair
    whose chosen and rejected replies are the same text is dropped and counted (the first one named); an
    empty file, or one that leaves no pair, is an error."""
    from .binarize import binarize

    located = list(iter_jsonl(path))
    if not located:
        raise ValueError(f"{path}: no rows (the file is empty)")
    rated, report, where = _convert([r for _, r in located], fix_overall, decontaminate,
                                    [f"{path}, line {n}" for n, _ in located])
    triples, bin_report = binarize(rated, rule, score, seed)
    kept, i = [], 0
    for t in triples:  # binarize keeps the rows' order, one pair at most per row: find each pair's row
        while rated[i]["prompt"] != t["prompt"]:
            i += 1
        if t["chosen"][-1]["content"].strip() == t["rejected"][-1]["content"].strip():
            report.exclude(IDENTICAL_PAIR, where[i])
            bin_report.kept -= 1
            bin_report.dropped[IDENTICAL_PAIR] += 1
        else:
            kept.append(t)
        i += 1
    if not kept:
        raise ValueError(f"{Path(path)}: no preference pair left to save ({report}; {bin_report})")
    return kept, report, bin_report
