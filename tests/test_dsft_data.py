import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from handbook.core.backends import OpenAIBackend
from handbook.toy.teacher import ToyTeacher
from handbook.core.data import prompt_id
from handbook.dsft.dialogues import (DialogueConfig, generate_dialogue_sets, generate_dialogues, parse_transcript,
                                     render_transcript)
from handbook.dsft_data import DsftDataArguments, run
from handbook.dsft.filters import (DialogueError, deduplicate, drop_disclaimers, truecase, truecase_dialogues,
                              ultrachat_filters, validate_dialogue)
from handbook.toy import world


def test_dialogues_follow_the_self_instruct_loop():
    prompts = [p.text for p in world.sample_prompts(2, "train", seed=0)]
    ds = generate_dialogues(prompts, ToyTeacher(), DialogueConfig(num_turns=3), progress=False)
    assert ds.column_names == ["prompt", "prompt_id", "messages"]  # ultrachat_200k's schema
    assert len(ds) == len(prompts)
    for row, prompt in zip(ds, prompts):
        assert row["prompt"] == prompt and row["prompt_id"] == prompt_id(prompt)
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * 3
        assert msgs[0]["content"] == prompt
        first = world.parse_prompt(prompt)
        for user_turn in msgs[2::2]:  # the teacher, playing the user, refined the instruction
            q = world.parse_prompt(user_turn["content"])
            assert q.category == first.category and q.split == "train"
        validate_dialogue(row, 0)


def test_one_dialogue_flow_for_the_cli_the_toy_data_and_the_notebook(tmp_path):
    """Set r of a seed prompt's dialogues is generate_dialogues with seed + 1000·r; the CLI and the toy world's dSFT
    data both go through generate_dialogue_sets and give the same rows for the same arguments."""
    from handbook.dsft_data import DsftDataArguments, run
    from handbook.toy.dialogues import toy_dsft_dataset

    prompts = [p.text for p in world.sample_prompts(2, "train", 5, allow_fewer=True)]   # the toy data's seed prompts
    config = DialogueConfig(num_turns=2, seed=5, batch_size=256)
    sets = generate_dialogue_sets(prompts, ToyTeacher(), config, 2, progress=False).to_list()
    by_hand = [row for r in range(2) for row in generate_dialogues(
        prompts, ToyTeacher(), DialogueConfig(num_turns=2, seed=5 + 1000 * r, batch_size=256), progress=False).to_list()]
    assert sets == by_hand and len(sets) == 2 * len(prompts)
    with pytest.raises(ValueError, match="1 cache paths for 2 dialogue sets"):
        generate_dialogue_sets(prompts, ToyTeacher(), config, 2, [None], progress=False)

    toy, _ = toy_dsft_dataset(prompts_per_category=2, replies_per_prompt=2, eval_prompts_per_category=1, seed=5)
    assert toy["train"].to_list() == ultrachat_filters(by_hand)[0]   # the toy data: the same rows, then the filters
    cli = run(DsftDataArguments(output_dir=str(tmp_path / "cli"), teacher={"type": "toy"}, seed_prompts="toy",
                                toy_prompts_per_category=2, seed=5, num_turns=2, replies_per_prompt=2,
                                temperature=0.7, max_new_tokens=512, batch_size=256), progress=False)
    assert cli.to_list() == sets


def test_prompt_id_is_sha256_of_the_prompt():
    import hashlib

    assert prompt_id("hello") == hashlib.sha256(b"hello").hexdigest()


def test_transcript_round_trip():
    msgs = [{"role": "user", "content": "Hi\n[assistant]\nnot a turn"}, {"role": "assistant", "content": "Hello!"}]
    assert parse_transcript(render_transcript(msgs))[-1] == msgs[-1]


def _args(tmp_path, name, latency=0.0, **kw):
    return dict(output_dir=str(tmp_path / name), seed_prompts="toy", toy_prompts_per_category=10,
                teacher={"type": "toy", "latency": latency}, num_turns=2, batch_size=4, **kw)


def _cache_records(path):
    lines = path.read_text().splitlines()
    return [json.loads(x) for x in lines[1:]]


def test_killed_generation_resumes_without_losing_or_repeating_calls(tmp_path):
    from datasets import load_from_disk

    reference = run(DsftDataArguments(**_args(tmp_path, "reference")), progress=False)
    total_calls = len(reference) * 3

    args = _args(tmp_path, "killed", latency=0.02)
    config = tmp_path / "dsft_data.yaml"
    config.write_text(yaml.safe_dump(args))
    cache = tmp_path / "killed.cache.jsonl"
    cmd = [sys.executable, "-m", "handbook.dsft_data", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (cache.exists() and len(cache.read_text().splitlines()) > 60):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _cache_records(cache)
    assert 0 < len(before) < total_calls  # killed mid-way

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = _cache_records(cache)
    assert after[:len(before)] == before  # finished calls kept as they were ...
    keys = [(r["prompt_id"], r["step"]) for r in after]
    assert len(keys) == len(set(keys)) == total_calls  # ... and none made twice
    resumed = load_from_disk(str(tmp_path / "killed"))
    assert resumed.to_list() == reference.to_list()  # exactly the rows of an uninterrupted run


def test_a_torn_last_line_is_dropped_and_redone(tmp_path):
    prompts = [p.text for p in world.sample_prompts(1, "train", seed=0)]
    cache = tmp_path / "c.jsonl"
    full = generate_dialogues(prompts, ToyTeacher(), DialogueConfig(), cache, progress=False)
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # cut mid-record
    again = generate_dialogues(prompts, ToyTeacher(), DialogueConfig(), cache, progress=False)
    assert again.to_list() == full.to_list()
    assert len(_cache_records(cache)) == len(lines) - 1


def test_resuming_with_other_arguments_is_refused(tmp_path):
    prompts = [p.text for p in world.sample_prompts(1, "train", seed=0)]
    cache = tmp_path / "c.jsonl"
    generate_dialogues(prompts, ToyTeacher(), DialogueConfig(num_turns=2), cache, progress=False)
    with pytest.raises(ValueError, match="different arguments"):
        generate_dialogues(prompts, ToyTeacher(), DialogueConfig(num_turns=3), cache, progress=False)


def test_dialogues_from_a_real_teacher_over_http(llama_server):
    base_url, model = llama_server
    teacher = OpenAIBackend(base_url, model, api_key_env=None, max_concurrency=2)
    prompts = ["Give me a tip for learning to cook.", "What should I pack for a day hike?"]
    ds = generate_dialogues(prompts, teacher, DialogueConfig(num_turns=2, max_new_tokens=48, temperature=0.7),
                            progress=False)
    for row in ds:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
        assert all(m["content"].strip() for m in row["messages"])
        assert row["messages"][2]["content"] not in prompts  # the teacher wrote a new user turn


# --- filters -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("Hello. how are you?", "Hello. How are you?"),
    ("the sky is blue! it is.", "The sky is blue! It is."),
    ("Use e.g. apples. then stop.", "Use e.g. apples. Then stop."),
    ("Run `ls -la`. then `cd x`.", "Run `ls -la`. Then `cd x`."),
    ("Code:\n```\nx = 1. y = 2\n```\ndone.", "Code:\n```\nx = 1. y = 2\n```\ndone."),
    ("See www.example.com. it works.", "See www.example.com. It works."),
    ("Already Fine. Nothing to do.", "Already Fine. Nothing to do."),
])
def test_truecase(text, expected):
    assert truecase(text) == expected


def _row(*contents):
    roles = ["user", "assistant"] * len(contents)
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, contents)]}


def test_filters_report_what_they_did():
    rows = [
        _row("hi. what is up?", "all good. thanks."),
        _row("Do you like jazz?", "As an AI language model, I don't have personal preferences, but jazz is popular."),
        _row("Are you sad?", "I do not have emotions."),
        _row("Same?", "Same."),
        _row("same?", "  Same. "),
        _row("Fine question?", "A fine answer."),
    ]
    out, reports = ultrachat_filters(rows)
    assert [(r.name, r.rows_in, r.rows_out, r.changed) for r in reports] == [
        ("truecase", 6, 6, 2), ("drop_disclaimers", 6, 4, 0), ("deduplicate", 4, 3, 0)]
    assert [r.removed for r in reports] == [0, 2, 1]
    assert out[0]["messages"][0]["content"] == "Hi. What is up?"
    assert "removed" in str(reports[1])


def test_each_filter_alone():
    assert truecase_dialogues([_row("ok. fine", "yes")])[1].changed == 1
    assert drop_disclaimers([_row("q", "I don't have opinions on that.")])[1].removed == 1
    assert drop_disclaimers([_row("q", "I have an opinion: yes.")])[1].removed == 0
    assert deduplicate([_row("a", "b"), _row("A", "b ")])[1].removed == 1


@pytest.mark.parametrize("row,message", [
    ({"prompt": "x"}, "row 7: field 'messages' is missing"),
    ({"messages": []}, "row 7: field 'messages' must be a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, r"row 7: messages\[0\].role: unknown role 'bot'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     r"row 7: messages\[1\].role: turns must alternate"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]},
     r"row 7: messages\[1\].content is empty"),
    ({"messages": [{"role": "user", "content": "a"}]}, "must end with an assistant turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}]},
     "a system message may only come first"),
    ({"messages": [{"role": "user"}]}, r"messages\[0\] must have 'role' and 'content'"),
])
def test_malformed_rows_name_the_row_and_field(row, message):
    with pytest.raises(DialogueError, match=message):
        validate_dialogue(row, 7)
