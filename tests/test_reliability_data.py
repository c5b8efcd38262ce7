"""Issue #15, items 7, 9 and 10: eval rows never silently equal train rows; bad files name file, line and
field; silently wrong data (roles, contexts, identical or empty replies, empty inputs, duplicate or unknown
MT-Bench questions, an empty win-rate) becomes an error or a counted, named drop."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from handbook.aif.pipeline import run_convert
from handbook.core.data import disable_eval_without_dataset, read_jsonl, read_prompts
from handbook.ddpo.training import DPODataArguments, load_dpo_datasets, to_trl_pairs
from handbook.dsft.filters import DialogueError
from handbook.dsft.training import SFTDataArguments, load_sft_datasets
from handbook.evaluation.mt_bench import CATEGORIES, load_questions
from handbook.evaluation.win_rate import pairwise_win_rate

ROOT = Path(__file__).resolve().parent.parent


def _conv(*turns):
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def _triple(i, chosen="good", rejected="bad"):
    return {"prompt": f"p{i}", "chosen": _conv(f"p{i}", chosen), "rejected": _conv(f"p{i}", rejected)}


def _dialogue(i):
    return {"messages": _conv(f"q{i}", f"a{i}")}


def _jsonl(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


def _prompts(ds):
    return [r["prompt"][0]["content"] for r in ds]


# --- item 7: eval rows ---------------------------------------------------------------------------
def test_single_saved_dataset_has_no_eval_and_says_so(tmp_path, caplog):
    """What `aif generate` writes as triples/: before, train == eval (the same 6 rows)."""
    Dataset.from_list([_triple(i) for i in range(6)]).save_to_disk(str(tmp_path / "triples"))
    with caplog.at_level(logging.WARNING, logger="handbook.core.data"):
        train, evaluation = load_dpo_datasets(DPODataArguments(dataset_name=str(tmp_path / "triples")))
    assert len(train) == 6 and evaluation is None
    assert "single dataset with no named splits: no eval set" in caplog.text and "test_split_size" in caplog.text


def test_jsonl_sft_data_has_no_eval_unless_test_split_size(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [_dialogue(i) for i in range(8)])
    train, evaluation, _ = load_sft_datasets(SFTDataArguments(dataset_name=str(path)))
    assert len(train) == 8 and evaluation is None
    train, evaluation, _ = load_sft_datasets(SFTDataArguments(dataset_name=str(path), test_split_size=0.25))
    assert (len(train), len(evaluation)) == (6, 2)
    firsts = lambda ds: {r["messages"][0]["content"] for r in ds}  # noqa: E731
    assert not firsts(train) & firsts(evaluation) and firsts(train) | firsts(evaluation) == {f"q{i}" for i in range(8)}
    train_order = [r["messages"][0]["content"] for r in train]
    assert train_order == sorted(train_order)  # the training rows keep their order


def test_test_split_size_is_deterministic_with_its_seed(tmp_path):
    Dataset.from_list([_triple(i) for i in range(20)]).save_to_disk(str(tmp_path / "triples"))
    load = lambda **kw: load_dpo_datasets(DPODataArguments(dataset_name=str(tmp_path / "triples"), **kw))  # noqa: E731
    train, evaluation = load(test_split_size=5)
    again = load(test_split_size=5)[1]
    other = load(test_split_size=5, test_split_seed=1)[1]
    assert (len(train), len(evaluation)) == (15, 5)
    assert _prompts(evaluation) == _prompts(again) and _prompts(evaluation) != _prompts(other)
    assert not set(_prompts(train)) & set(_prompts(evaluation))


@pytest.mark.parametrize("size,message", [(0, "invalid value 0"), (2.5, "invalid value 2.5"), (-0.1, "invalid value")])
def test_bad_test_split_size_is_refused_before_work(size, message):
    with pytest.raises(ValueError, match=f"test_split_size.*{message}"):
        DPODataArguments(dataset_name="x", test_split_size=size)


def test_test_split_size_that_leaves_nothing_to_train_is_an_error(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [_dialogue(i) for i in range(3)])
    with pytest.raises(ValueError, match="holds out 3 of 3 rows"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(path), test_split_size=3))


def test_missing_named_split_names_dataset_and_its_splits(tmp_path):
    DatasetDict(train_prefs=Dataset.from_list([_triple(0)]), validation=Dataset.from_list([_triple(1)])).save_to_disk(
        str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"dd has no split 'test_prefs'; it has 'train_prefs', 'validation'"):
        load_dpo_datasets(DPODataArguments(dataset_name=str(tmp_path / "dd")))
    train, evaluation = load_dpo_datasets(DPODataArguments(dataset_name=str(tmp_path / "dd"),
                                                           dataset_test_split="validation"))
    assert (_prompts(train), _prompts(evaluation)) == (["p0"], ["p1"])  # a named split that exists: as before


def test_tier_single_dataset_choice_still_holds_out(tmp_path):
    """handbook.tiers passes `dataset_test_split: None` for a single saved dataset (notebook 03's triples)."""
    from handbook.tiers import dpo_datasets

    Dataset.from_list([_triple(i) for i in range(8)]).save_to_disk(str(tmp_path / "triples"))
    args = DPODataArguments(dataset_name=str(tmp_path / "triples"), dataset_train_split="train",
                            dataset_test_split=None)
    train, evaluation = dpo_datasets(args, hold_out=0.25)
    assert (len(train), len(evaluation)) == (6, 2) and not set(_prompts(train)) & set(_prompts(evaluation))


def test_no_eval_set_turns_eval_strategy_off_with_a_log_line(tmp_path, caplog):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=1, report_to=[], use_cpu=True)
    with caplog.at_level(logging.WARNING):
        disable_eval_without_dataset(args, None)
    assert args.eval_strategy == "no" and "no eval set: eval_strategy 'steps' becomes 'no'" in caplog.text
    kept = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", eval_steps=1, report_to=[], use_cpu=True)
    disable_eval_without_dataset(kept, Dataset.from_list([{"a": 1}]))
    assert kept.eval_strategy == "steps"
    best = TrainingArguments(output_dir=str(tmp_path), eval_strategy="steps", save_strategy="steps",
                             load_best_model_at_end=True, report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="load_best_model_at_end needs an eval set"):
        disable_eval_without_dataset(best, None)


def test_sft_trains_without_eval_set_when_the_recipe_asks_for_eval(tmp_path, caplog):
    """Before: the Trainer refused (`eval_strategy` steps, no eval_dataset) after loading the model."""
    from trl import SFTConfig

    from handbook.core.configs import read_recipe
    from handbook.core.models import ModelArguments
    from handbook.sft import train

    path = _jsonl(tmp_path / "d.jsonl", [_dialogue(i) for i in range(4)])
    model_args, data_args, training_args = read_recipe(
        ROOT / "recipes" / "toy" / "sft" / "config.yaml", [ModelArguments, SFTDataArguments, SFTConfig],
        output_dir=str(tmp_path / "out"), dataset_name=str(path), max_steps=1, eval_strategy="steps", eval_steps=1,
        logging_steps=1, save_strategy="no")
    with caplog.at_level(logging.WARNING):
        trainer = train(model_args, data_args, training_args)
    assert trainer.eval_dataset is None and trainer.state.global_step == 1
    assert "no eval set" in caplog.text


# --- item 9: bad files name file and line ---------------------------------------------------------
def test_torn_last_line_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "torn.jsonl", [_dialogue(0), _dialogue(1)], tail='{"messages": [{"ro')
    with pytest.raises(ValueError, match=r"torn.jsonl, line 3: not JSON.*last line is cut short"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(path)))
    path = _jsonl(tmp_path / "torn_dpo.jsonl", [_triple(0)], tail='{"prompt": "p1", "cho')
    with pytest.raises(ValueError, match=r"torn_dpo.jsonl, line 2: not JSON"):
        load_dpo_datasets(DPODataArguments(dataset_name=str(path)))


def test_non_utf8_byte_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(_dialogue(0)).encode() + b"\n" + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    with pytest.raises(ValueError, match=r"latin1.jsonl, line 2: not UTF-8 \(byte 0xe9"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(path)))
    text = tmp_path / "prompts.txt"
    text.write_bytes(b"ok\n\xff\n")
    with pytest.raises(ValueError, match=r"prompts.txt, line 2: not UTF-8"):
        read_prompts(text)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file_is_an_error_naming_it(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"empty.jsonl: no rows \(the file is empty\)"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(path)))
    with pytest.raises(ValueError, match=r"empty.jsonl: no rows \(the file is empty\)"):
        load_dpo_datasets(DPODataArguments(dataset_name=str(path)))


def test_bad_row_in_a_file_names_its_line_and_field(tmp_path):
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_dialogue(0)) + "\n\n" + json.dumps(bad) + "\n")  # a blank line between: line 3
    with pytest.raises(DialogueError, match=r"d.jsonl, line 3: row 1: messages\[1\].content is empty"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(path)))
    path.write_text(json.dumps(_dialogue(0)) + "\n" + json.dumps({"messages": [{"role": "user", "content": 5}]}) + "\n")
    with pytest.raises(DialogueError, match=r"d.jsonl, line 2: row 1: messages\[0\].content is empty"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(path)))
    path.write_text(json.dumps(_dialogue(0)) + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"d.jsonl, line 2: not a JSON object \(a JSON list\)"):
        read_jsonl(path)


def _uf_row(instruction, responses, overall=(8, 3), source="evol_instruct"):
    return {"instruction": instruction, "source": source,
            "completions": [{"model": f"m{j}", "response": r, "overall_score": s}
                            for j, (r, s) in enumerate(zip(responses, overall))]}


def test_convert_names_line_of_torn_row_and_field_of_bad_score(tmp_path):
    path = _jsonl(tmp_path / "uf.jsonl", [_uf_row("a", ["x", "y"]), _uf_row("b", ["x", "y"])],
                  tail='{"instruction": "c", "compl')
    with pytest.raises(ValueError, match=r"uf.jsonl, line 3: not JSON"):
        run_convert(str(path), str(tmp_path / "out"), "zephyr", None, 42)
    _jsonl(path, [_uf_row("a", ["x", "y"]), _uf_row("b", ["x", "y"], overall=("ten", 3))])
    with pytest.raises(ValueError, match=r"uf.jsonl, line 2: completions\[0\]: field 'overall_score': 'ten' is not a number"):
        run_convert(str(path), str(tmp_path / "out"), "zephyr", None, 42)
    assert not (tmp_path / "out").exists()


def test_empty_questions_file_is_an_error(tmp_path):
    (tmp_path / "q.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"q.jsonl: no questions \(the file is empty\)"):
        load_questions(tmp_path / "q.jsonl")


# --- item 10: silently wrong data ------------------------------------------------------------------
def test_dpo_roles_that_do_not_alternate_are_refused(tmp_path):
    row = _triple(0)
    for key in ("chosen", "rejected"):
        row[key] = [{"role": "user", "content": "p0"}, {"role": "user", "content": "again"}, row[key][-1]]
    with pytest.raises(ValueError, match=r"row 1: chosen\[1\].role: turns must alternate user/assistant"):
        to_trl_pairs([_triple(1), row])
    path = _jsonl(tmp_path / "t.jsonl", [_triple(1), row])
    with pytest.raises(ValueError, match=r"t.jsonl, line 2: row 1: chosen\[1\].role: turns must alternate"):
        load_dpo_datasets(DPODataArguments(dataset_name=str(path)))


def test_dpo_chosen_and_rejected_with_different_contexts_are_refused(tmp_path):
    """Before: the rejected reply was trained as an answer to the chosen's conversation."""
    row = {"prompt": "p", "chosen": _conv("p", "first", "more?", "good"), "rejected": _conv("p", "OTHER", "more?", "bad")}
    with pytest.raises(ValueError, match=r"row 0: fields 'chosen' and 'rejected' differ before their last turn "
                                         r"\(at turn 1"):
        to_trl_pairs([row])
    Dataset.from_list([_triple(1), row]).save_to_disk(str(tmp_path / "triples"))  # a saved dataset: row, no line
    with pytest.raises(ValueError, match=r"triples \(train\): row 1: fields 'chosen' and 'rejected' differ"):
        load_dpo_datasets(DPODataArguments(dataset_name=str(tmp_path / "triples")))
    same = {"prompt": "p", "chosen": _conv("p", "first", "more?", "good"), "rejected": _conv("p", "first", "more?", "bad")}
    assert to_trl_pairs([same])[0]["prompt"] == _conv("p", "first", "more?")  # multi-turn pairs still work


def test_convert_drops_identical_and_empty_replies_with_counts_and_first_row(tmp_path):
    path = _jsonl(tmp_path / "uf.jsonl", [_uf_row("same", ["x", "x"]), _uf_row("empty", ["", "y"]),
                                           _uf_row("ok", ["good", "bad"]), _uf_row("same2", ["z", " z "])])
    triples, conv_report, report = run_convert(str(path), str(tmp_path / "out"), "zephyr", None, 42)
    assert [t["prompt"] for t in triples] == ["ok"] and len(load_from_disk(str(tmp_path / "out"))) == 1
    text = str(conv_report)
    assert "2 pairs whose chosen and rejected replies are identical (first: " in text and "uf.jsonl, line 1)" in text
    assert "1 completions with an empty response (left out of the ratings) (first: " in text
    assert "uf.jsonl, line 2: completions[0])" in text
    assert report.kept == 1 and report.dropped["fewer than two rated completions"] == 1


def test_convert_with_nothing_left_or_empty_input_fails_and_writes_nothing(tmp_path):
    path = _jsonl(tmp_path / "uf.jsonl", [_uf_row("same", ["x", "x"])])
    with pytest.raises(ValueError, match=r"uf.jsonl: no preference pair left to save .*1 pairs whose chosen"):
        run_convert(str(path), str(tmp_path / "out"), "zephyr", None, 42)
    (tmp_path / "empty.jsonl").write_text("")
    proc = subprocess.run([sys.executable, "-m", "handbook.aif_data", "convert", "--input", str(tmp_path / "empty.jsonl"),
                           "--output_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "empty.jsonl: no rows (the file is empty)" in proc.stderr
    assert not (tmp_path / "out").exists()  # before: an unloadable dataset (IndexError) and exit 0


def test_empty_prompt_file_is_an_error(tmp_path):
    (tmp_path / "p.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match=r"p.txt: no prompts \(the file is empty\)"):
        read_prompts(tmp_path / "p.txt")
    with pytest.raises(ValueError, match="no prompts to judge"):
        pairwise_win_rate([], [], [], judge=None)


def test_win_rate_on_empty_prompts_exits_non_zero(tmp_path):
    """Before: "win rate of toy against toy: None", exit 0."""
    (tmp_path / "p.txt").write_text("")
    proc = subprocess.run([sys.executable, "-m", "handbook.evaluate", "win-rate", "--model", "toy", "--reference_model",
                           "toy", "--output_dir", str(tmp_path / "wr"), "--prompts", str(tmp_path / "p.txt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "p.txt: no prompts (the file is empty)" in proc.stderr
    assert "win rate" not in proc.stdout


def _question(qid, category="writing"):
    return {"question_id": qid, "category": category, "turns": ["one?", "two?"]}


def test_duplicate_question_id_names_both_lines(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [_question(81), _question(82), _question(81, "math")])
    with pytest.raises(ValueError, match=r"q.jsonl, line 3: question_id 81 is already used on line 1"):
        load_questions(path)


def test_unknown_category_names_line_and_lists_the_allowed_ones(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [_question(1), _question(2, "poetry")])
    with pytest.raises(ValueError, match=r"q.jsonl, line 2: field 'category': unknown category 'poetry'; "
                                         r"MT-Bench's are writing, roleplay, .*humanities"):
        load_questions(path)
    assert len(CATEGORIES) == 8 and len(load_questions(_jsonl(tmp_path / "ok.jsonl", [_question(i, c) for i, c in enumerate(CATEGORIES)]))) == 8
