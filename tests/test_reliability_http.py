"""Reliability of the HTTP backend, third round (issue #24 items 1-3 and 8, issue #25 items 2 and 8): every request
bounded in its whole duration, an error never a result, transient refusals never recorded, the server's
``Retry-After`` obeyed, credentials never stored or printed, key variables only where the user sends them, replies
capped in size.

Each case runs against :class:`toy_server.ToyServer` (a real OpenAI-compatible server on loopback); the cases a
user meets through a command run the command as a real process.
"""

from __future__ import annotations

import os
import time

import pytest
import yaml

from handbook.aif.pipeline import AIFArguments, run_generate
from handbook.core.backends import (BackendError, OpenAIBackend, RequestRefused, Sampling, TimeLimitReached,
                                    TransportError)
from handbook.core.deadline import Deadline
from handbook.core.configs import ConfigError, parse_config
from handbook.core.runner import CallsFailed
from handbook.core.secrets import ALLOW_KEY_ENV, redact, redact_url
from handbook.dsft_data import DsftDataArguments
from handbook.tiers import build_backend, prompts_from
from handbook.toy import world
from helpers import cache_records, questions_file, run_module
from toy_server import server  # noqa: F401  (a fixture)

HI = [[{"role": "user", "content": world.sample_prompts(1, "train", 0)[0].text}]]  # a prompt the toy teacher answers
SECRET = "sk-proj-secret0123456789abcdef"


def _backend(server, **kw) -> OpenAIBackend:
    return OpenAIBackend(server.url, "toy", api_key_env=None, **{"backoff": 0.01, "max_backoff": 0.05, **kw})


def _aif(tmp_path, judge: dict, name="aif", **kw):
    args = AIFArguments(output_dir=str(tmp_path / name), prompts="toy", toy_prompts_per_category=1,
                        pool=[{"name": f"teacher-{i}", "backend": {"type": "toy"}, "seed": i} for i in range(2)],
                        judge=judge,
                        max_retries=1, batch_size=4, **kw)
    return run_generate(args, prompts_from(args.prompts, 1, args.toy_prompt_seed), build_backend, progress=False)


# =============================================================================================================
# 24.1 A request is bounded in its whole duration, not per byte
# =============================================================================================================
def test_a_trickling_reply_is_cut_off_at_the_request_timeout(server):
    server.mode, server.trickle_seconds = "trickle", 0.2  # a reply of ~300 bytes: a minute at this pace
    backend = _backend(server, timeout=1.5, max_retries=1)
    start = time.monotonic()
    with pytest.raises(TransportError, match="giving up after 2 attempts: APITimeoutError"):
        backend.chat(HI, Sampling(max_new_tokens=4))
    assert time.monotonic() - start < 2 * 1.5 + 1.5  # two attempts of at most 1.5 s, plus the backoff
    assert len(server.requests) == 2


def test_a_trickling_reply_stops_at_the_run_bound(server):
    server.mode, server.trickle_seconds = "trickle", 0.2
    start = time.monotonic()
    backend = _backend(server, timeout=60, max_retries=5, deadline=Deadline(2.0))
    with pytest.raises(TimeLimitReached, match="the time bound of 2 s"):
        backend.chat(HI, Sampling(max_new_tokens=4))
    assert time.monotonic() - start < 3.5


def test_mt_bench_cli_against_a_trickling_judge_stops_within_its_bounds(toy_base, tmp_path, server):
    server.mode, server.trickle_seconds = "trickle", 1.0  # the case: headers, then a byte a second
    start = time.monotonic()
    proc = run_module("handbook.evaluate", "mt-bench", "--model", "toy", "--model_id", "m", "--output_dir", tmp_path / "mt",
                "--questions", questions_file(tmp_path), "--max_new_tokens", "8", "--judge_base_url", server.url,
                "--judge_model", "toy", "--api_key_env", "NO_SUCH_KEY", "--timeout", "3", "--max_total_seconds", "10",
                timeout=150)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: MT-Bench judgments: 4 of 4 call(s) failed" in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 10 + 40  # the bound plus a process's start (imports, the model); before: killed at 90 s
    assert cache_records(tmp_path / "mt" / "cache" / "judgments-m.jsonl") == []


def test_aif_cli_against_a_trickling_judge_stops_within_its_bounds(tmp_path, server):
    server.mode, server.trickle_seconds = "trickle", 1.0
    recipe = tmp_path / "aif.yaml"
    recipe.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "aif"), "prompts": "toy", "toy_prompts_per_category": 1, "batch_size": 4,
        "pool": [{"name": "teacher-0", "backend": {"type": "toy"}, "seed": 0}],
        "judge": {"type": "openai", "base_url": server.url, "model": "toy", "api_key_env": None}}))
    start = time.monotonic()
    proc = run_module("handbook.aif_data", "generate", "--config", recipe, "--timeout", "3", "--max_total_seconds", "8",
                timeout=150)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: AIF ratings:" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 8 + 30  # before: killed from outside at 40 s
    assert cache_records(tmp_path / "aif" / "ratings.cache.jsonl") == []


# =============================================================================================================
# 24.2 and 24.3 An error is never a result; transient refusals are retried or left for the rerun
# =============================================================================================================
def test_a_judge_answering_400_gives_mt_bench_no_score(toy_base, tmp_path, server):
    server.mode = "status:400"  # OpenAI's shape: {"error": {"message": "Invalid 'messages[1].content': ..."}}
    proc = run_module("handbook.evaluate", "mt-bench", "--model", "toy", "--model_id", "m", "--output_dir", tmp_path / "mt",
                "--questions", questions_file(tmp_path), "--max_new_tokens", "8", "--judge_base_url", server.url,
                "--judge_model", "toy", "--api_key_env", "NO_SUCH_KEY", timeout=150)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "4 of 4 call(s) failed" in proc.stderr and "HTTP 400: Invalid 'messages[1].content'" in proc.stderr
    assert cache_records(tmp_path / "mt" / "cache" / "judgments-m.jsonl") == []  # before: 4 judgments "ERROR: ...", score 1
    assert not (tmp_path / "mt" / "results-m.json").exists()


@pytest.mark.parametrize("status", [408, 409, 429, 500, 503])
def test_timeout_conflict_rate_limit_and_5xx_are_retried(server, status):
    server.script = [f"status:{status}"] * 2  # then the server answers
    backend = _backend(server, max_retries=2)
    (reply,) = backend.chat(HI, Sampling(max_new_tokens=8))
    assert reply and backend.stats == {"requests": 3, "retries": 2, "failures": 0, "timeouts": 0}


@pytest.mark.parametrize("status", [402, 413])
def test_transient_refusals_are_not_recorded_and_a_rerun_asks_exactly_them(tmp_path, server, status):
    server.mode = f"status:{status}"
    judge = {"type": "openai", "base_url": server.url, "model": "toy", "api_key_env": None, "backoff": 0.01}
    with pytest.raises(CallsFailed, match=rf"AIF ratings: 4 of 16 call.*HTTP {status}.*a rerun asks again"):
        _aif(tmp_path, judge)
    assert cache_records(tmp_path / "aif" / "ratings.cache.jsonl") == []  # before: 4 failed ratings cached
    assert len(server.requests) == 4  # not retried within the run: the same request gets the same answer now
    server.mode, server.requests[:] = "ok", []
    rated, triples, _ = _aif(tmp_path, judge)
    assert len(server.requests) == 16 and all(c["status"] == "ok" for r in rated for c in r["completions"])


def test_a_request_refused_for_its_content_is_a_failed_attempt_not_a_rating(tmp_path, server):
    server.mode = "status:422"
    backend = _backend(server, max_retries=3)
    with pytest.raises(RequestRefused, match="HTTP 422: Invalid 'messages"):
        backend.chat(HI, Sampling(max_new_tokens=4))
    assert backend.stats["requests"] == 1  # 400/422: retrying the same content will not help


def test_the_servers_retry_after_is_obeyed(server):
    server.script, server.retry_after = ["status:429"], 1
    backend = _backend(server, max_retries=2)  # its own backoff would wait 10 ms
    start = time.monotonic()
    backend.chat(HI, Sampling(max_new_tokens=4))
    assert 1.0 <= time.monotonic() - start < 3 and backend.stats["retries"] == 1


def test_a_retry_after_past_the_run_bound_stops_at_once(server):
    server.mode, server.retry_after = "status:503", 30
    start = time.monotonic()
    backend = _backend(server, max_retries=5, deadline=Deadline(5.0))
    with pytest.raises(TimeLimitReached, match="the time bound of 5 s .* after 1 attempt"):
        backend.chat(HI, Sampling(max_new_tokens=4))
    assert time.monotonic() - start < 2 and len(server.requests) == 1


# =============================================================================================================
# 24.8 Secrets are never stored or printed
# =============================================================================================================
def test_redaction_rules():
    assert redact_url(f"http://user:{SECRET}@127.0.0.1:8000/v1") == "http://***@127.0.0.1:8000/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact(f"python -m x --judge_base_url https://u:{SECRET}@api.example.com/v1 --k {SECRET}") == \
        "python -m x --judge_base_url https://***@api.example.com/v1 --k ***"
    assert redact("OPENAI_API_KEY and max_new_tokens 8") == "OPENAI_API_KEY and max_new_tokens 8"


def test_a_key_in_the_judge_url_is_in_no_file_and_no_message(toy_base, tmp_path, server):
    server.mode = "down"
    url = server.url.replace("http://", f"http://user:{SECRET}@")
    out = tmp_path / "mt"
    proc = run_module("handbook.evaluate", "mt-bench", "--model", "toy", "--model_id", "m", "--output_dir", out,
                "--questions", questions_file(tmp_path), "--max_new_tokens", "8", "--judge_base_url", url,
                "--judge_model", "toy", "--api_key_env", "NO_SUCH_KEY", "--timeout", "2", "--max_total_seconds", "6",
                timeout=150)
    assert proc.returncode == 1 and "HTTP 503" in proc.stderr, proc.stderr[-2000:]
    assert "http://***@127.0.0.1" in proc.stderr  # the URL is named, its credentials are not
    assert SECRET not in proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".lock" for p in files) and any(p.name == "judgments-m.jsonl" for p in files)
    assert not [p for p in files if SECRET in p.read_text(errors="replace")]  # before: cache header and .lock


def test_a_key_pasted_as_the_variable_name_is_refused_and_not_echoed(toy_base, tmp_path):
    out = tmp_path / "mt"
    proc = run_module("handbook.evaluate", "mt-bench", "--model", "toy", "--output_dir", out, "--judge_base_url",
                "http://127.0.0.1:9/v1", "--api_key_env", SECRET, timeout=150)
    assert proc.returncode == 1 and "error: command line: `api_key_env` names the environment variable" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    with pytest.raises(ValueError, match="not shown"):
        OpenAIBackend("http://127.0.0.1:9/v1", "toy", api_key_env=SECRET)


# =============================================================================================================
# 25.2 A recipe cannot aim an arbitrary key variable at a host of its choosing
# =============================================================================================================
def test_a_recipe_naming_another_key_variable_for_a_remote_host_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "x" * 36)
    monkeypatch.delenv(ALLOW_KEY_ENV, raising=False)
    spec = {"type": "openai", "base_url": "https://collector.example.invalid/v1", "model": "m",
            "api_key_env": "GITHUB_TOKEN"}
    with pytest.raises(BackendError, match="would send the environment variable GITHUB_TOKEN as the API key of "
                                           "https://collector.example.invalid/v1.*--allow_key_env GITHUB_TOKEN"):
        build_backend(spec)
    # the documented variables, and any variable for a server on this machine, need no confirmation
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    build_backend({**spec, "api_key_env": "OPENAI_API_KEY"})
    build_backend({**spec, "base_url": "http://127.0.0.1:9/v1"})
    # the user's word on the command line confirms it; a recipe's `env:` cannot give it
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "d"), "env": {ALLOW_KEY_ENV: "GITHUB_TOKEN"}}))
    with pytest.raises(ConfigError, match=f"r.yaml: `env` may not set {ALLOW_KEY_ENV}"):
        parse_config([DsftDataArguments], ["--config", str(recipe)])
    parse_config([DsftDataArguments], ["--output_dir", str(tmp_path / "d"), "--allow_key_env", "GITHUB_TOKEN"])
    assert os.environ[ALLOW_KEY_ENV] == "GITHUB_TOKEN"
    build_backend(spec)


# =============================================================================================================
# 25.8 A reply's size is capped
# =============================================================================================================
def test_a_huge_reply_is_refused_once_not_read_whole_nor_retried(server):
    server.mode, server.huge_bytes = "huge", 6 * 2**20
    backend = _backend(server, max_retries=3)
    with pytest.raises(TransportError, match="the reply is larger than 4 MiB"):
        backend.chat(HI, Sampling(max_new_tokens=4))
    assert len(server.requests) == 1
