"""What the toy world's names mean in a recipe: its backend types and its model names.

* Backend types ``toy`` (the teacher, :class:`~handbook.toy.teacher.ToyTeacher`), ``toy-judge``
  (the AIF rater) and ``toy-mt-judge`` (the MT-Bench judge), beside the core's ``transformers``,
  ``vllm`` and ``openai`` (:func:`build_backend`).
* Model names ``toy`` (the toy base), ``toy-dsft`` and ``toy-dsft-early`` (the cached students),
  wherever a model path goes (:func:`resolve_toy_name`).
"""

from __future__ import annotations

from ..core import backends as core
from . import world
from .judges import ToyJudge, ToyMTJudge
from .students import resolve_toy_name
from .teacher import ToyTeacher


def _toy_teacher(teacher_config: dict | None = None, **kwargs):
    return ToyTeacher(world.TeacherConfig(**teacher_config) if teacher_config else None, **kwargs)


TOY_BACKENDS = {"toy": _toy_teacher, "toy-judge": ToyJudge, "toy-mt-judge": ToyMTJudge}


def build_backend(spec: dict, shard: bool | None = None, deadline: core.Deadline | None = None) -> core.ChatBackend:
    """:func:`handbook.core.backends.build_backend` with the toy world's types and model names::

        {type: toy, latency: 0.0}                       # the toy teacher
        {type: toy-judge, noise: 0.1}                   # the toy teacher as a rater
        {type: transformers, model_name_or_path: toy-dsft}   # a cached toy student
    """
    spec = dict(spec)
    if spec.get("type") == "transformers":
        spec["model_name_or_path"] = resolve_toy_name(spec.get("model_name_or_path"))
    return core.build_backend(spec, shard=shard, types=TOY_BACKENDS, deadline=deadline)
