"""What the toy world's names mean in a recipe: its backend types and its model names.

* Backend types ``toy`` (the teacher, :class:`~handbook.toy.teacher.ToyTeacher`), ``toy-judge``
  (the AIF rater) and ``toy-mt-judge`` (the MT-Bench judge), beside the core's ``transformers``,
  ``vllm`` and ``openai`` (:func:`build_backend`).
* Model names ``toy`` (the toy base), ``toy-dsft`` and ``toy-dsft-early`` (the cached students),
  wherever a model path goes (:func:`resolve_toy_names`: built here on first use, then resolved).
"""

from __future__ import annotations

from ..core import backends as core
from . import world
from .judges import ToyJudge, ToyMTJudge
import dataclasses

from .students import build_toy_model, resolve_toy_name
from .teacher import ToyTeacher


def _toy_teacher(teacher_config: dict | None = None, **kwargs):
    return ToyTeacher(world.TeacherConfig(**teacher_config) if teacher_config else None, **kwargs)


TOY_BACKENDS = {"toy": _toy_teacher, "toy-judge": ToyJudge, "toy-mt-judge": ToyMTJudge}


def resolve_toy_names(model_args):
    """A copy of ``model_args`` whose toy model name (``toy``, ``toy-dsft``, ``toy-dsft-early``) is the model's
    directory, the model built first if this machine lacks it (:func:`~handbook.toy.students.build_toy_model`)."""
    build_toy_model(model_args.model_name_or_path)
    return dataclasses.replace(model_args, model_name_or_path=resolve_toy_name(model_args.model_name_or_path))


def build_backend(spec: dict, shard: bool | None = None, deadline: core.Deadline | None = None,
                  resolve=resolve_toy_names) -> core.ChatBackend:
    """:func:`handbook.core.backends.build_backend` with the toy world's types and model names::

        {type: toy, latency: 0.0}                       # the toy teacher
        {type: toy-judge, noise: 0.1}                   # the toy teacher as a rater
        {type: transformers, model_name_or_path: toy-dsft}   # a cached toy student

    ``resolve``: what a ``transformers`` spec's model arguments become before the model loads (default: the toy
    names built and resolved; ``handbook.tiers.build_backend`` gives every name a recipe may use)."""
    return core.build_backend(spec, shard=shard, types=TOY_BACKENDS, deadline=deadline, resolve=resolve)
