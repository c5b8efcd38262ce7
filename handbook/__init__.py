"""The Zephyr alignment handbook: dSFT → AI feedback → dDPO → evaluation, from toy size to 7B.

The package mirrors the paper, one sub-package per stage, a core below them and the toy world above:

* ``handbook.dsft`` — dSFT: teacher-written dialogues (``dialogues``), ultrachat_200k's ``filters``, ``training``
* ``handbook.aif`` — AIF: the response ``pool``, UltraFeedback-style ``rating``, ``binarize``, ``ultrafeedback``
* ``handbook.ddpo`` — dDPO: Eq. 1 (``objective``), length-aware ``batching``, ``training``
* ``handbook.evaluation`` — ``mt_bench``, ``win_rate``, ``judge_prompts``, ``plots``
* ``handbook.core`` — what every stage stands on: ``models``, ``backends``, ``generation``, ``configs``,
  the resumable ``runner``, ``data``, ``distributed``; it knows no stage and no toy
* ``handbook.toy`` — the offline toy world and every toy stand-in (teacher, judges, data, students)
* on top: the entry points (``python -m handbook.sft`` / ``dpo`` / ``dsft_data`` / ``aif_data`` / ``evaluate`` / ``merge``),
  ``handbook.tiers`` (the tier table), ``handbook.tutorial``, ``handbook.notebook``, ``handbook.exercises``,
  ``handbook.versus_paper`` and ``handbook.tools``

Imports flow one way: toy world → stages → core (``tests/test_architecture.py``).
"""

import logging

# bitsandbytes' CPU backend tries to fetch an optional kernel from the hub at import time and
# warns when it cannot; the handbook runs offline and bitsandbytes falls back to its own kernel.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"
