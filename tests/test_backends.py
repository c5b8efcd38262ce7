import logging
import time

import pytest

from fault_proxy import FaultProxy
from handbook.core.backends import BackendError, OpenAIBackend, Sampling, TransformersBackend
from handbook.toy.backends import build_backend
from handbook.toy.teacher import ToyTeacher
from handbook.dsft.dialogues import user_turn_request
from handbook.toy import world

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is 2 plus 2?",
]


def _conv(text):
    return [{"role": "user", "content": text}]


# --- toy ---------------------------------------------------------------------------------------
def test_toy_teacher_answers_and_is_deterministic_per_conversation():
    teacher = ToyTeacher()
    prompts = world.sample_prompts(3, "train", seed=0)
    convs = [_conv(p.text) for p in prompts]
    a = teacher.chat(convs, Sampling(seed=5))
    b = teacher.chat(list(reversed(convs)), Sampling(seed=5))
    assert a == list(reversed(b))  # a reply does not depend on batch order
    assert teacher.chat(convs, Sampling(seed=6)) != a  # but does on the seed
    scores = [world.judge(p, r) for p, r in zip(prompts, a)]
    assert sum(s.correctness == "correct" for s in scores) >= len(scores) - 2


def test_toy_teacher_plays_the_user_with_train_prompts():
    teacher = ToyTeacher()
    for p in world.sample_prompts(5, "train", seed=1):
        messages = [{"role": "user", "content": p.text}, {"role": "assistant", "content": p.reference_answer()}]
        (follow_up,) = teacher.chat([user_turn_request(messages)], Sampling(seed=0))
        q = world.parse_prompt(follow_up)
        assert follow_up.startswith("Now, ")
        assert q.category == p.category and q.item != p.item
        assert q.split == "train"  # dSFT data never contains held-out prompts


# --- local transformers --------------------------------------------------------------------------
def test_transformers_backend_on_the_toy_model(toy_base):
    backend = build_backend({"type": "transformers", "model_name_or_path": "toy", "batch_size": 2})
    replies = backend.chat([_conv(q) for q in QUESTIONS], Sampling(temperature=0.0, max_new_tokens=6))
    assert len(replies) == 4 and all(isinstance(r, str) for r in replies)


@pytest.fixture(scope="module")
def smollm2_local():
    from handbook.tiers import model_args_for

    return TransformersBackend.from_model_args(model_args_for("small"), batch_size=4)


@pytest.mark.slow  # the real SmolLM2-135M weights, de-quantised from the GGUF
def test_transformers_backend_on_real_smollm2(smollm2_local):
    replies = smollm2_local.chat([_conv(q) for q in QUESTIONS], Sampling(temperature=0.0, max_new_tokens=24))
    assert "Paris" in replies[0]
    assert all(len(r.split()) >= 2 for r in replies)
    # batched (left-padded) replies equal one-at-a-time replies
    alone = [smollm2_local.chat([_conv(q)], Sampling(temperature=0.0, max_new_tokens=24))[0] for q in QUESTIONS[:2]]
    assert alone == replies[:2]


# --- OpenAI-compatible HTTP -------------------------------------------------------------------------
def test_http_backend_against_real_llama_cpp_server(llama_server):
    base_url, model = llama_server
    backend = OpenAIBackend(base_url, model, api_key_env=None, max_concurrency=4)
    assert model in backend.check()
    replies = backend.chat([_conv(q) for q in QUESTIONS], Sampling(temperature=0.0, max_new_tokens=32))
    assert len(replies) == 4 and all(r.strip() for r in replies)
    assert backend.stats["retries"] == 0


def test_http_backend_wrong_model_is_a_clear_error(llama_server):
    base_url, _ = llama_server
    backend = OpenAIBackend(base_url, "gpt-17", api_key_env=None, max_retries=0)
    with pytest.raises(BackendError, match="model 'gpt-17' not found .* offers: smollm2"):
        backend.check()


def test_http_backend_wrong_url_is_a_clear_error():
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "x", api_key_env=None, max_retries=1, backoff=0.01)
    start = time.time()
    with pytest.raises(BackendError, match=f"cannot reach http://127.0.0.1:{port}/v1 after 2 attempts"):
        backend.chat([_conv("hi")], Sampling(max_new_tokens=4))
    assert time.time() - start < 10


def test_http_backend_wrong_path_is_a_clear_error(llama_server):
    base_url, model = llama_server
    backend = OpenAIBackend(base_url.removesuffix("/v1") + "/api", model, api_key_env=None, max_retries=0)
    with pytest.raises(BackendError, match="no chat-completions endpoint"):
        backend.chat([_conv("hi")], Sampling(max_new_tokens=4))


def test_http_backend_needs_a_key_for_remote_servers(monkeypatch):
    monkeypatch.delenv("HANDBOOK_TEST_KEY", raising=False)
    with pytest.raises(BackendError, match="set the environment variable HANDBOOK_TEST_KEY"):
        OpenAIBackend("https://api.example.invalid/v1", "gpt-4", api_key_env="HANDBOOK_TEST_KEY", key_env_confirmed=True)


def test_http_backend_retries_faults_and_never_shows_the_key(llama_server, monkeypatch, caplog):
    base_url, model = llama_server
    upstream = base_url.removesuffix("/v1")
    secret = "sk-test-do-not-print-0123456789"
    monkeypatch.setenv("HANDBOOK_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FaultProxy(upstream, error_rate=0.3, stall_rate=0.1, stall_seconds=3.0, seed=1, fail_first=3,
                    stall_first=1) as proxy:
        backend = OpenAIBackend(proxy.url + "/v1", model, api_key_env="HANDBOOK_TEST_KEY", max_concurrency=4,
                                max_retries=8, timeout=1.5, backoff=0.05, max_backoff=0.2)
        convs = [_conv(f"Say the number {i}.") for i in range(12)]
        replies = backend.chat(convs, Sampling(temperature=0.0, max_new_tokens=8))
    assert len(replies) == 12 and all(r.strip() for r in replies)
    assert proxy.counts["errors"] >= 3 and proxy.counts["stalls"] >= 1  # 5xx/429 and timeouts
    # every failed attempt was retried: an injected error, or an attempt that timed out (each stall; under load also
    # a real reply slower than the 1.5 s timeout)
    assert backend.stats["timeouts"] >= proxy.counts["stalls"]
    assert backend.stats["retries"] == proxy.counts["errors"] + backend.stats["timeouts"]
    assert backend.stats["failures"] == 0
    # concurrent, within the limit: the proxy counts a forwarded request until the server answers, so a real reply
    # the client abandoned at its timeout (under load) and then retried is one more at the proxy, never at the client
    abandoned = backend.stats["timeouts"] - proxy.counts["stalls"]
    assert 1 < proxy.max_in_flight <= 4 + abandoned, (proxy.max_in_flight, abandoned)
    assert all(a == f"Bearer {secret}" for a in proxy.seen_auth)  # the key is sent ...
    assert secret not in repr(backend) and secret not in caplog.text  # ... and never shown
    assert "retry" in caplog.text


def test_http_backend_gives_up_after_its_retry_budget(llama_server):
    base_url, model = llama_server
    with FaultProxy(base_url.removesuffix("/v1"), error_rate=1.0, statuses=(503,)) as proxy:
        backend = OpenAIBackend(proxy.url + "/v1", model, api_key_env=None, max_retries=2, backoff=0.01)
        with pytest.raises(BackendError, match="giving up after 3 attempts: HTTP 503"):
            backend.chat([_conv("hi")], Sampling(max_new_tokens=4))
    assert proxy.counts["errors"] == 3


def test_build_backend_rejects_unknown_types():
    with pytest.raises(ValueError, match="backend type must be one of toy, toy-judge, toy-mt-judge, transformers, vllm, openai"):
        build_backend({"type": "grpc"})


# --- the llama.cpp server: portable, and a death is reported with its log ------------------------------------
def test_llama_cpp_build_is_portable():
    """`make install-dev` builds llama.cpp for a baseline ISA, never natively: no AVX-512 and no AMX code, which
    a native build on an AMX machine runs in the server's worker threads (a general protection fault there)."""
    from handbook.tools.serving import build_features

    features = build_features()
    assert features.get("SSE3") or features.get("AVX2"), features  # it did report its features
    compiled = {name for name, on in features.items() if on}
    assert not any(name.startswith(("AVX512", "AMX")) for name in compiled), compiled


def test_llama_server_death_is_reported_with_its_log(tmp_path):
    """A server that dies (here: SIGSEGV, as the AMX build died) is named with its signal and its log's tail."""
    import os
    import signal

    from handbook.tools.serving import ServerDied, llama_cpp_server

    with llama_cpp_server(alias="smollm2", n_threads=1, n_ctx=512, log_dir=str(tmp_path)) as server:
        base_url, alias = server                      # unpacks as before
        assert alias == "smollm2" and base_url.endswith("/v1")
        server.check()                                # alive: it has already answered a chat completion
        os.kill(server.process.pid, signal.SIGSEGV)
        server.process.wait(timeout=10)
        with pytest.raises(ServerDied, match=r"killed by signal SIGSEGV; the last lines of its log .*llama-server-"):
            server.check()
    assert "Uvicorn running" in (tmp_path / os.path.basename(server.log_path)).read_text()  # the log names the run


FAKE_CRASHING_SERVER = r'''
import http.server, json, os, signal, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):                      # /v1/models answers, as the AMX build's server did
        body = json.dumps({"data": [{"id": "smollm2"}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):                     # ... and the first completion kills the process
        print("computing a completion", flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


def test_a_server_that_dies_on_its_first_completion_is_caught_before_any_test(tmp_path):
    """The reported failure: `GET /v1/models` answers, the first chat completion kills the server. The start-up
    check makes that completion itself, so it fails there, naming the signal and the server's log."""
    import subprocess
    import sys

    from handbook.tools.serving import LlamaServer, ServerDied, _first_completion, free_port

    port, log_path = free_port(), tmp_path / "server.log"
    script = tmp_path / "server.py"
    script.write_text(FAKE_CRASHING_SERVER)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        import urllib.request
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        server = LlamaServer(f"http://127.0.0.1:{port}/v1", "smollm2", proc, str(log_path))
        with pytest.raises(ServerDied, match=r"(?s)killed by signal SIGSEGV.*computing a completion"):
            _first_completion(server, timeout=10)
    finally:
        proc.kill()
        proc.wait()
