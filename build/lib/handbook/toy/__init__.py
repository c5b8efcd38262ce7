"""The offline toy world: its domain (``world``) and its tokenizer + base model (``build``)."""

from .build import ToyModelConfig, toy_base_path
from .world import (
    CATEGORIES,
    CONSTRAINTS,
    Judgement,
    Prompt,
    TeacherConfig,
    all_prompts,
    judge,
    parse_prompt,
    sample_prompts,
    teacher_reply,
    two_turn_questions,
)

__all__ = [
    "CATEGORIES", "CONSTRAINTS", "Judgement", "Prompt", "TeacherConfig", "ToyModelConfig",
    "all_prompts", "judge", "parse_prompt", "sample_prompts", "teacher_reply", "toy_base_path",
    "two_turn_questions",
]
