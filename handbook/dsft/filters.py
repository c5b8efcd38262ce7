"""The filters that turned UltraChat into ultrachat_200k, and the checks every dialogue passes.

The dataset card of ``HuggingFaceH4/ultrachat_200k`` lists what was done to UltraChat: sentences
that start in lower case were truecased (about 5 % of the dialogues had errors like "Hello. how are
you?"), and dialogues in which the assistant says it has no emotions or opinions were dropped — a
model fine-tuned on the raw data learned to capitalise wrongly and to preface plain answers with
"I don't have personal experiences". De-duplication is the third step here.

Each filter returns the filtered rows and a :class:`FilterReport` (rows in, rows out, rows
removed, rows changed), so a notebook can show what each one did.

``validate_dialogue`` / ``validate_dialogues`` check the schema: a clear error names the row and
the field for a missing ``messages``, an unknown role, turns that do not alternate, or an empty
message.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
class DialogueError(ValueError):
    pass


def validate_dialogue(row: dict, index: int | str, field: str = "messages") -> None:
    """Raise :class:`DialogueError` naming ``index`` and the field when ``row[field]`` is malformed.

    A dialogue is an optional system message, then user and assistant turns alternating, starting
    with the user and ending with the assistant; every content is a non-empty string.
    """
    where = f"row {index}"
    if field not in row or row[field] is None:
        raise DialogueError(f"{where}: field '{field}' is missing")
    messages = row[field]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DialogueError(f"{where}: field '{field}' must be a non-empty list of messages")
    expected = "user"
    for j, m in enumerate(messages):
        at = f"{where}: {field}[{j}]"
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DialogueError(f"{at} must have 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise DialogueError(f"{at}.role: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if role == "system":
            if j != 0:
                raise DialogueError(f"{at}.role: a system message may only come first")
        else:
            if role != expected:
                raise DialogueError(f"{at}.role: turns must alternate user/assistant, got {role!r} where {expected!r} belongs")
            expected = "assistant" if role == "user" else "user"
        if not isinstance(content, str) or not content.strip():
            raise DialogueError(f"{at}.content is empty")
    if messages[-1]["role"] != "assistant":
        raise DialogueError(f"{where}: field '{field}' must end with an assistant turn")


def validate_dialogues(rows: Iterable[dict], field: str = "messages") -> int:
    """Validate every row; return how many there were."""
    n = 0
    for n, row in enumerate(rows, start=1):
        validate_dialogue(row, n - 1, field)
    return n


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilterReport:
    name: str
    rows_in: int
    rows_out: int
    changed: int = 0

    @property
    def removed(self) -> int:
        return self.rows_in - self.rows_out

    def __str__(self) -> str:
        return f"{self.name}: {self.rows_in} → {self.rows_out} rows ({self.removed} removed, {self.changed} changed)"


# Sentence starts: the start of the text, or after ., ! or ? and whitespace. Not after common
# abbreviations (e.g., i.e., etc., vs.) and not inside code.
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "no.", "fig.", "eq.")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
_URLISH = re.compile(r"^[a-z][\w.-]*\.(com|org|net|io|py|txt|json)\b|^[a-z]+://")


def truecase(text: str) -> str:
    """Capitalise sentences that start with a lower-case letter ("Hello. how are you?" → "... How ...").

    Code spans and fenced blocks are left alone, as are sentence-like starts after an abbreviation
    and tokens that look like file names or URLs.
    """
    pieces, last = [], 0
    for m in _CODE.finditer(text):
        pieces.append((text[last:m.start()], True))
        pieces.append((m.group(0), False))
        last = m.end()
    pieces.append((text[last:], True))

    def fix(segment: str, at_text_start: bool) -> str:
        def repl(m: re.Match) -> str:
            start = m.start(2)
            before = segment[:m.start()].split()[-1:] if m.group(1) else []
            if before and (before[0] + m.group(1).strip()).lower().endswith(_ABBREVIATIONS):
                return m.group(0)
            if not m.group(1) and not at_text_start:
                return m.group(0)
            if _URLISH.match(segment[start:start + 40]):
                return m.group(0)
            return m.group(1) + m.group(2).upper()

        return _SENTENCE_START.sub(repl, segment)

    out, at_start = [], True
    for segment, is_prose in pieces:
        out.append(fix(segment, at_start) if is_prose else segment)
        at_start = False if segment.strip() else at_start
    return "".join(out)


def truecase_dialogues(rows: Sequence[dict]) -> tuple[list[dict], FilterReport]:
    """Truecase every message of every dialogue (and the ``prompt``); rows are changed, not removed."""
    out, changed = [], 0
    for row in rows:
        messages = [{**m, "content": truecase(m["content"])} for m in row["messages"]]
        new = {**row, "messages": messages}
        if "prompt" in row:
            new["prompt"] = truecase(row["prompt"])
        changed += messages != row["messages"]
        out.append(new)
    return out, FilterReport("truecase", len(rows), len(out), changed)


# Phrases of an assistant that talks about lacking feelings or opinions, as filtered from UltraChat.
DISCLAIMER_PATTERNS = [
    r"\bI (?:do not|don't|don’t) have (?:any )?(?:personal )?(?:emotions|feelings|opinions|beliefs|preferences|"
    r"personal experiences|experiences|a personal opinion|the ability to feel)",
    r"\bas an AI(?: language model)?,? I (?:do not|don't|don’t|cannot|can't|am not able to)",
    r"\bI am (?:just )?an AI(?: language model)?(?: and| so)? I (?:do not|don't|cannot|can't)",
    r"\bI(?: am|'m) not capable of (?:having )?(?:emotions|feelings|opinions)",
]
_DISCLAIMER = re.compile("|".join(DISCLAIMER_PATTERNS), re.IGNORECASE)


def has_disclaimer(text: str) -> bool:
    return bool(_DISCLAIMER.search(text))


def drop_disclaimers(rows: Sequence[dict]) -> tuple[list[dict], FilterReport]:
    """Drop dialogues in which any assistant turn disclaims emotions, opinions or experiences."""
    out = [r for r in rows if not any(m["role"] == "assistant" and has_disclaimer(m["content"]) for m in r["messages"])]
    return out, FilterReport("drop_disclaimers", len(rows), len(out))


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def deduplicate(rows: Sequence[dict]) -> tuple[list[dict], FilterReport]:
    """Keep the first of dialogues whose messages are equal up to case and whitespace."""
    seen, out = set(), []
    for row in rows:
        key = tuple((m["role"], _normalise(m["content"])) for m in row["messages"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out, FilterReport("deduplicate", len(rows), len(out))


def ultrachat_filters(rows: Sequence[dict]) -> tuple[list[dict], list[FilterReport]]:
    """Validate, then truecase → drop disclaimers → de-duplicate; returns rows and one report per filter."""
    rows = list(rows)
    validate_dialogues(rows)
    reports = []
    for f in (truecase_dialogues, drop_disclaimers, deduplicate):
        rows, report = f(rows)
        reports.append(report)
    return rows, reports
