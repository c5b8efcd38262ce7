"""What the toy notebooks claim, and how sure the claims are: each one measured over seeds and CPU kernels.

A toy world earns its place in the handbook by reproducing the paper's claims in miniature — dSFT lifts a model
that could not converse, dDPO on AI feedback adds to dSFT, dDPO without dSFT does little. A claim that holds
on one machine and reverses on another (the same seed gave dSFT 8.02 → dSFT + dDPO 9.22 with one CPU's kernels
and 8.39 → 7.91 with another's) demonstrates nothing. So every claim notebooks 02–05 assert is listed here
as one number computed from the notebook's recorded metrics, with the side it must fall on, and
``bench/bench_claims.py`` measures each over 5 training seeds × 2 data seeds × every CPU kernel capability the
machine offers (``ATEN_CPU_CAPABILITY=default|avx2|avx512``), running the notebooks themselves. Its summary
(mean, standard deviation, min, max and n per claim) is ``claims_measured.json`` beside this file.

The threshold a notebook asserts comes from that distribution, never from one run's digits: for a claim that a
value is high, ``median − 4 sd₋`` (capped at the lowest measured run), where ``sd₋`` is the deviation from the
median of the runs below it (a run far on the good side must not loosen the bound); for a claim that it is low,
``median + 4 sd₊``.
Runs the measurement did not include — another seed, another machine's kernels — fall inside that band unless
the world or the recipe changed. A claim is *robust* when that threshold is still on the claim's side of its
floor (``dSFT + dDPO − dSFT > 0``) and the worst measured run clears the floor by the claim's required margin
(for dDPO over dSFT: 0.3 rubric points); ``tests/test_claims.py`` holds the committed measurement to that. A claim
whose single-run value is too noisy for that (``on_average``: over-fitting's gap between two accuracies on ~115
pairs each) is a claim about the mean over seeds: the mean's band, mean − 4 sd/√n, must clear the floor, every
measured run must be on the claim's side, and a single run is asserted only inside the measured band.

    >>> from handbook.toy import claims
    >>> claims.check("04_ddpo", metrics)              # raises AssertionError naming each claim that fails
    >>> claims.frame("04_ddpo", metrics)              # this run beside the measured spread and the threshold
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

MEASURED_FILE = Path(__file__).with_name("claims_measured.json")
SPREAD_K = 4.0   # thresholds sit this many standard deviations beyond the measured mean


@dataclass(frozen=True)
class Claim:
    """One asserted claim: a number from a notebook's ``metrics.json`` and the side of ``floor`` it must fall on."""

    key: str
    notebook: str
    statement: str
    value: Callable[[Mapping], float]
    floor: float                 # the claim in its plainest form: value > floor (higher) or value < floor
    higher: bool = True
    worst_margin: float = 0.0    # the worst measured run must clear the floor by at least this much
    resolution: float = 0.01     # the value's own granularity: the spread used is never below it
    source: str = ""             # what the claim stands for (the paper's result, or the toy world's design)
    on_average: bool = False     # a claim about the mean over seeds (see robustness): one run is held only to the
                                 # measured band, which may reach past the floor

    def side(self) -> str:
        return ">" if self.higher else "<"


def _margin_ratio(m: Mapping, low: str | None = None, high: str | None = None) -> float:
    """margin/β (how far the policy moved each held-out pair apart, in log-ratio) at the sweep's smallest β over that
    at its largest (or at ``low`` over ``high``): above 1 when a smaller β let the policy move further."""
    by_beta = {float(b): v for b, v in m["beta_sweep_margin_over_beta"].items()}
    lo, hi = (float(low), float(high)) if low else (min(by_beta), max(by_beta))
    return by_beta[lo] / by_beta[hi]


CLAIMS: tuple[Claim, ...] = (
    # 02: dSFT
    Claim("base_cannot_answer", "02_dsft_training", "the random base answers nothing (rubric score near 1)",
          lambda m: m["base_mean_score"], 2.0, higher=False),
    Claim("dsft_over_base", "02_dsft_training", "dSFT lifts the student far above the random base (held-out rubric)",
          lambda m: m["dsft_mean_score"] - m["base_mean_score"], 0.0,
          source="the paper: dSFT turns a base model into a chat model (Table 3's dSFT-1 row)"),
    Claim("dsft_correct", "02_dsft_training", "the dSFT student answers most held-out prompts correctly",
          lambda m: m["dsft_correct"], 0.5, source="the toy world's design: dSFT makes the student competent"),
    Claim("dsft_follows_like_its_teacher", "02_dsft_training",
          "... but ignores the user's constraints about as often as its teacher did (room for AI feedback)",
          lambda m: m["dsft_followed"], 0.9, higher=False,
          source="the paper: distilled SFT alone is not intent-aligned"),
    Claim("dsft_train_loss", "02_dsft_training", "the dSFT loss on assistant tokens converges",
          lambda m: m["final_train_loss"], 1.0, higher=False, resolution=0.001),
    # 03: AI feedback (pure Python: its spread is the data seeds')
    Claim("chosen_beats_rejected", "03_aif_preferences", "chosen beats rejected on the ground truth in most pairs",
          lambda m: m["chosen_better_on_ground_truth"], 0.5,
          source="the paper: the teacher's ratings pick the better answer"),
    Claim("judge_agreement", "03_aif_preferences", "the toy judge agrees with the ground truth on most completions",
          lambda m: m["judge_exact_agreement"], 0.5),
    Claim("judge_imperfect", "03_aif_preferences", "... but not on all of them (a noisy judge, as GPT-4 is)",
          lambda m: m["judge_exact_agreement"], 1.0, higher=False),
    Claim("judge_spearman", "03_aif_preferences", "the judge orders completions as the ground truth does",
          lambda m: m["judge_spearman"], 0.5),
    # 04: dDPO
    Claim("ddpo_over_dsft", "04_ddpo", "dSFT + dDPO scores above dSFT on held-out prompts (the paper's central claim)",
          lambda m: m["ddpo_mean_score"] - m["dsft_mean_score"], 0.0, worst_margin=0.3,
          source="the paper, Table 3: dSFT + dDPO 7.00 > dSFT-1 6.64 MT-Bench"),
    Claim("ddpo_follows_more", "04_ddpo", "... by following the user's constraints more often",
          lambda m: m["ddpo_followed"] - m["dsft_followed"], 0.0, worst_margin=0.1),
    Claim("ddpo_keeps_correctness", "04_ddpo", "... without losing correctness (at most 0.1 below dSFT's share)",
          lambda m: m["ddpo_correct"] - m["dsft_correct"], -0.1),
    Claim("heldout_reward_accuracy", "04_ddpo", "dDPO ranks most held-out pairs right (reward accuracy above chance)",
          lambda m: m["eval_rewards_accuracy"], 0.5),
    Claim("overfitting_gap", "04_ddpo",
          "on average over seeds, reward accuracy is higher on training pairs than on held-out ones (over-fitting)",
          lambda m: m["train_rewards_accuracy"] - m["eval_rewards_accuracy"], 0.0, on_average=True,
          source="the paper: DPO over-fits fast (training reward accuracy near perfect). One run's gap is the "
                 "difference of two accuracies on ~115 pairs each, whose sampling noise alone (~0.03) is a third of "
                 "the gap: the claim is the mean's"),
    Claim("beta_moves_policy", "04_ddpo",
          "a smaller β lets the policy move further: margin / β at β 0.01 over margin / β at β 0.5",
          _margin_ratio, 1.0, source="DPO: β weighs the KL penalty to the reference"),
    # 05: Table 3 in miniature (toy MT-Bench, 80 questions × 2 turns)
    Claim("mt_dsft_over_base", "05_evaluation", "Table 3: dSFT-1 scores far above the base",
          lambda m: m["mt_bench"]["dsft"] - m["mt_bench"]["base"], 0.0),
    Claim("mt_ddpo_over_dsft", "05_evaluation", "Table 3: dSFT + dDPO > dSFT-1 (dDPO adds to dSFT)",
          lambda m: m["mt_bench"]["dsft_ddpo"] - m["mt_bench"]["dsft"], 0.0, worst_margin=0.3,
          source="the paper, Table 3: 7.00 > 6.64"),
    Claim("mt_ddpo_needs_dsft", "05_evaluation", "Table 3: dSFT + dDPO > dDPO without dSFT",
          lambda m: m["mt_bench"]["dsft_ddpo"] - m["mt_bench"]["ddpo_without_dsft"], 0.0,
          source="the paper, Table 3: 7.00 > 4.76"),
    Claim("mt_dsft_over_ddpo_without_dsft", "05_evaluation", "Table 3: dSFT-1 > dDPO without dSFT",
          lambda m: m["mt_bench"]["dsft"] - m["mt_bench"]["ddpo_without_dsft"], 0.0,
          source="the paper, Table 3: 6.64 > 4.76"),
    Claim("mt_on_policy_gain", "05_evaluation", "dDPO on the on-policy pool (the student in it) also adds to dSFT-1",
          lambda m: m["mt_bench_on_policy"] - m["mt_bench"]["dsft"], 0.0,
          source="not the paper's set-up (its pool is off-policy): each run's student writes its own pairs"),
    Claim("win_rate_ddpo_vs_dsft", "05_evaluation",
          "on average over seeds, dSFT + dDPO wins more than half its comparisons with dSFT-1",
          lambda m: m["win_rate_dsft_ddpo_vs_dsft"], 50.0, resolution=1.0, on_average=True,
          source="AlpacaEval-style: 96 held-out prompts, both orders judged, a tie counts half. Most comparisons are "
                 "ties, and one run's own standard error (~2 points) is most of the spread across runs: the claim is "
                 "the mean's"),
)



@dataclass(frozen=True)
class Reported:
    """A value the notebooks report without asserting it (a Table 3 row, a β's score, an order of the paper the toy
    world does not reproduce): measured with the claims, so that the README and notebooks quote its range."""

    key: str
    notebook: str
    statement: str
    value: Callable[[Mapping], float]


def _mt(row: str) -> Callable[[Mapping], float]:
    return lambda m: m["mt_bench"][row]


REPORTED: tuple[Reported, ...] = (
    Reported("dsft_score", "02_dsft_training", "dSFT, held-out rubric score", lambda m: m["dsft_mean_score"]),
    Reported("dsft_followed", "02_dsft_training", "dSFT, constraints followed", lambda m: m["dsft_followed"]),
    Reported("ddpo_score", "04_ddpo", "dSFT + dDPO (3 epochs), held-out rubric score", lambda m: m["ddpo_mean_score"]),
    Reported("ddpo_correct", "04_ddpo", "dSFT + dDPO, correct", lambda m: m["ddpo_correct"]),
    Reported("ddpo_followed", "04_ddpo", "dSFT + dDPO, constraints followed", lambda m: m["ddpo_followed"]),
    Reported("train_reward_accuracy", "04_ddpo", "reward accuracy, training pairs",
             lambda m: m["train_rewards_accuracy"]),
    Reported("margin_ratio_0.01_0.1", "04_ddpo", "margin / β at β 0.01 over margin / β at β 0.1 (the sweep's first step)",
             lambda m: _margin_ratio(m, "0.01", "0.1")),
    Reported("beta_0.01", "04_ddpo", "β sweep: β 0.01, held-out rubric score", lambda m: m["beta_sweep"]["0.01"]),
    Reported("beta_0.1", "04_ddpo", "β sweep: β 0.1 (the recipe's)", lambda m: m["beta_sweep"]["0.1"]),
    Reported("beta_0.5", "04_ddpo", "β sweep: β 0.5", lambda m: m["beta_sweep"]["0.5"]),
    Reported("mt_base", "05_evaluation", "toy MT-Bench: base", _mt("base")),
    Reported("mt_ddpo_without_dsft", "05_evaluation", "toy MT-Bench: dDPO without dSFT", _mt("ddpo_without_dsft")),
    Reported("mt_dsft", "05_evaluation", "toy MT-Bench: dSFT-1", _mt("dsft")),
    Reported("mt_dsft2", "05_evaluation", "toy MT-Bench: dSFT-2", _mt("dsft2")),
    Reported("mt_dsft_ddpo", "05_evaluation", "toy MT-Bench: dSFT + dDPO", _mt("dsft_ddpo")),
    Reported("mt_on_policy", "05_evaluation", "toy MT-Bench: dSFT + dDPO, student in the pool",
             lambda m: m["mt_bench_on_policy"]),
    Reported("dsft1_over_dsft2", "05_evaluation", "share of runs where dSFT-1 > dSFT-2 (the paper's order)",
             lambda m: float(m["mt_bench"]["dsft"] > m["mt_bench"]["dsft2"])),
    Reported("ddpo_over_dsft2", "05_evaluation", "share of runs where dSFT + dDPO > dSFT-2 (the paper's order)",
             lambda m: float(m["mt_bench"]["dsft_ddpo"] > m["mt_bench"]["dsft2"])),
    Reported("win_dsft_vs_teacher", "05_evaluation", "win rate vs the teacher: dSFT-1 (%)",
             lambda m: m["win_rate_vs_teacher"]["dsft"]),
    Reported("win_dsft2_vs_teacher", "05_evaluation", "win rate vs the teacher: dSFT-2 (%)",
             lambda m: m["win_rate_vs_teacher"]["dsft2"]),
    Reported("win_ddpo_vs_teacher", "05_evaluation", "win rate vs the teacher: dSFT + dDPO (%)",
             lambda m: m["win_rate_vs_teacher"]["dsft_ddpo"]),
    Reported("pairs_zephyr", "03_aif_preferences", "pairs kept by the zephyr rule (480 prompts)",
             lambda m: m["pairs_zephyr"]),
    Reported("pairs_argilla", "03_aif_preferences", "pairs kept by the argilla rule", lambda m: m["pairs_argilla"]),
    Reported("pairs_argilla_strict", "03_aif_preferences", "pairs kept by the argilla_strict rule",
             lambda m: m["pairs_argilla_strict"]),
)

BY_KEY = {c.key: c for c in CLAIMS}
NOTEBOOKS = tuple(dict.fromkeys(c.notebook for c in CLAIMS))


def claims_of(notebook: str) -> list[Claim]:
    found = [c for c in CLAIMS if c.notebook == notebook]
    if not found:
        raise KeyError(f"no claims for notebook {notebook!r}; notebooks with claims: {', '.join(NOTEBOOKS)}")
    return found


# --- the measured distribution ---------------------------------------------------------------------------------
def describe(values: Iterable[float]) -> dict:
    """``{"n", "mean", "sd", "median", "sd_below", "sd_above", "min", "max"}`` of one claim's measured values.
    ``sd`` is the sample standard deviation; ``sd_below`` (``sd_above``) the root mean square distance from the median
    of the values below (above) it. For a normal distribution each of the two estimates the standard deviation,
    but a run far on one side moves neither the median nor the other side's deviation: a claim is judged by the
    tail on its bad side, not widened by a lucky run (a skewed or two-peaked spread, as two data seeds give)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no measured values")
    median = statistics.median(values)

    def one_side(side):
        return math.sqrt(statistics.fmean([(v - median) ** 2 for v in side])) if side else 0.0

    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "median": median,
            "sd_below": one_side([v for v in values if v < median]), "sd_above": one_side([v for v in values if v > median]),
            "min": min(values), "max": max(values)}


# Notebook 03's pool, judge and binarization are scripted Python: nothing in it trains or touches a floating-point
# kernel, so its claims vary with the data seed only, and each data seed counts once.
DATA_ONLY_NOTEBOOKS = ("03_aif_preferences",)


def summarize_runs(runs: Iterable[Mapping]) -> dict[str, dict]:
    """Each claim's (and reported value's) distribution over ``runs`` (each ``{"data_seed": D, "metrics": {notebook: its metrics}}``; a run
    without a notebook's metrics adds nothing to that notebook's claims). A claim of a data-only notebook counts
    once per data seed, and its runs of one data seed must agree (else ``ValueError``: it was not data-only)."""
    values: dict[str, list[float]] = {c.key: [] for c in (*CLAIMS, *REPORTED)}
    per_data_seed: dict[tuple[str, int], float] = {}
    for run in runs:
        for c in (*CLAIMS, *REPORTED):
            if c.notebook not in run["metrics"]:
                continue
            value = c.value(run["metrics"][c.notebook])
            if c.notebook in DATA_ONLY_NOTEBOOKS:
                key = (c.key, run["data_seed"])
                if key in per_data_seed:
                    if per_data_seed[key] != value:
                        raise ValueError(f"{c.key}: data seed {run['data_seed']} gave {per_data_seed[key]} and "
                                         f"{value} in two runs: {c.notebook} is not data-only")
                    continue
                per_data_seed[key] = value
            values[c.key].append(value)
    return {k: describe(v) for k, v in values.items() if v}


def load_measured(path: str | Path = MEASURED_FILE) -> dict:
    """The committed measurement: ``{"setup": {...}, "claims": {key: describe(...)}, "reported": {...}}``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the claims have not been measured; run `python bench/bench_claims.py`")
    return json.loads(path.read_text())


def threshold(claim: Claim, stats: Mapping) -> float:
    """The value a run must reach: ``SPREAD_K`` deviations beyond the measured median on the claim's bad side (the
    deviation of the runs on that side, at least the claim's resolution), and never stricter than the worst run."""
    if claim.higher:
        return _round(min(stats["median"] - SPREAD_K * max(stats["sd_below"], claim.resolution), stats["min"]), down=True)
    return _round(max(stats["median"] + SPREAD_K * max(stats["sd_above"], claim.resolution), stats["max"]), down=False)


def _round(x: float, down: bool, digits: int = 3) -> float:
    scale = 10 ** digits
    return (math.floor if down else math.ceil)(x * scale) / scale


def robustness(claim: Claim, stats: Mapping) -> list[str]:
    """Why a measured claim is not robust (empty when it is): its threshold is not on the claim's side of the
    floor, or its worst run does not clear the floor by the required margin. For a claim ``on_average``, the
    band that must clear the floor is the mean's (``SPREAD_K`` standard errors, sd/√n), not one run's: every
    measured run must still be on the claim's side."""
    problems = []
    if claim.on_average:
        se = max(stats["sd"], claim.resolution) / math.sqrt(stats["n"])
        t = stats["mean"] - SPREAD_K * se if claim.higher else stats["mean"] + SPREAD_K * se
        what = "the mean's band"
    else:
        t, what = threshold(claim, stats), "the threshold from the spread"
    beyond = t > claim.floor if claim.higher else t < claim.floor
    if not beyond:
        problems.append(f"{claim.key}: {what} ({t:g}) is not {claim.side()} {claim.floor:g}")
    worst = stats["min"] - claim.floor if claim.higher else claim.floor - stats["max"]
    if worst < claim.worst_margin or worst <= 0:
        problems.append(f"{claim.key}: the worst measured run clears the floor {claim.floor:g} by {worst:.3g}, "
                        f"needs more than {max(claim.worst_margin, 0):g}")
    return problems


# --- what a notebook does with them ----------------------------------------------------------------------------
def evaluate(notebook: str, metrics: Mapping, measured: Mapping | None = None) -> list[dict]:
    """Each claim of ``notebook`` for this run: its value, the threshold, the measured spread and whether it holds."""
    measured = measured or load_measured()
    rows = []
    for c in claims_of(notebook):
        stats = measured["claims"].get(c.key)
        if stats is None:
            raise KeyError(f"claim {c.key!r} has no measurement in {MEASURED_FILE.name}; run `python bench/bench_claims.py`")
        value, t = c.value(metrics), threshold(c, stats)
        rows.append({"claim": c.key + (" (on average)" if c.on_average else ""), "statement": c.statement,
                     "this run": round(value, 4),
                     "asserted": f"{c.side()}= {t:g}", "measured mean": round(stats["mean"], 3),
                     "measured range": f"[{stats['min']:.3g}, {stats['max']:.3g}]", "runs": stats["n"],
                     "holds": bool(value >= t if c.higher else value <= t)})
    return rows


def frame(notebook: str, metrics: Mapping, measured: Mapping | None = None):
    """:func:`evaluate` as a pandas DataFrame, one row per claim (for a notebook's checks cell)."""
    import pandas as pd

    return pd.DataFrame(evaluate(notebook, metrics, measured)).set_index("claim")


def check(notebook: str, metrics: Mapping, measured: Mapping | None = None) -> None:
    """Raise ``AssertionError`` naming every claim of ``notebook`` this run does not meet (value, threshold, the
    measured range and how it was measured)."""
    measured = measured or load_measured()
    failed = [r for r in evaluate(notebook, metrics, measured) if not r["holds"]]
    if failed:
        setup = measured.get("setup", {})
        raise AssertionError(
            f"{notebook}: {len(failed)} claim(s) outside what was measured "
            f"({setup.get('description', 'see bench/results/claims.json')}):\n"
            + "\n".join(f"  {r['claim']} ({r['statement']}): this run {r['this run']}, asserted {r['asserted']}, "
                        f"measured {r['measured range']} over {r['runs']} runs" for r in failed))


def markdown_table(measured: Mapping | None = None) -> str:
    """The measured claims as a Markdown table (the README's, written by ``bench/bench_claims.py``): per claim its
    notebook, statement, mean, worst and best run, the floor it must clear and the asserted threshold."""
    measured = measured or load_measured()
    lines = ["| notebook | claim | mean | worst run | best run | claim: value | asserted |",
             "|---|---|---|---|---|---|---|"]
    for c in CLAIMS:
        s = measured["claims"][c.key]
        worst, best = (s["min"], s["max"]) if c.higher else (s["max"], s["min"])
        lines.append(f"| {c.notebook[:2]} | {c.statement} (`{c.key}`{', the mean over runs' if c.on_average else ''}) "
                     f"| {s['mean']:.3g} | {worst:.3g} | {best:.3g} "
                     f"| {c.side()} {c.floor:g} | {c.side()}= {threshold(c, s):g} |")
    return "\n".join(lines)


def reported_table(measured: Mapping | None = None) -> str:
    """The values measured beside the claims, not asserted, as a Markdown table: mean and range per value."""
    measured = measured or load_measured()
    lines = ["| notebook | value | mean | min | max |", "|---|---|---|---|---|"]
    for r in REPORTED:
        s = measured["reported"][r.key]
        lines.append(f"| {r.notebook[:2]} | {r.statement} | {s['mean']:.3g} | {s['min']:.3g} | {s['max']:.3g} |")
    return "\n".join(lines)


# --- the README's result paragraphs, written from the measurement (bench/bench_claims.py --write-package) --------
def _stat(measured: Mapping, key: str) -> Mapping:
    return measured["claims"][key] if key in measured["claims"] else measured["reported"][key]


def _range(measured: Mapping, key: str, fmt: str = ".2f", scale: float = 1.0, sign: bool = False,
           unit: str = "") -> str:
    """``mean [min–max]`` of a measured value, e.g. ``7.85 [7.05–8.45]`` (``sign``: ``+1.74 [+0.99 – +2.57]``)."""
    s = _stat(measured, key)
    f = (lambda x: format(x * scale, "+" + fmt)) if sign else (lambda x: format(x * scale, fmt))
    dash = " – " if sign else "–"
    return f"{f(s['mean'])}{unit} [{f(s['min'])}{dash}{f(s['max'])}{unit}]"


def readme_results(measured: Mapping | None = None) -> dict[str, str]:
    """The README's toy results — notebook 03's data, notebook 04's dDPO table and β sweep, notebook 05's Table 3 —
    as Markdown blocks ``{name: text}`` made from the measurement, never typed by hand: ``bench/bench_claims.py
    --write-package`` writes each between ``<!-- <name>:begin ... -->`` and ``<!-- <name>:end -->``, and a test
    checks the README holds exactly these."""
    m = measured or load_measured()
    n = m["claims"]["ddpo_over_dsft"]["n"]
    over = f"mean [min–max] over the {n} runs of `bench/bench_claims.py` ({m.get('setup', {}).get('description', '')})"
    r = lambda key, **kw: _range(m, key, **kw)  # noqa: E731
    pct = dict(fmt=".1f", scale=100.0, unit=" %")
    aif = (f"Measured on the toy tier (notebook 03, 480 prompts × 4 models), mean [min–max] over data seeds "
           f"({m['claims']['judge_agreement']['n']} of them; notebook 03 trains nothing, so only the data moves it): "
           f"the judge equals the ground truth on {r('judge_agreement', **pct)} of completions (Spearman "
           f"{r('judge_spearman', fmt='.3f')}); the `zephyr` rule keeps {r('pairs_zephyr', fmt='.0f')} pairs, "
           f"`argilla` {r('pairs_argilla', fmt='.0f')} (Argilla's rule keeps a tied best when a lower completion "
           f"exists), `argilla_strict` {r('pairs_argilla_strict', fmt='.0f')} (it also drops a tied best), and the "
           f"chosen reply beats the rejected one on the ground truth in {r('chosen_beats_rejected', **pct)} of pairs.")
    spread = {b: _stat(m, f"beta_{b}")["max"] - _stat(m, f"beta_{b}")["min"] for b in ("0.01", "0.1", "0.5")}
    widest = max(spread, key=spread.get)
    ddpo = "\n".join([
        f"Measured on the toy tier (notebook 04 in the tutorial's chain; β 0.1, lr 2e-4, 3 epochs), as {over}:",
        "",
        "| | dSFT | dSFT + dDPO |",
        "|---|---|---|",
        f"| mean rubric score, 96 held-out prompts | {r('dsft_score')} | {r('ddpo_score')} |",
        f"| gain | – | {r('ddpo_over_dsft', sign=True)} |",
        f"| correct | {r('dsft_correct', fmt='.3f')} | {r('ddpo_correct', fmt='.3f')} |",
        f"| constraint followed | {r('dsft_followed', fmt='.3f')} | {r('ddpo_followed', fmt='.3f')} |",
        f"| reward accuracy, training / held-out pairs | – | {r('train_reward_accuracy', fmt='.3f')} / "
        f"{r('heldout_reward_accuracy', fmt='.3f')} |",
        "",
        f"β sweep (same data, same seed): β 0.01 → {r('beta_0.01')}, 0.1 → {r('beta_0.1')}, 0.5 → {r('beta_0.5')}. "
        f"Margin / β at β 0.01 is {r('beta_moves_policy')} times that at β 0.5: the smaller β lets the policy move "
        f"further from the reference. The widest spread is at β {widest} ({spread[widest]:.2f} points from worst run "
        f"to best)."])
    share = lambda key: round(_stat(m, key)["mean"] * _stat(m, key)["n"])  # noqa: E731
    runs5 = _stat(m, "ddpo_over_dsft2")["n"]
    both = ("mt_ddpo_over_dsft", "mt_dsft_over_ddpo_without_dsft")
    table3 = "\n".join([
        f"Mean [min–max] over the {runs5} runs of `bench/bench_claims.py`:",
        "",
        "| row | toy MT-Bench | toy win rate vs the teacher | paper MT-Bench (rank) | paper AlpacaEval |",
        "|---|---|---|---|---|",
        f"| base | {r('mt_base')} | – | – | – |",
        f"| dDPO without dSFT | {r('mt_ddpo_without_dsft')} | – | 4.76 (4) | 30.76 % |",
        f"| dSFT-1 | {r('mt_dsft')} | {r('win_dsft_vs_teacher', fmt='.1f', unit=' %')} | 6.64 (2) | 85.65 % |",
        f"| dSFT-2 (+1 SFT epoch on the chosen answers) | {r('mt_dsft2')} | "
        f"{r('win_dsft2_vs_teacher', fmt='.1f', unit=' %')} | 6.19 (3) | 78.54 % |",
        f"| dSFT + dDPO | {r('mt_dsft_ddpo')} | {r('win_ddpo_vs_teacher', fmt='.1f', unit=' %')} | 7.00 (1) | 86.07 % |",
        f"| dSFT + dDPO, student in the pool (on-policy) | {r('mt_on_policy')} | – | – | – |",
        "",
        f"dSFT + dDPO > dSFT-1 by {r('mt_ddpo_over_dsft', sign=True)} and dSFT-1 > dDPO without dSFT by "
        f"{r('mt_dsft_over_ddpo_without_dsft', sign=True)}: two of the paper's orderings "
        f"{'hold in every run' if min(_stat(m, k)['min'] for k in both) > 0 else 'do not hold in every run'}. "
        f"dSFT-1 > dSFT-2 (the paper's order) holds in {share('dsft1_over_dsft2')} of {runs5} runs, dSFT + dDPO > "
        f"dSFT-2 in {share('ddpo_over_dsft2')} of {runs5}. The on-policy pool's gain over dSFT-1: "
        f"{r('mt_on_policy_gain', sign=True)}. dSFT + dDPO against dSFT head to head: "
        f"{r('win_rate_ddpo_vs_dsft', fmt='.1f', unit=' %')} (96 held-out prompts, both orders judged)."])
    return {"aif-results": aif, "ddpo-results": ddpo, "table3-results": table3}

