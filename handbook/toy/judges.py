"""The toy world's judges behind the chat-backend interface.

* :class:`ToyJudge` — the teacher as an UltraFeedback-style rater (the AIF stage): reads the rating
  request, scores the reply with the toy rubric, answers in the requested format.
* :class:`ToyMTJudge` — the toy rubric behind MT-Bench's single and pairwise judge prompts (evaluation),
  and :func:`toy_questions`, the toy MT-Bench it grades.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field

from ..aif.rating import ASPECTS, format_rating_reply, parse_rating_request
from ..core.backends import Sampling, conversation_seed
from . import world


@dataclass
class ToyJudge:
    """The toy world's teacher as a rater, behind the chat-backend interface.

    It reads the rating request, judges the reply with the toy rubric and answers in the requested
    format. Like GPT-4 it is a good but imperfect rater: with probability ``noise`` it is off by one
    on the overall score (and the aspect it bases it on). ``format_error_rate`` makes a share of its
    replies unreadable (a rating missing), to exercise retries. Seeded by the request itself.
    """

    noise: float = 0.1
    format_error_rate: float = 0.0
    latency: float = 0.0
    name: str = field(default="toy-judge")

    def describe(self) -> dict:
        """What determines its ratings: ``noise`` and ``format_error_rate`` (``latency`` does not)."""
        return {"type": "toy-judge", "name": self.name, "noise": self.noise, "format_error_rate": self.format_error_rate}

    def chat(self, conversations, sampling: Sampling = Sampling(), return_exceptions: bool = False) -> list[str]:
        replies = []
        for conv in conversations:
            if self.latency:
                time.sleep(self.latency)
            rng = random.Random(conversation_seed(conv, sampling.seed))
            prompt, response = parse_rating_request(conv[-1]["content"])
            verdict = world.judge(prompt, response)
            category = world.parse_prompt(prompt).category
            aspects, overall = toy_aspect_ratings(verdict, category)
            if rng.random() < self.noise:
                overall = min(10, max(1, overall + rng.choice([-1, 1])))
            replies.append(format_rating_reply(aspects, overall, drop=rng.random() < self.format_error_rate))
        return replies


def toy_aspect_ratings(verdict, category: str) -> tuple[dict, int]:
    """The toy rubric's verdict expressed as UltraFeedback's four aspects and an overall score."""
    correct, malformed = verdict.correctness == "correct", verdict.correctness == "malformed"
    follows = 1 if malformed else (5 if verdict.followed in (True, None) else 2)
    truth = 5 if correct else (1 if malformed else 2)
    honesty = None if category in ("writing", "roleplay") else (5 if correct else 1 if malformed else 3)
    helpful = {10: 5, 9: 4, 5: 3, 4: 3, 2: 2, 1: 1}[verdict.score]
    reasons = {
        "instruction_following": "the constraint was followed" if follows == 5 else "the instruction was not followed",
        "honesty": "states its answer with fitting confidence" if honesty else "",
        "truthfulness": "the answer is right" if correct else "the answer is wrong or missing",
        "helpfulness": verdict.reason,
    }
    aspects = {"instruction_following": follows, "honesty": honesty, "truthfulness": truth, "helpfulness": helpful}
    return {a: {"rating": aspects[a], "rationale": reasons[a]} for a in ASPECTS}, verdict.score


_SINGLE = re.compile(r"\[Question\]\n(?P<q>.*?)\n\n.*\[The Start of Assistant's Answer\]\n(?P<a>.*?)\n"
                     r"\[The End of Assistant's Answer\]", re.DOTALL)
_MULTI = re.compile(r"<\|The Start of Assistant A's Conversation with User\|>.*### User:\n(?P<q>.*?)\n\n"
                    r"### Assistant A:\n(?P<a>.*?)\n\n<\|The End of Assistant A's Conversation with User\|>", re.DOTALL)
_PAIR = re.compile(r"\[User Question\]\n(?P<q>.*?)\n\n\[The Start of Assistant A's Answer\]\n(?P<a>.*?)\n"
                   r"\[The End of Assistant A's Answer\]\n\n\[The Start of Assistant B's Answer\]\n(?P<b>.*?)\n"
                   r"\[The End of Assistant B's Answer\]", re.DOTALL)


class ToyMTJudge:
    """The toy rubric behind MT-Bench's judge prompts (FastChat's or the handbook's: same markers).

    Single grading answers "... Rating: [[score]]" for the graded turn; pairwise grading compares
    the two answers' rubric scores and answers [[A]], [[B]] or [[C]].
    """

    name = "toy-mt-judge"

    def describe(self) -> dict:
        return {"type": "toy-mt-judge", "name": self.name}

    def chat(self, conversations, sampling: Sampling = Sampling(), return_exceptions: bool = False) -> list[str]:
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            if (m := _PAIR.search(text)):
                a, b = world.judge(m["q"], m["a"]).score, world.judge(m["q"], m["b"]).score
                out.append(f"Assistant A scores {a} on the rubric, assistant B {b}. "
                           + ("[[A]]" if a > b else "[[B]]" if b > a else "[[C]]"))
                continue
            m = _MULTI.search(text) or _SINGLE.search(text)
            if m is None:
                raise ValueError("not an MT-Bench judge prompt")
            verdict = world.judge(m["q"].strip(), m["a"].strip())
            reason = verdict.reason.rstrip(".")
            out.append(f"{reason[0].upper()}{reason[1:]}. Rating: [[{verdict.score}]]")
        return out


def toy_questions(n_per_category: int = 10, seed: int = 0) -> list[dict]:
    """The toy MT-Bench: two-turn held-out questions in the eight categories, FastChat's format,
    with reference answers (``reference``) for every question."""
    return world.two_turn_questions(n_per_category, "heldout", seed)
