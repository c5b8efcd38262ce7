"""The raw ``openbmb/UltraFeedback`` schema → rated rows for :func:`handbook.aif.binarize.binarize`.

Raw rows: ``instruction``, ``source``, ``completions[]`` with ``model``, ``response``,
``annotations`` per aspect (``Rating``, ``Rationale``) and ``overall_score``; so that
``ultrafeedback_binarized`` can be rebuilt from the source, decontamination included.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable

RAW_ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
EVAL_SOURCES = ("truthful_qa",)  # benchmarks the handbook evaluates on: their prompts must not be trained on


@dataclass
class ConvertReport:
    rows: int = 0
    decontaminated: int = 0
    overall_fixed: int = 0
    unreadable_ratings: int = 0

    def __str__(self) -> str:
        return (f"{self.rows} raw rows: {self.decontaminated} removed as benchmark prompts ({', '.join(EVAL_SOURCES)}), "
                f"{self.overall_fixed} overall scores corrected, {self.unreadable_ratings} unreadable aspect ratings")


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


def convert_ultrafeedback(raw_rows: Iterable[dict], fix_overall: bool = True, decontaminate: bool = True):
    """Raw UltraFeedback rows → rated rows for :func:`binarize`, plus a :class:`ConvertReport`.

    * ``decontaminate`` removes rows whose ``source`` is an evaluation benchmark (TruthfulQA), as
      the later ``ultrafeedback_binarized`` does.
    * ``fix_overall`` repairs the known ``overall_score`` defect: ~2,600 completions had overall 10
      where the critique meant 1. As in the dataset's own fix, a completion with overall 10 and a
      fine-grained score ≤ 2 gets overall 1.
    """
    report = ConvertReport()
    out = []
    for n, row in enumerate(raw_rows):
        report.rows += 1
        for key in ("instruction", "completions"):
            if key not in row:
                raise ValueError(f"row {n}: field '{key}' is missing")
        if decontaminate and row.get("source") in EVAL_SOURCES:
            report.decontaminated += 1
            continue
        completions = []
        for j, c in enumerate(row["completions"]):
            where = f"row {n}: completions[{j}]"
            if "response" not in c:
                raise ValueError(f"{where}: field 'response' is missing")
            annotations = c.get("annotations") or {}
            aspects = {}
            for a in RAW_ASPECTS:
                ann = annotations.get(a) or {}
                try:
                    rating = _raw_rating(ann.get("Rating"), f"{where}.annotations.{a}")
                except ValueError:
                    report.unreadable_ratings += 1
                    rating = None
                aspects[a] = {"rating": rating, "rationale": ann.get("Rationale", "")}
            values = [v["rating"] for v in aspects.values() if v["rating"] is not None]
            fine = round(statistics.mean(values), 4) if values else None
            overall = c.get("overall_score")
            overall = None if overall in (None, "") else float(overall)
            if fix_overall and overall == 10 and fine is not None and fine <= 2:
                overall = 1.0
                report.overall_fixed += 1
            status = "ok" if overall is not None or fine is not None else "failed"
            completions.append({"model": c.get("model"), "response": c["response"], "aspects": aspects,
                                "overall": overall, "fine_grained": fine, "status": status})
        out.append({"prompt": row["instruction"], "source": row.get("source"), "completions": completions})
    return out, report
