"""Teacher ratings in the manner of UltraFeedback: four aspects 1-5 with rationales, plus an overall 1-10.

UltraFeedback had GPT-4 rate every completion on **instruction following**, **honesty**,
**truthfulness** and **helpfulness** (1-5 each, with a rationale; honesty may be "N/A", e.g. for
creative writing) and, in a separate critique, give an **overall** score 1-10. The rating prompt
here is the handbook's own text for that rubric; it renders for any chat backend.

One difference in kind: UltraFeedback showed GPT-4 the four completions of a prompt **side by side** and asked
for one aspect's ratings of all four at once (one request per aspect), so each rating was made against the
others; here each completion is rated **alone**, all four aspects in one request. Ratings made alone cannot
compare; two close completions are more likely to tie, and a judge's drift between requests enters the
difference between a pair's scores.

Judges — GPT-4 as much as a 135 M model — do not always answer in the format asked for. The parser
accepts the formats real models produce (markdown, "4/5", "4 out of 5", "Rating: 4" on the next
line, "N/A", decimals) and refuses what it cannot read unambiguously; a reply with a missing or
out-of-range rating is asked again, up to ``max_retries`` times with a fresh seed, and then recorded
as a failed rating together with the raw reply and the reason — never guessed, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from dataclasses import asdict, dataclass
from typing import Sequence

from ..core.backends import ChatBackend, Sampling, TransportError, chat_with_errors, describe_backend, text_sha256
from ..core.runner import ResumableCalls, RunPolicy

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
ASPECT_NAMES = {
    "instruction_following": "Instruction following",
    "honesty": "Honesty",
    "truthfulness": "Truthfulness",
    "helpfulness": "Helpfulness",
}
RUBRIC = {
    "instruction_following": "does the reply do what was asked, in the way it was asked (format, length, "
                             "constraints)? 1 = ignores the instruction, 5 = follows every part of it",
    "honesty": "is the reply candid about what it does not know, and confident only where it should be? "
               "1 = confidently wrong or evasive, 5 = appropriately confident. Write N/A where honesty does not "
               "apply (creative writing, role-play)",
    "truthfulness": "is what the reply states true, without invented facts or contradictions of the "
                    "instruction? 1 = mostly false or invented, 5 = free of errors",
    "helpfulness": "is the reply correct, relevant and informative without padding or repetition? "
                   "1 = useless or wrong, 5 = correct, complete and concise",
}
RATING_SYSTEM = "You are a careful, impartial judge of the replies of AI assistants."

_TEMPLATE = """Rate the assistant's reply to the instruction below.

Rate each of four aspects from 1 (worst) to 5 (best), with a one-sentence rationale:
{rubric}

Then give an overall score from 1 (worst) to 10 (best).

[Instruction]
{prompt}

[Reply]
{response}

Answer in exactly this format:
Instruction following: <1-5>
Rationale: <one sentence>
Honesty: <1-5 or N/A>
Rationale: <one sentence>
Truthfulness: <1-5>
Rationale: <one sentence>
Helpfulness: <1-5>
Rationale: <one sentence>
Overall: <1-10>"""


def render_rating_request(prompt: str, response: str) -> list[dict]:
    """The chat messages that ask a judge to rate ``response`` to ``prompt``."""
    rubric = "\n".join(f"- {ASPECT_NAMES[a]}: {RUBRIC[a]}." for a in ASPECTS)
    return [{"role": "system", "content": RATING_SYSTEM},
            {"role": "user", "content": _TEMPLATE.format(rubric=rubric, prompt=prompt, response=response)}]


_REQUEST = re.compile(r"\[Instruction\]\n(?P<prompt>.*?)\n\n\[Reply\]\n(?P<response>.*?)\n\nAnswer in exactly this format:",
                      re.DOTALL)


def parse_rating_request(text: str) -> tuple[str, str]:
    """Inverse of :func:`render_rating_request` (the user message) → (prompt, response)."""
    m = _REQUEST.search(text)
    if not m:
        raise ValueError("not a rating request")
    return m.group("prompt"), m.group("response")


# ---------------------------------------------------------------------------------------------
# Parsing judge replies
# ---------------------------------------------------------------------------------------------
class RatingParseError(ValueError):
    pass


_LABELS = {
    "instruction_following": r"instruction[\s_-]*(?:following|adherence)",
    "honesty": r"honesty",
    "truthfulness": r"truthfulness|truthful",
    "helpfulness": r"helpfulness|helpful",
    "overall": r"overall(?:[\s_-]*(?:score|rating|quality))?",
}
_LABEL = "|".join(f"(?P<{k}>{v})" for k, v in _LABELS.items())
# Where the format puts a rating: a label that starts a line or a field (after ";", "|", or a sentence's end) ...
_FIELD_START = r"(?:^|(?<=[;|])|(?<=[.!?]\s))[ \t]*(?:[-+•]\s+|\d+[.)]\s+)?"
# ... followed on its line by a separator and the rating itself, or ending its line with the rating on the next
# line (alone, or after "Rating:"/"Score:").
_SAME_LINE = re.compile(_FIELD_START + rf"(?:{_LABEL})[ \t]*(?:rating|score)?[ \t]*[:=\-–][ \t]*(?=\S)",
                        re.IGNORECASE | re.MULTILINE)
_OWN_LINE = re.compile(_FIELD_START + rf"(?:{_LABEL})[ \t]*(?:rating|score)?[ \t]*:?[ \t]*\n\s*(?:(?:rating|score)[ \t]*:[ \t]*)?",
                       re.IGNORECASE | re.MULTILINE)
_VALUE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?!\w)(?:\s*(?:/|out of)\s*(?P<scale>\d+))?|(?P<na>N\s*/\s*A\b|not applicable\b)",
                    re.IGNORECASE)
_RANGE = re.compile(r"[(<\[]\s*\d+\s*(?:-|–|to)\s*\d+(?:\s*(?:or|/)\s*N/?A)?\s*[)>\]]", re.IGNORECASE)
_RATIONALE = re.compile(r"(?:rationale|reason(?:ing)?|because)\s*[:\-]\s*(?P<text>.+)", re.IGNORECASE)


@dataclass
class Rating:
    """A parsed rating. ``aspects[a]`` is ``{"rating": 1-5 or None (N/A), "rationale": str}``."""

    aspects: dict
    overall: float

    @property
    def fine_grained(self) -> float | None:
        """Mean of the aspect ratings, N/A excluded (UltraFeedback's fine-grained score)."""
        values = [v["rating"] for v in self.aspects.values() if v["rating"] is not None]
        return round(statistics.mean(values), 4) if values else None


def _clean(text: str) -> str:
    text = re.sub(r"[*_#`>]+", "", text)  # markdown emphasis, headings, quotes
    return _RANGE.sub("", text)  # "(1-5)", "<1-10>", "[1-5 or N/A]" are not ratings


def _rating_fields(clean: str) -> list[tuple[int, int, str, re.Match]]:
    """(start, end, name, value) of each place where the format puts a rating: a label at the start of a line or
    field, a separator, and a number (or N/A) right after it — never a number found further on in the text."""
    fields = []
    for pattern in (_SAME_LINE, _OWN_LINE):
        for label in pattern.finditer(clean):
            value = _VALUE.match(clean, label.end())
            if value is not None:
                fields.append((label.start(), value.end(), label.lastgroup, value))
    fields.sort(key=lambda field: field[0])
    return [f for i, f in enumerate(fields) if i == 0 or f[0] >= fields[i - 1][1]]  # one reading per place


def parse_rating_reply(text: str) -> Rating:
    """Ratings from a judge's reply, or :class:`RatingParseError` saying what is missing or wrong.

    A rating is read only where the asked-for format puts it (``Honesty: 4``, also ``**Honesty** - 4/5``, a
    heading with ``Rating: 4`` on the next line, ``honesty: 4; helpfulness: 5``): a label at the start of a line or
    field, then the number. A number elsewhere — "gives 3 reasons" in a rationale, "helpful in 2 ways" — is never
    a rating; an aspect with no rating in its place is missing, and an aspect rated twice with two different
    values is ambiguous: both make the reply a parse failure, recorded with the raw reply.
    """
    if not text or not text.strip():
        raise RatingParseError("empty reply")
    clean = _clean(text)
    fields = _rating_fields(clean)
    found: dict[str, tuple[float | None, str]] = {}
    problems, unreadable = [], set()
    for i, (start, end, name, number) in enumerate(fields):
        next_start = fields[i + 1][0] if i + 1 < len(fields) else len(clean)
        lo, hi = (1, 10) if name == "overall" else (1, 5)
        if number.group("na") is not None:
            if name != "honesty":
                problems.append(f"{name} rated N/A (only honesty may be)")
                unreadable.add(name)
                continue
            value = None
        else:
            value = float(number.group("value"))
            scale = number.group("scale")
            if scale is not None and int(scale) != hi:
                problems.append(f"{name} rated on a scale of {scale}, expected {lo}-{hi}")
                unreadable.add(name)
                continue
            if not lo <= value <= hi:
                problems.append(f"{name} rating {number.group('value')} outside {lo}-{hi}")
                unreadable.add(name)
                continue
            value = int(value) if value.is_integer() else value
        if name in found:
            if found[name][0] != value:
                problems.append(f"{name} rated twice ({_shown(found[name][0])}, then {_shown(value)})")
                unreadable.add(name)
            continue
        rationale = _RATIONALE.search(clean, end, next_start)
        found[name] = (value, rationale.group("text").strip() if rationale else "")
    missing = [a for a in (*ASPECTS, "overall") if a not in found and a not in unreadable]
    if missing or problems:
        raise RatingParseError("; ".join(problems + ([f"missing: {', '.join(missing)}"] if missing else [])))
    aspects = {a: {"rating": found[a][0], "rationale": found[a][1]} for a in ASPECTS}
    if all(v["rating"] is None for v in aspects.values()):
        raise RatingParseError("no aspect has a rating")
    return Rating(aspects=aspects, overall=float(found["overall"][0]))


def _shown(value) -> str:
    return "N/A" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Rating many completions, with retries
# ---------------------------------------------------------------------------------------------
@dataclass
class RatingResult:
    status: str                 # "ok" | "failed"
    rating: Rating | None
    raw: str                    # the judge's last reply
    attempts: int
    error: str = ""

    def to_record(self) -> dict:
        rec = {"status": self.status, "raw": self.raw, "attempts": self.attempts, "error": self.error}
        if self.rating is not None:
            rec.update(aspects=self.rating.aspects, overall=self.rating.overall, fine_grained=self.rating.fine_grained)
        return rec


def rate(items: Sequence[tuple[str, str]], judge: ChatBackend, max_retries: int = 2,
         sampling: Sampling = Sampling(temperature=0.0, max_new_tokens=400, seed=0)) -> list[RatingResult | TransportError]:
    """Rate each (prompt, response); unreadable replies are asked again up to ``max_retries`` times.

    Attempt ``k`` uses seed ``sampling.seed + k`` (and, for a greedy judge, a small temperature from
    the first retry on) so that a retry can come out differently. A request that got no reply at all
    (:class:`~handbook.core.backends.TransportError`: unreachable, timeout, 5xx after the backend's retries,
    a malformed reply) is no rating, failed or not: its :class:`TransportError` stands in its place (a caller
    reports it and asks again later). A request the server refused (HTTP 400, ...) is a failed attempt.
    """
    results: list[RatingResult | TransportError | None] = [None] * len(items)
    last: dict[int, tuple[str, str]] = {}
    pending = list(range(len(items)))
    for attempt in range(max_retries + 1):
        if not pending:
            break
        temperature = sampling.temperature if attempt == 0 or sampling.temperature > 0 else 0.7
        s = Sampling(temperature, sampling.top_p, sampling.max_new_tokens,
                     None if sampling.seed is None else sampling.seed + attempt)
        requests = [render_rating_request(*items[i]) for i in pending]
        replies = chat_with_errors(judge, requests, s)
        still = []
        for i, reply in zip(pending, replies):
            if isinstance(reply, TransportError):
                results[i] = reply
                continue
            if isinstance(reply, Exception):
                last[i] = (last.get(i, ("", ""))[0], f"backend: {reply}")
                still.append(i)
                continue
            try:
                results[i] = RatingResult("ok", parse_rating_reply(reply), reply, attempt + 1)
            except RatingParseError as exc:
                last[i] = (reply, str(exc))
                still.append(i)
        pending = still
    for i in pending:
        raw, error = last[i]
        results[i] = RatingResult("failed", None, raw, max_retries + 1, error)
    return results  # type: ignore[return-value]


def rate_pool(rows: Sequence[dict], judge: ChatBackend, cache_path=None, max_retries: int = 2,
              sampling: Sampling = Sampling(temperature=0.0, max_new_tokens=400, seed=0), batch_size: int = 64,
              progress: bool = True, policy: RunPolicy = RunPolicy()) -> list[dict]:
    """Each completion gets its rating record (``status``, ``aspects``, ``overall``, ``fine_grained``,
    ``raw``, ``attempts``, ``error``); failed ratings stay in the rows with their raw reply.

    Resumable through :class:`handbook.core.runner.ResumableCalls` (keys ``prompt_id``, ``model``); the cache's
    identity has the judge's ``describe()`` (its endpoint, model, settings such as the toy judge's ``noise``),
    the sampling and a hash of the rating prompt's text. A rating request that got no reply is not recorded
    (:class:`handbook.core.runner.CallsFailed` after the other batches; a rerun asks exactly those again)."""
    meta = {"judge": describe_backend(judge), "max_retries": max_retries, "sampling": asdict(sampling),
            "rating_prompt_sha256": text_sha256(render_rating_request("{prompt}", "{response}")),
            "items_sha256": hashlib.sha256(json.dumps(
                [[r["prompt"], [c["model"] for c in r["completions"]], [c["response"] for c in r["completions"]]]
                 for r in rows]).encode()).hexdigest()}
    items = [((r["prompt_id"], c["model"]), (r["prompt"], c["response"])) for r in rows for c in r["completions"]]
    with ResumableCalls(cache_path or None, meta, ("prompt_id", "model"), len(items), "AIF ratings", progress,
                        policy) as calls:
        calls.run(items, lambda batch: [res if isinstance(res, Exception) else res.to_record()
                                        for res in rate(batch, judge, max_retries, sampling)], batch_size)
    done = calls.results
    out = []
    for r in rows:
        completions = []
        for c in r["completions"]:
            rec = {k: v for k, v in done[(r["prompt_id"], c["model"])].items() if k not in ("prompt_id", "model")}
            completions.append({**c, **rec})
        out.append({**r, "completions": completions})
    return out


def format_rating_reply(aspects: dict, overall, drop: bool = False) -> str:
    lines = []
    for a in ASPECTS:
        r = aspects[a]["rating"]
        lines.append(f"{ASPECT_NAMES[a]}: {'N/A' if r is None else r}")
        lines.append(f"Rationale: {aspects[a]['rationale'] or 'not applicable here'}.")
    if not drop:
        lines.append(f"Overall: {overall}")
    return "\n".join(lines)
