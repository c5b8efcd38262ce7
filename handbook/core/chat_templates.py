"""Chat templates.

Zephyr's format: every turn is ``<|role|>\\n{content}{eos}\\n``; the generation prompt is
``<|assistant|>\\n``. The version here wraps each assistant turn's content and end-of-sequence
token in ``{% generation %}`` markers, so ``apply_chat_template(..., return_assistant_tokens_mask=True)``
(and with it TRL's ``assistant_only_loss``) knows which tokens the assistant wrote. Rendering is
byte-for-byte the same as Zephyr's template without the markers.

Two templates, one turn format:

* ``zephyr`` renders the conversation as it is: no BOS token, and a system turn only when the
  conversation has one. The toy and small tiers use it (the toy tokenizer's BOS carries nothing the toy
  model needs; SmolLM2's BOS is ``<|im_start|>``, a ChatML marker that has no place in this format).
* ``zephyr_upstream`` is the token sequence of the run that produced Zephyr-7B-β, and of FastChat's
  MT-Bench answering for Zephyr: the tokenizer's BOS first, then an empty system turn
  ``<|system|>\\n</s>\\n`` when the conversation has no system turn of its own. Sources:
  huggingface/alignment-handbook's ``apply_chat_template`` inserts ``{"role": "system", "content": ""}``
  before formatting any conversation whose template knows ``<|system|>`` (``maybe_insert_system_message``);
  TRL 0.7.4 (which that run pinned) tokenized SFT text with the tokenizer's special tokens (Mistral's
  tokenizer adds ``<s>``) and put ``bos_token_id`` at the head of every DPO prompt; FastChat's ``zephyr``
  conversation template has ``system_template="<|system|>\\n{system_message}"``, ``sep="</s>"`` and the
  ChatML separator style, which writes the system part even when the message is empty, and its answer
  script tokenizes the prompt with BOS. The zephyr-7b-beta recipes use it; ``apply_chat_template`` never
  adds special tokens of its own, so the BOS has to be in the template for training and generation to
  see the same sequence.
"""

_ZEPHYR_TURNS = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% elif message['role'] in ['system', 'user'] %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}"
    "{{ raise_exception('Unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

ZEPHYR_CHAT_TEMPLATE = _ZEPHYR_TURNS

ZEPHYR_UPSTREAM_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% if not messages or messages[0]['role'] != 'system' %}{{ '<|system|>\n' + eos_token + '\n' }}{% endif %}"
    + _ZEPHYR_TURNS
)

CHAT_TEMPLATES = {"zephyr": ZEPHYR_CHAT_TEMPLATE, "zephyr_upstream": ZEPHYR_UPSTREAM_CHAT_TEMPLATE}


def resolve_chat_template(name_or_template: str) -> str:
    """A template by name (``"zephyr"``, ``"zephyr_upstream"``) or a Jinja template string passed through unchanged."""
    if name_or_template in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name_or_template]
    if "{%" in name_or_template or "{{" in name_or_template:
        return name_or_template
    raise ValueError(
        f"unknown chat template {name_or_template!r}: use one of {sorted(CHAT_TEMPLATES)} or a Jinja template string"
    )
