"""The per-tier choices the notebooks make, owned by ``handbook.tiers``: where the hub is, who teaches and judges,
which prompts, data and starting model each stage uses, and what an earlier notebook of the same run left.
Fast: nothing here loads a model."""

import json

import pytest
from trl import DPOConfig, SFTConfig

from handbook.core.models import ModelArguments
from handbook.ddpo.training import DPODataArguments
from handbook.dsft.training import SFTDataArguments
from handbook.tiers import (
    FALLBACKS, TIER_NAMES, Choice, choose, fallback,
    MISTRAL_7B_SFT_HUB_ID, SMOLLM2_HUB_ID, ablation_models, aif_arguments, dpo_data_choice, dpo_datasets,
    dpo_start_choice, heldout_check_choice, hub_reachable, judge_choice, judge_name, mt_bench_questions_choice,
    previous_output, prompts_choice, read_sized_recipe, require_hub, sft_data_choice, stage_setup, teacher_choice,
    throughput_setup, tier_note,
)
from handbook.toy import world


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def run(tmp_path):
    """A run directory with one notebook's folder, as the tutorial makes them (sibling folders)."""
    return tmp_path / "run"


def _save_dataset(path, rows):
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))


def _fake_model(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")


def test_hub_reachable_follows_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub_reachable()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub_reachable()


def test_the_full_tier_does_not_run_offline(offline):
    with pytest.raises(RuntimeError, match="full tier: .*HF_HUB_OFFLINE is set"):
        require_hub("full", "Mistral-7B")
    require_hub("small", "anything")  # the small tier has its offline stand-ins
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        sft_data_choice("full", "unused/02")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        dpo_data_choice("full", "unused/04")


def test_tier_note_is_one_line_per_tier(offline):
    for tier in ("toy", "small", "full"):
        assert "\n" not in tier_note(tier) and tier_note(tier).startswith(tier)
    assert "toy world's prompts, teacher and judge stand in" in tier_note("small")


def test_teacher_and_judge_come_from_config_and_full_requires_them():
    endpoint = teacher_choice("full", "http://127.0.0.1:8000/v1", "gpt-4")
    assert endpoint.value == {"type": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "gpt-4"}
    assert endpoint.source == "endpoint"
    with pytest.raises(ValueError, match="full tier: the teacher must be .*teacher_base_url"):
        teacher_choice("full")
    with pytest.raises(ValueError, match="full tier: the judge must be .*judge_base_url"):
        judge_choice("full")
    with pytest.raises(ValueError, match="teacher_model is not"):
        teacher_choice("small", "http://127.0.0.1:8000/v1")
    toy, small = teacher_choice("toy"), teacher_choice("small")
    assert toy.value == small.value == {"type": "toy"} and toy.note == ""
    assert "toy teacher writes the dSFT data" in small.note
    assert "win-rate reference" in teacher_choice("small", role="reference").note
    assert judge_choice("small").value == {"type": "toy-judge", "noise": 0.1}
    assert judge_choice("small", kind="mt-bench").value == {"type": "toy-mt-judge"}
    assert judge_name(judge_choice("toy")) == "toy-rubric"
    assert judge_name(judge_choice("full", "http://x/v1", "gpt-4", kind="mt-bench")) == "gpt-4"


def test_prompts_follow_the_teacher_and_judge(offline):
    toy = prompts_choice("sft", "small", [teacher_choice("small")], 1, seed=0)
    assert toy.source == "toy" and len(toy.value) == len(world.CATEGORIES) and toy.note == ""
    endpoint = teacher_choice("small", "http://x/v1", "m")
    offline_prompts = prompts_choice("sft", "small", [endpoint], 1)
    assert offline_prompts.source == "toy" and "no hub" in offline_prompts.note
    assert prompts_choice("sft", "toy", [endpoint], 1).source == "toy"  # the toy tier stays in the toy world
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        prompts_choice("aif", "full", [endpoint, judge_choice("full", "http://x/v1", "m")], 1)


def test_previous_output_is_a_sibling_folder_of_the_same_run(run):
    here = run / "04_ddpo"
    assert previous_output(here, "triples") is None
    _save_dataset(run / "03_aif_preferences" / "triples", [{"a": 1}])
    assert previous_output(here, "triples") == (run / "03_aif_preferences" / "triples").resolve()
    (run / "02_dsft_training" / "model").mkdir(parents=True)
    assert previous_output(here, "dsft_model") is None  # no weights: not a model
    (run / "02_dsft_training" / "model" / "model.safetensors").write_bytes(b"")
    assert previous_output(here, "dsft_model") is not None


def test_small_offline_sft_data_is_notebook_01s_else_fresh_toy_dialogues(offline, run):
    fresh = sft_data_choice("small", run / "02_dsft_training")
    assert fresh.source == "fresh" and fresh.value["dataset_name"] == "toy" and "built fresh" in fresh.note
    _save_dataset(run / "01_dsft_data" / "dsft_dataset", [{"messages": []}])
    previous = sft_data_choice("small", run / "02_dsft_training")
    assert previous.source == "previous" and previous.value["dataset_name"].endswith("01_dsft_data/dsft_dataset")
    assert previous.value["dataset_test_split"] is None and previous.value["eval_strategy"] == "no"
    toy = sft_data_choice("toy", run / "02_dsft_training")  # the toy tier chains too: notebook 01's dialogues
    assert toy.source == "previous" and toy.value == previous.value and "notebook 01" in toy.note


def test_toy_tier_chains_and_says_so_in_one_line(run):
    """Each toy choice is the previous notebook's output of the same run when present, else the cached build."""
    choices = lambda: (sft_data_choice("toy", run / "02_dsft_training"), dpo_start_choice("toy", run / "04_ddpo"),  # noqa: E731
                       dpo_data_choice("toy", run / "04_ddpo"))
    alone = choices()
    assert [c.source for c in alone] == ["recipe"] * 3
    assert alone[0].value == {"toy_data_dir": str(run / "02_dsft_training" / "data")} and alone[1].value == "toy-dsft"
    assert all(c.note and "\n" not in c.note and "no " in c.note for c in alone)  # one line: why the fallback
    _save_dataset(run / "01_dsft_data" / "dsft_dataset", [{"messages": []}])
    _fake_model(run / "02_dsft_training" / "model")
    _save_dataset(run / "03_aif_preferences" / "triples", [{"a": 1}])
    chained = choices()
    assert [c.source for c in chained] == ["previous"] * 3 and all("this run" in c.note for c in chained)
    assert chained[0].value["dataset_name"] == str((run / "01_dsft_data" / "dsft_dataset").resolve())
    assert chained[1].value == str((run / "02_dsft_training" / "model").resolve())
    assert chained[2].value["dataset_name"] == str((run / "03_aif_preferences" / "triples").resolve())
    assert chained[2].value["dataset_test_split"] is None  # held out by the notebook, not taken from train


def test_ddpo_starts_from_notebook_02s_model_else_a_stand_in(offline, run, monkeypatch):
    fallback = dpo_start_choice("small", run / "04_ddpo")
    assert fallback.value == SMOLLM2_HUB_ID and "stands in" in fallback.note
    _fake_model(run / "02_dsft_training" / "model")
    assert dpo_start_choice("small", run / "04_ddpo").source == "previous"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert dpo_start_choice("full", run / "04_ddpo").source == "previous"
    assert dpo_start_choice("full", run / "elsewhere" / "04_ddpo").value == MISTRAL_7B_SFT_HUB_ID


def test_small_offline_ddpo_data_is_notebook_03s_triples_with_a_quarter_held_out(offline, run, tmp_path):
    fresh = dpo_data_choice("small", run / "04_ddpo")
    assert fresh.source == "fresh" and fresh.value["dataset_name"] == "toy"
    prompts = [p.text for p in world.sample_prompts(1, "train", 0)]
    triples = [{"prompt": p, "chosen": [{"role": "user", "content": p}, {"role": "assistant", "content": "good"}],
                "rejected": [{"role": "user", "content": p}, {"role": "assistant", "content": "bad"}]} for p in prompts]
    _save_dataset(run / "03_aif_preferences" / "triples", triples)
    choice = dpo_data_choice("small", run / "04_ddpo")
    assert choice.source == "previous"
    (_, data_args, _) = read_sized_recipe(stage_setup("dpo", "small").recipe_file,
                                          [ModelArguments, DPODataArguments, DPOConfig], output_dir=str(tmp_path / "o"),
                                          **choice.value)
    train, heldout = dpo_datasets(data_args, hold_out=0.25, seed=0)
    assert (len(train), len(heldout)) == (6, 2)
    assert set(train.column_names) == {"prompt", "chosen", "rejected"}
    assert dpo_datasets(data_args)[1] is None  # without hold_out: no evaluation pairs


def test_every_fallback_is_data_for_every_tier_in_the_steps_vocabulary():
    from handbook.tiers.table import STEPS

    for what, orders in FALLBACKS.items():
        assert set(orders) == set(TIER_NAMES), what
        for tier, order in orders.items():
            assert set(order) <= set(STEPS), (what, tier, order)
            assert len(set(order)) == len(order), (what, tier, order)  # a step is tried once
    assert fallback("data", "small") == ("hub", "instead", "stand_in")
    with pytest.raises(ValueError, match="no fallback for 'nope'"):
        fallback("nope", "toy")
    with pytest.raises(ValueError, match="unknown tier 'tiny'"):
        fallback("data", "tiny")


def test_the_chooser_walks_the_tables_order_and_stops_at_the_first_source_there(monkeypatch):
    monkeypatch.setitem(FALLBACKS, "thing", {"toy": ("a", "b", "c"), "small": ("c", "a"), "full": ()})
    called = []

    def step(name, there):
        def find():
            called.append(name)
            return Choice(name, name) if there else None
        return find

    steps = {"a": step("a", False), "b": step("b", True), "c": step("c", True)}
    assert choose("thing", "toy", steps).value == "b" and called == ["a", "b"]  # c is never asked
    called.clear()
    assert choose("thing", "small", steps).value == "c" and called == ["c"]
    assert choose("thing", "full", steps, optional=True) is None  # the row does not exist at this tier
    with pytest.raises(ValueError, match="full tier: no source for thing"):
        choose("thing", "full", steps)
    with pytest.raises(ValueError, match="needs an endpoint"):
        choose("thing", "small", {"a": step("a", False), "c": step("c", False)}, required="needs an endpoint")
    with pytest.raises(ValueError, match=r"names step\(s\) \['c'\] that the chooser does not define"):
        choose("thing", "small", {"a": step("a", True)})


def test_the_table_not_the_code_orders_a_choice(offline, run, monkeypatch):
    """Reordering a fallback in the table changes the choice with no code change: the chooser holds no order."""
    _save_dataset(run / "01_dsft_data" / "dsft_dataset", [{"messages": []}])
    assert sft_data_choice("small", run / "02_dsft_training").source == "previous"
    monkeypatch.setitem(FALLBACKS, "data", {**FALLBACKS["data"], "small": ("hub", "stand_in", "instead")})
    assert sft_data_choice("small", run / "02_dsft_training").source == "fresh"
    monkeypatch.setitem(FALLBACKS, "teacher", {**FALLBACKS["teacher"], "full": ("given", "stand_in")})
    assert teacher_choice("full").value == {"type": "toy"}  # a full tier that allowed the toy teacher
    monkeypatch.setitem(FALLBACKS, "table3/dsft_ddpo_on_policy", {**FALLBACKS["table3/dsft_ddpo_on_policy"],
                                                                   "small": ("train",)})
    assert ablation_models("small", run / "05_evaluation")["dsft_ddpo_on_policy"].source == "train"


def test_read_sized_recipe_shrinks_a_run():
    recipe = stage_setup("sft", "small").recipe_file
    _, data_args, args = read_sized_recipe(recipe, [ModelArguments, SFTDataArguments, SFTConfig], output_dir="unused",
                                           max_steps=2, max_length=128, batch_size=2, max_samples=4)
    assert (args.max_steps, args.max_length, args.per_device_train_batch_size) == (2, 128, 2)
    assert args.gradient_accumulation_steps == 1  # the recipe's global batch gives way: one batch per step
    assert args.logging_steps == 1  # a 2-step run still logs its loss
    assert data_args.max_train_samples == data_args.max_eval_samples == 4
    _, _, recipe_args = read_sized_recipe(recipe, [ModelArguments, SFTDataArguments, SFTConfig], output_dir="unused")
    assert recipe_args.gradient_accumulation_steps == 4 and recipe_args.max_length == 1024  # None: the recipe's


def test_evaluation_choices(offline, run, tmp_path):
    assert heldout_check_choice("toy").value and heldout_check_choice("small").value
    assert not heldout_check_choice("full").value and "notebook 05" in heldout_check_choice("full").note
    with pytest.raises(ValueError, match="questions_path"):
        mt_bench_questions_choice("full", None, 10)
    path = tmp_path / "question.jsonl"
    categories = ["writing"] * 3 + ["math"] * 3
    rows = [{"question_id": i, "category": c, "turns": ["a", "b"]} for i, c in enumerate(categories)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [q["question_id"] for q in mt_bench_questions_choice("full", str(path), 2).value] == [0, 1, 3, 4]
    assert len(mt_bench_questions_choice("small", None, 1).value) == len(world.CATEGORIES)
    toy = ablation_models("toy", run / "05_evaluation")  # Table 3's four rows + the base, + the on-policy variant
    assert list(toy) == ["base", "dsft", "ddpo_without_dsft", "dsft2", "dsft_ddpo", "dsft_ddpo_on_policy"]
    assert [c.source for c in toy.values()] == ["toy", "recipe", "train", "train", "train", "train"]
    small = ablation_models("small", run / "05_evaluation")
    assert list(small) == ["base", "dsft", "ddpo_without_dsft", "dsft2", "dsft_ddpo"]
    assert small["base"].value == SMOLLM2_HUB_ID and small["dsft_ddpo"].source == "train"
    _fake_model(run / "04_ddpo" / "model")  # notebook 04's model is scored beside Table 3, not as its 1-epoch row
    small = ablation_models("small", run / "05_evaluation")
    assert small["dsft_ddpo"].source == "train" and small["notebook_04"].source == "previous"


def test_aif_arguments_per_tier(offline, run, monkeypatch):
    toy, notes = aif_arguments("toy", run / "03", prompts_per_category=60)  # off-policy: no student in the pool
    assert [m["name"] for m in toy.pool] == ["teacher", "careful", "careless", "unreliable"]
    assert len(notes) == 1 and "off-policy" in notes[0] and "\n" not in notes[0]
    assert all(m["backend"]["type"] == "toy" for m in toy.pool)
    small, notes = aif_arguments("small", run / "03", prompts_per_category=1, max_new_tokens=16,
                                 teacher=teacher_choice("small", role="pool"), judge=judge_choice("small"))
    assert [m["name"] for m in small.pool] == ["dsft-t1.0", "dsft-t0.7", "smollm2-instruct", "teacher"]
    assert {m["max_new_tokens"] for m in small.pool} == {16} and small.judge["type"] == "toy-judge"
    assert len(notes) == 3 and all("\n" not in n for n in notes)  # teacher, judge, dSFT model: one line each
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the full tier's dSFT model: the paper's, from the hub
    full, _ = aif_arguments("full", run / "03", teacher=teacher_choice("full", "http://t/v1", "gpt-4"),
                            judge=judge_choice("full", "http://j/v1", "gpt-4"))
    assert full.pool[-1]["backend"]["type"] == "openai" and full.judge["base_url"] == "http://j/v1"


def test_throughput_setup(offline, run):
    recipe, overrides, _ = throughput_setup("toy", run / "06")
    assert recipe == stage_setup("sft", "toy").recipe_file and "toy_data_dir" in overrides
    recipe, overrides, note = throughput_setup("small", run / "06")
    assert recipe == stage_setup("sft", "small").recipe_file and overrides["dataset_name"] == "toy" and note


def test_size_choice_gives_the_small_tier_cpu_sizes_only_where_a_parameter_is_left_at_none(monkeypatch):
    import torch

    from handbook.tiers import SMALL_TIER_CPU_SIZES, size_choice

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for tier in ("toy", "full"):   # the recipes' sizes: None stays None
        assert size_choice(tier, max_samples=None, batch_size=None).value == {"max_samples": None, "batch_size": None}
    cpu = size_choice("small", max_samples=None, batch_size=8, max_length=None)
    assert cpu.value == {"max_samples": SMALL_TIER_CPU_SIZES["max_samples"], "batch_size": 8,
                         "max_length": SMALL_TIER_CPU_SIZES["max_length"]}   # the given batch size is kept
    assert cpu.source == "cpu" and "small tier without a GPU" in cpu.note and "batch_size" not in cpu.note
    assert size_choice("small", max_samples=3).source == "given"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # one GPU: the recipe's sizes
    assert size_choice("small", max_samples=None).value == {"max_samples": None}
    with pytest.raises(ValueError, match=r"unknown size parameter\(s\) \['max_stepz'\]"):
        size_choice("small", max_stepz=None)


def test_answer_budget_is_fastchats_at_full_and_on_a_gpu_and_the_toys_on_a_cpu(monkeypatch):
    """FastChat's gen_model_answer.py answers MT-Bench with --max-new-token 1024 (its default): the full tier's
    notebook 05 must too, or its scores do not compare with FastChat's."""
    import torch

    from handbook.tiers import FASTCHAT_MAX_NEW_TOKENS, TOY_ANSWER_TOKENS, answer_budget_choice

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert FASTCHAT_MAX_NEW_TOKENS == 1024
    assert answer_budget_choice("full").value == 1024 and "FastChat" in answer_budget_choice("full").note
    assert answer_budget_choice("toy").value == TOY_ANSWER_TOKENS == 48
    cpu = answer_budget_choice("small")
    assert (cpu.value, cpu.source) == (48, "cpu") and "without a GPU" in cpu.note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert answer_budget_choice("small").value == 1024
    given = answer_budget_choice("full", 48)
    assert given.value == 48 and "do not compare with FastChat's" in given.note
    assert answer_budget_choice("toy", 16).note == ""
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        answer_budget_choice("full", 0)
