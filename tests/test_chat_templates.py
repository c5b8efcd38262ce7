"""The two Zephyr templates against the sources they follow.

``zephyr_upstream`` must produce the token sequence of the run that produced Zephyr-7B-β and of FastChat's answering
for Zephyr. FastChat's rule (fastchat/conversation.py, ``SeparatorStyle.CHATML``, the ``zephyr`` conversation
template: ``system_template="<|system|>\\n{system_message}"``, roles ``<|user|>`` / ``<|assistant|>``, ``sep="</s>"``)
is restated here from that source: the system part is written, followed by the separator and a newline, whenever it
is not the empty string — and with an empty system message it is ``"<|system|>\\n"``, so it is always written; each
finished turn is ``role + "\\n" + message + sep + "\\n"``, the turn to answer is ``role + "\\n"``. The prompt is then
tokenized with the tokenizer's BOS.
"""

import pytest

from handbook.core.chat_templates import (ZEPHYR_CHAT_TEMPLATE, ZEPHYR_UPSTREAM_CHAT_TEMPLATE,
                                          resolve_chat_template)


def fastchat_zephyr_prompt(turns: list[tuple[str, str | None]], system_message: str = "") -> str:
    """FastChat's CHATML rendering with the zephyr template's fields (see the module docstring)."""
    system_prompt = "<|system|>\n" + system_message
    out = "" if system_prompt == "" else system_prompt + "</s>" + "\n"
    for role, message in turns:
        out += f"{role}\n{message}</s>\n" if message else f"{role}\n"
    return out


@pytest.fixture()
def upstream_tokenizer(toy_tokenizer):
    tok = toy_tokenizer.__class__.from_pretrained(toy_tokenizer.name_or_path)
    tok.chat_template = resolve_chat_template("zephyr_upstream")
    return tok


TWO_TURNS = [
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "2 plus 3 is 5."},
    {"role": "user", "content": "Now, what is the capital of Peru?"},
]


def test_upstream_template_is_fastchats_zephyr_prompt_after_bos(upstream_tokenizer):
    prompt = upstream_tokenizer.apply_chat_template(TWO_TURNS, tokenize=False, add_generation_prompt=True)
    expected = fastchat_zephyr_prompt([("<|user|>", TWO_TURNS[0]["content"]), ("<|assistant|>", TWO_TURNS[1]["content"]),
                                       ("<|user|>", TWO_TURNS[2]["content"]), ("<|assistant|>", None)])
    assert prompt == "<s>" + expected
    assert prompt.startswith("<s><|system|>\n</s>\n<|user|>\n")
    ids = upstream_tokenizer.apply_chat_template(TWO_TURNS, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[0] == upstream_tokenizer.bos_token_id and ids.count(upstream_tokenizer.bos_token_id) == 1


def test_upstream_template_keeps_a_system_turn_of_the_conversations_own(upstream_tokenizer):
    conv = [{"role": "system", "content": "Be brief."}] + TWO_TURNS[:2]
    rendered = upstream_tokenizer.apply_chat_template(conv, tokenize=False)
    assert rendered == "<s>" + fastchat_zephyr_prompt([("<|user|>", conv[1]["content"]),
                                                       ("<|assistant|>", conv[2]["content"])], "Be brief.")
    assert rendered.count("<|system|>") == 1


def test_zephyr_template_is_the_upstream_one_without_bos_and_empty_system(toy_tokenizer, upstream_tokenizer):
    plain = toy_tokenizer.apply_chat_template(TWO_TURNS[:2], tokenize=False)
    upstream = upstream_tokenizer.apply_chat_template(TWO_TURNS[:2], tokenize=False)
    assert upstream == "<s><|system|>\n</s>\n" + plain
    assert resolve_chat_template("zephyr") == ZEPHYR_CHAT_TEMPLATE
    assert resolve_chat_template("zephyr_upstream") == ZEPHYR_UPSTREAM_CHAT_TEMPLATE


def test_upstream_template_marks_exactly_the_assistant_tokens(upstream_tokenizer):
    conv = TWO_TURNS + [{"role": "assistant", "content": "The capital of Peru is Lima."}]
    enc = upstream_tokenizer.apply_chat_template(conv, return_dict=True, return_assistant_tokens_mask=True)
    spans, current = [], []
    for i, m in zip(enc["input_ids"], enc["assistant_masks"]):
        if m:
            current.append(i)
        elif current:
            spans.append(upstream_tokenizer.decode(current))
            current = []
    assert spans == ["2 plus 3 is 5.</s>", "The capital of Peru is Lima.</s>"]


def test_dpo_prompt_is_a_prefix_of_prompt_and_answer(upstream_tokenizer):
    """TRL's DPO tokenization takes the completion where the tokenized prompt and prompt+answer part
    (dpo_trainer.tokenize_fn): the BOS and the empty system turn must stay in the shared prefix."""
    prompt = TWO_TURNS[:1]
    p = upstream_tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    full = upstream_tokenizer.apply_chat_template(prompt + [TWO_TURNS[1]], return_dict=True)["input_ids"]
    assert full[:len(p)] == p and p[0] == upstream_tokenizer.bos_token_id
    assert upstream_tokenizer.decode(full[len(p):]) == "2 plus 3 is 5.</s>\n"
