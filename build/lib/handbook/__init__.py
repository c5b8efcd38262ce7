"""The Zephyr alignment handbook: dSFT → AI feedback → dDPO → evaluation, from toy size to 7B.

Modules, one idea each:

* ``handbook.toy`` — the offline toy world (task domain, teacher, rubric judge, tokenizer, base model)
* ``handbook.models`` — the one loading path for models and tokenizers (dtype, 4-bit, LoRA, chat template)
* ``handbook.chat_templates`` — Zephyr's chat template with generation markers
* ``handbook.generation`` — batched chat generation with a local model
* ``handbook.tiers`` — toy / small / full
* ``handbook.notebook`` and ``handbook.tutorial`` — notebook metrics and the papermill runner
"""

import logging

# bitsandbytes' CPU backend tries to fetch an optional kernel from the hub at import time and
# warns when it cannot; the handbook runs offline and bitsandbytes falls back to its own kernel.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"
