"""AlpacaEval-style pairwise win rates.

A pairwise judge compares a model's answer with a reference model's, in both orders (position
swap); a verdict that flips with the order counts as a tie. Win rate = mean of per-prompt scores
(win 1, tie 0.5, loss 0) with its standard error.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from tqdm.auto import tqdm

from ..core.backends import ChatBackend, Sampling, chat_with_errors
from ..core.runner import CallsFailed
from .judge_prompts import load_judge_prompts


def extract_verdict(judgment: str) -> str | None:
    """"A", "B" or "tie" from a pairwise judgment exactly as FastChat's ``run_judge_pair`` reads it:
    ``[[A]]`` anywhere → A, elif ``[[B]]`` → B, elif ``[[C]]`` → tie; else ``None`` (FastChat's "error")."""
    judgment = judgment or ""
    for marker, verdict in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if marker in judgment:
            return verdict
    return None


def render_pair(question: str, answer_a: str, answer_b: str, prompts: dict[str, dict] | None = None) -> list[dict]:
    p = (prompts or load_judge_prompts())["pair-v2"]
    return [{"role": "system", "content": p["system_prompt"]},
            {"role": "user", "content": p["prompt_template"].format(question=question, answer_a=answer_a,
                                                                    answer_b=answer_b)}]


def pairwise_outcome(verdict_ab: str | None, verdict_ba: str | None) -> float | None:
    """Score of the *model* (answer A in the first order, B in the swapped one): 1 win, 0.5 tie, 0 loss.

    A verdict that does not survive the position swap is a tie; a missing verdict leaves the pair out.
    """
    if verdict_ab is None or verdict_ba is None:
        return None
    first = {"A": 1.0, "B": 0.0, "tie": 0.5}[verdict_ab]
    second = {"B": 1.0, "A": 0.0, "tie": 0.5}[verdict_ba]
    return first if first == second else 0.5


@dataclass
class WinRate:
    win_rate: float        # percent
    standard_error: float  # percent
    n: int
    wins: int
    ties: int
    losses: int
    unjudged: int

    def __str__(self) -> str:
        return (f"{self.win_rate:.2f} ± {self.standard_error:.2f} % over {self.n} prompts "
                f"({self.wins} wins, {self.ties} ties, {self.losses} losses, {self.unjudged} unjudged)")


def win_rate(outcomes: Sequence[float | None]) -> WinRate:
    """Mean of per-prompt scores, in percent, with the standard error of that mean."""
    scored = [o for o in outcomes if o is not None]
    n = len(scored)
    if n == 0:
        raise ValueError("no judged pairs")
    mean = statistics.mean(scored)
    se = statistics.stdev(scored) / math.sqrt(n) if n > 1 else 0.0
    return WinRate(round(100 * mean, 3), round(100 * se, 3), n, sum(o == 1.0 for o in scored),
                   sum(o == 0.5 for o in scored), sum(o == 0.0 for o in scored), len(outcomes) - n)


def pairwise_win_rate(prompts: Sequence[str], answers: Sequence[str], reference_answers: Sequence[str],
                      judge: ChatBackend, judge_prompts=None, progress: bool = False,
                      batch_size: int = 32) -> tuple[WinRate | None, list[dict]]:
    """Judge each (model answer, reference answer) in both orders; return the win rate and the records.

    The judge is asked ``batch_size`` conversations at a time, under a progress bar when ``progress``.

    The win rate is None when no pair got a verdict in both orders (the records keep the raw replies). A judge
    request that got no reply (:class:`~handbook.core.backends.TransportError`: unreachable, timeout, 5xx,
    malformed) or that the server refused (HTTP 4xx) is no verdict: :class:`handbook.core.runner.CallsFailed` with
    the count and the first error, and nothing is recorded — an error message is never read as a verdict.
    """
    if not prompts:
        raise ValueError("no prompts to judge: a win rate needs at least one prompt")
    if not (len(prompts) == len(answers) == len(reference_answers)):
        raise ValueError("prompts, answers and reference answers must have the same length")
    ab = [render_pair(p, a, r, judge_prompts) for p, a, r in zip(prompts, answers, reference_answers)]
    ba = [render_pair(p, r, a, judge_prompts) for p, a, r in zip(prompts, answers, reference_answers)]
    conversations, replies = ab + ba, []
    with tqdm(total=len(conversations), desc=f"win rate: {len(prompts)} prompts, both orders", unit="verdict",
              disable=not progress) as bar:
        for start in range(0, len(conversations), batch_size):
            replies += chat_with_errors(judge, conversations[start:start + batch_size], Sampling(0.0, 1.0, 1024, 0))
            bar.update(min(batch_size, len(conversations) - start))
    failed = [(i, r) for i, r in enumerate(replies) if isinstance(r, Exception)]   # no reply, or refused (HTTP 4xx)
    if failed:
        i, first = failed[0]
        raise CallsFailed(f"win rate: {len(failed)} of {len(replies)} judge requests got no reply or were refused "
                          f"(nothing is recorded; rerun when the judge answers). First error (prompt {i % len(prompts)}, "
                          f"{'model first' if i < len(prompts) else 'model second'}): {first}", len(failed), 0, first)
    records = []
    for i, p in enumerate(prompts):
        v1, v2 = extract_verdict(replies[i]), extract_verdict(replies[len(prompts) + i])
        records.append({"prompt": p, "answer": answers[i], "reference": reference_answers[i], "verdict_model_first": v1,
                        "verdict_model_second": v2, "outcome": pairwise_outcome(v1, v2),
                        "judgments": [replies[i], replies[len(prompts) + i]]})
    outcomes = [r["outcome"] for r in records]
    return (win_rate(outcomes) if any(o is not None for o in outcomes) else None), records
