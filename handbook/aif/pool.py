"""The response pool: every prompt goes to each of several models (UltraFeedback samples 4 of 17).

Generation is resumable through :class:`handbook.core.runner.ResumableCalls`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from ..core.backends import ChatBackend, Sampling, chat_with_errors, describe_backend
from ..core.backends import build_backend as core_build_backend
from ..core.deadline import Deadline
from ..core.configs import ConfigError, check_keys, check_values, known_keys
from ..core.data import prompt_id
from ..core.runner import ResumableCalls, RunPolicy


@dataclass
class PoolMember:
    """One model of the response pool and how it samples."""

    name: str
    backend: ChatBackend
    sampling: Sampling = Sampling(temperature=1.0, max_new_tokens=256, seed=0)


def generate_pool(prompts: Sequence[str], members: Sequence[PoolMember], cache_path=None, batch_size: int = 64,
                  progress: bool = True, policy: RunPolicy = RunPolicy()) -> list[dict]:
    """``[{"prompt", "prompt_id", "completions": [{"model", "response"}, ...]}]``, one row per distinct prompt.

    Resumable through :class:`handbook.core.runner.ResumableCalls` (records ``{"prompt_id", "model",
    "response"}``), one phase per pool member; the cache's identity has every member's ``describe()`` (weights
    fingerprint, endpoint, toy settings) and sampling. A completion that got no reply (unreachable, timeout,
    5xx, malformed) is not recorded: :class:`handbook.core.runner.CallsFailed`, and a rerun asks for it again."""
    prompts = list(dict.fromkeys(prompts))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"pool member names must be unique: {names}")
    if not prompts:
        raise ValueError("the pool needs at least one prompt; got none")
    meta = {"members": [{"name": m.name, "backend": describe_backend(m.backend), "sampling": asdict(m.sampling)}
                        for m in members],
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
    ids = [prompt_id(p) for p in prompts]
    with ResumableCalls(cache_path or None, meta, ("prompt_id", "model"), len(prompts) * len(members),
                        "AIF pool (completions)", progress, policy) as calls:
        for member in members:  # one phase per member; a request that got no reply stays in place, unrecorded
            calls.run((((pid, member.name), [{"role": "user", "content": p}]) for p, pid in zip(prompts, ids)),
                      lambda batch: [r if isinstance(r, Exception) else {"response": r}
                                     for r in chat_with_errors(member.backend, batch, member.sampling)],
                      batch_size)
    done = calls.results
    return [{"prompt": p, "prompt_id": pid,
             "completions": [{"model": m.name, "response": done[(pid, m.name)]["response"]} for m in members]}
            for p, pid in zip(prompts, ids)]


@dataclass
class PoolMemberSpec:
    """One entry of a recipe's ``pool:`` list, checked key by key and value by value as a recipe is
    (``handbook.core.configs``); errors name ``pool[N].key``."""

    name: str = field(metadata={"help": "The member's name in the pool, the ratings and the triples (unique)."})
    backend: dict = field(metadata={"help": "Backend spec, e.g. {type: transformers, model_name_or_path: ...}."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (>= 0; 0 is greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (0 < top_p <= 1)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Token budget of one completion (>= 1)."})
    seed: int | None = field(default=None, metadata={"help": "Sampling seed (default: the member's index)."})

    @classmethod
    def from_spec(cls, spec, n: int = 0, source: str | None = None) -> PoolMemberSpec:
        """``pool[n]`` of a recipe, checked; raises :class:`ConfigError` naming ``pool[n].key``."""
        where = f"{source}: " if source else ""
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}`pool[{n}]`: invalid value {spec!r}; expected a mapping "
                              "{name, backend, temperature, top_p, max_new_tokens, seed}")
        check_keys(spec, [cls], source, allowed=known_keys([cls]), prefix=f"pool[{n}].")
        values = check_values(spec, [cls], source, prefix=f"pool[{n}].")
        for key in ("name", "backend"):
            if key not in values:
                raise ConfigError(f"{where}pool[{n}]: field '{key}' is missing")
        member = cls(**values)
        for key, ok, rule in (("temperature", member.temperature >= 0, "at least 0"),
                              ("top_p", 0 < member.top_p <= 1, "in (0, 1]"),
                              ("max_new_tokens", member.max_new_tokens >= 1, "at least 1")):
            if not ok:
                raise ConfigError(f"{where}`pool[{n}].{key}`: invalid value {getattr(member, key)}; must be {rule}")
        if member.seed is None:
            member.seed = n
        return member

    @classmethod
    def from_pool(cls, pool_spec: Sequence[dict], source: str | None = None) -> list[PoolMemberSpec]:
        """Every member of a ``pool:`` list, checked; names must be unique."""
        members, seen = [], {}
        for n, spec in enumerate(pool_spec):
            member = cls.from_spec(spec, n, source)
            if member.name in seen:
                where = f"{source}: " if source else ""
                raise ConfigError(f"{where}`pool[{n}].name`: {member.name!r} is the name of pool[{seen[member.name]}] "
                                  "too; pool member names must be unique")
            seen[member.name] = n
            members.append(member)
        return members


def build_pool(pool_spec: Sequence[dict], build_backend: Callable[..., ChatBackend] = core_build_backend,
               shard: bool | None = None, deadline: Deadline | None = None) -> list[PoolMember]:
    """Pool members from a recipe's ``pool:`` list; members with the same backend spec share one loaded model.

    Every member is checked first (:class:`PoolMemberSpec`: its keys, the types of its values; errors name
    ``pool[N].key``), so a typo fails before any model loads. ``build_backend(spec, shard=..., deadline=...)`` turns a
    backend spec into a backend (the toy world passes one that knows its own types); ``deadline``, the run's time
    bound, goes to every backend it builds.
    """
    members, backends = [], {}
    for spec in PoolMemberSpec.from_pool(pool_spec):
        backend_spec = dict(spec.backend)
        cache_key = json.dumps(backend_spec, sort_keys=True)
        if cache_key not in backends:  # members sharing a model load it once
            backends[cache_key] = build_backend(backend_spec, shard=shard, deadline=deadline)
        sampling = Sampling(temperature=spec.temperature, top_p=spec.top_p, max_new_tokens=spec.max_new_tokens,
                            seed=spec.seed)
        members.append(PoolMember(spec.name, backends[cache_key], sampling))
    return members
