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
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence
from urllib.parse import urlparse

from .distributed import world_size

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


class BackendError(RuntimeError):
    """A backend could not produce a reply (after its retries), with the reason."""


def chat_with_errors(backend: ChatBackend, conversations, sampling: Sampling) -> list:
    """Replies in order, with the :class:`BackendError` of a request that failed after its retries in its
    place — for backends that report per-request failures (``return_exceptions``); others answer or raise."""
    if "return_exceptions" in inspect.signature(backend.chat).parameters:
        return backend.chat(conversations, sampling, return_exceptions=True)
    return backend.chat(conversations, sampling)


def conversation_seed(conversation: Sequence[Message], seed: int | None) -> int:
    """A seed that depends only on the conversation and the run's seed (not on batch order)."""
    blob = json.dumps([seed, list(conversation)], sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


# ---------------------------------------------------------------------------------------------
# A local transformers model
# ---------------------------------------------------------------------------------------------
class TransformersBackend:
    """A local model: batched generation with left padding and the model's chat template."""

    def __init__(self, model, tokenizer, batch_size: int = 32, name: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__

    @classmethod
    def from_model_args(cls, model_args, batch_size: int = 32, name: str | None = None):
        """Load ``model_args``' model for generation: on the GPU where there is one (a quantised model is
        placed by its loader), else on the CPU."""
        import torch

        from .models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(model_args)
        if torch.cuda.is_available() and model.device.type == "cpu":
            model = model.to(torch.cuda.current_device())
        return cls(model, tokenizer, batch_size=batch_size, name=name or model_args.model_name_or_path)

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
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                            max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                            trust_remote_code=trust_remote_code)

    def chat(self, conversations, sampling: Sampling = Sampling()) -> list[str]:
        params = self._vllm.SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                                           max_tokens=sampling.max_new_tokens, seed=sampling.seed)
        outputs = self.llm.chat([list(c) for c in conversations], params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]


# ---------------------------------------------------------------------------------------------
# Any OpenAI-compatible endpoint
# ---------------------------------------------------------------------------------------------
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


class OpenAIBackend:
    """An OpenAI-compatible chat-completions endpoint.

    ``base_url`` and ``model`` come from config; the key from the environment variable named by
    ``api_key_env`` (a local server without a key may leave it unset). Up to ``max_concurrency``
    requests are in flight at once; a request that fails with 429, a 5xx, a timeout or a dropped
    connection is retried up to ``max_retries`` times with exponential backoff and jitter
    (``backoff * 2**attempt`` seconds, at most ``max_backoff``). A wrong URL or model raises
    :class:`BackendError` at once with a message that says which.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 5, timeout: float = 60.0,
                 backoff: float = 0.5, max_backoff: float = 30.0, name: str | None = None):
        import openai

        if not base_url or not urlparse(base_url).scheme.startswith("http"):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            if urlparse(base_url).hostname not in _LOOPBACK:
                raise BackendError(
                    f"no API key: set the environment variable {api_key_env or 'OPENAI_API_KEY'} "
                    f"(the key of {base_url})")
            key = "not-needed"  # local servers ignore it, the client insists on one
        self.base_url = base_url
        self.model = model
        self.name = name or model
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)
        self._stats_lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "failures": 0}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, max_concurrency={self.max_concurrency})"

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _complete(self, conversation: Sequence[Message], sampling: Sampling) -> str:
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                     openai.APIConnectionError)
        attempt = 0
        while True:
            self._count("requests")
            try:
                kwargs: dict[str, Any] = dict(
                    model=self.model, messages=list(conversation), temperature=sampling.temperature,
                    top_p=sampling.top_p, max_tokens=sampling.max_new_tokens)
                if sampling.seed is not None:
                    kwargs["seed"] = conversation_seed(conversation, sampling.seed) % (2**31)
                response = self._client.chat.completions.create(**kwargs)
                content = response.choices[0].message.content
                if content is None:
                    raise BackendError(f"{self.base_url}: the server returned no message content")
                return content
            except openai.NotFoundError as exc:
                raise BackendError(self._not_found_message(exc)) from None
            except openai.AuthenticationError:
                raise BackendError(f"{self.base_url} refused the API key (HTTP 401): check the key's environment variable") from None
            except retryable as exc:
                if attempt >= self.max_retries:
                    self._count("failures")
                    if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
                        raise BackendError(f"cannot reach {self.base_url} after {attempt + 1} attempts: {exc}") from None
                    raise BackendError(f"{self.base_url}: giving up after {attempt + 1} attempts: {_describe(exc)}") from None
                delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
                logger.warning("%s: %s; retry %d/%d in %.1fs", self.base_url, _describe(exc), attempt + 1,
                               self.max_retries, delay)
                self._count("retries")
                time.sleep(delay)
                attempt += 1
            except openai.APIStatusError as exc:  # 400, 403, 422, ...: retrying will not help
                raise BackendError(f"{self.base_url}: HTTP {exc.status_code}: {exc.message}") from None

    def _not_found_message(self, exc) -> str:
        try:
            available = sorted(m.id for m in self._client.models.list())
        except Exception:  # the URL itself is wrong
            return f"{self.base_url} has no chat-completions endpoint (HTTP 404): check base_url (it usually ends in /v1)"
        if self.model not in available:
            return f"model {self.model!r} not found at {self.base_url}; the server offers: {', '.join(available) or 'none'}"
        return f"{self.base_url}: HTTP 404 for model {self.model!r}: {exc}"

    def chat(self, conversations, sampling: Sampling = Sampling(), return_exceptions: bool = False) -> list:
        """Replies in order. With ``return_exceptions`` a request that fails after its retries gives
        its :class:`BackendError` in its place instead of failing the whole batch."""
        if not conversations:
            return []

        def one(conversation):
            try:
                return self._complete(conversation, sampling)
            except BackendError as exc:
                if return_exceptions:
                    return exc
                raise

        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            return list(pool.map(one, conversations))

    def check(self) -> list[str]:
        """Ask the server which models it serves; raise :class:`BackendError` if ``model`` is not one."""
        import openai

        try:
            available = sorted(m.id for m in self._client.models.list())
        except openai.APIConnectionError as exc:
            raise BackendError(f"cannot reach {self.base_url}: {exc}") from None
        if self.model not in available:
            raise BackendError(f"model {self.model!r} not found at {self.base_url}; the server offers: {', '.join(available)}")
        return available


def _describe(exc) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


# ---------------------------------------------------------------------------------------------
class ShardedBackend:
    """Data-parallel generation under ``accelerate launch``: the batch is split across the processes
    (``split_between_processes``), each answers its slice with its own copy of the model, and the
    replies are gathered back into the original order on every process — no row lost, none duplicated."""

    def __init__(self, backend):
        self.backend = backend
        self.name = backend.name

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
BackendFactory = Callable[..., "ChatBackend"]


def build_backend(spec: dict, shard: bool | None = None, types: dict[str, BackendFactory] | None = None) -> ChatBackend:
    """A backend from a config mapping, e.g. a recipe's ``teacher:`` block::

        {type: transformers, model_name_or_path: ..., gguf_file: ..., batch_size: 32}   # sharded under accelerate launch
        {type: vllm, model: ..., tensor_parallel_size: 1}     # optional engine: pip install -e .[vllm]
        {type: openai, base_url: http://127.0.0.1:8000/v1, model: gpt-4, api_key_env: OPENAI_API_KEY,
         max_concurrency: 8, max_retries: 5, timeout: 60}

    ``types`` adds backend types (name → factory taking the spec's other keys): the toy world adds
    ``toy``, ``toy-judge`` and ``toy-mt-judge`` this way (``handbook.toy.backends``).
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if types and kind in types:
        return types[kind](**spec)
    if kind == "transformers":
        from .models import ModelArguments

        batch_size = spec.pop("batch_size", 32)
        name = spec.pop("name", None)
        backend = TransformersBackend.from_model_args(ModelArguments(**spec), batch_size=batch_size, name=name)
        # under `accelerate launch`, each process generates its share (unless the caller runs alone)
        return ShardedBackend(backend) if (world_size() > 1 if shard is None else shard) else backend
    if kind == "vllm":
        return VLLMBackend(**spec)
    if kind == "openai":
        return OpenAIBackend(**spec)
    known = ", ".join([*(types or {}), "transformers", "vllm", "openai"])
    raise ValueError(f"backend type must be one of {known}; got {kind!r}")
