"""dSFT data: dialogues written by a teacher that also plays the user (self-instruct / UltraChat).

For each seed prompt x0 the teacher answers (y0); then, playing the user, it writes a refined or
follow-up instruction x1 from (x0, y0); the teacher answers x1; and so on for ``num_turns``
assistant turns. The result has ``ultrachat_200k``'s schema: ``prompt``, ``prompt_id`` (SHA-256
of the prompt), ``messages``.

Generation is resumable. Every finished call is appended to a JSONL cache as it arrives
(``{"prompt_id", "step", "content"}``); a restarted run with the same arguments reads the cache,
skips every finished call and continues each dialogue where it stopped, so it ends with exactly
the rows of an uninterrupted run. The cache's first line records the arguments; resuming with
different ones is refused.

    python -m handbook.dsft_data --config my_data.yaml [--key value ...]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..core.backends import ChatBackend, Sampling
from ..core.data import prompt_id
from ..core.runner import CallCache

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
    """The dialogue so far: the prompt, then each finished step (odd steps are user turns)."""
    messages = [{"role": "user", "content": prompt}]
    for step in range(steps):
        content = done.get((pid, step))
        if content is None:
            break
        messages.append({"role": "assistant" if step % 2 == 0 else "user", "content": content})
    return messages


def generate_dialogues(
    seed_prompts: Sequence[str],
    teacher: ChatBackend,
    config: DialogueConfig = DialogueConfig(),
    cache_path: str | os.PathLike | None = None,
    user: ChatBackend | None = None,
    progress: bool = True,
):
    """Multi-turn dialogues in ultrachat_200k's schema, one per distinct seed prompt.

    Step ``2k`` is the teacher's answer to the k-th user turn; step ``2k+1`` is the next user turn,
    written by ``user`` (default: the teacher itself) from the transcript so far. Steps run
    breadth-first in batches; each finished batch is appended to the cache at once.
    """
    from datasets import Dataset

    prompts = list(dict.fromkeys(p.strip() for p in seed_prompts))
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"seed prompt {i} is empty")
    user = user or teacher
    steps = 2 * config.num_turns - 1
    meta = {"config": asdict(config), "teacher": teacher.name, "user": user.name,
            "prompts_sha256": hashlib.sha256("\n".join(prompts).encode()).hexdigest()}
    cache = CallCache(cache_path, meta, ("prompt_id", "step")) if cache_path is not None else None
    done: dict[tuple[str, int], str] = {k: r["content"] for k, r in cache.records.items()} if cache else {}
    ids = [prompt_id(p) for p in prompts]

    total = len(prompts) * steps
    bar = tqdm(total=total, desc="dSFT dialogues (calls)", disable=not progress, initial=len(done))
    for step in range(steps):
        backend = teacher if step % 2 == 0 else user
        todo = [(p, pid) for p, pid in zip(prompts, ids) if (pid, step) not in done]
        for start in range(0, len(todo), config.batch_size):
            chunk = todo[start:start + config.batch_size]
            conversations = []
            for p, pid in chunk:
                messages = _messages_from(p, pid, done, step)
                conversations.append(messages if step % 2 == 0 else user_turn_request(messages))
            sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens, config.seed + step)
            replies = backend.chat(conversations, sampling)
            records = [{"prompt_id": pid, "step": step, "content": r.strip()} for (_, pid), r in zip(chunk, replies)]
            for rec in records:
                done[(rec["prompt_id"], rec["step"])] = rec["content"]
            if cache:
                cache.append(records)
            bar.update(len(records))
    bar.close()
    rows = [{"prompt": p, "prompt_id": pid, "messages": _messages_from(p, pid, done, steps)} for p, pid in zip(prompts, ids)]
    return Dataset.from_list(rows)


def load_seed_prompts(source: str) -> list[str]:
    """Prompts from a text file (one per line) or a JSONL file (a ``prompt`` field); errors name file and line."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"seed prompt file {source!r} does not exist")
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            rec = json.loads(line)
            if not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
                raise ValueError(f"{source}, line {n}: field 'prompt' is missing or empty")
            prompts.append(rec["prompt"])
        else:
            prompts.append(line)
    return prompts
