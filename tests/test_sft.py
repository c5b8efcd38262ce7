import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl import SFTConfig

from handbook.core.configs import ConfigError, parse_config, read_recipe
from handbook.dsft.filters import DialogueError
from handbook.core.models import ModelArguments
from handbook.dsft.training import load_sft_datasets
from handbook.sft import SFTDataArguments, train
from handbook.toy.dialogues import toy_dsft_dataset

ROOT = Path(__file__).resolve().parent.parent
TOY_RECIPE = ROOT / "recipes" / "toy" / "sft" / "config.yaml"
TYPES = [ModelArguments, SFTDataArguments, SFTConfig]


@pytest.fixture(scope="module")
def small_dialogues(tmp_path_factory):
    dd, _ = toy_dsft_dataset(prompts_per_category=4, replies_per_prompt=1, eval_prompts_per_category=1,
                             data_dir=tmp_path_factory.mktemp("sftdata"))
    return dd["train"].remove_columns(["prompt", "prompt_id"])


def _args(tmp_path, **overrides):
    return read_recipe(TOY_RECIPE, TYPES, output_dir=str(tmp_path / "out"), max_steps=3, eval_strategy="no",
                       logging_steps=1, **overrides)


def test_toy_recipe_end_to_end_through_the_cli(tmp_path):
    out = tmp_path / "sft"
    proc = subprocess.run(
        [sys.executable, "-m", "handbook.sft", "--config", str(TOY_RECIPE), "--output_dir", str(out),
         "--max_steps", "40", "--eval_steps", "20", "--logging_steps", "10", "--toy_prompts_per_category", "40"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    log = json.loads((out / "log_history.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    evals = [e["eval_loss"] for e in log if "eval_loss" in e]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0]
    assert len(evals) == 2 and evals[-1] < evals[0]
    assert "drop_disclaimers" in proc.stderr  # the filter reports are logged
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "mistral"


def test_recipe_on_cpu_runs_in_float32(tmp_path):
    _, _, training_args = _args(tmp_path)
    if torch.cuda.is_available():
        pytest.skip("CPU behaviour")
    assert training_args.use_cpu and not training_args.bf16  # the recipe says bf16: true


@pytest.mark.parametrize("key,hint", [
    ("max_seq_length", "renamed `max_length`"),
    ("warmup_ratio", "`warmup_steps`"),
    ("learning_rat", "did you mean `learning_rate`"),
])
def test_unknown_or_removed_recipe_key_names_file_and_key(tmp_path, key, hint):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(TOY_RECIPE.read_text() + f"\n{key}: 0.1\n")
    with pytest.raises(ConfigError, match=rf"bad.yaml: unknown key `{key}`: .*{hint}"):
        parse_config(TYPES, ["--config", str(recipe)])


def test_unknown_command_line_key(tmp_path):
    with pytest.raises(ConfigError, match="command line: unknown key `max_seq_length`"):
        parse_config(TYPES, ["--config", str(TOY_RECIPE), "--max_seq_length", "10"])


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*/sft/*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_sft_recipe_parses_against_the_installed_stack(recipe):
    model_args, data_args, training_args = parse_config(TYPES, ["--config", str(recipe)])
    assert training_args.assistant_only_loss == ("zephyr-7b-beta" not in str(recipe))  # the full run: every token
    assert model_args.model_name_or_path


def test_paper_values_in_the_full_recipe():
    model_args, data_args, args = parse_config(TYPES, ["--config", str(ROOT / "recipes/zephyr-7b-beta/sft/config_full.yaml")])
    assert model_args.model_name_or_path == "mistralai/Mistral-7B-v0.1"
    assert data_args.dataset_name == "HuggingFaceH4/ultrachat_200k"
    assert (data_args.dataset_train_split, data_args.dataset_test_split) == ("train_sft", "test_sft")
    assert args.learning_rate == 2e-5 and args.lr_scheduler_type == "cosine" and args.num_train_epochs == 1
    assert args.warmup_steps == 0.1 and args.max_length == 2048 and args.packing
    assert args.packing_strategy == "bfd_split"  # long dialogues split, not cut
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 512  # one process: 16 × 32 × 1


def test_assistant_only_loss_trains_only_on_assistant_tokens(tmp_path, small_dialogues):
    model_args, data_args, training_args = _args(tmp_path)
    trainer = train(model_args, data_args, training_args, datasets=(small_dialogues, None))
    row = trainer.train_dataset[0]
    tok = trainer.processing_class
    trained = tok.decode([label for label in row["labels"] if label != -100])  # TRL folds the mask into labels
    answers = "".join(m["content"] + "</s>" for m in small_dialogues[0]["messages"] if m["role"] == "assistant")
    assert trained == answers
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert tok.decode(labelled) == answers


def test_the_zephyr_7b_beta_runs_sequence_every_token_learned_after_bos_and_an_empty_system_turn(tmp_path, small_dialogues):
    """The full recipes' setting (assistant_only_loss: false, chat_template: zephyr_upstream): TRL 0.7.4's packed
    text with labels = input ids, each dialogue rendered BOS + ``<|system|>\\n</s>\\n`` + Zephyr's turns."""
    model_args, data_args, training_args = _args(tmp_path, chat_template="zephyr_upstream", assistant_only_loss=False)
    trainer = train(model_args, data_args, training_args, datasets=(small_dialogues, None))
    tok = trainer.processing_class
    row = trainer.train_dataset[0]
    assert tok.decode(row["input_ids"]).startswith("<s><|system|>\n</s>\n<|user|>\n")
    assert row["input_ids"].count(tok.bos_token_id) >= 1
    batch = trainer.data_collator([row])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    real = batch["attention_mask"][0].bool() if "attention_mask" in batch else torch.ones_like(ids, dtype=torch.bool)
    assert bool((labels[real] == ids[real]).all())   # every real token is a target: user turns included
    saved = (tmp_path / "out" / "tokenizer_config.json").read_text() + (
        (tmp_path / "out" / "chat_template.jinja").read_text() if (tmp_path / "out" / "chat_template.jinja").exists() else "")
    assert "{% if bos_token %}" in saved             # the dDPO stage and generation inherit the same sequence


def test_full_sft_recipes_follow_the_zephyr_7b_beta_run():
    for name in ("config_full.yaml", "config_qlora.yaml"):
        model_args, _, args = parse_config(TYPES, ["--config", str(ROOT / "recipes/zephyr-7b-beta/sft" / name)])
        assert model_args.chat_template == "zephyr_upstream" and not args.assistant_only_loss, name


def test_template_without_generation_markers_is_refused(tmp_path, small_dialogues):
    model_args, data_args, training_args = _args(tmp_path, chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match=r"needs \{% generation %\} markers.*chat_template: zephyr"):
        train(model_args, data_args, training_args, datasets=(small_dialogues, None))


def test_lora_sft_saves_an_adapter(tmp_path, small_dialogues):
    model_args, data_args, training_args = _args(tmp_path, use_peft=True, lora_r=4, lora_alpha=8, learning_rate=1e-2)
    trainer = train(model_args, data_args, training_args, datasets=(small_dialogues, None))
    out = Path(training_args.output_dir)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    assert sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) < 50_000


def test_qlora_sft_runs_on_cpu(tmp_path, small_dialogues):
    import bitsandbytes as bnb

    model_args, data_args, training_args = _args(tmp_path, use_peft=True, load_in_4bit=True, lora_r=4, lora_alpha=8,
                                                 lora_target_modules="all-linear")
    trainer = train(model_args, data_args, training_args, datasets=(small_dialogues, None))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(l == l for l in losses)  # finite, not NaN
    assert (Path(training_args.output_dir) / "adapter_model.safetensors").exists()


def test_packing_runs(tmp_path, small_dialogues):
    model_args, data_args, training_args = _args(tmp_path, packing=True, max_length=256, per_device_train_batch_size=2)
    trainer = train(model_args, data_args, training_args, datasets=(small_dialogues, None))
    assert len(trainer.train_dataset) < len(small_dialogues)  # several dialogues per packed row
    assert [e for e in trainer.state.log_history if "loss" in e]


def test_datasets_from_disk_and_jsonl_are_validated(tmp_path):
    from datasets import Dataset, DatasetDict

    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]}
    held_out = {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
    DatasetDict(train_sft=Dataset.from_list([good, good]), test_sft=Dataset.from_list([held_out])).save_to_disk(tmp_path / "dd")
    train_ds, eval_ds, _ = load_sft_datasets(SFTDataArguments(dataset_name=str(tmp_path / "dd")))
    assert (len(train_ds), len(eval_ds), train_ds.column_names) == (2, 1, ["messages"])

    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in (good, good, bad)) + "\n")
    with pytest.raises(DialogueError, match=r"row 2: messages\[1\].role: unknown role 'robot'"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(jsonl), dataset_test_split=None))

    jsonl.write_text(json.dumps({"text": "no messages"}) + "\n")
    with pytest.raises(ValueError, match="row 0: field 'messages' is missing"):
        load_sft_datasets(SFTDataArguments(dataset_name=str(jsonl), dataset_test_split=None))


def test_notebook_02_reuses_the_cached_student_only_for_the_same_run(tmp_path):
    """Notebook 02's toy run is the cached toy student's build: reused when every field that decides
    the weights matches the recipe, trained anew when one differs."""
    import json as _json

    from handbook.toy.students import RECIPE, cached_student_for, toy_students

    types = [ModelArguments, SFTDataArguments, SFTConfig]
    same = read_recipe(RECIPE, types, output_dir=str(tmp_path / "a"), toy_data_dir=str(tmp_path / "d"))
    assert cached_student_for(*same) == toy_students()["dsft"]
    log = _json.loads((Path(toy_students()["dsft"]) / "log_history.json").read_text())
    assert any("eval_loss" in e for e in log) and any("loss" in e for e in log)  # the notebook plots both
    for override in (dict(max_steps=10), dict(seed=1), dict(learning_rate=1e-3), dict(toy_data_seed=3),
                     dict(model_name_or_path="toy-dsft")):
        other = read_recipe(RECIPE, types, output_dir=str(tmp_path / "b"), **override)
        assert cached_student_for(*other) is None, override


def test_a_run_shorter_than_logging_steps_still_logs_its_final_loss(tmp_path, small_dialogues):
    """transformers logs every `logging_steps` and not at the last step: a 3-step run with `logging_steps: 10` (the
    small tier's recipes on a few offline dialogues) logged no training loss, and notebook 02 failed reading it
    (`KeyError: 'loss'`). Every handbook run now logs its last step's loss."""
    model_args, data_args, training_args = read_recipe(TOY_RECIPE, TYPES, output_dir=str(tmp_path / "out"),
                                                       max_steps=3, eval_strategy="no", logging_steps=10)
    model_args.model_name_or_path = "toy"
    from handbook.tiers import resolve_model_args

    model_args = resolve_model_args(model_args)
    trainer = train(model_args, data_args, training_args, datasets=(small_dialogues, None))
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in logged] == [3] and logged[0]["loss"] > 0
    saved = json.loads((tmp_path / "out" / "log_history.json").read_text())
    assert [e["step"] for e in saved if "loss" in e] == [3]
