"""Checks for the notebooks' exercises: did this run do the exercise, and did what it expects happen?

Every exercise of notebooks 00-06 has one function here, named after its notebook and number (``nb00_2``). Each
takes the values the notebook computed (and, for a question, the learner's answer), and returns an
:class:`Outcome`:

* ``not attempted`` — the run is at the notebook's defaults for this exercise (nothing to check yet);
* ``✓`` — the exercise was done and its expectation holds (or the answer is right), with the numbers;
* ``✗`` — done, but the expectation does not hold (or the answer is wrong): the numbers say what happened instead;
* ``done`` — an exploration whose outcome the toy world does not fix (e.g. which of two models MT-Bench ranks
  higher after another rule): the numbers are shown beside the measured defaults for the learner to judge.

A check never raises on a learner's values, so a notebook's own checks cell runs the same whether or not an
exercise was done; the notebooks exclude from their claims every parameter an exercise changes. Where an
expectation compares with the toy world's defaults, the default's range is the committed measurement over seeds
and CPU kernels (``handbook/toy/claims_measured.json``), never one run's digits.

    >>> from handbook import exercises
    >>> exercises.table(exercises.nb00_1(prompt, my_guesses), exercises.nb00_2(...))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

NOT_ATTEMPTED, CORRECT, WRONG, DONE = "not attempted", "✓", "✗", "done"


@dataclass(frozen=True)
class Outcome:
    """One exercise's check: ``exercise`` (``"00.2"``), ``status`` (see the module) and ``detail``."""

    exercise: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"exercise {self.exercise}: {self.status} — {self.detail}"


def table(*outcomes: Outcome):
    """The outcomes as a pandas DataFrame (one row per exercise) for a notebook cell."""
    import pandas as pd

    frame = pd.DataFrame([{"exercise": o.exercise, "status": o.status, "detail": o.detail} for o in outcomes])
    return frame.set_index("exercise").style.set_properties(**{"text-align": "left", "white-space": "pre-wrap"})


def _verdict(exercise: str, ok: bool, detail: str) -> Outcome:
    return Outcome(exercise, CORRECT if ok else WRONG, detail)


def _measured(key: str) -> Mapping:
    """A value's measured distribution over seeds and kernels (claims or reported values)."""
    from .toy.claims import load_measured

    measured = load_measured()
    return measured["claims"].get(key) or measured["reported"][key]


def _range(key: str, fmt: str = ".2f") -> str:
    m = _measured(key)
    return f"{m['mean']:{fmt}} [{m['min']:{fmt}}–{m['max']:{fmt}}]"


def saved_rule_of(data) -> str | None:
    """The binarization rule of the triples a notebook trains on, when they are notebook 03's output of this run
    (``data``: :func:`handbook.tiers.dpo_data_choice`'s choice; 03's ``metrics.json`` records ``saved_rule``)."""
    import json
    from pathlib import Path

    if data.source != "previous":
        return None
    metrics = Path(data.value["dataset_name"]).parent / "metrics.json"
    return json.loads(metrics.read_text()).get("saved_rule") if metrics.exists() else None


# ---------------------------------------------------------------------------------------------------- notebook 00

def nb00_1(prompt, guesses: Mapping[str, int]) -> Outcome:
    """Your predicted rubric score for each reply in ``guesses`` (reply → score) against the judge's."""
    from .toy import world

    if not guesses:
        return Outcome("00.1", NOT_ATTEMPTED, "fill `my_guesses` with replies and the scores you expect")
    wrong = []
    for reply, guess in guesses.items():
        verdict = world.judge(prompt, reply)
        if verdict.score != guess:
            wrong.append(f"{reply!r}: you said {guess}, the rubric {verdict.score} ({verdict.reason})")
    return _verdict("00.1", not wrong, "\n".join(wrong) if wrong else f"all {len(guesses)} guesses right")


def nb00_2(teacher_config: Mapping | None, follow: float, mean: float, default_mean: float) -> Outcome:
    """A teacher with another ``follow_rate``: the share followed near it, the mean score moving with it."""
    rate = (teacher_config or {}).get("follow_rate")
    if rate is None:
        return Outcome("00.2", NOT_ATTEMPTED, "run with -p teacher_config '{\"follow_rate\": 0.9}'")
    near = abs(follow - rate) <= 0.1
    moved = mean > default_mean if rate > 0.5 else mean < default_mean if rate < 0.5 else True
    return _verdict("00.2", near and moved,
                    f"constraints followed {follow:.1%} (follow_rate {rate:.0%}; expected within 10 points); "
                    f"mean score {mean:.2f} against {default_mean:.2f} with the default teacher")


def nb00_3(tier: str, base_mean: float, assistant_tokens: int) -> Outcome:
    """The small tier: SmolLM2's template marks assistant tokens, and its base answers far better than noise
    (at least 2 points above the random toy base's measured held-out score)."""
    if tier != "small":
        return Outcome("00.3", NOT_ATTEMPTED, "run with -p tier small")
    toy_base_mean = _measured("base_cannot_answer")["mean"]
    ok = assistant_tokens > 0 and base_mean >= toy_base_mean + 2
    return _verdict("00.3", ok, f"base model's held-out score {base_mean:.2f} (the random toy base: "
                                f"{toy_base_mean:.2f}); {assistant_tokens} assistant tokens marked")


# ---------------------------------------------------------------------------------------------------- notebook 01

def nb01_1(num_turns: int, rows: Sequence[Mapping], teacher_calls: int) -> Outcome:
    """One turn: 2 messages per row and one teacher call per dialogue (two turns take three: y0, x1, y1)."""
    if num_turns != 1:
        return Outcome("01.1", NOT_ATTEMPTED, "run with -p num_turns 1")
    sizes = {len(r["messages"]) for r in rows}
    per_dialogue = teacher_calls / len(rows) if rows else float("nan")
    return _verdict("01.1", sizes == {2} and per_dialogue == 1,
                    f"messages per row {sorted(sizes)}; {per_dialogue:g} teacher calls per dialogue")


def nb01_2(teacher_config: Mapping | None, truecased: int, disclaimers_removed: int) -> Outcome:
    """A teacher without the two defects: the filters find nothing to do."""
    cfg = teacher_config or {}
    if cfg.get("lowercase_rate") != 0 or cfg.get("disclaimer_rate") != 0:
        return Outcome("01.2", NOT_ATTEMPTED,
                       "run with -p teacher_config '{\"lowercase_rate\": 0, \"disclaimer_rate\": 0}'")
    return _verdict("01.2", truecased == 0 and disclaimers_removed == 0,
                    f"truecased {truecased}, disclaimers removed {disclaimers_removed}")


def nb01_3(missing_before: int, new_calls: int, identical: bool) -> Outcome:
    """Kill and resume: as many new calls as records were missing, and the same rows."""
    if missing_before == 0 and new_calls == 0:
        return Outcome("01.3", NOT_ATTEMPTED, "delete the last lines of a dialogues.*.cache.jsonl, then run the cell")
    return _verdict("01.3", new_calls == missing_before and identical,
                    f"{missing_before} records were missing, {new_calls} new teacher calls, rows "
                    + ("identical" if identical else "DIFFERENT from the first run"))


def nb01_4(teacher_source: str, rows: Sequence[Mapping], num_turns: int) -> Outcome:
    """A real teacher: its dialogues have the schema's turns, none empty."""
    if teacher_source != "endpoint":
        return Outcome("01.4", NOT_ATTEMPTED, "set teacher_base_url and teacher_model")
    bad = [n for n, r in enumerate(rows)
           if len(r["messages"]) != 2 * num_turns or any(not m["content"].strip() for m in r["messages"])]
    return _verdict("01.4", bool(rows) and not bad,
                    f"{len(rows)} dialogues" + (f"; rows with missing or empty turns: {bad[:10]}" if bad else ", whole"))


# ---------------------------------------------------------------------------------------------------- notebook 02

def nb02_1(assistant_only_loss: bool | None, trained_share: float, dsft_score: float | None) -> Outcome:
    """Every-token loss: every token of a dialogue carries a label."""
    if assistant_only_loss is not False:
        return Outcome("02.1", NOT_ATTEMPTED, "run with -p assistant_only_loss false")
    score = f"; held-out score {dsft_score:.2f} (assistant-only: {_range('dsft_score')})" if dsft_score else ""
    return _verdict("02.1", trained_share == 1.0, f"{trained_share:.0%} of the tokens carry a label{score}")


def nb02_2(tier: str, max_steps: int | None, recipe_steps: int | None, dsft_score: float | None) -> Outcome:
    """Fewer steps (toy): a held-out score below the recipe's 400 steps' measured range."""
    if max_steps is None or (recipe_steps and recipe_steps > 0 and max_steps >= recipe_steps):
        return Outcome("02.2", NOT_ATTEMPTED, "run with -p max_steps 100")
    if tier != "toy" or dsft_score is None:
        return Outcome("02.2", DONE, f"{max_steps} steps; the measured range is the toy tier's"
                       + (f"; held-out score {dsft_score:.2f}" if dsft_score is not None else ""))
    low = _measured("dsft_score")["min"]
    return _verdict("02.2", dsft_score < low, f"held-out score {dsft_score:.2f} after {max_steps} steps; "
                                              f"{recipe_steps} steps: {_range('dsft_score')}")


def nb02_3(data_source: str, reused: bool, train_dialogues: int) -> Outcome:
    """Chained data: notebook 01's dialogues of this run, trained on here. Notebook 01 at its defaults writes the
    recipe's own dialogues, and then the cached student is the same run and is reused: that is not the exercise."""
    if data_source != "previous" or reused:
        return Outcome("02.3", NOT_ATTEMPTED, "run notebook 01 with other parameters (e.g. num_turns 1) into this run "
                                              "folder first" + (" — its dialogues here are the recipe's own, so the "
                                                                "cached student was reused" if reused else ""))
    return Outcome("02.3", CORRECT, f"trained here on notebook 01's {train_dialogues} dialogues, not the cached student")


def nb02_4(tier: str, final_train_loss: float, base_score: float | None, dsft_score: float | None) -> Outcome:
    """The small tier: SmolLM2's real weights train (a finite loss) on the same dialogues."""
    if tier != "small":
        return Outcome("02.4", NOT_ATTEMPTED, "run with -p tier small -p max_steps 20")
    scores = f"; held-out score {base_score} → {dsft_score}" if base_score is not None else ""
    return _verdict("02.4", math.isfinite(final_train_loss), f"final train loss {final_train_loss:.3f}{scores}")


# ---------------------------------------------------------------------------------------------------- notebook 03

def nb03_1(saved_rule: str, saved_score: str | None, saved_pairs: int, pairs_by_rule: Mapping[str, int]) -> Outcome:
    """The aspects' mean: the saved pairs are the table's ``zephyr (fine_grained)`` row."""
    if saved_score != "fine_grained":
        return Outcome("03.1", NOT_ATTEMPTED, "run with -p score fine_grained")
    expected = pairs_by_rule.get(f"{saved_rule} (fine_grained)")
    return _verdict("03.1", saved_pairs == expected and saved_pairs == pairs_by_rule.get("argilla", saved_pairs),
                    f"{saved_pairs} pairs saved; the table's {saved_rule} (fine_grained): {expected}, argilla: "
                    f"{pairs_by_rule.get('argilla')}")


def nb03_2(saved_rule: str, margins_by_rule: Mapping[str, float]) -> Outcome:
    """Best vs worst: the largest overall-score margin of the table."""
    if saved_rule != "best_vs_worst":
        return Outcome("03.2", NOT_ATTEMPTED, "run with -p rule best_vs_worst")
    largest = max(margins_by_rule.values())
    return _verdict("03.2", margins_by_rule["best_vs_worst"] >= largest - 1e-9,
                    f"margins: " + ", ".join(f"{k} {v:.2f}" for k, v in margins_by_rule.items()))


def nb03_3(judge_noise: float | None, exact: float | None, spearman: float | None) -> Outcome:
    """A noisier judge: exact agreement near 1 − noise (an off-by-one can also be clipped at the scale's ends),
    the Spearman correlation falling less."""
    if judge_noise is None:
        return Outcome("03.3", NOT_ATTEMPTED, "run with -p judge_noise 0.4")
    if exact is None:
        return Outcome("03.3", DONE, "no ground truth at this tier")
    default = _measured("judge_agreement")
    ok = abs(exact - (1 - judge_noise)) <= 0.1 and (judge_noise <= 0.1 or exact < default["min"])
    return _verdict("03.3", ok, f"exact agreement {exact:.1%} (1 − noise = {1 - judge_noise:.0%}; recipe's noise 0.1: "
                                f"{_range('judge_agreement', '.3f')}), Spearman {spearman:.3f} (recipe's: "
                                f"{_range('judge_spearman', '.3f')})")


# ---------------------------------------------------------------------------------------------------- notebook 04

def nb04_1(sweep: Mapping[float, Mapping[str, float]], answer: float | None) -> Outcome:
    """Which β of the sweep pushed the rejected replies' log-probabilities lowest?"""
    if answer is None:
        return Outcome("04.1", NOT_ATTEMPTED, "set lowest_logps_rejected_beta to the β you read off the table")
    lowest = min(sweep, key=lambda b: sweep[b]["logps/rejected"])
    values = ", ".join(f"β {b}: {r['logps/rejected']:.2f}" for b, r in sweep.items())
    return _verdict("04.1", float(answer) == float(lowest), f"logps/rejected — {values}")


def nb04_2(data_rule: str | None, heldout_accuracy: float) -> Outcome:
    """Trained on notebook 03's best-vs-worst pairs: the held-out reward accuracy beside the recipe's."""
    if data_rule != "best_vs_worst":
        return Outcome("04.2", NOT_ATTEMPTED, "run notebook 03 with -p rule best_vs_worst into this run folder first")
    return Outcome("04.2", DONE, f"held-out reward accuracy {heldout_accuracy:.3f} (zephyr pairs: "
                                 f"{_range('heldout_reward_accuracy', '.3f')}); is the rubric score's gain larger?")


def nb04_3(at_initialisation: Mapping | None) -> Outcome:
    """``compare_with_trl`` with the dSFT model as policy and reference: rewards 0, loss log 2, no difference."""
    if not at_initialisation:
        return Outcome("04.3", NOT_ATTEMPTED, "set at_initialisation = compare_with_trl(dsft_model, <a second copy>, ...)")
    problems = []
    for beta, r in at_initialisation.items():
        h = r["by hand"]
        if abs(h["rewards/chosen"]) > 1e-6 or abs(h["rewards/rejected"]) > 1e-6:
            problems.append(f"β {beta}: rewards {h['rewards/chosen']:.2e}, {h['rewards/rejected']:.2e}")
        if abs(h["loss"] - math.log(2)) > 1e-5:
            problems.append(f"β {beta}: loss {h['loss']:.5f}")
    return _verdict("04.3", not problems, "; ".join(problems) or
                    f"every reward 0 and loss log 2 = {math.log(2):.4f} for β = {list(at_initialisation)}")


def nb04_4(num_train_epochs: float | None, train_accuracy: float, heldout_accuracy: float) -> Outcome:
    """One epoch: a training reward accuracy below three epochs' measured range."""
    if num_train_epochs != 1:
        return Outcome("04.4", NOT_ATTEMPTED, "run with -p num_train_epochs 1")
    three = _measured("train_reward_accuracy")
    return _verdict("04.4", train_accuracy < three["min"],
                    f"training pairs {train_accuracy:.3f}, held-out {heldout_accuracy:.3f} (gap "
                    f"{train_accuracy - heldout_accuracy:+.3f}); three epochs, training pairs: "
                    f"{_range('train_reward_accuracy', '.3f')}")


# ---------------------------------------------------------------------------------------------------- notebook 05

def nb05_1(num_train_epochs: float, scores: Mapping[str, float]) -> Outcome:
    """Three epochs of every Table 3 training: the dDPO rows beside one epoch's measured range."""
    if num_train_epochs == 1:
        return Outcome("05.1", NOT_ATTEMPTED, "run with -p num_train_epochs 3")
    return Outcome("05.1", DONE, f"dSFT+dDPO {scores['dsft_ddpo']:.2f} (one epoch: {_range('mt_dsft_ddpo')}), "
                                 f"dSFT-1 {scores['dsft']:.2f} (one epoch: {_range('mt_dsft')}), "
                                 f"dSFT-2 {scores['dsft2']:.2f} (one epoch: {_range('mt_dsft2')})")


def nb05_2(scores: Mapping[str, float], standard_errors: Mapping[str, float | None],
           answer: Sequence[str] | None) -> Outcome:
    """Which of the paper's Table 3 orderings (``handbook.ablation.PAPER_ORDERS``, named as ``"dsft_ddpo > dsft"``)
    hold in this run by more than two standard errors of the difference, √(se₁² + se₂²)?"""
    from .ablation import PAPER_ORDERS

    if answer is None:
        return Outcome("05.2", NOT_ATTEMPTED, "set orderings_apart to the orderings you read off the bar chart")
    apart = []
    for hi, lo, _ in PAPER_ORDERS:
        if hi in scores and lo in scores and standard_errors.get(hi) is not None and standard_errors.get(lo) is not None:
            if scores[hi] - scores[lo] > 2 * math.hypot(standard_errors[hi], standard_errors[lo]):
                apart.append(f"{hi} > {lo}")
    return _verdict("05.2", sorted(answer) == sorted(apart), f"holding by more than two standard errors: {apart or 'none'}")


def nb05_3(data_rule: str | None, scores: Mapping[str, float]) -> Outcome:
    """Trained on notebook 03's best-vs-worst pairs: dDPO's gain over dSFT-1 beside the recipe's pairs'."""
    if data_rule != "best_vs_worst":
        return Outcome("05.3", NOT_ATTEMPTED, "run notebook 03 with -p rule best_vs_worst into this run folder first")
    return Outcome("05.3", DONE, f"dDPO's gain over dSFT-1 {scores['dsft_ddpo'] - scores['dsft']:+.2f} (zephyr pairs: "
                                 f"{_range('mt_ddpo_over_dsft')}); dSFT-2 {scores['dsft2']:.2f}")


def nb05_4(judge_source: str, failed: int, judged: int) -> Outcome:
    """A real judge: every judgment read, none failed."""
    if judge_source != "endpoint":
        return Outcome("05.4", NOT_ATTEMPTED, "set judge_base_url and judge_model (and FastChat's files)")
    return _verdict("05.4", failed == 0 and judged > 0, f"{judged} judgments, {failed} failed")


# ---------------------------------------------------------------------------------------------------- notebook 06

def nb06_1(answer_gb: float | None, memory_at_32: Mapping[str, float]) -> Outcome:
    """Weights + gradients + optimizer states per GPU for full SFT, ZeRO-3, at 32 GPUs."""
    if answer_gb is None:
        return Outcome("06.1", NOT_ATTEMPTED, "set answer_gb_at_32 before changing the memory cell")
    sharded = sum(memory_at_32[k] for k in ("weights", "gradients", "optimizer (fp32 master + Adam)"))
    return _verdict("06.1", abs(answer_gb - sharded) <= 0.05 * sharded,
                    f"{sharded:.2f} GB per GPU sharded; activations stay {memory_at_32['activations']:.2f} GB")


def nb06_2(answer_mfu: float | None, mfu_for_hours) -> Outcome:
    """The MFU that puts the dSFT estimate inside the paper's 2-4 h (``mfu_for_hours(h)``: the MFU for h hours)."""
    if answer_mfu is None:
        return Outcome("06.2", NOT_ATTEMPTED, "set answer_mfu")
    low, high = mfu_for_hours(4.0), mfu_for_hours(2.0)
    return _verdict("06.2", low <= answer_mfu <= high, f"2–4 h on 16 A100 needs an MFU of {low:.0%}–{high:.0%}")


def nb06_3(answer_ratio: float | None, flops_precomputed: float, flops_live: float) -> Outcome:
    """The precomputed reference's FLOPs over the live reference's, over the recipe's epochs."""
    if answer_ratio is None:
        return Outcome("06.3", NOT_ATTEMPTED, "set answer_ratio")
    ratio = flops_precomputed / flops_live
    return _verdict("06.3", abs(answer_ratio - ratio) <= 0.01, f"{ratio:.3f} of the live run's FLOPs")


def nb06_4(tier: str, tokens_per_second: float, gflops: float) -> Outcome:
    """The small tier timed on this machine."""
    if tier != "small":
        return Outcome("06.4", NOT_ATTEMPTED, "run with -p tier small")
    return Outcome("06.4", DONE, f"{tokens_per_second:,.0f} tokens/s, {gflops:.2f} GFLOP/s: compare with the toy run's")
