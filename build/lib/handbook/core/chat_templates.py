"""Chat templates.

Zephyr's format: every turn is ``<|role|>\\n{content}{eos}\\n``; the generation prompt is
``<|assistant|>\\n``. The version here wraps each assistant turn's content and end-of-sequence
token in ``{% generation %}`` markers, so ``apply_chat_template(..., return_assistant_tokens_mask=True)``
(and with it TRL's ``assistant_only_loss``) knows which tokens the assistant wrote. Rendering is
byte-for-byte the same as Zephyr's template without the markers.
"""

ZEPHYR_CHAT_TEMPLATE = (
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

CHAT_TEMPLATES = {"zephyr": ZEPHYR_CHAT_TEMPLATE}


def resolve_chat_template(name_or_template: str) -> str:
    """A template by name (``"zephyr"``) or a Jinja template string passed through unchanged."""
    if name_or_template in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[name_or_template]
    if "{%" in name_or_template or "{{" in name_or_template:
        return name_or_template
    raise ValueError(
        f"unknown chat template {name_or_template!r}: use one of {sorted(CHAT_TEMPLATES)} or a Jinja template string"
    )
