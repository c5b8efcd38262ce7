"""Reliability, third round: outputs never clobbered, ranges checked, recipes and prompt files read as what they are,
torn checkpoints skipped, one ``error:`` line for a user's mistake, Ctrl-C obeyed (issue #24 items 5, 6, 9, 10, 12;
issue #25 items 1, 3, 5, 7).

The cases a user meets through a command run the command as a real process (two training runs into one folder,
SIGINT to a running command, a refused recipe).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from trl import DPOConfig, SFTConfig

from handbook.core.configs import ConfigError, parse_config, read_recipe
from handbook.core.data import complete_checkpoints, last_checkpoint, read_prompts
from handbook.core.models import ModelArguments
from handbook.core.outputs import MARKER, OutputRefused, check_safe_name, claim_output_dir
from handbook.core.runner import EmptyOutput, OutputLocked, exclusive_lock
from handbook.ddpo.training import DPODataArguments
from handbook.dsft.training import SFTDataArguments
from helpers import ENV, ROOT, run_module
from toy_server import server  # noqa: F401  (a fixture)

SFT_RECIPE = ROOT / "recipes" / "toy" / "sft" / "config.yaml"
DPO_RECIPE = ROOT / "recipes" / "toy" / "dpo" / "config.yaml"


def _recipe(tmp_path, name="r.yaml", **values) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def dialogues_file(tmp_path_factory) -> Path:
    """A small dSFT data file (JSONL, the ultrachat_200k schema) for training commands."""
    from handbook.toy.dialogues import toy_dsft_dataset

    folder = tmp_path_factory.mktemp("dialogues")
    dd, _ = toy_dsft_dataset(prompts_per_category=4, replies_per_prompt=1, eval_prompts_per_category=1,
                             data_dir=folder / "cache")
    path = folder / "dialogues.jsonl"
    path.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in dd["train"]))
    return path


def _sft_cli_args(data: Path, out: Path, *extra) -> list:
    return ["--config", SFT_RECIPE, "--dataset_name", data, "--output_dir", out,
            "--eval_strategy", "no", "--logging_steps", "1", *extra]


# =============================================================================================================
# 24.6 Values a stage cannot work with are refused before work, naming file and key
# =============================================================================================================
@pytest.mark.parametrize("key,value,rule", [
    ("beta", 0, "greater than 0"), ("beta", -0.5, "opposite of the preferences"),
    ("num_train_epochs", 0, "greater than 0"), ("max_steps", 0, "or -1"), ("max_steps", -5, "or -1"),
    ("learning_rate", -1e-3, "greater than 0")])
def test_training_values_a_stage_cannot_use_are_refused_naming_file_and_key(tmp_path, key, value, rule):
    recipe = yaml.safe_load(DPO_RECIPE.read_text())
    recipe.update({key: value, "output_dir": str(tmp_path / "out")})
    path = _recipe(tmp_path, **recipe)
    with pytest.raises(ConfigError, match=rf"r.yaml: `{key}`: invalid value {value}(\.0)?; must be .*{rule}"):
        parse_config([ModelArguments, DPODataArguments, DPOConfig], ["--config", str(path)])
    with pytest.raises(ConfigError, match=rf"command line: `{key}`: invalid value"):
        parse_config([ModelArguments, DPODataArguments, DPOConfig],
                     ["--config", str(DPO_RECIPE), "--output_dir", str(tmp_path / "o"), f"--{key}", str(value)])
    assert not (tmp_path / "out").exists()


def test_a_notebooks_own_config_is_checked_too(tmp_path):
    from handbook.ddpo.training import train

    model_args, data_args, training_args = read_recipe(DPO_RECIPE, [ModelArguments, DPODataArguments, DPOConfig],
                                                       output_dir=str(tmp_path / "out"))
    training_args.beta = 0.0  # after parsing, as a notebook cell could
    with pytest.raises(ConfigError, match="`beta`: invalid value 0.0"):
        train(model_args, data_args, training_args, datasets=([], None))
    assert not (tmp_path / "out").exists()


def test_a_refused_recipe_is_one_error_line_from_the_command(tmp_path):
    recipe = yaml.safe_load(DPO_RECIPE.read_text())
    path = _recipe(tmp_path, **{**recipe, "beta": 0, "output_dir": str(tmp_path / "out")})
    proc = run_module("handbook.dpo", "--config", path, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {path}: `beta`: invalid value 0")
    assert not (tmp_path / "out").exists()  # before: the dSFT weights saved unchanged as the "dDPO model"


# =============================================================================================================
# 24.12 Every entry point: one `error:` line for a user's mistake; --debug / HANDBOOK_DEBUG shows the traceback
# =============================================================================================================
@pytest.mark.parametrize("module,args,message", [
    ("handbook.sft", ["--config", SFT_RECIPE, "--dataset_name", "no/such.jsonl", "--output_dir", "{tmp}/o"],
     "no/such.jsonl"),
    ("handbook.merge", ["--adapter_dir", "{tmp}/none", "--output_dir", "{tmp}/m"], "adapter_config.json does not exist"),
    ("handbook.evaluate", ["win-rate", "--model", "toy", "--reference_model", "toy", "--output_dir", "{tmp}/w",
                           "--prompts", "{tmp}/p.md"], "a prompt file must be .txt"),
    ("handbook.aif_data", ["generate", "--output_dir", "{tmp}/a", "--rule", "best"], "`rule`"),
])
def test_a_users_mistake_is_one_error_line_and_debug_shows_the_traceback(tmp_path, module, args, message):
    (tmp_path / "p.md").write_text("# prompts\n")
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    proc = run_module(module, *args, timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last.startswith("error: ") and message in last, last
    debug = run_module(module, *args, timeout=300, env={"HANDBOOK_DEBUG": "1"})
    assert debug.returncode != 0 and ("Traceback" in debug.stderr or debug.returncode == 2)


# =============================================================================================================
# 24.5 and 25.3 Output folders: never a foreign folder, never two runs at once, names confined
# =============================================================================================================
def test_output_folders_a_run_must_never_write_into_are_refused(tmp_path, monkeypatch):
    for folder, reason in [("/", "the filesystem's root"), (str(Path.home()), "your home directory")]:
        with pytest.raises(OutputRefused, match=reason):
            claim_output_dir(folder, "dSFT model", overwrite=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputRefused, match="the current directory"):
        claim_output_dir(".", "dSFT model", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputRefused, match="a file, not a folder"):
        claim_output_dir(tmp_path / "file", "dSFT model")


def test_a_foreign_folder_is_refused_unless_overwrite_and_a_handbook_folder_is_its_own(tmp_path):
    foreign = tmp_path / "mine"
    (foreign / "checkpoint-100").mkdir(parents=True)
    (foreign / "README.md").write_text("my notes")
    with pytest.raises(OutputRefused, match=r"holds files this handbook did not write: README.md, checkpoint-100.*"
                                            r"--overwrite_output_dir"):
        claim_output_dir(foreign, "dSFT model")
    assert not (foreign / MARKER).exists()
    claim_output_dir(foreign, "dSFT model", overwrite=True)  # the user said so
    ours = claim_output_dir(tmp_path / "new", "dSFT model")
    (ours / "model.safetensors").write_text("weights")
    claim_output_dir(ours, "dSFT model")  # a rerun, a resume: this kind of run's own folder
    with pytest.raises(OutputRefused, match=r"the output of another kind of run \(dSFT model\)"):
        claim_output_dir(ours, "dDPO model")  # dDPO into the dSFT model's folder (its own reference)


def test_sft_into_a_foreign_folder_is_refused_before_any_work(tmp_path, dialogues_file):
    out = tmp_path / "project"
    (out / "checkpoint-7").mkdir(parents=True)
    (out / "README.md").write_text("my notes")
    proc = run_module("handbook.sft", *_sft_cli_args(dialogues_file, out, "--max_steps", "1", "--save_total_limit", "1"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "holds files this handbook did not write: README.md, checkpoint-7" in proc.stderr
    assert (out / "README.md").read_text() == "my notes" and (out / "checkpoint-7").is_dir()  # before: both gone
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "checkpoint-7"]


def test_two_training_runs_into_one_folder_the_second_is_refused(tmp_path, dialogues_file):
    out = tmp_path / "sft"
    first = subprocess.Popen([sys.executable, "-m", "handbook.sft",
                              *map(str, _sft_cli_args(dialogues_file, out, "--max_steps", "100000"))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while not (out / ".lock").exists() or not (out / ".lock").read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.2)
        second = run_module("handbook.sft", *_sft_cli_args(dialogues_file, out, "--max_steps", "1"), timeout=300)
        assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
        assert f"is being written by another run (pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and "interrupted" in err, err[-3000:]


def test_names_that_become_files_are_confined(tmp_path):
    for bad in ["../x", "a/b", ".hidden", "..", "", "x" * 200]:
        with pytest.raises(OutputRefused, match="`model_id`: invalid value"):
            check_safe_name(bad, "model_id")
    assert check_safe_name("zephyr-7b-dpo_v1.2+lora", "model_id") == "zephyr-7b-dpo_v1.2+lora"


def test_mt_bench_model_id_cannot_leave_the_output_folder(tmp_path):
    proc = run_module("handbook.evaluate", "mt-bench", "--model", "toy", "--model_id", "../escaped", "--output_dir",
                tmp_path / "mt", timeout=300)
    assert proc.returncode == 1 and "error: `model_id`: invalid value '../escaped'" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "escaped.jsonl").exists() and not (tmp_path / "mt").exists()


def test_merge_into_the_adapters_own_folder_is_refused(tmp_path):
    from handbook.merge import MergeArguments, merge_adapter

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "toy"}))
    for out in (adapter, adapter / "merged"):
        with pytest.raises(OutputRefused, match="the adapter's own folder"):
            merge_adapter(MergeArguments(adapter_dir=str(adapter), output_dir=str(out)))
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json"]


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".lock").symlink_to(target)
    with pytest.raises(OutputLocked, match="is a symbolic link; refusing"):
        with exclusive_lock(tmp_path / "out" / ".lock", "out"):
            pass
    assert target.read_text() == "keep me"  # before: truncated and overwritten with the lock's record


def test_an_aif_run_with_no_pairs_sets_an_earlier_runs_triples_aside(tmp_path):
    from handbook.aif.pipeline import AIFArguments, run_generate
    from handbook.tiers import build_backend, prompts_from

    out = tmp_path / "aif"
    (out / "triples").mkdir(parents=True)
    (out / "triples" / "data.arrow").write_text("an earlier run's pairs")
    (out / MARKER).write_text(json.dumps({"what": "AIF data"}))
    args = AIFArguments(output_dir=str(out), prompts="toy", toy_prompts_per_category=1, batch_size=4,
                        pool=[{"name": "one", "backend": {"type": "toy"}, "seed": 0}])  # one answer: no pair
    with pytest.raises(EmptyOutput, match=r"moved to .*triples.earlier-"):
        run_generate(args, prompts_from("toy", 1), build_backend, progress=False)
    (aside,) = out.glob("triples.earlier-*")
    assert (aside / "data.arrow").read_text() == "an earlier run's pairs" and not (out / "triples").exists()


# =============================================================================================================
# 24.9 and 25.7 Recipes: a key given twice, an alias bomb
# =============================================================================================================
def test_a_key_given_twice_in_a_recipe_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"output_dir: {tmp_path / 'a'}\nlearning_rate: 1.0e-4\nmax_steps: 3\nlearning_rate: 5.0e-7\n")
    with pytest.raises(ConfigError, match=r"r.yaml: not valid YAML: the key `learning_rate` is given twice, on line 2 "
                                          r"and on line 4"):
        parse_config([ModelArguments, SFTDataArguments, SFTConfig], ["--config", str(path)])


def test_an_alias_bomb_in_a_recipe_is_refused_at_once(tmp_path):
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):  # nine aliases of the level below at each level: 9**9 strings, expanded
        prev, cur = chr(96 + i), chr(97 + i)
        levels.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text(f"output_dir: {tmp_path / 'o'}\nenv:\n" + "".join(f"  {line}\n" for line in levels))
    start = time.monotonic()
    with pytest.raises(ConfigError, match="bomb.yaml: not valid YAML: the document expands to more than 100,000"):
        parse_config([ModelArguments, SFTDataArguments, SFTConfig], ["--config", str(path)])
    assert time.monotonic() - start < 5
    ok = tmp_path / "ok.yaml"  # an alias a recipe might use is fine
    ok.write_text(f"output_dir: {tmp_path / 'o'}\nmodel_init_kwargs: &k {{device_map: null}}\n")
    parse_config([ModelArguments, SFTDataArguments, SFTConfig], ["--config", str(ok)])


# =============================================================================================================
# 25.5 Prompt files are read by what they are
# =============================================================================================================
def test_prompt_files_are_read_by_their_format(tmp_path):
    rows = [{"prompt": "Write a poem, about rain.", "id": 1}, {"prompt": "Say \"hi\"\non two lines.", "id": 2}]
    expected = [r["prompt"] for r in rows]
    (tmp_path / "p.JSONL").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    (tmp_path / "s.json").write_text(json.dumps(expected))
    import csv

    with (tmp_path / "p.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "prompt"])
        writer.writeheader()
        writer.writerows(rows)
    for name in ("p.JSONL", "p.json", "s.json", "p.csv"):
        assert read_prompts(tmp_path / name) == expected, name  # before: each line of the file a "prompt"
    (tmp_path / "bad.csv").write_text("question\nwhy?\n")
    with pytest.raises(ValueError, match="bad.csv: a .csv prompt file needs a 'prompt' column; its columns: question"):
        read_prompts(tmp_path / "bad.csv")
    (tmp_path / "p.yaml").write_text("- a\n")
    with pytest.raises(ValueError, match=r"p.yaml: a prompt file must be .txt, .text, .jsonl, .json, .csv"):
        read_prompts(tmp_path / "p.yaml")
    (tmp_path / "e.json").write_text(json.dumps([{"prompt": "ok"}, {"text": "no prompt"}]))
    with pytest.raises(ValueError, match="e.json, row 2: field 'prompt' is missing or empty"):
        read_prompts(tmp_path / "e.json")


# =============================================================================================================
# 24.10 A checkpoint cut short by a kill is skipped on resume
# =============================================================================================================
def test_a_torn_checkpoint_is_skipped_and_training_resumes_from_the_last_whole_one(tmp_path, dialogues_file, caplog):
    from handbook.sft import train

    types = [ModelArguments, SFTDataArguments, SFTConfig]
    kw = dict(dataset_name=str(dialogues_file), eval_strategy="no", logging_steps=1,
              save_strategy="steps", save_steps=2, output_dir=str(tmp_path / "out"))
    train(*read_recipe(SFT_RECIPE, types, max_steps=4, **kw))
    out = tmp_path / "out"
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    state = out / "checkpoint-4" / "trainer_state.json"
    state.write_text(state.read_text()[:100])  # the kill: trainer_state.json (written last) cut short
    args = read_recipe(SFT_RECIPE, types, max_steps=6, resume_from_checkpoint="true", **kw)
    assert last_checkpoint(args[-1]).endswith("checkpoint-2")
    trainer = train(*args)  # before: resumed from checkpoint-4 and crashed on its trainer_state.json
    assert trainer.state.global_step == 6
    assert "checkpoint-4 is incomplete" in caplog.text


# =============================================================================================================
# 25.1 Ctrl-C stops a run within seconds, keeps what finished, exits non-zero saying so
# =============================================================================================================
def test_ctrl_c_during_http_calls_stops_the_run_and_keeps_what_finished(tmp_path, server):
    recipe = _recipe(tmp_path, output_dir=str(tmp_path / "d"), toy_prompts_per_category=2, batch_size=4,
                     teacher={"type": "openai", "base_url": server.url, "model": "toy", "api_key_env": None})
    server.script = ["ok"] * 4 + ["stall"] * 100  # the first batch answers, then every request hangs
    proc = subprocess.Popen([sys.executable, "-m", "handbook.dsft_data", "--config", str(recipe)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    deadline = time.monotonic() + 120
    while len(server.requests) < 8:  # the second batch is in flight, stalled
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    stopped = time.monotonic() - sent
    assert proc.returncode == 130 and "interrupted: stopped before the end" in err and "Traceback" not in err, err[-3000:]
    assert stopped < 3  # before: alive 121 s later, a second Ctrl-C ignored
    records = (tmp_path / "d.cache.jsonl").read_text().splitlines()[1:]
    assert 1 <= len(records) <= 4  # the first batch's answered calls, kept (the stalled ones are not records)


# =============================================================================================================
# 24.7 Eval rows are never silently training rows
# =============================================================================================================
def test_an_eval_split_of_training_rows_is_refused_and_an_overlap_is_named(tmp_path, caplog):
    from datasets import Dataset, DatasetDict

    from handbook.core.data import load_splits

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(6)]
    same = tmp_path / "same"
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:3])}).save_to_disk(str(same))
    with pytest.raises(ValueError, match=r"split 'test'\): every one of its 3 eval rows is also a training row"):
        load_splits(str(same), None, "train", "test")
    with pytest.raises(ValueError, match="dataset_test_split 'train' is the training split"):
        load_splits(str(same), None, "train", "train")
    partly = tmp_path / "partly"
    DatasetDict({"train": Dataset.from_list(rows[:4]), "test": Dataset.from_list(rows[3:])}).save_to_disk(str(partly))
    train, test = load_splits(str(partly), None, "train", "test")
    assert (len(train), len(test)) == (4, 3)
    assert "1 of its 3 eval rows are also training rows" in caplog.text


# =============================================================================================================
# 25.4 Rows the trainer's preparation drops are counted, and none left is refused
# =============================================================================================================
def test_rows_the_trainer_drops_or_cuts_are_reported_and_none_left_refused(caplog):
    from types import SimpleNamespace

    from datasets import Dataset

    from handbook.core.data import report_prepared_rows

    sft = SimpleNamespace(args=SimpleNamespace(max_length=8, packing=False), eval_dataset=None,
                          train_dataset=Dataset.from_list([{"input_ids": [1] * n} for n in (3, 8, 8, 5)]))
    assert report_prepared_rows(sft, {"train": 4}, "dSFT") == {
        "train": {"given": 4, "kept": 4, "dropped": 0, "truncated": 2}}
    assert "dSFT: 2 of 4 train rows are longer than max_length 8 and were cut to it" in caplog.text
    dpo = SimpleNamespace(args=SimpleNamespace(max_length=8, packing=False), eval_dataset=None,
                          train_dataset=Dataset.from_list([{"prompt_ids": [1, 2]}]))  # 3 of 4 pairs dropped by TRL
    assert report_prepared_rows(dpo, {"train": 4}, "dDPO")["train"]["dropped"] == 3
    assert "dDPO: 3 of 4 train rows dropped by the trainer's preparation (max_length 8" in caplog.text
    dpo.train_dataset = Dataset.from_list([{"prompt_ids": [1]}]).select([])
    with pytest.raises(ValueError, match="dDPO: none of the 4 train rows remains after the trainer's preparation"):
        report_prepared_rows(dpo, {"train": 4}, "dDPO")


def test_a_dpo_run_whose_prompts_fill_max_length_is_refused(tmp_path, toy_base):
    from datasets import Dataset

    from handbook.dpo import train

    pairs = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Name a colour, please ({i})."}],
                                "chosen": [{"role": "assistant", "content": "Red."}],
                                "rejected": [{"role": "assistant", "content": "No."}]} for i in range(4)])
    args = read_recipe(DPO_RECIPE, [ModelArguments, DPODataArguments, DPOConfig], output_dir=str(tmp_path / "o"),
                       max_length=4, max_steps=1, eval_strategy="no", model_name_or_path=str(toy_base))
    with pytest.raises(ValueError, match=r"dDPO: none of the train pairs remains after the trainer's preparation "
                                         r"\(max_length 4"):
        train(*args, datasets=(pairs, None))  # before: TRL dropped every pair without a word


# =============================================================================================================
# 25.6 Results files are written whole; a torn one is named and replaced
# =============================================================================================================
def test_a_torn_judgment_file_is_replaced_and_results_are_written_whole(toy_base, tmp_path, caplog):
    from handbook.evaluate import run_mt_bench
    from handbook.toy.judges import toy_questions

    questions = tmp_path / "question.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in toy_questions(1)[:2]))
    out = tmp_path / "mt"
    (out / "model_judgment").mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"what": "evaluation"}))  # an earlier MT-Bench run's folder
    torn = out / "model_judgment" / "toy-rubric_single.jsonl"
    torn.write_text(json.dumps({"model": "other", "score": 5}) + '\n{"model": "m", "sco')  # the disk filled up here
    results = run_mt_bench("toy", "m", str(out), str(questions), max_new_tokens=8, progress=False)
    assert results["judged"] == 4 and results["out_of_range"] == 0
    assert "toy-rubric_single.jsonl was torn (1 unreadable line(s)" in caplog.text
    rows = [json.loads(x) for x in torn.read_text().splitlines()]  # whole again: the other model's row kept
    assert [r["model"] for r in rows] == ["other"] + ["m"] * 4
    assert json.loads((out / "results-m.json").read_text())["judged"] == 4
    assert not list(out.rglob("*.tmp-*"))  # no temporary file left behind


# =============================================================================================================
# 24.11 No empty dialogues, no set reusing another's cache, out-of-range ratings counted
# =============================================================================================================
class _SometimesSilent:
    """The toy teacher, replying nothing to the prompts whose text contains ``silent_on``."""

    name = "silent"

    def __init__(self, silent_on: str):
        from handbook.toy.teacher import ToyTeacher

        self.teacher, self.silent_on = ToyTeacher(), silent_on

    def describe(self):
        return {"type": "silent", "on": self.silent_on}

    def chat(self, conversations, sampling):
        replies = self.teacher.chat(conversations, sampling)
        return ["  " if self.silent_on in c[-1]["content"] else r for c, r in zip(conversations, replies)]


def test_dialogues_with_an_empty_turn_are_left_out_and_all_empty_is_refused(caplog):
    from handbook.dsft.dialogues import DialogueConfig, generate_dialogues
    from handbook.toy import world

    prompts = [p.text for p in world.sample_prompts(1, "train", 0)]
    silent = prompts[0][:30]
    rows = generate_dialogues(prompts, _SometimesSilent(silent), DialogueConfig(num_turns=1), progress=False)
    assert len(rows) == len(prompts) - 1 and all(m["content"].strip() for r in rows for m in r["messages"])
    assert f"1 of {len(prompts)} dialogues have an empty turn" in caplog.text
    with pytest.raises(EmptyOutput, match="every one of the 1 dialogues has an empty turn"):
        generate_dialogues(prompts[:1], _SometimesSilent(silent), DialogueConfig(num_turns=1), progress=False)


def test_two_dialogue_sets_never_share_a_cache(tmp_path):
    from handbook.dsft.dialogues import DialogueConfig, generate_dialogue_sets
    from handbook.toy.teacher import ToyTeacher

    with pytest.raises(ValueError, match="the 2 dialogue sets need a cache each"):
        generate_dialogue_sets(["Write a poem."], ToyTeacher(), DialogueConfig(), 2, [tmp_path / "c", tmp_path / "c"])
    from handbook.dsft_data import DsftDataArguments, run

    out = tmp_path / "d"
    ds = run(DsftDataArguments(output_dir=str(out), toy_prompts_per_category=1, replies_per_prompt=2,
                               cache_path=str(tmp_path / "cache")), progress=False)  # a name without .jsonl
    assert sorted(p.name for p in tmp_path.glob("cache.*") if p.suffix != ".lock") == ["cache.0", "cache.1"]
    messages = [json.dumps(r["messages"]) for r in ds]
    assert len(set(messages)) == len(messages)  # before: set 1 reused set 0's cache: every dialogue twice


def test_out_of_range_mt_bench_ratings_are_kept_as_fastchat_does_and_counted():
    from handbook.evaluation.mt_bench import aggregate
    from handbook.toy.judges import toy_questions

    q = toy_questions(1)[0]
    judgments = [{"model": "m", "question_id": q["question_id"], "turn": t, "score": s}
                 for t, s in ((1, 8.0), (2, 15.0), (1, 0.0), (2, -1))]
    r = aggregate(judgments, [q])["m"]
    assert (r["score"], r["failed"], r["out_of_range"]) == (round((8 + 15 + 0) / 3, 3), 1, 2)
