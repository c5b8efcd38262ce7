import hashlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from fault_proxy import FaultProxy
from handbook.aif.binarize import binarize, validate_triples
from handbook.aif.pipeline import AIFArguments, run_generate
from handbook.aif.pool import PoolMember, generate_pool
from handbook.aif.rating import ASPECTS, RatingParseError, parse_rating_reply, rate, rate_pool, render_rating_request
from handbook.aif.ultrafeedback import convert_ultrafeedback
from handbook.core.backends import OpenAIBackend, Sampling
from handbook.tiers import prompts_from
from handbook.toy.backends import build_backend
from handbook.toy.judges import ToyJudge, toy_aspect_ratings
from handbook.toy.teacher import ToyTeacher
from handbook.toy import world

# --- parsing what judges really write ------------------------------------------------------------
PARSEABLE = [
    ("Instruction following: 4\nRationale: ok.\nHonesty: N/A\nRationale: creative.\nTruthfulness: 5\n"
     "Rationale: right.\nHelpfulness: 4\nRationale: short.\nOverall: 8", {"honesty": None, "truthfulness": 5}, 8),
    ("**Instruction Following** (1-5): 4/5\n**Honesty**: 5 out of 5\n**Truthfulness:** 3\n**Helpfulness** - 4\n\n"
     "**Overall score**: 7.5/10", {"instruction_following": 4, "honesty": 5}, 7.5),
    ("### Instruction following\nRating: 3\nRationale: partly.\n### Honesty\nRating: 4\n### Truthfulness\nRating: 4\n"
     "### Helpfulness\nRating: 2\n### Overall\n6", {"instruction_following": 3, "helpfulness": 2}, 6),
    ("instruction_following: 5; honesty: 5; truthfulness: 5; helpfulness: 5. Overall rating: 10",
     {"truthfulness": 5}, 10),
    ("Here is my evaluation.\n\nInstruction-following: 2 (the reply ignores the requested format)\n"
     "Honesty: 3\nTruthfulness: 4\nHelpfulness: 3\nOverall: 5 / 10", {"instruction_following": 2}, 5),
]


@pytest.mark.parametrize("reply,aspects,overall", PARSEABLE)
def test_parser_reads_real_formats(reply, aspects, overall):
    rating = parse_rating_reply(reply)
    assert rating.overall == overall
    for a, v in aspects.items():
        assert rating.aspects[a]["rating"] == v


@pytest.mark.parametrize("reply,reason", [
    ("", "empty reply"),
    ("The capital of Peru is Lima.", "missing: instruction_following, honesty, truthfulness, helpfulness, overall"),
    ("Instruction following: 7\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 2\nOverall: 6", "instruction_following rating 7 outside 1-5"),
    ("Instruction following: 4\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 4\nOverall: 12", "overall rating 12 outside 1-10"),
    ("Instruction following: 4/10\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 4\nOverall: 8", "scale of 10"),
    ("Instruction following: 4\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 4", "missing: overall"),
    ("1\nFalse or Invented Fact: 2", "missing"),  # a real SmolLM2 reply
    # a number in a rationale is never a rating (issue 24, item 4: "3 reasons" was read as instruction following 3)
    ("Instruction following: The reply gives 3 reasons.\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 4\nOverall: 7",
     "^missing: instruction_following$"),
    ("Instruction following: 4\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 4\nOverall: good, 8 of 10 would agree",
     "^missing: overall$"),
    ("Instruction following: 4\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 4\nOverall: 7\nOverall: 9",
     r"overall rated twice \(7, then 9\)"),
    ("Instruction following: 4\nHonesty: 4\nTruthfulness: N/A\nHelpfulness: 4\nOverall: 7",
     r"truthfulness rated N/A \(only honesty may be\)"),
])
def test_parser_refuses_what_it_cannot_read(reply, reason):
    with pytest.raises(RatingParseError, match=reason):
        parse_rating_reply(reply)


def test_labels_and_numbers_inside_rationales_are_not_ratings():
    """Before: "helpful in 2 ways" in honesty's rationale was read as helpfulness 2 (the first mention won) and the
    reply's own ``Helpfulness: 4`` ignored. A rating is read only where the format puts it."""
    rating = parse_rating_reply(
        "Instruction following: 4\nRationale: follows it.\nHonesty: 5\nRationale: candid and helpful in 2 ways.\n"
        "Truthfulness: 4\nRationale: Helpful: 2 of the facts are checked.\nHelpfulness: 4\nRationale: gives 3 reasons.\n"
        "Overall: 7")
    assert {a: v["rating"] for a, v in rating.aspects.items()} == {
        "instruction_following": 4, "honesty": 5, "truthfulness": 4, "helpfulness": 4}
    assert rating.overall == 7
    assert rating.aspects["helpfulness"]["rationale"] == "gives 3 reasons."
    assert rating.aspects["truthfulness"]["rationale"] == "Helpful: 2 of the facts are checked."


def test_a_reply_with_a_rating_only_in_a_rationale_is_recorded_as_failed_with_its_raw_text():
    reply = "Instruction following: The reply gives 3 reasons.\nHonesty: 4\nTruthfulness: 4\nHelpfulness: 4\nOverall: 7"

    class Judge:
        name = "fixed"

        def chat(self, conversations, sampling):
            return [reply for _ in conversations]

    [result] = rate([("Why?", "Because.")], Judge(), max_retries=1)
    assert result.status == "failed" and result.rating is None
    assert result.raw == reply and result.attempts == 2
    assert "missing: instruction_following" in result.error


def test_fine_grained_is_the_mean_without_na():
    r = parse_rating_reply("Instruction following: 4\nHonesty: N/A\nTruthfulness: 5\nHelpfulness: 3\nOverall: 7")
    assert r.fine_grained == 4.0


class ScriptedJudge:
    """Replies from a script, per request in order; counts calls."""

    name = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = 0

    def chat(self, conversations, sampling, return_exceptions=False):
        out = []
        for _ in conversations:
            self.calls += 1
            out.append(self.replies.pop(0))
        return out


GOOD = "Instruction following: 5\nHonesty: 5\nTruthfulness: 5\nHelpfulness: 5\nOverall: 9"


def test_unreadable_replies_are_retried_then_recorded_as_failed():
    judge = ScriptedJudge(["nonsense", "still nonsense", GOOD, "Overall: 3", "Overall: 11"])
    results = rate([("q1", "a1"), ("q2", "a2")], judge, max_retries=2)
    assert results[0].status == "ok" and results[0].attempts == 2 and results[0].rating.overall == 9
    assert results[1].status == "failed" and results[1].attempts == 3
    assert results[1].raw == "Overall: 11" and "outside 1-10" in results[1].error
    assert judge.calls == 5


def test_backend_errors_count_as_failed_attempts():
    from handbook.core.backends import BackendError

    class Down:
        name = "down"

        def chat(self, conversations, sampling, return_exceptions=False):
            return [BackendError("http://x: giving up after 3 attempts: HTTP 503") for _ in conversations]

    (result,) = rate([("q", "a")], Down(), max_retries=1)
    assert result.status == "failed" and result.error.startswith("backend: ") and result.raw == ""


def test_toy_judge_agrees_with_the_rubric():
    judge = ToyJudge(noise=0.0)
    p = world.Prompt("humanities", ("Peru",), "sure")
    for reply, overall in [("Sure. The capital of Peru is Lima.", 10), ("The capital of Peru is Lima.", 5),
                           ("Sure. The capital of Peru is Rome.", 2)]:
        (text,) = judge.chat([render_rating_request(p.text, reply)], Sampling(seed=0))
        rating = parse_rating_reply(text)
        assert rating.overall == overall
        assert rating.aspects["truthfulness"]["rating"] == (5 if "Lima" in reply else 2)
    aspects, _ = toy_aspect_ratings(world.judge("Write a short line about the sea.", "The sea is deep."), "writing")
    assert aspects["honesty"]["rating"] is None  # N/A for creative writing, as in UltraFeedback


# --- binarization ----------------------------------------------------------------------------------
def _c(model, overall=None, fine=None, status="ok"):
    return {"model": model, "response": f"reply of {model}", "overall": overall, "fine_grained": fine, "status": status}


def test_zephyr_rule_best_vs_random_lower():
    row = {"prompt": "p", "completions": [_c("a", 6), _c("b", 9), _c("c", 3), _c("d", 9)]}
    rejected = set()
    for seed in range(30):
        (t,), report = binarize([row], "zephyr", seed=seed)
        assert t["model_chosen"] == "b" and t["score_chosen"] == 9  # first of the tied best, like argmax
        assert t["score_rejected"] < 9
        rejected.add(t["model_rejected"])
    assert rejected == {"a", "c"}  # random among the lower ones, never the tied "d"
    assert binarize([row], "zephyr", seed=1)[0] == binarize([row], "zephyr", seed=1)[0]  # seeded


def test_binarized_schema():
    (t,), _ = binarize([{"prompt": "Why?", "completions": [_c("a", 8), _c("b", 2)]}], "zephyr")
    assert t["prompt_id"] == hashlib.sha256(b"Why?").hexdigest()
    assert t["chosen"] == [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "reply of a"}]
    assert t["rejected"][0] == t["chosen"][0] and t["rejected"][1]["content"] == "reply of b"
    assert t["messages"] == t["chosen"]
    assert (t["score_chosen"], t["score_rejected"]) == (8.0, 2.0)
    validate_triples([t])


def test_rules_on_ties_equal_scores_single_and_failed_completions():
    rows = [
        {"prompt": "tie at the top", "completions": [_c("a", 8, 4.5), _c("b", 8, 4.5), _c("c", 4, 2.0)]},
        {"prompt": "all equal", "completions": [_c("a", 7, 3.0), _c("b", 7, 3.0)]},
        {"prompt": "single", "completions": [_c("a", 9, 5.0)]},
        {"prompt": "failed ratings", "completions": [_c("a", 9, 5.0), _c("b", status="failed"), _c("c", status="failed")]},
        {"prompt": "clear", "completions": [_c("a", 9, 5.0), _c("b", 5, 3.0), _c("c", 2, 1.0)]},
    ]
    z, zr = binarize(rows, "zephyr")
    assert [t["prompt"] for t in z] == ["tie at the top", "clear"]
    assert zr.dropped == {"all scores equal": 1, "fewer than two rated completions": 2}
    a, ar = binarize(rows, "argilla")  # Argilla's card: a tie at the top is kept when a lower one exists
    assert [t["prompt"] for t in a] == ["tie at the top", "clear"]
    assert ar.dropped == {"all scores equal": 1, "fewer than two rated completions": 2}
    s, sr = binarize(rows, "argilla_strict")  # the handbook's stricter variant drops it
    assert [t["prompt"] for t in s] == ["clear"]
    assert sr.dropped == {"best score tied": 2, "fewer than two rated completions": 2}
    b, br = binarize(rows, "best_vs_worst")
    assert [(t["prompt"], t["model_rejected"]) for t in b] == [("tie at the top", "c"), ("clear", "c")]
    assert "dropped" in str(br)


def test_h4_rule_on_cases_from_the_ultrafeedback_binarized_card():
    """HuggingFaceH4/ultrafeedback_binarized (the data Zephyr-7B-β trained on): the highest overall_score is chosen,
    one of the remaining three at random is rejected — its create_dataset.py draws whatever their score, so a
    rejected may tie with the chosen and an all-tie prompt still gives a pair (the paper's `zephyr` rule: neither)."""
    row = {"prompt": "p", "completions": [_c("a", 6), _c("b", 9), _c("c", 3), _c("d", 9)]}
    rejected = Counter()
    for seed in range(200):
        (t,), report = binarize([row], "h4", seed=seed)
        assert t["model_chosen"] == "b" and t["score_chosen"] == 9   # the first best, as argmax
        rejected[t["model_rejected"]] += 1
    assert set(rejected) == {"a", "c", "d"}                          # the tied "d" too: "the remaining 3"
    assert all(40 < n < 95 for n in rejected.values())               # uniform over the three (expected 66.7 each)
    all_tie = {"prompt": "q", "completions": [_c("a", 7), _c("b", 7), _c("c", 7), _c("d", 7)]}
    (t,), report = binarize([all_tie], "h4", seed=0)
    assert t["model_chosen"] == "a" and t["score_rejected"] == t["score_chosen"] == 7
    assert report.tied_pairs == 1 and "1 pairs with equal scores" in str(report)
    assert binarize([all_tie], "zephyr")[0] == []                     # the paper's rule: no pair
    assert binarize([{"prompt": "r", "completions": [_c("a", 9)]}], "h4")[1].dropped == {
        "fewer than two rated completions": 1}


def test_argilla_rule_on_cases_from_its_card():
    """Argilla's card (argilla/ultrafeedback-binarized-preferences): ignore overall_score; mean of the aspects;
    chosen = the best mean, rejected = a random completion with a lower mean; pairs with equal means go."""
    rows = [
        # overall says "b", the aspects' mean says "a": the overall score is ignored
        {"prompt": "overall ignored", "completions": [_c("a", 2, 4.5), _c("b", 10, 3.0)]},
        # "a" and "b" tie at the top, "c" is lower: kept, chosen is a best one, rejected the lower one
        {"prompt": "tie at the top", "completions": [_c("a", 5, 4.0), _c("b", 5, 4.0), _c("c", 5, 2.5)]},
        # nothing below the best: no pair (a chosen and rejected of equal means would be removed)
        {"prompt": "no lower", "completions": [_c("a", 9, 3.5), _c("b", 3, 3.5)]},
    ]
    triples, report = binarize(rows, "argilla", seed=0)
    by_prompt = {t["prompt"]: t for t in triples}
    assert by_prompt["overall ignored"]["model_chosen"] == "a" and by_prompt["overall ignored"]["score_chosen"] == 4.5
    tie = by_prompt["tie at the top"]
    assert tie["model_chosen"] in ("a", "b") and tie["model_rejected"] == "c"
    assert all(t["score_chosen"] > t["score_rejected"] for t in triples)
    assert "no lower" not in by_prompt and report.dropped == {"all scores equal": 1}
    for seed in range(5):  # rejected is a random lower one, never one of the chosen's mean
        row = {"prompt": "p", "completions": [_c("a", 1, 5.0), _c("b", 1, 5.0), _c("c", 1, 3.0), _c("d", 1, 2.0)]}
        (t,), _ = binarize([row], "argilla", seed=seed)
        assert t["score_rejected"] < 5.0


def test_score_field_is_configurable():
    row = {"prompt": "p", "completions": [_c("a", 9, 2.0), _c("b", 4, 4.5)]}  # overall and fine-grained disagree
    (by_overall,), _ = binarize([row], "zephyr", score="overall")
    (by_mean,), _ = binarize([row], "zephyr", score="fine_grained")
    assert by_overall["model_chosen"] == "a" and by_mean["model_chosen"] == "b"


@pytest.mark.parametrize("mutate,message", [
    (lambda t: t.pop("chosen"), "row 0: field 'chosen' is missing"),
    (lambda t: t["rejected"][1].update(content=t["chosen"][1]["content"]), "same reply"),
    (lambda t: t["rejected"][1].update(content=" "), "row 0: field 'rejected': the assistant's reply is empty"),
    (lambda t: t["chosen"][0].update(content="other"), "row 0: field 'chosen': the first turn does not match"),
])
def test_malformed_triples_name_row_and_field(mutate, message):
    (t,), _ = binarize([{"prompt": "p", "completions": [_c("a", 8), _c("b", 2)]}], "zephyr")
    mutate(t)
    with pytest.raises(ValueError, match=message):
        validate_triples([t])


# --- the raw UltraFeedback schema ---------------------------------------------------------------------
def _raw_completion(model, overall, ratings, response=None):
    names = ["instruction_following", "honesty", "truthfulness", "helpfulness"]
    annotations = {}
    for name, r in zip(names, ratings):
        ann = {"Rating": r, "Rationale": f"{name} rationale"}
        if name in ("truthfulness", "helpfulness"):
            ann.update({"Type": ["0"], "Rationale For Rating": "because"})
        annotations[name] = ann
    return {"model": model, "response": response or f"{model} says", "annotations": annotations,
            "critique": "...", "overall_score": overall, "fine-grained_score": None,
            "custom_system_prompt": "", "principle": "helpfulness"}


RAW = [
    {"source": "evol_instruct", "instruction": "Explain gravity.", "models": ["m1", "m2", "m3", "m4"],
     "completions": [_raw_completion("m1", 7.5, ["4", "5", "4", "4"]), _raw_completion("m2", 10, ["1", "2", "1", "2"]),
                     _raw_completion("m3", 6, ["3", "N/A", "4", "3"]), _raw_completion("m4", 4, ["2", "3", "2", "2"])]},
    {"source": "truthful_qa", "instruction": "Is the earth flat?", "models": ["m1", "m2"],
     "completions": [_raw_completion("m1", 9, ["5", "5", "5", "5"]), _raw_completion("m2", 2, ["1", "1", "1", "1"])]},
    {"source": "flan_v2_niv2", "instruction": "Write a poem.", "models": ["m1", "m2"],
     "completions": [_raw_completion("m1", 8, ["5", "N/A", "5", "4"]), _raw_completion("m2", 5, ["3", "N/A", "3", "3"])]},
]


def test_converter_decontaminates_fixes_scores_and_reads_na():
    rated, report = convert_ultrafeedback(RAW)
    assert (report.rows, report.decontaminated, report.overall_fixed) == (3, 1, 1)
    assert [r["prompt"] for r in rated] == ["Explain gravity.", "Write a poem."]
    m2 = rated[0]["completions"][1]
    assert m2["overall"] == 1.0 and m2["fine_grained"] == 1.5  # the anomaly: 10 where the critique meant 1
    m3 = rated[0]["completions"][2]
    assert m3["aspects"]["honesty"]["rating"] is None and m3["fine_grained"] == pytest.approx(10 / 3, abs=1e-3)
    triples, _ = binarize(rated, "zephyr", seed=42)
    assert triples[0]["model_chosen"] == "m1" and triples[0]["score_rejected"] < 7.5
    # without the fix, the broken completion would have been chosen
    unfixed, _ = convert_ultrafeedback(RAW, fix_overall=False)
    assert binarize(unfixed, "zephyr")[0][0]["model_chosen"] == "m2"
    assert binarize(rated, "argilla")[0][0]["model_chosen"] == "m1"


def test_converter_names_row_and_field_of_bad_input():
    with pytest.raises(ValueError, match="row 0: field 'instruction' is missing"):
        convert_ultrafeedback([{"completions": []}])
    with pytest.raises(ValueError, match=r"row 0: completions\[0\]: field 'response' is missing"):
        convert_ultrafeedback([{"instruction": "x", "completions": [{"model": "m"}]}])


def test_convert_cli(tmp_path):
    from datasets import load_from_disk

    raw = tmp_path / "uf.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in RAW))
    proc = subprocess.run([sys.executable, "-m", "handbook.aif_data", "convert", "--input", str(raw), "--output_dir",
                           str(tmp_path / "out"), "--rule", "argilla"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 removed as benchmark prompts" in proc.stdout and "1 overall scores corrected" in proc.stdout
    ds = load_from_disk(str(tmp_path / "out"))
    assert len(ds) == 2 and {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen",
                             "score_rejected"} <= set(ds.column_names)


# --- pool, ratings, caching ----------------------------------------------------------------------------
def _toy_config(tmp_path, name, latency=0.0, per_category=3):
    pool = [{"name": f"teacher-{i}", "backend": {"type": "toy", "latency": latency}, "seed": i} for i in range(4)]
    return dict(output_dir=str(tmp_path / name), prompts="toy", toy_prompts_per_category=per_category, pool=pool,
                judge={"type": "toy-judge", "noise": 0.1, "format_error_rate": 0.2, "latency": latency},
                max_retries=2, batch_size=4)


def _run_generate(args):
    prompts = prompts_from(args.prompts, args.toy_prompts_per_category, args.toy_prompt_seed)
    return run_generate(args, prompts, build_backend, progress=False)


def test_generate_pool_rate_and_binarize_on_the_toy_world(tmp_path):
    rated, triples, report = _run_generate(AIFArguments(**_toy_config(tmp_path, "run")))
    assert len(rated) == 3 * len(world.CATEGORIES)
    for row in rated:
        assert [c["model"] for c in row["completions"]] == [f"teacher-{i}" for i in range(4)]
        for c in row["completions"]:
            assert c["status"] in ("ok", "failed")
            if c["status"] == "ok":
                assert set(c["aspects"]) == set(ASPECTS) and 1 <= c["overall"] <= 10
    assert any(c["attempts"] > 1 for r in rated for c in r["completions"])  # format errors were retried
    assert report.kept == len(triples) > 0
    validate_triples(triples)
    truth = [(world.judge(t["prompt"], t["chosen"][1]["content"]).score,
              world.judge(t["prompt"], t["rejected"][1]["content"]).score) for t in triples]
    assert sum(c > r for c, r in truth) / len(truth) > 0.7


def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()[1:]]


def test_killed_aif_run_resumes_without_losing_or_repeating_calls(tmp_path):
    reference = _run_generate(AIFArguments(**_toy_config(tmp_path, "reference", per_category=4)))
    config = tmp_path / "aif.yaml"
    config.write_text(yaml.safe_dump(_toy_config(tmp_path, "killed", latency=0.01, per_category=4)))
    cmd = [sys.executable, "-m", "handbook.aif_data", "generate", "--config", str(config)]
    ratings = tmp_path / "killed" / "ratings.cache.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ratings.exists() and len(ratings.read_text().splitlines()) > 40):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    pool_before, ratings_before = _records(tmp_path / "killed" / "pool.cache.jsonl"), _records(ratings)
    assert len(pool_before) == 4 * 4 * len(world.CATEGORIES) and 0 < len(ratings_before) < len(pool_before)

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    pool_after, ratings_after = _records(tmp_path / "killed" / "pool.cache.jsonl"), _records(ratings)
    assert pool_after == pool_before  # no completion asked for again
    assert ratings_after[:len(ratings_before)] == ratings_before
    keys = [(r["prompt_id"], r["model"]) for r in ratings_after]
    assert len(keys) == len(set(keys)) == len(pool_after)  # every rating exactly once
    resumed = [json.loads(x) for x in (tmp_path / "killed" / "rated.jsonl").read_text().splitlines()]
    assert resumed == reference[0]


def test_real_judge_burst_through_faults_every_rating_exactly_once(llama_server, tmp_path):
    """64 concurrent rating requests at the llama.cpp server behind a proxy that injects 5xx/429 and stalls.

    The server answers one request at a time (~0.5 s each), so the client's timeout must outlast the
    queue (60 s) and a stall must outlast the timeout: this test takes about a minute and a half.
    """
    base_url, model = llama_server
    prompts = [p.text for p in world.sample_prompts(8, "train", seed=3)]  # 64 prompts
    pool = generate_pool(prompts, [PoolMember("teacher", ToyTeacher(), Sampling(seed=0))], progress=False)
    with FaultProxy(base_url.removesuffix("/v1"), error_rate=0.1, stall_first=2, stall_seconds=62, seed=7) as proxy:
        judge = OpenAIBackend(proxy.url + "/v1", model, api_key_env=None, max_concurrency=64, max_retries=4,
                              timeout=60, backoff=0.2, max_backoff=2)
        rated = rate_pool(pool, judge, tmp_path / "ratings.jsonl", max_retries=0,
                          sampling=Sampling(temperature=0.0, max_new_tokens=16, seed=0), batch_size=64, progress=False)
    assert proxy.max_in_flight >= 32  # a real burst
    assert proxy.counts["errors"] > 0 and proxy.counts["stalls"] == 2
    # every retry is an injected error or a timed-out attempt: the two stalls, and on a loaded machine also requests
    # that waited in the one-at-a-time server's queue past the timeout (33 retries against 15 injected, seen once)
    assert judge.stats["timeouts"] >= proxy.counts["stalls"]
    failed_attempts = judge.stats["retries"] + judge.stats["failures"]  # each failed attempt: retried, or the last
    assert failed_attempts == proxy.counts["errors"] + judge.stats["timeouts"]
    records = _records(tmp_path / "ratings.jsonl")
    assert sorted((r["prompt_id"], r["model"]) for r in records) == sorted((r["prompt_id"], "teacher") for r in pool)
    n_failed_with_raw = 0
    for row in rated:
        (c,) = row["completions"]
        assert c["status"] in ("ok", "failed")
        if c["status"] == "failed":
            assert c["error"] and c["attempts"] == 1  # the reason, after the retry budget (here: no retries)
            assert c["raw"] or c["error"].startswith("backend:")  # with the raw reply when there was one
            n_failed_with_raw += bool(c["raw"])
        else:
            assert 1 <= c["overall"] <= 10
    # SmolLM2-135M's replies are messy: what the parser refused is kept with the raw text, not guessed
    assert n_failed_with_raw > 0
