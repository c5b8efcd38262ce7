"""The response pool: every prompt goes to each of several models (UltraFeedback samples 4 of 17).

Generation is cached call by call (``handbook.core.runner``): a killed run restarted with the same
arguments loses no completion and repeats no finished call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from ..core.backends import ChatBackend, Sampling
from ..core.backends import build_backend as core_build_backend
from ..core.data import prompt_id
from ..core.runner import CallCache


@dataclass
class PoolMember:
    """One model of the response pool and how it samples."""

    name: str
    backend: ChatBackend
    sampling: Sampling = Sampling(temperature=1.0, max_new_tokens=256, seed=0)


def generate_pool(prompts: Sequence[str], members: Sequence[PoolMember], cache_path=None, batch_size: int = 64,
                  progress: bool = True) -> list[dict]:
    """``[{"prompt", "prompt_id", "completions": [{"model", "response"}, ...]}]``, one row per distinct prompt."""
    prompts = list(dict.fromkeys(prompts))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"pool member names must be unique: {names}")
    meta = {"members": [{"name": m.name, "backend": m.backend.name, "sampling": asdict(m.sampling)} for m in members],
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
    cache = CallCache(cache_path, meta, ("prompt_id", "model")) if cache_path else None
    done = {k: r["response"] for k, r in cache.records.items()} if cache else {}
    ids = [prompt_id(p) for p in prompts]
    bar = tqdm(total=len(prompts) * len(members), desc="AIF pool (completions)", disable=not progress, initial=len(done))
    for member in members:
        todo = [(p, pid) for p, pid in zip(prompts, ids) if (pid, member.name) not in done]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            replies = member.backend.chat([[{"role": "user", "content": p}] for p, _ in chunk], member.sampling)
            records = [{"prompt_id": pid, "model": member.name, "response": r} for (_, pid), r in zip(chunk, replies)]
            for r in records:
                done[(r["prompt_id"], r["model"])] = r["response"]
            if cache:
                cache.append(records)
            bar.update(len(records))
    bar.close()
    return [{"prompt": p, "prompt_id": pid,
             "completions": [{"model": m.name, "response": done[(pid, m.name)]} for m in members]}
            for p, pid in zip(prompts, ids)]


def build_pool(pool_spec: Sequence[dict], build_backend: Callable[..., ChatBackend] = core_build_backend,
               shard: bool | None = None) -> list[PoolMember]:
    """Pool members from a recipe's ``pool:`` list; members with the same backend spec share one loaded model.

    ``build_backend`` turns a backend spec into a backend (the toy world passes one that knows its own types).
    """
    members, backends = [], {}
    for n, spec in enumerate(pool_spec):
        for key in ("name", "backend"):
            if key not in spec:
                raise ValueError(f"pool[{n}]: field '{key}' is missing")
        backend_spec = dict(spec["backend"])
        cache_key = json.dumps(backend_spec, sort_keys=True)
        if cache_key not in backends:  # members sharing a model load it once
            backends[cache_key] = build_backend(backend_spec, shard=shard)
        sampling = Sampling(temperature=spec.get("temperature", 1.0), top_p=spec.get("top_p", 1.0),
                            max_new_tokens=spec.get("max_new_tokens", 256), seed=spec.get("seed", n))
        members.append(PoolMember(spec["name"], backends[cache_key], sampling))
    return members
