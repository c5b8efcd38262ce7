import json
import math
import string
import subprocess
import sys
from pathlib import Path

import pytest

from handbook.core.backends import OpenAIBackend
from handbook.evaluation.judge_prompts import HANDBOOK_JUDGE_PROMPTS, load_judge_prompts
from handbook.evaluation.mt_bench import (NEED_REFERENCE, TEMPERATURE, aggregate, extract_rating, generate_answers,
                                          judge_answers, load_questions, load_reference_answers,
                                          reference_answers_for, render_single)
from handbook.evaluation.win_rate import extract_verdict, pairwise_outcome, pairwise_win_rate, win_rate
from handbook.toy.judges import ToyMTJudge, toy_questions
from handbook.toy import world

REF = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "mt_bench"
needs_reference = pytest.mark.skipif(not REF.exists(), reason="../shared/reference/mt_bench is not here")


def _answer(question, turns, model="m"):
    return {"question_id": question["question_id"], "model_id": model, "choices": [{"index": 0, "turns": turns}]}


def _placeholders(template):
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


@needs_reference
def test_real_fastchat_files_parse_and_render():
    questions = load_questions(REF / "question.jsonl")
    assert len(questions) == 80
    assert {q["category"] for q in questions} == set(TEMPERATURE)
    assert all(sum(q["category"] == c for q in questions) == 10 for c in TEMPERATURE)
    prompts = load_judge_prompts(REF / "judge_prompts.jsonl")
    assert {"single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn", "pair-v2"} <= set(prompts)
    references = load_reference_answers(REF / "reference_answer_gpt-4.jsonl")
    for q in questions:
        answer = _answer(q, ["ANSWER-ONE", "ANSWER-TWO"])
        for turn in (0, 1):
            name, messages = render_single(q, answer, turn, prompts, references)
            assert name.startswith("single-math-v1" if q["category"] in ("math", "reasoning", "coding") else "single-v1")
            text = messages[1]["content"]
            assert q["turns"][turn] in text and ("ANSWER-TWO" if turn else "ANSWER-ONE") in text
            assert "[[rating]]" in messages[0]["content"] + text


@needs_reference
def test_handbook_judge_prompts_are_drop_in_for_fastchats():
    fastchat = load_judge_prompts(REF / "judge_prompts.jsonl")
    for ours in HANDBOOK_JUDGE_PROMPTS:
        assert ours["name"].startswith("handbook-")  # its own name: judgments made with it are not FastChat's
        theirs = fastchat[ours["name"].removeprefix("handbook-")]
        assert ours["type"] == theirs["type"] and ours["output_format"] == theirs["output_format"]
        assert _placeholders(ours["prompt_template"]) == _placeholders(theirs["prompt_template"])
        # the instructions are our own wording; the answer markers are the format itself
        assert ours["system_prompt"] + ours["prompt_template"] != theirs["system_prompt"] + theirs["prompt_template"]


@needs_reference
def test_toy_judge_reads_fastchats_prompts_as_well_as_ours():
    fastchat = load_judge_prompts(REF / "judge_prompts.jsonl")
    ours = load_judge_prompts()
    judge = ToyMTJudge()
    for q in toy_questions(1):
        answer = _answer(q, [q["reference"][0], "Good question. " + q["reference"][1]])
        for turn in (0, 1):
            a = judge.chat([render_single(q, answer, turn, fastchat)[1]])[0]
            b = judge.chat([render_single(q, answer, turn, ours)[1]])[0]
            expected = world.judge(q["turns"][turn], answer["choices"][0]["turns"][turn]).score
            assert extract_rating(a) == extract_rating(b) == expected


# Cases from FastChat's rule (common.py, run_judge_single): re.search for \[\[(\d+\.?\d*)\]\], else \[(\d+\.?\d*)\];
# ast.literal_eval of the first match, no range check; no match → -1.
@pytest.mark.parametrize("judgment,rating", [
    ("The answer is right. Rating: [[7]]", 7.0),
    ("Mostly fine. [[7.5]]", 7.5),
    ("Rating: 7", -1.0),                 # no brackets: no match for FastChat
    ("rating: 8/10", -1.0),
    ("I would give it [6].", 6.0),       # the backup pattern
    ("[[4]] at first, but on reflection [[8]]", 4.0),  # the first match wins
    ("[6] for style, [[9]] overall", 9.0),  # the double-bracket pattern is tried first, over the whole text
    ('I must follow the format "[[rating]]", for example "Rating: [[5]]". My verdict: Rating: [[3]]', 5.0),
    ("Rating: [[11]]", 11.0),           # no range check
    ("No score here.", -1.0),
    ("", -1.0),
])
def test_rating_extraction_is_fastchats(judgment, rating):
    assert extract_rating(judgment) == rating


def test_verdicts_and_position_swap():
    # FastChat's rule (run_judge_pair): "[[A]]" in the text → A, elif "[[B]]" → B, elif "[[C]]" → tie, else error
    assert extract_verdict("A is better. [[A]]") == "A"
    assert extract_verdict("[[C]]") == "tie" and extract_verdict("no verdict") is None
    assert extract_verdict("Not [[B]]; my verdict: [[A]]") == "A"  # A is looked for first, wherever it is
    assert extract_verdict("[[C]] or [[B]]?") == "B"
    assert extract_verdict("[A]") is None
    assert pairwise_outcome("A", "B") == 1.0   # model first wins, model second wins: a win
    assert pairwise_outcome("B", "A") == 0.0   # a loss both ways
    assert pairwise_outcome("A", "A") == 0.5   # position A wins both times: inconsistent → tie
    assert pairwise_outcome("tie", "tie") == 0.5
    assert pairwise_outcome("A", "tie") == 0.5
    assert pairwise_outcome(None, "A") is None


def test_win_rate_and_standard_error():
    r = win_rate([1.0, 1.0, 0.0, 0.5, None])
    assert (r.n, r.wins, r.ties, r.losses, r.unjudged) == (4, 2, 1, 1, 1)
    assert r.win_rate == 62.5
    sd = math.sqrt(((1 - .625) ** 2 * 2 + .625 ** 2 + .125 ** 2) / 3)
    assert r.standard_error == pytest.approx(100 * sd / 2, abs=1e-3)
    assert win_rate([1.0]).standard_error == 0.0
    with pytest.raises(ValueError):
        win_rate([None])


def test_pairwise_win_rate_with_the_toy_judge():
    prompts = [p.text for p in world.sample_prompts(2, "heldout", seed=0)]
    good = [world.parse_prompt(p).reference_answer() for p in prompts]
    bad = ["I like turtles."] * len(prompts)
    rate, records = pairwise_win_rate(prompts, good, bad, ToyMTJudge())
    assert rate.win_rate == 100.0 and rate.n == len(prompts)
    assert all(r["verdict_model_first"] == "A" and r["verdict_model_second"] == "B" for r in records)
    assert pairwise_win_rate(prompts, good, good, ToyMTJudge())[0].win_rate == 50.0


class Recorder:
    name = "recorder"

    def __init__(self):
        self.calls = []

    def chat(self, conversations, sampling):
        self.calls.append((sampling.temperature, [list(c) for c in conversations]))
        return [f"answer {len(c)}" for c in conversations]


def test_answers_two_turns_with_history_and_category_temperatures():
    questions = toy_questions(1)
    backend = Recorder()
    answers = generate_answers(questions, backend, "rec", progress=False)
    assert [a["choices"][0]["turns"] for a in answers] == [["answer 1", "answer 3"]] * len(questions)
    for temperature, convs in backend.calls:
        for conv in convs:
            q = next(q for q in questions if q["turns"][0] == conv[0]["content"])
            assert temperature == TEMPERATURE[q["category"]]
            if len(conv) == 3:  # turn 2 sees turn 1 and the model's own answer
                assert conv[1] == {"role": "assistant", "content": "answer 1"} and conv[2]["content"] == q["turns"][1]


def test_aggregate_leaves_out_and_counts_failed_judgments():
    questions = [{"question_id": 1, "category": "math"}, {"question_id": 2, "category": "stem"}]
    judgments = [{"model": "m", "question_id": 1, "turn": 1, "score": 8.0},
                 {"model": "m", "question_id": 1, "turn": 2, "score": 6.0},
                 {"model": "m", "question_id": 2, "turn": 1, "score": -1.0},
                 {"model": "m", "question_id": 2, "turn": 2, "score": 4.0}]
    r = aggregate(judgments, questions)["m"]
    assert (r["score"], r["turn_1"], r["turn_2"], r["failed"]) == (6.0, 8.0, 5.0, 1)
    assert r["by_category"] == {"math": 7.0, "stem": 4.0}


def test_judge_http_path_against_the_real_llama_cpp_server(llama_server):
    base_url, model = llama_server
    judge = OpenAIBackend(base_url, model, api_key_env=None, max_concurrency=4)
    questions = toy_questions(1)[:2]
    answers = [_answer(q, q["reference"], model="ref") for q in questions]
    judgments = judge_answers(questions, answers, judge, "smollm2", max_new_tokens=64, progress=False)
    assert len(judgments) == 4
    for j in judgments:
        assert j["judge"][0] == "smollm2" and j["turn"] in (1, 2)
        assert j["judgment"].strip()  # the raw reply is kept, whatever it says
        assert j["score"] == -1 or 1 <= j["score"] <= 10
    rate, records = pairwise_win_rate([questions[0]["turns"][0]], [questions[0]["reference"][0]], ["I don't know."], judge)
    assert len(records[0]["judgments"]) == 2 and all(j.strip() for j in records[0]["judgments"])
    assert (rate is None) == (records[0]["outcome"] is None)  # no verdict in both orders: no rate, raw replies kept


def test_cli_writes_fastchat_layout(tmp_path):
    out = tmp_path / "mt"
    proc = subprocess.run([sys.executable, "-m", "handbook.evaluate", "mt-bench", "--model", "toy-dsft", "--model_id",
                           "dsft", "--output_dir", str(out), "--max_new_tokens", "40"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(x) for x in (out / "model_answer" / "dsft.jsonl").read_text().splitlines()]
    judgments = [json.loads(x) for x in (out / "model_judgment" / "toy-rubric_single.jsonl").read_text().splitlines()]
    assert len(answers) == 80 and len(judgments) == 160
    assert {"question_id", "answer_id", "model_id", "choices", "tstamp"} <= set(answers[0])
    assert {"question_id", "model", "judge", "user_prompt", "judgment", "score", "turn", "tstamp"} <= set(judgments[0])
    results = json.loads((out / "results-dsft.json").read_text())
    assert 6 < results["score"] <= 10 and results["failed"] == 0


# --- reference answers, as FastChat finds them (gen_judgment.py: data/mt_bench/reference_answer/, the judge model's
# file; common.check_data: a missing one for a math/reasoning/coding question stops the run; question.jsonl's
# `reference` field is never read) ---------------------------------------------------------------------------------
def _fastchat_layout(tmp_path, questions, references=None):
    folder = tmp_path / "mt_bench"
    (folder / "reference_answer").mkdir(parents=True)
    (folder / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    if references is not None:
        (folder / "reference_answer" / "gpt-4.jsonl").write_text("".join(
            json.dumps({"question_id": qid, "model_id": "gpt-4", "choices": [{"index": 0, "turns": turns}]}) + "\n"
            for qid, turns in references.items()))
    return folder / "question.jsonl"


MATH = {"question_id": 111, "category": "math", "turns": ["2+2?", "and 3+3?"], "reference": ["4 (a human's)", "6"]}
WRITING = {"question_id": 81, "category": "writing", "turns": ["A poem.", "Shorter."]}


def test_questions_from_a_file_are_judged_against_the_reference_answers_file_not_their_reference_field(tmp_path):
    questions_path = _fastchat_layout(tmp_path, [MATH, WRITING], {111: ["4 (GPT-4's)", "6 (GPT-4's)"]})
    questions = load_questions(questions_path)
    refs = reference_answers_for(questions, questions_path)           # found beside the questions, as FastChat finds it
    assert refs == {111: ["4 (GPT-4's)", "6 (GPT-4's)"]}
    _, messages = render_single(questions[0], _answer(questions[0], ["4", "6"]), 0, load_judge_prompts(), refs)
    assert "4 (GPT-4's)" in messages[1]["content"] and "a human's" not in messages[1]["content"]


def test_without_reference_answers_fastchat_questions_are_refused_before_any_work(tmp_path):
    questions_path = _fastchat_layout(tmp_path, [MATH, WRITING])
    with pytest.raises(ValueError, match=r"question.jsonl: 1 questions \(math, reasoning, coding\) are judged against "
                                         r"reference answers.*reference_answer/gpt-4.jsonl.*`reference` field"):
        reference_answers_for(load_questions(questions_path), questions_path)
    only_writing = _fastchat_layout(tmp_path / "w", [WRITING])
    assert reference_answers_for(load_questions(only_writing), only_writing) is None   # nothing needs one


def test_a_reference_answers_file_that_lacks_a_question_names_it(tmp_path):
    questions_path = _fastchat_layout(tmp_path, [MATH, dict(MATH, question_id=112)], {111: ["4", "6"]})
    with pytest.raises(ValueError, match=r"gpt-4.jsonl: no reference answer for question\(s\) \[112\] \(1 of the 2"):
        reference_answers_for(load_questions(questions_path), questions_path)
    with pytest.raises(ValueError, match="needs a reference answer"):   # and render_single never falls back
        render_single(MATH, _answer(MATH, ["4", "6"]), 0, load_judge_prompts(), {})


def test_the_toy_mt_bench_carries_its_own_references():
    questions = toy_questions(1)
    assert reference_answers_for(questions) is None
    math = next(q for q in questions if q["category"] == "math")
    _, messages = render_single(math, _answer(math, ["x", "y"]), 0, load_judge_prompts())
    assert math["reference"][0] in messages[1]["content"]


@needs_reference
def test_fastchats_real_reference_file_covers_its_real_questions():
    questions = load_questions(REF / "question.jsonl")
    refs = reference_answers_for(questions, REF / "question.jsonl", REF / "reference_answer_gpt-4.jsonl")
    assert len(refs) == 30 and all(q["question_id"] in refs for q in questions if q["category"] in NEED_REFERENCE)
    with pytest.raises(ValueError, match="judged against reference answers"):   # FastChat's rule: never without them
        reference_answers_for(questions, REF / "question.jsonl")


class _RefusingJudge:
    """A judge whose server refuses some requests with an OpenAI-style HTTP 400 (whose message holds digits in
    brackets, as "[1]"), the rest answered with a rating."""

    name = "refusing-judge"

    def __init__(self, refuse_every: int):
        self.refuse_every, self.calls = refuse_every, 0

    def describe(self):
        return {"type": "refusing-judge"}

    def chat(self, conversations, sampling=None, return_exceptions=False):
        from handbook.core.backends import BackendError

        out = []
        for _ in conversations:
            self.calls += 1
            refuse = self.refuse_every and self.calls % self.refuse_every == 0
            out.append(BackendError("HTTP 400: Invalid 'messages[1].content': string too long [1]") if refuse
                       else "Helpful. Rating: [[7]]")
        return out


def test_a_refused_judge_request_is_never_a_judgment(tmp_path):
    from handbook.core.runner import CallsFailed

    questions = toy_questions(1)
    answers = [{"question_id": q["question_id"], "model_id": "m", "choices": [{"index": 0, "turns": ["a", "b"]}]}
               for q in questions]
    cache = tmp_path / "judgments.jsonl"
    judge = _RefusingJudge(refuse_every=3)
    with pytest.raises(CallsFailed, match=r"5 of 16 call\(s\) failed .* HTTP 400: Invalid 'messages\[1\]"):
        judge_answers(questions, answers, judge, "judge", cache_path=cache, progress=False)
    recorded = [json.loads(line) for line in cache.read_text().splitlines()[1:]]
    assert len(recorded) == 11 and all(r["score"] == 7 for r in recorded)   # no "[1]" read as a rating
    recovered = _RefusingJudge(refuse_every=0)
    judgments = judge_answers(questions, answers, recovered, "judge", cache_path=cache, progress=False)
    assert recovered.calls == 5 and len(judgments) == 16
    assert aggregate(judgments, questions)["m"]["failed"] == 0


def test_a_refused_win_rate_request_is_never_a_verdict():
    from handbook.core.runner import CallsFailed

    with pytest.raises(CallsFailed, match=r"win rate: 1 of 4 judge requests got no reply or were refused .* HTTP 400"):
        pairwise_win_rate(["p1", "p2"], ["a1", "a2"], ["r1", "r2"], _RefusingJudge(refuse_every=4))
