"""MT-Bench-style evaluation in FastChat's formats.

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
Pairwise win rates are in :mod:`handbook.evaluation.win_rate`; the judge prompts in
:mod:`handbook.evaluation.judge_prompts`.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

from ..core.backends import ChatBackend, Sampling, chat_with_errors, describe_backend, text_sha256
from ..core.data import iter_jsonl, write_jsonl
from ..core.runner import ResumableCalls, RunPolicy
from .judge_prompts import load_judge_prompts

logger = logging.getLogger(__name__)

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
# FastChat's sampling temperature per category
TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
               "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
NEED_REFERENCE = ("math", "reasoning", "coding")


def load_questions(path) -> list[dict]:
    """FastChat's ``question.jsonl``, every row checked before any work: ``question_id`` (a number or a string,
    unique: a duplicate is an error naming both lines), ``category`` (one of FastChat's eight, :data:`CATEGORIES`)
    and ``turns`` (one or two non-empty strings); an empty file is an error. Errors name the file and line."""
    questions, seen = [], {}
    for n, q in iter_jsonl(path):
        at = f"{path}, line {n}"
        for key in ("question_id", "category", "turns"):
            if key not in q:
                raise ValueError(f"{at}: field '{key}' is missing")
        qid = q["question_id"]
        if isinstance(qid, bool) or not isinstance(qid, (int, str)):
            raise ValueError(f"{at}: field 'question_id' must be a number or a string, got {qid!r}")
        if qid in seen:
            raise ValueError(f"{at}: question_id {qid!r} is already used on line {seen[qid]}")
        seen[qid] = n
        if q["category"] not in CATEGORIES:
            raise ValueError(f"{at}: field 'category': unknown category {q['category']!r}; MT-Bench's are "
                             f"{', '.join(CATEGORIES)}")
        turns = q["turns"]
        if (not isinstance(turns, list) or not 1 <= len(turns) <= 2
                or not all(isinstance(t, str) and t.strip() for t in turns)):
            raise ValueError(f"{at}: field 'turns' must be a list of one or two non-empty strings")
        questions.append(q)
    if not questions:
        raise ValueError(f"{path}: no questions (the file is empty)")
    return questions


def load_reference_answers(path) -> dict[int, list[str]]:
    """FastChat's ``reference_answer/<model>.jsonl`` → ``{question_id: [turn 1, turn 2]}``."""
    out = {}
    for n, r in iter_jsonl(path):
        try:
            out[r["question_id"]] = r["choices"][0]["turns"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{path}, line {n}: not a FastChat answer row (question_id, choices[0].turns)") from None
    return out


FASTCHAT_REFERENCE_FILE = "reference_answer/gpt-4.jsonl"   # beside question.jsonl in FastChat's data/mt_bench/


def reference_answers_for(questions: Sequence[dict], questions_path=None, reference_answers_path=None):
    """The reference answers that math, reasoning and coding are judged against, found as FastChat finds them.

    FastChat's ``gen_judgment.py`` loads ``data/mt_bench/reference_answer/`` and judges every question of
    :data:`NEED_REFERENCE` against the judge model's reference answer (GPT-4's, ``gpt-4.jsonl``); ``check_data``
    refuses to start when one is missing. It never reads the ``reference`` field that some rows of
    ``question.jsonl`` carry. So, for questions read from a file: ``reference_answers_path`` when given, else
    :data:`FASTCHAT_REFERENCE_FILE` beside ``questions_path`` when it is there, else — when any question needs a
    reference — an error saying so. Every question that needs one must have one (an error names those that do not).
    Questions not read from a file (the toy MT-Bench, ``questions_path=None``) carry their own reference answers:
    ``None`` is returned and each question's ``reference`` is used."""
    need = [q["question_id"] for q in questions if q["category"] in NEED_REFERENCE]
    path = reference_answers_path
    if path is None and questions_path is not None:
        beside = Path(questions_path).parent / FASTCHAT_REFERENCE_FILE
        path = beside if beside.exists() else None
    if path is None:
        if questions_path is not None and need:
            raise ValueError(
                f"{questions_path}: {len(need)} questions ({', '.join(NEED_REFERENCE)}) are judged against reference "
                f"answers, and none were given: pass the reference answers file (FastChat's "
                f"data/mt_bench/{FASTCHAT_REFERENCE_FILE}, GPT-4's), or put it at {FASTCHAT_REFERENCE_FILE} beside "
                f"the questions. FastChat never judges against question.jsonl's `reference` field.")
        return None
    references = load_reference_answers(path)
    missing = [qid for qid in need if not references.get(qid)]
    if missing:
        raise ValueError(f"{path}: no reference answer for question(s) {missing[:10]}"
                         f"{' …' if len(missing) > 10 else ''} ({len(missing)} of the {len(need)} that need one)")
    return references


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------
def generate_answers(questions: Sequence[dict], backend: ChatBackend, model_id: str, max_new_tokens: int = 1024,
                     seed: int = 0, cache_path=None, progress: bool = True,
                     policy: RunPolicy = RunPolicy()) -> list[dict]:
    """Two-turn answers in FastChat's ``model_answer`` format, one row per question.

    Questions are batched by category (each category has its temperature); turn 2 sees the
    question, the model's own first answer and the follow-up. Resumable through
    :class:`handbook.core.runner.ResumableCalls` (keys ``question_id``, ``turn``), a phase per turn and
    temperature. The cache's identity has the model's ``describe()`` (its weights' fingerprint: a model retrained
    into the same folder is another producer) and a hash of the questions; an answer that got no reply is not
    recorded (:class:`handbook.core.runner.CallsFailed`; a rerun asks exactly those again).
    """
    meta = {"model_id": model_id, "backend": describe_backend(backend), "max_new_tokens": max_new_tokens, "seed": seed,
            "questions": [q["question_id"] for q in questions], "questions_sha256": text_sha256(list(questions)),
            "temperatures": TEMPERATURE}
    n_turns = max(len(q["turns"]) for q in questions)
    with ResumableCalls(cache_path or None, meta, ("question_id", "turn"), sum(len(q["turns"]) for q in questions),
                        f"answers of {model_id}", progress, policy) as calls:
        done = calls.results
        for turn in range(n_turns):
            by_temperature = defaultdict(list)
            for q in questions:
                if turn < len(q["turns"]) and (q["question_id"], turn) not in done:
                    by_temperature[TEMPERATURE.get(q["category"], 0.7)].append(q)
            for temperature, qs in sorted(by_temperature.items()):  # one batch per temperature
                sampling = Sampling(temperature, 1.0, max_new_tokens, seed + turn)
                calls.run([((q["question_id"], turn), _answer_request(q, turn, done)) for q in qs],
                          lambda batch: [r if isinstance(r, Exception) else {"content": r}
                                         for r in chat_with_errors(backend, batch, sampling)])
    return [{"question_id": q["question_id"], "answer_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{model_id}/{q['question_id']}").hex,
             "model_id": model_id, "choices": [{"index": 0, "turns": [done[(q["question_id"], t)]["content"]
                                                                      for t in range(len(q["turns"]))]}],
             "tstamp": time.time()} for q in questions]


def _answer_request(question: dict, turn: int, done: dict) -> list[dict]:
    """The conversation that asks for ``turn``: the earlier turns with the model's own answers (records in ``done``)."""
    conv = []
    for t in range(turn):
        conv += [{"role": "user", "content": question["turns"][t]},
                 {"role": "assistant", "content": done[(question["question_id"], t)]["content"]}]
    return conv + [{"role": "user", "content": question["turns"][turn]}]


# ---------------------------------------------------------------------------------------------
# Single-answer grading
# ---------------------------------------------------------------------------------------------
# FastChat's patterns (fastchat/llm_judge/common.py, run_judge_single): one_score_pattern, then its backup.
_ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def extract_rating(judgment: str) -> float:
    """The rating in a judge's reply exactly as FastChat's ``run_judge_single`` reads it, so that the same
    judgments give the same scores as FastChat's ``show_result.py``: the FIRST match of ``[[x]]``, else the
    first match of ``[x]``, read as a number with no range check; no match → -1 (left out of the averages).
    ``Rating: 7`` without brackets is no match. (A judge that quotes the format's example first is scored
    by the example, as FastChat scores it.)"""
    match = _ONE_SCORE.search(judgment or "") or _ONE_SCORE_BACKUP.search(judgment or "")
    return float(match.group(1)) if match else -1.0


def render_single(question: dict, answer: dict, turn: int, prompts: dict[str, dict],
                  references: dict[int, list[str]] | None = None) -> tuple[str, list[dict]]:
    """(the judge prompt's name, chat messages) to grade ``turn`` (0 or 1) of ``answer`` to ``question``; the
    name is the prompt's own (``single-v1`` for FastChat's, ``handbook-single-v1`` for the handbook's)."""
    needs_ref = question["category"] in NEED_REFERENCE
    # reference answers given (FastChat's files): only they count; none given: the question's own (the toy MT-Bench)
    ref = references.get(question["question_id"]) if references is not None else question.get("reference")
    if needs_ref and not ref:
        raise ValueError(f"question {question['question_id']} ({question['category']}) needs a reference answer")
    p = prompts[("single-math-v1" if needs_ref else "single-v1") + ("-multi-turn" if turn == 1 else "")]
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
    return p["name"], messages


def judge_answers(questions: Sequence[dict], answers: Sequence[dict], judge: ChatBackend, judge_model: str,
                  prompts: dict[str, dict] | None = None, references=None, cache_path=None,
                  max_new_tokens: int = 2048, progress: bool = True, policy: RunPolicy = RunPolicy()) -> list[dict]:
    """FastChat ``model_judgment`` rows (single grading) for every answered turn; greedy judge.

    Resumable through :class:`handbook.core.runner.ResumableCalls` (keys ``model``, ``question_id``, ``turn``); the
    cache's identity has the judge's ``describe()``, a hash of the judge prompts' text, the references and the
    answers. A judgment request that got no reply (unreachable, timeout, 5xx, malformed) or that the server refused
    (an HTTP 4xx with an error message) is not recorded (:class:`handbook.core.runner.CallsFailed`; a rerun asks
    exactly those again): an error message is never read as a judgment, so its digits never become a rating. A
    reply without a rating is recorded, with score -1 and its raw text, as FastChat records it."""
    prompts = prompts or load_judge_prompts()
    by_id = {q["question_id"]: q for q in questions}
    items = []
    for a in answers:
        q = by_id[a["question_id"]]
        for turn in range(len(q["turns"])):
            name, messages = render_single(q, a, turn, prompts, references)
            items.append((a["model_id"], q["question_id"], turn + 1, name, messages))
    meta = {"judge": judge_model, "backend": describe_backend(judge), "max_new_tokens": max_new_tokens,
            "judge_prompts_sha256": text_sha256(prompts), "questions_sha256": text_sha256(list(questions)),
            "references_sha256": text_sha256(sorted([str(k), v] for k, v in (references or {}).items())),
            "answers_sha256": _sha([a["choices"][0]["turns"] for a in answers])}

    def judge_batch(batch):  # FastChat's judgment rows, key fields in FastChat's order
        replies = chat_with_errors(judge, [m for *_, m in batch], Sampling(0.0, 1.0, max_new_tokens, 0))
        records = []
        for (model, qid, turn, name, messages), reply in zip(batch, replies):
            if isinstance(reply, Exception):  # no reply, or the server refused the request (HTTP 4xx): an error is
                records.append(reply)          # never a judgment — not recorded, counted, asked again by a rerun
                continue
            records.append({"question_id": qid, "model": model, "judge": [judge_model, name],
                            "user_prompt": messages[1]["content"], "judgment": reply,
                            "score": extract_rating(reply), "turn": turn, "tstamp": time.time()})
        return records

    with ResumableCalls(cache_path or None, meta, ("model", "question_id", "turn"), len(items), "MT-Bench judgments",
                        progress, policy) as calls:
        return calls.run([(it[:3], it) for it in items], judge_batch, 64)


def run_models(questions: Sequence[dict], models: Mapping[str, ChatBackend], judge: ChatBackend, judge_name: str,
               output_dir, max_new_tokens: int = 1024, prompts: dict[str, dict] | None = None, references=None,
               seed: int = 0, progress: bool = True,
               policy: RunPolicy = RunPolicy()) -> tuple[dict[str, list[dict]], list[dict]]:
    """MT-Bench for each of ``models`` (model id → backend), in FastChat's layout under ``output_dir``: the answers
    in ``model_answer/<model id>.jsonl``, the single-grade judgments of every model in one
    ``model_judgment/<judge_name>_single.jsonl`` (judgments of other models already in that file are kept, as
    FastChat keeps one file for all models), each step resumable through ``cache/``. Returns (answers by model id,
    this run's judgments). The one MT-Bench flow: ``python -m handbook.evaluate mt-bench`` and notebook 05.
    ``policy``: the run's time bound and cache reuse (:class:`handbook.core.runner.RunPolicy`)."""
    out = Path(output_dir)
    prompts = prompts or load_judge_prompts()
    answers, judgments = {}, []
    for model_id, backend in models.items():
        answers[model_id] = generate_answers(questions, backend, model_id, max_new_tokens, seed,
                                             cache_path=out / "cache" / f"answers-{model_id}.jsonl", progress=progress,
                                             policy=policy)
        write_jsonl(out / "model_answer" / f"{model_id}.jsonl", answers[model_id])
        judgments += judge_answers(questions, answers[model_id], judge, judge_name, prompts, references,
                                   cache_path=out / "cache" / f"judgments-{model_id}.jsonl", progress=progress,
                                   policy=policy)
    path = out / "model_judgment" / f"{judge_name}_single.jsonl"
    ids = set(answers)
    kept = [j for j in _readable_rows(path) if j.get("model") not in ids] if path.exists() else []
    write_jsonl(path, kept + judgments)  # whole or not at all
    return answers, judgments


def _readable_rows(path: Path) -> list[dict]:
    """The rows of a FastChat output file; one left torn by an earlier failure (a full disk, before these files were
    written whole) is named in a warning and its readable rows kept — it is replaced, never a reason to stop."""
    rows, torn = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            torn += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    if torn:
        logger.warning("%s was torn (%d unreadable line(s), e.g. a disk that filled up while it was written): "
                       "replaced, keeping its %d readable rows", path, torn, len(rows))
    return rows


def _sha(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def aggregate(judgments: Sequence[dict], questions: Sequence[dict]) -> dict:
    """Mean score per model overall, per turn and per category (failed extractions, score -1, left out
    and counted). A rating outside MT-Bench's 1-10 scale (a judge's ``[[15]]``) enters the mean as FastChat's
    ``show_result.py`` lets it, and is counted in ``out_of_range`` (with a warning) so that it is never silent."""
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
            "out_of_range": sum(not 1 <= j["score"] <= 10 for j in ok),
        }
        if out[model]["out_of_range"]:
            logger.warning("MT-Bench of %s: %d rating(s) outside 1-10 enter the mean, as in FastChat's show_result.py",
                           model, out[model]["out_of_range"])
    return out


