import json
import re
import time

import pytest

from handbook.core.chat_templates import ZEPHYR_CHAT_TEMPLATE, resolve_chat_template
from handbook.toy import build, world


def test_tokenizer_round_trips_every_toy_text(toy_tokenizer):
    rng = world.random.Random(0)
    for p in world.all_prompts()[::7]:
        for text in (p.text, p.follow_up_text(), world.teacher_reply(p, rng)):
            ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
            assert toy_tokenizer.decode(ids) == text
    # bytes the corpus never had still round-trip (byte-level BPE has no unknown token in practice)
    odd = "Ünïcödé ✓ 🙂 tabs\tand\nnewlines"
    assert toy_tokenizer.decode(toy_tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_every_word_of_the_world_is_one_token(toy_tokenizer):
    split = []
    for p in world.all_prompts():
        for text in (p.text, p.reference_answer()):
            for word in re.findall(r"(?<= )[A-Za-z]+", text):
                if len(toy_tokenizer.tokenize(" " + word)) != 1:
                    split.append(word)
    assert not split, sorted(set(split))


def test_special_tokens(toy_tokenizer):
    for tok in ("<|system|>", "<|user|>", "<|assistant|>", "</s>", "<pad>"):
        assert len(toy_tokenizer.tokenize(tok)) == 1, tok
    assert toy_tokenizer.eos_token == "</s>" and toy_tokenizer.pad_token == "<pad>"
    assert toy_tokenizer.pad_token_id != toy_tokenizer.eos_token_id


CONVERSATION = [
    {"role": "system", "content": "Be helpful."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "2 plus 3 is 5."},
    {"role": "user", "content": "Now, what is the capital of Peru?"},
    {"role": "assistant", "content": "The capital of Peru is Lima."},
]


def test_chat_template_renders_zephyr_format(toy_tokenizer):
    rendered = toy_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert rendered == (
        "<|system|>\nBe helpful.</s>\n"
        "<|user|>\nWhat is 2 plus 3?</s>\n"
        "<|assistant|>\n2 plus 3 is 5.</s>\n"
        "<|user|>\nNow, what is the capital of Peru?</s>\n"
        "<|assistant|>\nThe capital of Peru is Lima.</s>\n"
    )
    prompt = toy_tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nWhat is 2 plus 3?</s>\n<|assistant|>\n")


def test_chat_template_rejects_unknown_roles(toy_tokenizer):
    with pytest.raises(Exception, match="Unknown role: tool"):
        toy_tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_generation_markers_mask_exactly_the_assistant_tokens(toy_tokenizer):
    enc = toy_tokenizer.apply_chat_template(CONVERSATION, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert len(ids) == len(mask)
    spans, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            spans.append(toy_tokenizer.decode(current))
            current = []
    assert spans == ["2 plus 3 is 5.</s>", "The capital of Peru is Lima.</s>"]


def test_resolve_chat_template():
    assert resolve_chat_template("zephyr") == ZEPHYR_CHAT_TEMPLATE
    custom = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert resolve_chat_template(custom) == custom
    with pytest.raises(ValueError, match="unknown chat template 'chatml2'"):
        resolve_chat_template("chatml2")


def test_toy_base_is_built_once_and_cached(tmp_path):
    small = build.ToyModelConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1)
    start = time.perf_counter()
    path = build.toy_base_path(small, cache_dir=tmp_path)
    first = time.perf_counter() - start
    assert (path / "BUILD_OK").exists() and (path / "model.safetensors").exists()
    assert json.loads((path / "toy_config.json").read_text())["hidden_size"] == 32
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    again = build.toy_base_path(small, cache_dir=tmp_path)
    assert again == path and (path / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    # a different configuration is a different build
    other = build.toy_base_path(build.ToyModelConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                                     num_key_value_heads=1, seed=1), cache_dir=tmp_path)
    assert other != path
    assert not list(tmp_path.glob(".building-*"))  # no half-built leftovers
    assert first < 60


def test_tokenizer_trains_fast():
    corpus = build.toy_corpus()
    start = time.perf_counter()
    tok = build.train_tokenizer(corpus=corpus)
    assert time.perf_counter() - start < 5  # ~0.7 s on 2 cores; a generous bound, not a benchmark
    assert 1000 < len(tok) <= build.ToyModelConfig().vocab_size


def test_toy_base_loads_with_transformers(toy_base):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_base)
    model = AutoModelForCausalLM.from_pretrained(toy_base)
    assert type(model).__name__ == "MistralForCausalLM"
    assert model.config.vocab_size == len(tok)
    assert 300_000 < sum(p.numel() for p in model.parameters()) < 2_000_000
    assert tok.chat_template == ZEPHYR_CHAT_TEMPLATE


def test_toy_students_built_says_whether_the_first_call_would_train(tmp_path):
    from handbook.toy import students

    assert students.toy_students_built(cache_dir=tmp_path) is False       # notebook 02 then says "trained just now"
    _, target = students._students_dir(tmp_path, students.RECIPE)
    target.mkdir(parents=True)
    (target / "BUILD_OK").write_text("")
    assert students.toy_students_built(cache_dir=tmp_path) is True        # ... and "reused" once it is there
    assert students.toy_students(cache_dir=tmp_path)["dsft"] == str(target / "final")   # and nothing is trained
