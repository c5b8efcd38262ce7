"""The offline toy world: a synthetic task domain with a teacher and a rubric judge.

Every later stage of the handbook is measured here, so the world is built to give each stage of
the Zephyr recipe something real to teach:

* **Prompts** fall into MT-Bench's eight categories. Each category is one easy, learnable task
  (a single-digit sum, the capital of a country, the symbol of an element, ...). A prompt may carry
  a *constraint* that leaves the answer itself unchanged: start with "Sure", end with "!", or be
  brief.
* **The teacher** (the stand-in for GPT-4 / ChatGPT) answers correctly almost always, but, like
  real distilled data, it is imperfect: it follows a prompt's constraint only about half the time,
  now and then it rambles (adds a filler sentence), and once in a while it errs. Supervised
  fine-tuning on its dialogues (dSFT) therefore makes a *competent* student that is not
  *intent-aligned*; AI-feedback preferences (AIF + dDPO) can then teach what dSFT did not.
* **The rubric judge** scores any free-text reply 1-10 from the prompt text alone: correctness
  first, then instruction-following, then tone.

These choices follow measurements on this stack (see the README's "toy world" section): tasks
whose answers are easy to learn, constraints that do not change the answer text, and a teacher
that follows constraints about half the time made dSFT + dDPO beat dSFT on held-out prompts; a
correctness-only preference signal did not.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..evaluation.mt_bench import CATEGORIES  # MT-Bench's eight, in FastChat's order

# ---------------------------------------------------------------------------------------------
# Constraints: instructions that change how an answer is phrased, never what it says.
# ---------------------------------------------------------------------------------------------
CONSTRAINTS: dict[str, str] = {
    "none": "",
    "sure": "Start your reply with 'Sure'.",
    "exclaim": "End your reply with an exclamation mark.",
    "brief": "Be brief.",
}

# Sentences a rambling reply adds. The judge recognises them as filler.
FILLERS: tuple[str, ...] = (
    "Good question.",
    "I hope this helps.",
    "Let me think about that.",
    "That is a nice thing to ask.",
)

# What an assistant trained on raw UltraChat said about itself; the dSFT filters drop such dialogues.
DISCLAIMERS: tuple[str, ...] = (
    "As an AI, I do not have opinions, but here it is.",
    "I don't have personal experiences, but I can answer.",
)

FOLLOW_UP_PREFIX = "Now, "

# ---------------------------------------------------------------------------------------------
# The facts of the world.
# ---------------------------------------------------------------------------------------------
CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin",
    "Japan": "Tokyo", "Egypt": "Cairo", "Peru": "Lima", "Kenya": "Nairobi",
    "Norway": "Oslo", "Greece": "Athens", "Canada": "Ottawa", "Chile": "Santiago",
    "Cuba": "Havana", "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin",
    "Portugal": "Lisbon", "Sweden": "Stockholm", "Russia": "Moscow", "China": "Beijing",
}
SYMBOLS = {
    "gold": "Au", "silver": "Ag", "iron": "Fe", "copper": "Cu", "sodium": "Na",
    "bromine": "Br", "neon": "Ne", "zinc": "Zn", "lead": "Pb", "tin": "Sn",
    "calcium": "Ca", "lithium": "Li", "argon": "Ar", "nickel": "Ni", "mercury": "Hg",
    "chlorine": "Cl", "silicon": "Si", "magnesium": "Mg", "cobalt": "Co", "platinum": "Pt",
}
TOPICS = {
    "sea": "deep", "moon": "bright", "rain": "cold", "forest": "green", "city": "busy",
    "river": "long", "desert": "dry", "mountain": "tall", "garden": "quiet", "storm": "loud",
    "winter": "cold", "summer": "warm", "night": "dark", "morning": "fresh", "road": "long",
    "lake": "still", "snow": "white", "sun": "hot", "wind": "strong", "sky": "blue",
}
ROLES = (
    "pirate", "chef", "doctor", "teacher", "wizard", "knight", "farmer", "sailor", "pilot",
    "baker", "robot", "detective", "king", "queen", "painter", "poet", "dragon", "ghost",
    "soldier", "nurse",
)
NAMES = (
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Iris", "Jack",
    "Kate", "Leo", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tina", "Victor",
)
PLACES = ("market", "park", "school", "library", "beach", "station", "museum", "bank", "zoo", "office")
WORDS = (
    "apple", "banana", "cat", "dog", "house", "tree", "river", "music", "happy", "green",
    "orange", "window", "garden", "yellow", "purple", "pencil", "rocket", "turtle", "cloud",
    "flower", "bridge", "candle", "mirror", "castle", "tiger", "lemon", "planet", "silver",
    "winter", "basket",
)

_INT = re.compile(r"-?\d+")


def _mentions(text: str, candidates: Iterable[str]) -> list[str]:
    """Candidates that occur in ``text`` as whole words, in order of first occurrence."""
    found = []
    for cand in candidates:
        m = re.search(rf"(?<![A-Za-z]){re.escape(cand)}(?![A-Za-z])", text)
        if m:
            found.append((m.start(), cand))
    return [c for _, c in sorted(found)]


class Task:
    """One category's task: how to ask, how to answer, and how to check an answer.

    ``items`` are the task's instances (tuples of strings). ``check`` returns ``"correct"``,
    ``"wrong"`` (an answer is there but it is not the right one) or ``"malformed"`` (no answer of
    the expected kind at all).
    """

    def __init__(self, category: str, question_template: str, answer_template: str,
                 items: Iterable[tuple[str, ...]], question_regex: str):
        self.category = category
        self.question_template = question_template
        self.answer_template = answer_template
        self.items = tuple(items)
        self.question_regex = question_regex

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category!r}, {len(self.items)} items)"

    def question(self, item: Sequence[str]) -> str:
        return self.question_template.format(*item)

    def answer(self, item: Sequence[str]) -> str:
        """The correct core answer sentence (before any constraint or rambling)."""
        return self.answer_template.format(*item, *self.derived(item))

    def parse(self, question: str) -> tuple[str, ...] | None:
        m = re.fullmatch(self.question_regex, question)
        return tuple(m.groups()) if m else None

    # Per-task hooks ---------------------------------------------------------------------------
    def derived(self, item: Sequence[str]) -> tuple[str, ...]:
        """Values computed from the item that the answer template uses after the item's own."""
        return ()

    def expected(self, item: Sequence[str]) -> str:
        raise NotImplementedError

    def wrong_answer(self, item: Sequence[str], rng: random.Random) -> str:
        raise NotImplementedError

    def check(self, item: Sequence[str], response: str) -> str:
        raise NotImplementedError


class _LookupTask(Task):
    """The answer is one value of a fixed set; correct iff exactly the right one is mentioned."""

    def __init__(self, category, question_template, answer_template, table, question_regex, items=None):
        self.table = dict(table)
        self.candidates = tuple(sorted(set(self.table.values())))
        super().__init__(category, question_template, answer_template,
                         items or ((k,) for k in self.table), question_regex)

    def derived(self, item):
        return (self.table[item[0]],)

    def expected(self, item):
        return self.table[item[0]]

    def wrong_answer(self, item, rng):
        right = self.expected(item)
        wrong = rng.choice([c for c in self.candidates if c != right])
        return self.answer(item).replace(right, wrong)

    def check(self, item, response):
        found = _mentions(response, self.candidates)
        if not found:
            return "malformed"
        return "correct" if found == [self.expected(item)] else "wrong"


class _WritingTask(_LookupTask):
    """A line about a topic: correct iff it is about that topic (and no other)."""

    def __init__(self):
        super().__init__("writing", "Write a short line about the {0}.", "The {0} is {1}.",
                         TOPICS, r"Write a short line about the ([a-z]+)\.")
        self.candidates = tuple(TOPICS)

    def expected(self, item):
        return item[0]

    def wrong_answer(self, item, rng):
        other = rng.choice([t for t in TOPICS if t != item[0]])
        return self.answer((other,))


class _SumTask(Task):
    def derived(self, item):
        return (str(int(item[0]) + int(item[1])),)

    def expected(self, item):
        return self.derived(item)[0]

    def wrong_answer(self, item, rng):
        s = int(self.expected(item))
        wrong = s + rng.choice([-2, -1, 1, 2]) if s >= 2 else s + rng.choice([1, 2])
        return f"{item[0]} plus {item[1]} is {wrong}."

    def check(self, item, response):
        numbers = _INT.findall(response)
        if not numbers:
            return "malformed"
        return "correct" if numbers[-1] == self.expected(item) else "wrong"


class _CompareTask(Task):
    def derived(self, item):
        a, b = int(item[0]), int(item[1])
        return (str(max(a, b)), str(min(a, b)))

    def expected(self, item):
        return self.derived(item)[0]

    def wrong_answer(self, item, rng):
        hi, lo = self.derived(item)
        return f"{lo} is larger than {hi}."

    def check(self, item, response):
        numbers = [n for n in _INT.findall(response) if n in item]
        if not numbers:
            return "malformed"
        return "correct" if numbers[0] == self.expected(item) else "wrong"


class _PrintTask(Task):
    _CODE = re.compile(r"print\('([A-Za-z]+)'\)")

    def expected(self, item):
        return item[0]

    def wrong_answer(self, item, rng):
        return self.answer((rng.choice([w for w in WORDS if w != item[0]]),))

    def check(self, item, response):
        printed = self._CODE.findall(response)
        if not printed:
            return "malformed"
        return "correct" if printed == [item[0]] else "wrong"


def _build_tasks() -> dict[str, Task]:
    tasks = [
        _WritingTask(),
        _LookupTask(
            "roleplay", "Pretend you are a {0} and greet me.", "Hello, I am the {0}.",
            {r: r for r in ROLES}, r"Pretend you are a ([a-z]+) and greet me\.",
        ),
        _CompareTask(
            "reasoning", "Which is larger, {0} or {1}?", "{2} is larger than {3}.",
            ((str(a), str(b)) for a in range(1, 21) for b in range(1, 21) if a != b),
            r"Which is larger, (\d+) or (\d+)\?",
        ),
        _SumTask(
            "math", "What is {0} plus {1}?", "{0} plus {1} is {2}.",
            ((str(a), str(b)) for a in range(10) for b in range(10)),
            r"What is (\d+) plus (\d+)\?",
        ),
        _PrintTask(
            "coding", "Write Python code that prints the word {0}.", "Use print('{0}') to do it.",
            ((w,) for w in WORDS), r"Write Python code that prints the word ([a-z]+)\.",
        ),
        _LookupTask(
            "extraction", "Extract the name from this sentence: {0} went to the {1}.",
            "The name is {2}.", {n: n for n in NAMES},
            r"Extract the name from this sentence: ([A-Z][a-z]+) went to the ([a-z]+)\.",
            items=[(n, p) for n in NAMES for p in PLACES],
        ),
        _LookupTask(
            "stem", "What is the chemical symbol for {0}?", "The symbol for {0} is {1}.",
            SYMBOLS, r"What is the chemical symbol for ([a-z]+)\?",
        ),
        _LookupTask(
            "humanities", "What is the capital of {0}?", "The capital of {0} is {1}.",
            CAPITALS, r"What is the capital of ([A-Z][a-z]+)\?",
        ),
    ]
    assert tuple(t.category for t in tasks) == CATEGORIES
    return {t.category: t for t in tasks}


TASKS: dict[str, Task] = _build_tasks()


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """One single-turn prompt: a task instance plus a constraint."""

    category: str
    item: tuple[str, ...]
    constraint: str = "none"

    @property
    def key(self) -> str:
        return f"{self.category}|{'|'.join(self.item)}|{self.constraint}"

    @property
    def task(self) -> Task:
        return TASKS[self.category]

    @property
    def text(self) -> str:
        return " ".join(p for p in (self.task.question(self.item), CONSTRAINTS[self.constraint]) if p)

    def follow_up_text(self) -> str:
        """The prompt phrased as a second-turn follow-up ("Now, what is ...")."""
        text = self.text
        return FOLLOW_UP_PREFIX + text[0].lower() + text[1:]

    @property
    def split(self) -> str:
        return split_of(self.key)

    def reference_answer(self) -> str:
        """The ideal reply: correct, constraint followed, no filler (MT-Bench's reference)."""
        return apply_style(self.task.answer(self.item), self.constraint, follow=True, ramble=False)


def parse_prompt(text: str) -> Prompt:
    """Recover the :class:`Prompt` behind a prompt text (first or follow-up turn).

    Raises ``ValueError`` naming the text when it is not a prompt of this world.
    """
    body = text.strip()
    if body.startswith(FOLLOW_UP_PREFIX):
        body = body[len(FOLLOW_UP_PREFIX):]
        body = body[:1].upper() + body[1:]
    constraint = "none"
    for name, suffix in CONSTRAINTS.items():
        if suffix and body.endswith(" " + suffix):
            constraint, body = name, body[: -len(suffix) - 1]
            break
    for category, task in TASKS.items():
        item = task.parse(body)
        if item is not None and item in _ITEM_SETS[category]:
            return Prompt(category, item, constraint)
    raise ValueError(f"not a prompt of the toy world: {text!r}")


_ITEM_SETS = {c: frozenset(t.items) for c, t in TASKS.items()}

HELDOUT_FRACTION = 0.2


def split_of(key: str) -> str:
    """``"heldout"`` for a fixed ~20 % of all (task, item, constraint) combinations, else ``"train"``.

    A hash of the prompt's key decides, so the split does not depend on which prompts a run
    happens to sample: a held-out prompt is never a training prompt, in any stage or run. The
    facts themselves (e.g. a capital) still appear in training under other constraints, as in
    the paper, where MT-Bench questions are unseen but their knowledge is not.
    """
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return "heldout" if (h % 1000) < HELDOUT_FRACTION * 1000 else "train"


def all_prompts(category: str | None = None) -> list[Prompt]:
    cats = CATEGORIES if category is None else (category,)
    return [Prompt(c, item, k) for c in cats for item in TASKS[c].items for k in CONSTRAINTS]


def sample_prompts(n_per_category: int, split: str, seed: int = 0,
                   categories: Sequence[str] = CATEGORIES, allow_fewer: bool = False) -> list[Prompt]:
    """``n_per_category`` distinct prompts of each category from one split, reproducibly.

    A category with fewer prompts in that split raises ``ValueError``, or, with ``allow_fewer``,
    contributes all it has.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    rng = random.Random(f"{seed}-{split}")
    out: list[Prompt] = []
    for c in categories:
        pool = [p for p in all_prompts(c) if p.split == split]
        if len(pool) < n_per_category and not allow_fewer:
            raise ValueError(f"category {c!r} has only {len(pool)} {split} prompts, asked for {n_per_category}")
        out.extend(rng.sample(pool, min(n_per_category, len(pool))))
    return out


def two_turn_questions(n_per_category: int, split: str, seed: int = 0) -> list[dict]:
    """MT-Bench-style questions: two turns of one category, both from ``split``.

    Returned in FastChat's ``question.jsonl`` shape: ``question_id``, ``category``, ``turns``
    (two strings) and ``reference`` (the ideal answer to each turn).
    """
    rng = random.Random(f"two-turn-{seed}-{split}")
    out = []
    for i, p1 in enumerate(sample_prompts(n_per_category, split, seed)):
        pool = [p for p in all_prompts(p1.category) if p.split == split and p.item != p1.item]
        p2 = rng.choice(pool)
        out.append({
            "question_id": 1000 + i,
            "category": p1.category,
            "turns": [p1.text, p2.follow_up_text()],
            "reference": [p1.reference_answer(), p2.reference_answer()],
        })
    return out


# ---------------------------------------------------------------------------------------------
# Style: constraints and rambling
# ---------------------------------------------------------------------------------------------
def apply_style(core: str, constraint: str, follow: bool, ramble: bool, filler: str = FILLERS[0]) -> str:
    """Phrase a core answer sentence: follow (or ignore) the constraint, ramble or not.

    Ignoring "Be brief." means rambling, so ``ramble`` is forced on in that case.
    """
    if constraint == "brief" and not follow:
        ramble = True
    text = f"{filler} {core}" if ramble else core
    if constraint == "sure" and follow:
        text = f"Sure. {text}"
    if constraint == "exclaim" and follow:
        text = text[:-1] + "!" if text.endswith(".") else text + "!"
    return text


@dataclass(frozen=True)
class TeacherConfig:
    """How imperfect the toy teacher is. Defaults chosen by measurement (see README)."""

    follow_rate: float = 0.5   # share of constrained prompts whose constraint it follows
    ramble_rate: float = 0.15  # share of other replies it pads with a filler sentence
    error_rate: float = 0.03   # share of replies with a wrong answer
    # The two defects the ultrachat_200k filters remove (notebook 01 shows them go):
    lowercase_rate: float = 0.05   # a reply that starts in lower case
    disclaimer_rate: float = 0.03  # a reply prefaced by "As an AI, I do not have opinions ..."


def teacher_reply(prompt: Prompt, rng: random.Random, config: TeacherConfig = TeacherConfig()) -> str:
    """The toy teacher's answer to ``prompt``: useful, imperfect, sampled with ``rng``."""
    task = prompt.task
    core = task.wrong_answer(prompt.item, rng) if rng.random() < config.error_rate else task.answer(prompt.item)
    follow = prompt.constraint == "none" or rng.random() < config.follow_rate
    ramble = rng.random() < config.ramble_rate
    # Ignoring "Be brief." the teacher pads with its one habitual opener; other rambling varies.
    # (With a random filler there, no single padded reply would be as likely as the brief one, and a
    # greedy student would always look brief: the habit keeps the constraint as hard as the others.)
    habit = prompt.constraint == "brief" and not follow
    filler = FILLERS[0] if habit else rng.choice(FILLERS)
    text = apply_style(core, prompt.constraint, follow=follow, ramble=ramble, filler=filler)
    if rng.random() < config.disclaimer_rate:
        text = f"{rng.choice(DISCLAIMERS)} {text}"
    if rng.random() < config.lowercase_rate:
        text = text[0].lower() + text[1:]
    return text


# ---------------------------------------------------------------------------------------------
# The rubric judge
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Judgement:
    """A rubric verdict on one reply. ``score`` is 1-10."""

    score: int
    correctness: str          # "correct" | "wrong" | "malformed"
    followed: bool | None     # constraint followed? None when the prompt has none
    rambling: bool            # a filler sentence present
    reason: str


def constraint_followed(constraint: str, response: str) -> bool | None:
    text = response.strip()
    if constraint == "none":
        return None
    if constraint == "sure":
        return text.startswith("Sure")
    if constraint == "exclaim":
        return text.endswith("!")
    if constraint == "brief":
        return not has_filler(text) and len(text.split()) <= 12
    raise ValueError(f"unknown constraint {constraint!r}")


def has_filler(response: str) -> bool:
    """Filler sentences and self-disclaimers, case-insensitively."""
    text = response.lower()
    return any(f[:-1].lower() in text for f in FILLERS + DISCLAIMERS)


def judge(prompt: Prompt | str, response: str) -> Judgement:
    """Score a free-text reply to a prompt of this world, 1-10.

    Correctness first, then instruction-following, then tone:

    ========================================================  =====
    empty, or no answer of the expected kind                      1
    a wrong answer                                                2
    correct, constraint ignored                                   5
    correct, constraint followed (or none), but rambling          9
    correct, constraint followed (or none), no filler            10
    ========================================================  =====

    Rambling costs one more point when the constraint was ignored as well (4), except for
    "Be brief.", where rambling *is* the ignored constraint (5).
    """
    if isinstance(prompt, str):
        prompt = parse_prompt(prompt)
    text = response.strip()
    if not text:
        return Judgement(1, "malformed", None, False, "empty reply")
    correctness = prompt.task.check(prompt.item, text)
    followed = constraint_followed(prompt.constraint, text)
    rambling = has_filler(text)
    if correctness == "malformed":
        return Judgement(1, correctness, followed, rambling, f"no {prompt.category} answer found")
    if correctness == "wrong":
        return Judgement(2, correctness, followed, rambling, f"wrong answer (expected {prompt.task.expected(prompt.item)})")
    if followed is False:
        score = 5 if prompt.constraint == "brief" or not rambling else 4
        return Judgement(score, correctness, followed, rambling, f"correct, but ignored: {CONSTRAINTS[prompt.constraint]}")
    if rambling:
        return Judgement(9, correctness, followed, rambling, "correct, but rambles")
    return Judgement(10, correctness, followed, rambling, "correct and follows the instruction")
