"""MT-Bench-style evaluation in FastChat's formats, and AlpacaEval-style pairwise win rates.

**MT-Bench** (FastChat ``llm_judge``): two-turn questions in eight categories (``question.jsonl``:
``question_id``, ``category``, ``turns``, optional ``reference``). Each model answers both turns,
sampled at FastChat's per-category temperatures; a judge grades every turn 1-10 with the
single-answer prompts of ``judge_prompts.jsonl`` (``single-v1``, ``single-math-v1`` for
math/reasoning/coding with a reference answer, and their ``-multi-turn`` variants for turn 2) and
must answer ``[[rating]]``. Answers and judgments are written as FastChat writes them
(``model_answer/<model>.jsonl``, ``model_judgment/<judge>_single.jsonl``, a failed extraction
recorded with score -1 and the raw judgment, as FastChat does) so FastChat's ``show_result.py``
reads them. The handbook ships judge prompts of its own wording with FastChat's names and
placeholders; the full tier reads FastChat's file instead.

**AlpacaEval-style win rate**: a pairwise judge compares a model's answer with a reference model's,
in both orders (position swap); a verdict that flips with the order counts as a tie. Win rate =
mean of per-prompt scores (win 1, tie 0.5, loss 0) with its standard error.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from .backends import ChatBackend, Sampling, chat_with_errors
from .cache import CallCache

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
# FastChat's sampling temperature per category
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
               "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
NEED_REFERENCE = ("math", "reasoning", "coding")

# Judge prompts of the handbook's own wording, with FastChat's names, fields and placeholders.
_RATE = ('When you have explained your view, rate the response from 1 to 10, written exactly as "[[rating]]", '
         'for example "Rating: [[5]]".')
_SINGLE_SYSTEM_MULTI = ("You are an impartial judge of an AI assistant's reply. {focus} Judge only the assistant's "
                        "answer to the second user question. Explain briefly, then rate. " + _RATE)
HANDBOOK_JUDGE_PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\nYou are an impartial judge of an AI assistant's reply to the question below. "
                        "Weigh helpfulness, relevance, accuracy, depth and how well it follows the instruction. "
                        "Explain briefly, then rate. " + _RATE +
                        "\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
                        "[The End of Assistant's Answer]",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\nYou are an impartial judge of an AI assistant's reply to the question below. "
                        "Weigh correctness and helpfulness: compare the reply with the reference answer and name "
                        "any mistake. Explain briefly, then rate. " + _RATE +
                        "\n\n[Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n"
                        "[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n"
                        "[The End of Assistant's Answer]",
     "description": "Prompt for math questions", "category": "math", "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single",
     "system_prompt": _SINGLE_SYSTEM_MULTI.format(focus="Weigh helpfulness, relevance, accuracy, depth and how well "
                                                        "it follows the instruction."),
     "prompt_template": "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
                        "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
                        "<|The End of Assistant A's Conversation with User|>",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single",
     "system_prompt": _SINGLE_SYSTEM_MULTI.format(focus="Weigh correctness and helpfulness against the reference "
                                                        "answers and name any mistake."),
     "prompt_template": "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference answer:\n"
                        "{ref_answer_1}\n\n### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n"
                        "<|The End of Reference Answer|>\n\n\n<|The Start of Assistant A's Conversation with User|>\n\n"
                        "### User:\n{question_1}\n\n### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n"
                        "### Assistant A:\n{answer_2}\n\n<|The End of Assistant A's Conversation with User|>",
     "description": "Prompt for math questions", "category": "math", "output_format": "[[rating]]"},
    {"name": "pair-v2", "type": "pairwise",
     "system_prompt": "You are an impartial judge comparing two AI assistants' replies to the user question below. "
                      "Choose the one that follows the instruction and answers better; the order of the replies, "
                      "their length and the assistants' names must not sway you. Explain briefly, then give your "
                      'verdict exactly as "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and '
                      '"[[C]]" for a tie.',
     "prompt_template": "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
                        "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
                        "[The End of Assistant B's Answer]",
     "description": "Prompt for general questions", "category": "general", "output_format": "[[A]]"},
]


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def read_jsonl(path) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc})") from None
    return rows


def write_jsonl(path, rows) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def load_questions(path) -> list[dict]:
    """FastChat's ``question.jsonl``; each row checked for ``question_id``, ``category`` and two ``turns``."""
    questions = read_jsonl(path)
    for n, q in enumerate(questions):
        for key in ("question_id", "category", "turns"):
            if key not in q:
                raise ValueError(f"{path}, question {n}: field '{key}' is missing")
        if not isinstance(q["turns"], list) or not q["turns"] or not all(isinstance(t, str) for t in q["turns"]):
            raise ValueError(f"{path}, question {q['question_id']}: field 'turns' must be a list of strings")
    return questions


def load_judge_prompts(path=None) -> dict[str, dict]:
    """Judge prompts by name: FastChat's ``judge_prompts.jsonl`` at ``path``, or the handbook's own."""
    prompts = read_jsonl(path) if path else HANDBOOK_JUDGE_PROMPTS
    out = {}
    for p in prompts:
        for key in ("name", "type", "system_prompt", "prompt_template", "output_format"):
            if key not in p:
                raise ValueError(f"judge prompt {p.get('name', '?')}: field '{key}' is missing")
        out[p["name"]] = p
    return out


def load_reference_answers(path) -> dict[int, list[str]]:
    """FastChat's ``reference_answer/<model>.jsonl`` → ``{question_id: [turn 1, turn 2]}``."""
    return {r["question_id"]: r["choices"][0]["turns"] for r in read_jsonl(path)}


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------
def generate_answers(questions: Sequence[dict], backend: ChatBackend, model_id: str, max_new_tokens: int = 1024,
                     seed: int = 0, cache_path=None, progress: bool = True) -> list[dict]:
    """Two-turn answers in FastChat's ``model_answer`` format, one row per question.

    Questions are batched by category (each category has its temperature); turn 2 sees the
    question, the model's own first answer and the follow-up.
    """
    meta = {"model_id": model_id, "backend": backend.name, "max_new_tokens": max_new_tokens, "seed": seed,
            "questions": [q["question_id"] for q in questions]}
    cache = CallCache(cache_path, meta, ("question_id", "turn")) if cache_path else None
    done = {k: r["content"] for k, r in cache.records.items()} if cache else {}
    n_turns = max(len(q["turns"]) for q in questions)
    bar = tqdm(total=sum(len(q["turns"]) for q in questions), desc=f"answers of {model_id}", disable=not progress,
               initial=len(done))
    for turn in range(n_turns):
        by_temperature = defaultdict(list)
        for q in questions:
            if turn < len(q["turns"]) and (q["question_id"], turn) not in done:
                by_temperature[TEMPERATURE.get(q["category"], 0.7)].append(q)
        for temperature, qs in sorted(by_temperature.items()):
            conversations = []
            for q in qs:
                conv = []
                for t in range(turn):
                    conv += [{"role": "user", "content": q["turns"][t]},
                             {"role": "assistant", "content": done[(q["question_id"], t)]}]
                conversations.append(conv + [{"role": "user", "content": q["turns"][turn]}])
            replies = backend.chat(conversations, Sampling(temperature, 1.0, max_new_tokens, seed + turn))
            records = [{"question_id": q["question_id"], "turn": turn, "content": r} for q, r in zip(qs, replies)]
            for r in records:
                done[(r["question_id"], r["turn"])] = r["content"]
            if cache:
                cache.append(records)
            bar.update(len(records))
    bar.close()
    return [{"question_id": q["question_id"], "answer_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{model_id}/{q['question_id']}").hex,
             "model_id": model_id, "choices": [{"index": 0, "turns": [done[(q["question_id"], t)]
                                                                      for t in range(len(q["turns"]))]}],
             "tstamp": time.time()} for q in questions]


# ---------------------------------------------------------------------------------------------
# Single-answer grading
# ---------------------------------------------------------------------------------------------
_RATING_PATTERNS = [
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),                       # [[7]], [[7.5]]
    re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]"),                           # [7]
    re.compile(r"rating\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)(?:\s*/\s*10)?", re.IGNORECASE),  # Rating: 7, rating: 7/10
]


def extract_rating(judgment: str) -> float:
    """The 1-10 rating in a judge's reply, or -1 when there is none (FastChat's convention).

    ``[[rating]]`` is what the prompt asks for; ``[rating]`` and ``Rating: 7`` are what judges also
    write. The last match of the first pattern that matches wins (a judge may quote the format
    first); a value outside 1-10 counts as none.
    """
    for pattern in _RATING_PATTERNS:
        matches = pattern.findall(judgment or "")
        if matches:
            value = float(matches[-1])
            return value if 1 <= value <= 10 else -1.0
    return -1.0


def render_single(question: dict, answer: dict, turn: int, prompts: dict[str, dict],
                  references: dict[int, list[str]] | None = None) -> tuple[str, list[dict]]:
    """(prompt name, chat messages) to grade ``turn`` (0 or 1) of ``answer`` to ``question``."""
    needs_ref = question["category"] in NEED_REFERENCE
    ref = (references or {}).get(question["question_id"]) or question.get("reference")
    if needs_ref and not ref:
        raise ValueError(f"question {question['question_id']} ({question['category']}) needs a reference answer")
    name = ("single-math-v1" if needs_ref else "single-v1") + ("-multi-turn" if turn == 1 else "")
    p = prompts[name]
    turns = answer["choices"][0]["turns"]
    if turn == 0:
        fields = {"question": question["turns"][0], "answer": turns[0]}
        if needs_ref:
            fields["ref_answer_1"] = ref[0]
    else:
        fields = {"question_1": question["turns"][0], "answer_1": turns[0],
                  "question_2": question["turns"][1], "answer_2": turns[1]}
        if needs_ref:
            fields.update(ref_answer_1=ref[0], ref_answer_2=ref[1])
    messages = [{"role": "system", "content": p["system_prompt"]},
                {"role": "user", "content": p["prompt_template"].format(**fields)}]
    return name, messages


def judge_answers(questions: Sequence[dict], answers: Sequence[dict], judge: ChatBackend, judge_model: str,
                  prompts: dict[str, dict] | None = None, references=None, cache_path=None,
                  max_new_tokens: int = 2048, progress: bool = True) -> list[dict]:
    """FastChat ``model_judgment`` rows (single grading) for every answered turn; greedy judge."""
    prompts = prompts or load_judge_prompts()
    by_id = {q["question_id"]: q for q in questions}
    items = []
    for a in answers:
        q = by_id[a["question_id"]]
        for turn in range(len(q["turns"])):
            name, messages = render_single(q, a, turn, prompts, references)
            items.append((a["model_id"], q["question_id"], turn + 1, name, messages))
    meta = {"judge": judge_model, "backend": judge.name,
            "answers_sha256": _sha([a["choices"][0]["turns"] for a in answers])}
    cache = CallCache(cache_path, meta, ("model", "question_id", "turn")) if cache_path else None
    done = dict(cache.records) if cache else {}
    todo = [it for it in items if (it[0], it[1], it[2]) not in done]
    bar = tqdm(total=len(items), desc="MT-Bench judgments", disable=not progress, initial=len(items) - len(todo))
    for start in range(0, len(todo), 64):
        chunk = todo[start:start + 64]
        replies = chat_with_errors(judge, [m for *_, m in chunk], Sampling(0.0, 1.0, max_new_tokens, 0))
        records = []
        for (model, qid, turn, name, messages), reply in zip(chunk, replies):
            judgment = f"ERROR: {reply}" if isinstance(reply, Exception) else reply
            records.append({"question_id": qid, "model": model, "judge": [judge_model, name],
                            "user_prompt": messages[1]["content"], "judgment": judgment,
                            "score": extract_rating(judgment), "turn": turn, "tstamp": time.time()})
        for r in records:
            done[(r["model"], r["question_id"], r["turn"])] = r
        if cache:
            cache.append(records)
        bar.update(len(records))
    bar.close()
    return [done[(m, q, t)] for m, q, t, *_ in items]


def _sha(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def aggregate(judgments: Sequence[dict], questions: Sequence[dict]) -> dict:
    """Mean score per model overall, per turn and per category (failed extractions, score -1, left out
    and counted)."""
    category = {q["question_id"]: q["category"] for q in questions}
    by_model = defaultdict(list)
    for j in judgments:
        by_model[j["model"]].append(j)
    out = {}
    for model, js in by_model.items():
        ok = [j for j in js if j["score"] != -1]
        mean = lambda xs: round(statistics.mean(xs), 3) if xs else None  # noqa: E731
        out[model] = {
            "score": mean([j["score"] for j in ok]),
            "turn_1": mean([j["score"] for j in ok if j["turn"] == 1]),
            "turn_2": mean([j["score"] for j in ok if j["turn"] == 2]),
            "by_category": {c: mean([j["score"] for j in ok if category[j["question_id"]] == c])
                            for c in CATEGORIES if any(category[j["question_id"]] == c for j in ok)},
            "judged": len(js), "failed": len(js) - len(ok),
        }
    return out


# ---------------------------------------------------------------------------------------------
# Pairwise (AlpacaEval-style)
# ---------------------------------------------------------------------------------------------
def extract_verdict(judgment: str) -> str | None:
    """"A", "B" or "tie" ([[C]]) from a pairwise judgment; None when there is none."""
    found = re.findall(r"\[\[\s*([ABC])\s*\]\]", judgment or "")
    if not found:
        return None
    return {"A": "A", "B": "B", "C": "tie"}[found[-1]]


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
                      judge: ChatBackend, judge_prompts=None) -> tuple[WinRate | None, list[dict]]:
    """Judge each (model answer, reference answer) in both orders; return the win rate and the records.

    The win rate is None when no pair got a verdict in both orders (the records keep the raw replies).
    """
    if not (len(prompts) == len(answers) == len(reference_answers)):
        raise ValueError("prompts, answers and reference answers must have the same length")
    ab = [render_pair(p, a, r, judge_prompts) for p, a, r in zip(prompts, answers, reference_answers)]
    ba = [render_pair(p, r, a, judge_prompts) for p, a, r in zip(prompts, answers, reference_answers)]
    replies = judge.chat(ab + ba, Sampling(0.0, 1.0, 1024, 0))
    records = []
    for i, p in enumerate(prompts):
        v1, v2 = extract_verdict(replies[i]), extract_verdict(replies[len(prompts) + i])
        records.append({"prompt": p, "answer": answers[i], "reference": reference_answers[i], "verdict_model_first": v1,
                        "verdict_model_second": v2, "outcome": pairwise_outcome(v1, v2),
                        "judgments": [replies[i], replies[len(prompts) + i]]})
    outcomes = [r["outcome"] for r in records]
    return (win_rate(outcomes) if any(o is not None for o in outcomes) else None), records


# ---------------------------------------------------------------------------------------------
# The toy judges
# ---------------------------------------------------------------------------------------------
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

    def chat(self, conversations, sampling: Sampling = Sampling(), return_exceptions: bool = False) -> list[str]:
        from .toy import world

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
    from .toy import world

    return world.two_turn_questions(n_per_category, "heldout", seed)
