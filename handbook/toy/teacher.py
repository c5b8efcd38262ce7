"""The toy world's teacher behind the chat-backend interface (the stand-in for GPT-4 / ChatGPT in dSFT)."""

from __future__ import annotations

import random
import time
from dataclasses import asdict

from ..core.backends import Sampling, conversation_seed
from ..dsft.dialogues import USER_SIMULATOR_SYSTEM, parse_transcript
from . import world


class ToyTeacher:
    """The toy world's teacher behind the backend interface.

    As the assistant it answers the last user message with ``world.teacher_reply``; asked to play
    the user (a conversation whose system message is ``handbook.dsft.dialogues.USER_SIMULATOR_SYSTEM``)
    it writes a follow-up instruction of the same category from the *train* split. Each reply is
    drawn with a random generator seeded by the conversation itself, so a reply does not depend on
    batching or on what ran before it: a resumed run reproduces an uninterrupted one exactly.
    ``latency`` (seconds per call) simulates a slow remote teacher.
    """

    name = "toy-teacher"

    def __init__(self, config=None, latency: float = 0.0):
        self.world = world
        self.config = config or world.TeacherConfig()
        self.latency = latency

    def describe(self) -> dict:
        """What determines its replies: its :class:`~handbook.toy.world.TeacherConfig` (``latency`` does not)."""
        return {"type": "toy", "name": self.name, "teacher_config": asdict(self.config)}

    def chat(self, conversations, sampling: Sampling = Sampling()) -> list[str]:
        replies = []
        for conversation in conversations:
            if self.latency:
                time.sleep(self.latency)
            rng = random.Random(conversation_seed(conversation, sampling.seed))
            if conversation and conversation[0]["role"] == "system" and conversation[0]["content"] == USER_SIMULATOR_SYSTEM:
                transcript = parse_transcript(conversation[-1]["content"])
                first = self.world.parse_prompt(transcript[0]["content"])
                replies.append(self.follow_up(first, rng).follow_up_text())
            else:
                prompt = self.world.parse_prompt(conversation[-1]["content"])
                replies.append(self.world.teacher_reply(prompt, rng, self.config))
        return replies

    def follow_up(self, first, rng: random.Random):
        """A train-split prompt of ``first``'s category about another item."""
        pool = [p for p in self.world.all_prompts(first.category) if p.split == "train" and p.item != first.item]
        return rng.choice(pool)
