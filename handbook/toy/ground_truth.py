"""The toy world's ground truth for checking the AIF stage: the rubric's score of a reply.

``truth_score`` is the ``truth`` that :mod:`handbook.aif.agreement` takes: notebook 03 checks the toy judge
(:func:`handbook.aif.agreement.judge_agreement`) and the binarization rules
(:func:`handbook.aif.agreement.compare_rules`) against it. Only toy-world prompts have a ground truth.
"""

from __future__ import annotations

from . import world


def truth_score(prompt: str, reply: str) -> int:
    """The rubric's score (1–10) of ``reply`` to the toy prompt ``prompt``; a prompt the toy world cannot
    parse raises ``ValueError`` naming it."""
    return world.judge(prompt, reply).score
