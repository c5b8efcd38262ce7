"""Chat backends: one small interface for every teacher, responder and judge.

A backend turns a batch of conversations into one reply each::

    replies = backend.chat(conversations, Sampling(temperature=0.7, max_new_tokens=256))

Implementations (the toy world's teacher and judges, ``handbook.toy``, have the same interface):

* :class:`TransformersBackend` — a local transformers model: batched, left-padded generation with
  the model's chat template;
* :class:`OpenAIBackend` — any OpenAI-compatible chat-completions server (OpenAI, vLLM, TGI,
  llama.cpp's server) through the ``openai`` client, with a concurrency limit and retries with
  exponential backoff on 429, 5xx, timeouts and dropped connections. The API key is read from an
  environment variable and never printed, logged or stored on the object's ``repr``.

``build_backend(spec)`` makes any of them from a config mapping (a recipe's ``teacher:`` block).

**Identity.** Every backend says what determines its replies with ``describe()`` — a JSON mapping: its type and
name, and for a local model a fingerprint of its weights (:func:`weights_fingerprint`), for an endpoint its
``base_url`` and ``model``, for the toy world's backends their settings. Caches of results
(:mod:`handbook.core.runner`) record it and refuse results made by another producer
(:func:`describe_backend` is the one way to ask any backend, one without ``describe()`` included).

**Failures.** :class:`TransportError` is a request that got no usable reply — the server unreachable, a
timeout, 429/5xx after the retries, a malformed reply (a 200 whose body is HTML or invalid JSON, no
``choices``, no content), or the run's time bound (its :class:`~handbook.core.deadline.Deadline`) reached. It is never a result: callers
report it and a rerun asks again. :class:`RequestRefused` is the server's definite answer about one request
(HTTP 400, 422: retrying will not help); any other :class:`BackendError` is a setting that is wrong for every
request (a wrong URL, model or key), raised at once.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence
from urllib.parse import urlparse

from .deadline import Deadline, time_left
from .distributed import world_size
from .secrets import ALLOW_KEY_ENV

logger = logging.getLogger(__name__)

Message = dict  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one ``chat`` call. ``temperature`` 0 means greedy."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = 0


class ChatBackend(Protocol):
    name: str

    def chat(self, conversations: Sequence[Sequence[Message]], sampling: Sampling) -> list[str]:
        """One assistant reply per conversation, in order."""

    def describe(self) -> dict:
        """What determines the replies (JSON values, no secrets): the identity a cache of results records."""


class BackendError(RuntimeError):
    """A backend could not produce a reply (after its retries), with the reason."""


class TransportError(BackendError):
    """A request that got no usable reply: unreachable, timed out, 429/5xx after the retries, a malformed reply,
    or the run's time bound reached. Never a result: reported, and asked again by a rerun."""


class RequestRefused(BackendError):
    """The server's definite answer about one request (HTTP 400, 422, ...): retrying it will not help; a caller may
    record it as that request's outcome."""


class TimeLimitReached(TransportError):
    """The run's time bound (the backend's :class:`~handbook.core.deadline.Deadline`) ran out before this request got a reply."""


def chat_with_errors(backend: ChatBackend, conversations, sampling: Sampling) -> list:
    """Replies in order, with the :class:`BackendError` of a request that failed after its retries in its
    place — for backends that report per-request failures (``return_exceptions``); others answer or raise."""
    if "return_exceptions" in inspect.signature(backend.chat).parameters:
        return backend.chat(conversations, sampling, return_exceptions=True)
    return backend.chat(conversations, sampling)


def describe_backend(backend) -> dict:
    """``backend.describe()``, or ``{"name": backend.name}`` for a backend that has no ``describe()`` (its
    name is then all a cache can check)."""
    describe = getattr(backend, "describe", None)
    return json.loads(json.dumps(describe() if callable(describe) else {"name": getattr(backend, "name", None)},
                                 sort_keys=True, default=str))

# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------
_MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".model", ".jinja", ".txt", ".tiktoken")
_SAMPLE = 1 << 20  # bytes hashed at each end of a large file
_PROBES, _PROBE = 16, 1 << 16  # and at 16 places in between, 64 KiB each


def file_fingerprint(path: str | os.PathLike) -> str:
    """``size:mtime_ns:sha`` of one file: its size and modification time, and the SHA-256 (first 16 hex digits)
    of its content — all of it up to 4 MiB; beyond, the first and last MiB and 16 evenly spaced 64 KiB blocks
    (about 3 MiB read, whatever the size: a retrained model rewrites its files, so the time and the sampled
    content both change)."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if stat.st_size <= 4 * _SAMPLE:
            for block in iter(lambda: f.read(_SAMPLE), b""):
                digest.update(block)
        else:
            digest.update(f.read(_SAMPLE))
            step = (stat.st_size - 2 * _SAMPLE) // (_PROBES + 1)
            for k in range(1, _PROBES + 1):
                f.seek(_SAMPLE + k * step)
                digest.update(f.read(_PROBE))
            f.seek(stat.st_size - _SAMPLE)
            digest.update(f.read(_SAMPLE))
    return f"{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()[:16]}"


def weights_fingerprint(model_name_or_path: str | os.PathLike, gguf_file: str | None = None) -> dict:
    """What a local model's replies depend on, on disk: ``{"path", "files": {name: file_fingerprint}}`` for the
    weight, config and tokenizer files at the top of its directory (``*.safetensors``, ``*.bin``, ``*.json``,
    ``tokenizer.model``, ...; subfolders such as checkpoints are not the model), only ``gguf_file`` of them when
    given. An adapter's base model (``adapter_config.json``'s ``base_model_name_or_path``) is fingerprinted
    too. A hub id that is not a local path: ``{"hub_id": ...}`` (the caller adds the revision it loaded).
    Well under a second for a 135M model (about 3 MiB read per large file)."""
    path = Path(model_name_or_path)
    if path.is_file():
        return {"path": str(path.resolve()), "files": {path.name: file_fingerprint(path)}}
    if not path.is_dir():
        return {"hub_id": str(model_name_or_path)}
    if gguf_file:
        names = [gguf_file]
    else:
        names = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix in _MODEL_SUFFIXES)
    out: dict[str, Any] = {"path": str(path.resolve()), "files": {n: file_fingerprint(path / n) for n in names}}
    adapter = path / "adapter_config.json"
    if adapter.is_file() and not gguf_file:
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base and Path(base).resolve() != path.resolve():
            out["base_model"] = weights_fingerprint(base)
    return out


def parameters_fingerprint(model) -> str:
    """SHA-256 (16 hex digits) of a model's weights in memory — every value of tensors up to 65,536 values,
    4,096 evenly spaced values of larger ones, with every name, shape and dtype — for a model that was not
    loaded from files (trained or changed in memory)."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            if flat.numel() > 65536:
                flat = flat[::flat.numel() // 4096][:4096]  # a strided view: 4,096 values across the tensor
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(flat.to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def text_sha256(obj) -> str:
    """SHA-256 (16 hex digits) of a text or of any JSON value (keys sorted): e.g. a judge prompt."""
    blob = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def conversation_seed(conversation: Sequence[Message], seed: int | None) -> int:
    """A seed that depends only on the conversation and the run's seed (not on batch order)."""
    blob = json.dumps([seed, list(conversation)], sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


# ---------------------------------------------------------------------------------------------
# A local transformers model
# ---------------------------------------------------------------------------------------------
class TransformersBackend:
    """A local model: batched generation with left padding and the model's chat template."""

    def __init__(self, model, tokenizer, batch_size: int = 32, name: str | None = None, model_args=None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.model_args = model_args  # where the weights were loaded from (``from_model_args``), else None
        self._identity: dict | None = None

    def describe(self) -> dict:
        """Type, name, and the weights: their files' fingerprint (:func:`weights_fingerprint`) when loaded by
        :meth:`from_model_args` (plus the hub revision for a hub id), else a fingerprint of the weights in memory
        (:func:`parameters_fingerprint`); the dtype, any quantisation and the chat template. Computed once (the
        weights of a backend do not change under it). ``batch_size`` is left out: it does not change replies."""
        if self._identity is None:
            args, config = self.model_args, self.model.config
            if args is not None:
                weights = weights_fingerprint(args.model_name_or_path, getattr(args, "gguf_file", None))
                if "hub_id" in weights:
                    weights["revision"] = getattr(args, "model_revision", None) or getattr(config, "_commit_hash", None)
                tokenizer = getattr(args, "tokenizer_name_or_path", None)
                if tokenizer:
                    weights["tokenizer"] = weights_fingerprint(tokenizer)
            else:
                weights = {"in_memory": parameters_fingerprint(self.model)}
            quantization = getattr(config, "quantization_config", None)
            if quantization is not None and hasattr(quantization, "to_dict"):
                quantization = quantization.to_dict()
            self._identity = {
                "type": "transformers", "name": self.name,
                "model": args.model_name_or_path if args is not None else getattr(config, "_name_or_path", None),
                "weights": weights, "dtype": str(getattr(self.model, "dtype", "")),
                "quantization": json.loads(json.dumps(quantization, sort_keys=True, default=str)),
                "chat_template_sha256": text_sha256(getattr(self.tokenizer, "chat_template", None) or ""),
            }
        return self._identity

    @classmethod
    def from_model_args(cls, model_args, batch_size: int = 32, name: str | None = None):
        """Load ``model_args``' model for generation: on the GPU where there is one (a quantised model is
        placed by its loader), else on the CPU."""
        import torch

        from .models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(model_args)
        if torch.cuda.is_available() and model.device.type == "cpu":
            model = model.to(torch.cuda.current_device())
        return cls(model, tokenizer, batch_size=batch_size, name=name or model_args.model_name_or_path,
                   model_args=model_args)

    def chat(self, conversations, sampling: Sampling = Sampling()) -> list[str]:
        from .generation import generate_replies

        return generate_replies(
            self.model, self.tokenizer, conversations,
            max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
            top_p=sampling.top_p, batch_size=self.batch_size, seed=sampling.seed,
        )


# ---------------------------------------------------------------------------------------------
# vLLM, in process (optional)
# ---------------------------------------------------------------------------------------------
class VLLMBackend:
    """vLLM's offline engine behind the same interface (``pip install -e .[vllm]``; needs a GPU).

    vLLM batches and schedules the whole list itself; the chat template is the model's.
    """

    def __init__(self, model: str, tensor_parallel_size: int = 1, dtype: str = "auto", max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, name: str | None = None, trust_remote_code: bool = False):
        try:
            import vllm
        except ImportError:
            raise ImportError("the vllm backend needs vLLM: pip install -e .[vllm] (on a machine with a GPU)") from None
        self.name = name or model
        self._identity = {"type": "vllm", "name": self.name, "model": model, "weights": weights_fingerprint(model),
                          "dtype": dtype, "max_model_len": max_model_len}
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                            max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                            trust_remote_code=trust_remote_code)

    def describe(self) -> dict:
        return dict(self._identity)

    def chat(self, conversations, sampling: Sampling = Sampling()) -> list[str]:
        params = self._vllm.SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                           max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        outputs = self.llm.chat([list(c) for c in conversations], params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]


# ---------------------------------------------------------------------------------------------
# Any OpenAI-compatible endpoint
# ---------------------------------------------------------------------------------------------
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}

#: Key variables read without confirmation. Any other variable a recipe names is sent to a loopback server only,
#: unless the user names it on the command line (``--allow_key_env NAME``): a recipe must not be able to send, say,
#: ``GITHUB_TOKEN`` to a host of its choosing.
KNOWN_KEY_VARIABLES = ("OPENAI_API_KEY", "HF_TOKEN", "TOGETHER_API_KEY", "ANTHROPIC_API_KEY", "MISTRAL_API_KEY",
                       "GROQ_API_KEY", "FIREWORKS_API_KEY", "DEEPSEEK_API_KEY", "VLLM_API_KEY", "JUDGE_API_KEY")

#: HTTP statuses retried (with backoff, or after the server's ``Retry-After``): timeout, conflict, rate limit, 5xx.
RETRIED_STATUSES = (408, 409, 429)
#: Statuses that refuse this request's content for good (recorded by a caller as the request's outcome).
REFUSING_STATUSES = (400, 422)
#: The longest ``Retry-After`` obeyed; a server asking for more is given up on (a TransportError, asked next run).
MAX_RETRY_AFTER = 120.0
#: The largest reply body read (a chat completion is a few KiB; a judge's is never megabytes).
MAX_REPLY_BYTES = 4 * 1024 * 1024

_request = threading.local()  # the deadline of the request this thread is sending


class _ReplyTooLarge(Exception):
    pass


def _deadline_transport(httpx):
    """An ``httpx`` transport that bounds each request's *whole* duration: every read waits at most the time left,
    and the body is abandoned (a read timeout) once the deadline passes — a server trickling a byte a second is
    cut off at ``timeout``, not at ``timeout`` per byte. It also stops reading a body past :data:`MAX_REPLY_BYTES`."""

    class Stream(httpx.SyncByteStream):
        def __init__(self, inner, deadline, request):
            self.inner, self.deadline, self.request = inner, deadline, request

        def __iter__(self):
            size = 0
            for chunk in self.inner:
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise _ReplyTooLarge(f"the reply is larger than {MAX_REPLY_BYTES // 2**20} MiB")
                if time.monotonic() > self.deadline:
                    raise httpx.ReadTimeout("the reply did not arrive whole within the request's timeout",
                                            request=self.request)
                yield chunk

        def close(self):
            self.inner.close()

    class Transport(httpx.BaseTransport):
        def __init__(self):
            self.inner = httpx.HTTPTransport()

        def handle_request(self, request):
            deadline = getattr(_request, "deadline", None)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise httpx.ReadTimeout("no time left for this request", request=request)
                request.extensions["timeout"] = {k: left if v is None else min(v, left)
                                                 for k, v in request.extensions.get("timeout", {}).items()} or \
                    {"connect": left, "read": left, "write": left, "pool": left}
            response = self.inner.handle_request(request)
            if deadline is not None:
                response.stream = Stream(response.stream, deadline, request)
            return response

        def close(self):
            self.inner.close()

    return Transport()


def retry_after(exc) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, ``Retry-After`` in seconds or as an HTTP date), or
    ``None`` when the reply says nothing (RFC 9110 §10.2.3)."""
    import email.utils

    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after") or "")
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint.

    ``base_url`` and ``model`` come from config; the key from the environment variable named by
    ``api_key_env`` (a local server without a key may leave it unset; a variable outside
    :data:`KNOWN_KEY_VARIABLES` is read for a non-loopback server only when ``key_env_confirmed`` or named in
    :data:`ALLOW_KEY_ENV` by the command line). Credentials in
    ``base_url`` are sent but never shown: messages and :meth:`describe` carry the URL redacted.

    Up to ``max_concurrency`` requests are in flight at once; each takes at most ``timeout`` seconds *in all* (a
    server that trickles its reply is cut off then). Retried up to ``max_retries`` times, with exponential backoff
    and jitter (``backoff * 2**attempt`` s, at most ``max_backoff``) or after the server's ``Retry-After``: HTTP
    408, 409, 429 and 5xx, a timeout, a dropped connection, a malformed reply (a 200 whose body is not the JSON of a
    chat completion: HTML, invalid JSON, no ``choices``, no content). After the retries it fails with
    :class:`TransportError`; so does a request that the run's time bound (``deadline``, a
    :class:`~handbook.core.deadline.Deadline` given by the run) cuts short, another
    4xx (402, 413, ...: not this request's fault, nothing to record, a rerun asks again) and a reply over
    :data:`MAX_REPLY_BYTES`. HTTP 400 and 422 (the server refusing this request's content) are a
    :class:`RequestRefused`. A wrong URL, model or key (404, 401, 403) raises :class:`BackendError` at once.
    The retries are tenacity's (``Retrying``); the openai client's own are off so that the two never stack.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 5, timeout: float = 60.0,
                 backoff: float = 0.5, max_backoff: float = 30.0, name: str | None = None,
                 key_env_confirmed: bool = False, deadline: Deadline | None = None):
        import httpx2
        import openai

        from .secrets import check_variable_name, redact_url

        if not base_url or not urlparse(base_url).scheme.startswith("http"):
            raise ValueError(f"base_url must be an http(s) URL, got {redact_url(str(base_url))!r}")
        for key, value, ok, rule in (("max_concurrency", max_concurrency, lambda v: v >= 1, "at least 1"),
                                     ("max_retries", max_retries, lambda v: v >= 0, "at least 0"),
                                     ("timeout", timeout, lambda v: v > 0, "greater than 0"),
                                     ("backoff", backoff, lambda v: v >= 0, "at least 0"),
                                     ("max_backoff", max_backoff, lambda v: v >= 0, "at least 0")):
            number = int if key in ("max_concurrency", "max_retries") else (int, float)
            if isinstance(value, bool) or not isinstance(value, number) or not ok(value):
                raise ValueError(f"`{key}`: invalid value {value!r}; must be a number {rule}")
        check_variable_name(api_key_env)
        self.shown_url = redact_url(base_url)
        host = urlparse(base_url).hostname
        confirmed = key_env_confirmed or api_key_env in os.environ.get(ALLOW_KEY_ENV, "").split(",")
        if api_key_env and api_key_env not in KNOWN_KEY_VARIABLES and host not in _LOOPBACK and not confirmed:
            raise BackendError(
                f"the recipe would send the environment variable {api_key_env} as the API key of {self.shown_url}; "
                f"only {', '.join(KNOWN_KEY_VARIABLES[:3])}, ... are sent to a remote server unasked. If that is "
                f"what you want, say so on the command line: --allow_key_env {api_key_env}")
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            if host not in _LOOPBACK:
                raise BackendError(
                    f"no API key: set the environment variable {api_key_env or 'OPENAI_API_KEY'} "
                    f"(the key of {self.shown_url})")
            key = "not-needed"  # local servers ignore it, the client insists on one
        self.base_url = base_url
        self.model = model
        self.name = name or model
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.deadline = deadline  # the run's time bound, given by the run (never read from a global)
        self._client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout,
                                     http_client=openai.DefaultHttpxClient(transport=_deadline_transport(httpx2)))
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "failures": 0, "timeouts": 0}  # timeouts: attempts that timed out

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.shown_url!r}, model={self.model!r}, max_concurrency={self.max_concurrency})"

    def describe(self) -> dict:
        """Type, name, ``base_url`` (credentials redacted) and ``model`` (the key, the concurrency, the timeout and
        the retries do not change replies and are left out; the sampling of each request is recorded by its caller)."""
        return {"type": "openai", "name": self.name, "base_url": self.shown_url, "model": self.model}

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _retryable(self, exc: BaseException) -> bool:
        import openai

        if isinstance(exc.__cause__, _ReplyTooLarge):
            return False
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code in RETRIED_STATUSES or exc.status_code >= 500
        return isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError,
                                json.JSONDecodeError, _MalformedReply))

    def _wait(self, state) -> float:
        """Seconds before the next attempt: the server's ``Retry-After`` when it gave one, else exponential backoff
        with jitter; never past the run's time bound."""
        exc = state.outcome.exception()
        asked = retry_after(exc)
        delay = asked if asked is not None else (
            min(self.max_backoff, self.backoff * 2 ** (state.attempt_number - 1)) * (0.5 + random.random() / 2))
        left = time_left(self.deadline)
        return delay if left is None else min(delay, left)

    def _stop(self, state) -> bool:
        if state.attempt_number > self.max_retries:
            return True
        left = time_left(self.deadline)
        if left is not None and left <= 0:
            return True
        asked = retry_after(state.outcome.exception())
        return asked is not None and (asked > MAX_RETRY_AFTER or (left is not None and asked > left))

    def _log_retry(self, state) -> None:
        self._count("retries")
        logger.warning("%s: %s; retry %d/%d in %.1fs", self.shown_url, _describe(state.outcome.exception()),
                       state.attempt_number, self.max_retries, state.upcoming_sleep)

    def _attempt(self, conversation: Sequence[Message], sampling: Sampling) -> str:
        import openai

        left = time_left(self.deadline)
        if left is not None and left <= 0:
            raise TimeLimitReached(f"{self.shown_url}: {self.deadline.message()}")
        self._count("requests")
        kwargs: dict[str, Any] = dict(model=self.model, messages=list(conversation), temperature=sampling.temperature,
                                      top_p=sampling.top_p, max_tokens=sampling.max_new_tokens)
        if sampling.seed is not None:
            kwargs["seed"] = conversation_seed(conversation, sampling.seed) % (2**31)
        budget = self.timeout if left is None else min(self.timeout, left)
        _request.deadline = time.monotonic() + budget
        try:
            return _content_of(self._client.chat.completions.create(**kwargs, timeout=budget))
        except openai.APITimeoutError:
            self._count("timeouts")
            raise
        finally:
            _request.deadline = None

    def _complete(self, conversation: Sequence[Message], sampling: Sampling) -> str:
        import openai
        import tenacity

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(self._retryable), stop=self._stop,
                                     wait=self._wait, before_sleep=self._log_retry, reraise=True)
        try:
            return retrying(self._attempt, conversation, sampling)
        except TimeLimitReached:
            self._count("failures")
            raise
        except openai.NotFoundError as exc:
            raise BackendError(self._not_found_message(exc)) from None
        except openai.AuthenticationError:
            raise BackendError(f"{self.shown_url} refused the API key (HTTP 401): check the key's environment "
                               "variable") from None
        except openai.PermissionDeniedError as exc:
            raise BackendError(f"{self.shown_url}: HTTP 403 (permission denied): {_message(exc)}") from None
        except Exception as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            if isinstance(exc, openai.APIStatusError) and exc.status_code in REFUSING_STATUSES:
                raise RequestRefused(f"{self.shown_url}: HTTP {exc.status_code}: {_message(exc)}") from None
            too_large = exc if isinstance(exc, _ReplyTooLarge) else exc.__cause__
            if not (self._retryable(exc) or isinstance(exc, openai.APIStatusError)
                    or isinstance(too_large, _ReplyTooLarge)):
                raise
            self._count("failures")
            left, asked = time_left(self.deadline), retry_after(exc)
            if isinstance(too_large, _ReplyTooLarge):
                raise TransportError(f"{self.shown_url}: {too_large} (not read further, not retried; nothing is "
                                     "recorded, a rerun asks again)") from None
            if isinstance(exc, openai.APIStatusError) and not self._retryable(exc):
                raise TransportError(f"{self.shown_url}: HTTP {exc.status_code}: {_message(exc)} (not the "
                                     "request's content: nothing is recorded, a rerun asks again)") from None
            if asked is not None and asked > MAX_RETRY_AFTER:
                raise TransportError(f"{self.shown_url}: {_describe(exc)} asking to retry after {asked:.0f} s (more "
                                     f"than {MAX_RETRY_AFTER:.0f} s); a rerun asks again") from None
            if attempts <= self.max_retries and left is not None and (left <= 0 or (asked or 0) > left):
                raise TimeLimitReached(f"{self.shown_url}: {self.deadline.message()} after {attempts} attempt(s) of "
                                       f"this request; the last: {_describe(exc)}") from None
            if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
                raise TransportError(f"cannot reach {self.shown_url} after {attempts} attempts: {exc}") from None
            raise TransportError(f"{self.shown_url}: giving up after {attempts} attempts: {_describe(exc)}") from None

    def _not_found_message(self, exc) -> str:
        try:
            available = sorted(m.id for m in self._client.models.list())
        except Exception:  # the URL itself is wrong
            return f"{self.shown_url} has no chat-completions endpoint (HTTP 404): check base_url (it usually ends in /v1)"
        if self.model not in available:
            return f"model {self.model!r} not found at {self.shown_url}; the server offers: {', '.join(available) or 'none'}"
        return f"{self.shown_url}: HTTP 404 for model {self.model!r}: {_message(exc)}"

    def chat(self, conversations, sampling: Sampling = Sampling(), return_exceptions: bool = False) -> list:
        """Replies in order. With ``return_exceptions`` a request that fails after its retries gives its
        :class:`TransportError` (or, refused by the server, its :class:`RequestRefused`) in its place instead of
        failing the whole batch; a wrong URL, model or key still raises (it would fail every request)."""
        if not conversations:
            return []
        fatal: list[BackendError] = []

        def one(conversation):
            if fatal:  # a wrong URL, model or key: do not send the rest
                return fatal[0]
            try:
                return self._complete(conversation, sampling)
            except BackendError as exc:
                if not isinstance(exc, (TransportError, RequestRefused)):
                    fatal.append(exc)
                if return_exceptions:
                    return exc
                raise

        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations)))
        try:
            replies = list(pool.map(one, conversations))
        except BaseException:  # Ctrl-C (or an error): do not wait for requests still in flight
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if fatal:
            raise fatal[0]
        return replies

    def check(self) -> list[str]:
        """Ask the server which models it serves; raise :class:`BackendError` if ``model`` is not one."""
        import openai

        try:
            available = sorted(m.id for m in self._client.models.list())
        except openai.APIConnectionError as exc:
            raise TransportError(f"cannot reach {self.shown_url}: {exc}") from None
        if self.model not in available:
            raise BackendError(f"model {self.model!r} not found at {self.shown_url}; the server offers: {', '.join(available)}")
        return available


class _MalformedReply(Exception):
    """A 200 reply that is not the JSON of a chat completion."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _content_of(response) -> str:
    """The message content of a chat-completion reply, or :class:`_MalformedReply` saying what is wrong with it."""
    if isinstance(response, (str, bytes)):
        text = response.decode(errors="replace") if isinstance(response, bytes) else response
        snippet = " ".join(text.split())[:120]
        raise _MalformedReply(f"a malformed reply: not JSON but {snippet!r}")
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        raise _MalformedReply("a malformed reply: no `choices` list")
    if not choices:
        raise _MalformedReply("a malformed reply: `choices` is empty")
    try:
        content = choices[0].message.content
    except AttributeError:
        raise _MalformedReply("a malformed reply: `choices[0]` has no message") from None
    if not isinstance(content, str):
        raise _MalformedReply("a malformed reply: the message has no content")
    return content


def _message(exc) -> str:
    """The server's own message in an error reply (``{"error": {"message": ...}}``), with any secret redacted."""
    from .secrets import redact

    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    text = body["message"] if isinstance(body, dict) and isinstance(body.get("message"), str) else \
        re.sub(r"^Error code: \d+ - ", "", str(getattr(exc, "message", exc)))
    return redact(text)[:500]


def _describe(exc) -> str:
    status = getattr(exc, "status_code", None)
    if status:
        return f"HTTP {status}"
    if isinstance(exc, _MalformedReply):
        return exc.what
    if isinstance(exc, json.JSONDecodeError):
        return f"a malformed reply: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    return type(exc).__name__


# ---------------------------------------------------------------------------------------------
class ShardedBackend:
    """Data-parallel generation under ``accelerate launch``: the batch is split across the processes
    (``split_between_processes``), each answers its slice with its own copy of the model, and the
    replies are gathered back into the original order on every process — no row lost, none duplicated."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

    def describe(self) -> dict:
        return describe_backend(self.backend)  # sharding does not change the replies

    def chat(self, conversations, sampling, return_exceptions: bool = False):
        def local(convs):
            return chat_with_errors(self.backend, convs, sampling) if return_exceptions else self.backend.chat(convs, sampling)

        if world_size() == 1:
            return local(conversations)
        from accelerate import PartialState
        from accelerate.utils import gather_object

        state = PartialState()
        indexed = list(enumerate(conversations))
        with state.split_between_processes(indexed) as shard:
            replies = local([c for _, c in shard]) if shard else []
            mine = [(i, r) for (i, _), r in zip(shard, replies)]
        gathered = gather_object(mine)
        by_index = dict(gathered)
        if sorted(by_index) != list(range(len(conversations))):
            raise RuntimeError(f"sharded generation returned {len(by_index)} of {len(conversations)} replies")
        return [by_index[i] for i in range(len(conversations))]


# ---------------------------------------------------------------------------------------------
def with_timeout(spec: dict, timeout: float | None) -> dict:
    """A backend spec with a command's per-request ``timeout`` for an endpoint (``type: openai``) whose spec sets
    none of its own (a spec's own ``timeout`` wins; other types have no requests to time out)."""
    if timeout is not None and isinstance(spec, dict) and spec.get("type") == "openai" and "timeout" not in spec:
        return {**spec, "timeout": timeout}
    return spec


BackendFactory = Callable[..., "ChatBackend"]


def build_backend(spec: dict, shard: bool | None = None, types: dict[str, BackendFactory] | None = None,
                  deadline: Deadline | None = None, resolve: Callable | None = None) -> ChatBackend:
    """A backend from a config mapping, e.g. a recipe's ``teacher:`` block::

        {type: transformers, model_name_or_path: ..., gguf_file: ..., batch_size: 32}   # sharded under accelerate launch
        {type: vllm, model: ..., tensor_parallel_size: 1}     # optional engine: pip install -e .[vllm]
        {type: openai, base_url: http://127.0.0.1:8000/v1, model: gpt-4, api_key_env: OPENAI_API_KEY,
         max_concurrency: 8, max_retries: 5, timeout: 60}

    ``types`` adds backend types (name → factory taking the spec's other keys): the toy world adds
    ``toy``, ``toy-judge`` and ``toy-mt-judge`` this way (``handbook.toy.backends``). ``deadline`` is the run's
    time bound for an endpoint's requests (local models are bounded between batches, by
    :class:`~handbook.core.runner.ResumableCalls`). ``resolve`` maps a ``transformers`` spec's
    :class:`~handbook.core.models.ModelArguments` to what loads (a recipe's names: the toy models, SmolLM2 offline;
    ``handbook.tiers.build_backend`` gives it), applied once, before the model loads.
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if types and kind in types:
        return types[kind](**spec)
    if kind == "transformers":
        from .models import ModelArguments

        batch_size = spec.pop("batch_size", 32)
        name = spec.pop("name", None)
        model_args = ModelArguments(**spec)
        backend = TransformersBackend.from_model_args(resolve(model_args) if resolve else model_args,
                                                      batch_size=batch_size, name=name)
        # under `accelerate launch`, each process generates its share (unless the caller runs alone)
        return ShardedBackend(backend) if (world_size() > 1 if shard is None else shard) else backend
    if kind == "vllm":
        return VLLMBackend(**spec)
    if kind == "openai":
        return OpenAIBackend(**spec, deadline=deadline)
    known = ", ".join([*(types or {}), "transformers", "vllm", "openai"])
    raise ValueError(f"backend type must be one of {known}; got {kind!r}")
