"""dSFT data: dialogues written by a teacher that also plays the user (self-instruct / UltraChat).

For each seed prompt x0 the teacher answers (y0); then, playing the user, it writes a refined or
follow-up instruction x1 from (x0, y0); the teacher answers x1; and so on for ``num_turns``
assistant turns. The result has ``ultrachat_200k``'s schema: ``prompt``, ``prompt_id`` (SHA-256
of the prompt), ``messages``.

Generation is resumable through :class:`handbook.core.runner.ResumableCalls` (one call per
dialogue step, records ``{"prompt_id", "step", "content"}``): a restarted run continues each
dialogue where it stopped and ends with exactly the rows of an uninterrupted run.

    python -m handbook.dsft_data --config my_data.yaml [--key value ...]
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from ..core.backends import ChatBackend, Sampling, chat_with_errors, describe_backend, text_sha256
from ..core.data import prompt_id
from ..core.runner import EmptyOutput, ResumableCalls, RunPolicy

logger = logging.getLogger(__name__)

USER_SIMULATOR_SYSTEM = (
    "You are playing the user in a conversation with an AI assistant. Read the conversation so far "
    "and write the user's next message: a follow-up that builds on the topic, asks for something new "
    "or refines the request. Reply with that message only, with no preamble and no quotes."
)
_TRANSCRIPT_HEADER = "The conversation so far:"
_TURN = re.compile(r"^\[(user|assistant)\]\n", re.MULTILINE)


def render_transcript(messages: Sequence[dict]) -> str:
    body = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
    return f"{_TRANSCRIPT_HEADER}\n\n{body}\n\nWrite the user's next message."


def parse_transcript(text: str) -> list[dict]:
    """Inverse of :func:`render_transcript`."""
    body = text.split(_TRANSCRIPT_HEADER, 1)[-1].rsplit("\n\nWrite the user's next message.", 1)[0].strip()
    parts = _TURN.split(body)
    return [{"role": role, "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def user_turn_request(messages: Sequence[dict]) -> list[dict]:
    """The conversation that asks the teacher to play the user and write the next instruction."""
    return [{"role": "system", "content": USER_SIMULATOR_SYSTEM},
            {"role": "user", "content": render_transcript(messages)}]


@dataclass
class DialogueConfig:
    """How dialogues are generated (recorded in the cache; a resumed run must match)."""

    num_turns: int = 2  # assistant turns per dialogue
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0
    batch_size: int = 32  # conversations per backend call (an HTTP backend runs them concurrently)


def _messages_from(prompt: str, pid: str, done: dict, steps: int) -> list[dict]:
    """The dialogue so far: the prompt, then each finished step (odd steps are user turns); ``done``
    maps ``(prompt_id, step)`` to its record."""
    messages = [{"role": "user", "content": prompt}]
    for step in range(steps):
        record = done.get((pid, step))
        if record is None:
            break
        messages.append({"role": "assistant" if step % 2 == 0 else "user", "content": record["content"]})
    return messages


def _step_request(prompt: str, pid: str, done: dict, step: int) -> list[dict]:
    """The conversation sent for ``step``: the dialogue so far, or (odd steps) the request to write the user turn."""
    messages = _messages_from(prompt, pid, done, step)
    return messages if step % 2 == 0 else user_turn_request(messages)


def generate_dialogues(
    seed_prompts: Sequence[str],
    teacher: ChatBackend,
    config: DialogueConfig = DialogueConfig(),
    cache_path: str | os.PathLike | None = None,
    user: ChatBackend | None = None,
    progress: bool = True,
    policy: RunPolicy = RunPolicy(),
):
    """Multi-turn dialogues in ultrachat_200k's schema, one per distinct seed prompt.

    Step ``2k`` is the teacher's answer to the k-th user turn; step ``2k+1`` is the next user turn,
    written by ``user`` (default: the teacher itself) from the transcript so far. Steps run
    breadth-first in batches of ``config.batch_size``, one phase of
    :class:`handbook.core.runner.ResumableCalls` each (resumable through ``cache_path``). The cache's identity
    has the teacher's and the user's ``describe()`` (weights fingerprint, endpoint, toy settings such as
    ``error_rate``) and the config. A call that got no reply is not recorded: the step ends with
    :class:`handbook.core.runner.CallsFailed` (no later step starts) and a rerun makes exactly those calls.
    ``policy``: the run's time bound and cache reuse (:class:`handbook.core.runner.RunPolicy`).
    """
    from datasets import Dataset

    prompts = list(dict.fromkeys(p.strip() for p in seed_prompts))
    if not prompts:
        raise ValueError("no seed prompts: a dialogue needs one to start from")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"seed prompt {i} is empty")
    user = user or teacher
    steps = 2 * config.num_turns - 1
    meta = {"config": asdict(config), "teacher": describe_backend(teacher), "user": describe_backend(user),
            "user_simulator_sha256": text_sha256(USER_SIMULATOR_SYSTEM),
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
    ids = [prompt_id(p) for p in prompts]

    with ResumableCalls(cache_path, meta, ("prompt_id", "step"), len(prompts) * steps, "dSFT dialogues (calls)",
                        progress, policy) as calls:
        done = calls.results
        for step in range(steps):  # a phase per step: its conversations need the earlier steps' results
            backend = teacher if step % 2 == 0 else user
            sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens, config.seed + step)
            calls.run([((pid, step), _step_request(p, pid, done, step))
                       for p, pid in zip(prompts, ids) if (pid, step) not in done],
                      lambda batch: [r if isinstance(r, Exception) else {"content": r.strip()}
                                     for r in chat_with_errors(backend, batch, sampling)],
                      config.batch_size)
    rows = [{"prompt": p, "prompt_id": pid, "messages": _messages_from(p, pid, done, steps)} for p, pid in zip(prompts, ids)]
    whole = [r for r in rows if all(m["content"].strip() for m in r["messages"])]
    if len(whole) < len(rows):  # an empty reply is recorded (it is the teacher's answer) but is no dSFT data
        logger.warning("dSFT dialogues: %d of %d dialogues have an empty turn (the teacher or the user simulator "
                       "replied with nothing) and are left out", len(rows) - len(whole), len(rows))
    if not whole:
        raise EmptyOutput(f"dSFT dialogues: every one of the {len(rows)} dialogues has an empty turn; nothing to "
                          "save (see the cache for the teacher's replies)")
    return Dataset.from_list(whole)


# Each of a seed prompt's dialogues is its own set, generated with its own seed: set r uses seed + 1000·r.
SET_SEED_STRIDE = 1000


def generate_dialogue_sets(seed_prompts: Sequence[str], teacher: ChatBackend, config: DialogueConfig,
                           replies_per_prompt: int, cache_paths: Sequence[str | os.PathLike | None] | None = None,
                           progress: bool = True, policy: RunPolicy = RunPolicy()):
    """``replies_per_prompt`` dialogues per seed prompt, as one dataset: set ``r`` is :func:`generate_dialogues`
    with ``config``'s seed + :data:`SET_SEED_STRIDE`·r, resumable through ``cache_paths[r]``. The one dialogue
    flow of the stage — the CLI (``python -m handbook.dsft_data``), the toy world's dSFT data and notebook 01 all
    call it, so the same arguments give the same rows wherever they run."""
    from datasets import concatenate_datasets

    if replies_per_prompt < 1:
        raise ValueError(f"replies_per_prompt must be at least 1, got {replies_per_prompt}")
    paths = list(cache_paths) if cache_paths is not None else [None] * replies_per_prompt
    if len(paths) != replies_per_prompt:
        raise ValueError(f"{len(paths)} cache paths for {replies_per_prompt} dialogue sets")
    named = [str(Path(x).resolve()) for x in paths if x is not None]
    if len(set(named)) < len(named):  # two sets in one cache: the second would reuse the first's dialogues
        raise ValueError(f"the {replies_per_prompt} dialogue sets need a cache each; given {named}")
    sets = [generate_dialogues(seed_prompts, teacher, replace(config, seed=config.seed + SET_SEED_STRIDE * r), path,
                               progress=progress, policy=policy) for r, path in enumerate(paths)]
    return concatenate_datasets(sets)
