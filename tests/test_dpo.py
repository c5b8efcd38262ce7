import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl import DPOConfig, DPOTrainer

from handbook.core.configs import parse_config, read_recipe
from handbook.ddpo.training import to_trl_pairs
from handbook.dpo import DPODataArguments, train
from handbook.ddpo.objective import dpo_batch, dpo_loss, sequence_logps
from handbook.core.models import ModelArguments, get_model, get_tokenizer
from handbook.toy import world

ROOT = Path(__file__).resolve().parent.parent
TOY_RECIPE = ROOT / "recipes" / "toy" / "dpo" / "config.yaml"
TYPES = [ModelArguments, DPODataArguments, DPOConfig]


def _triple(prompt, chosen, rejected):
    return {"prompt": prompt, "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": rejected}]}


@pytest.fixture(scope="module")
def pairs():
    rows = []
    for p in world.sample_prompts(2, "train", seed=5):
        if p.constraint == "none":
            continue
        ref = p.reference_answer()
        ignored = world.apply_style(p.task.answer(p.item), p.constraint, follow=False, ramble=True)
        rows.append(_triple(p.text, ref, ignored))
    return to_trl_pairs(rows)


@pytest.fixture(scope="module")
def students():
    from handbook.toy.students import toy_students

    return toy_students()


def _config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "dpo"), beta=0.1, learning_rate=5e-4, per_device_train_batch_size=4,
                max_length=128, report_to=[], save_strategy="no", logging_steps=1, seed=0, use_cpu=True, bf16=False)
    base.update(kw)
    return DPOConfig(**base)


def _trainer(students, pairs, tmp_path, **kw):
    args = ModelArguments(model_name_or_path=students["dsft"])
    return DPOTrainer(model=get_model(args), args=_config(tmp_path, **kw), train_dataset=pairs,
                      processing_class=get_tokenizer(args))


def test_eq1_by_hand_equals_trl_on_the_same_batch(students, pairs, tmp_path):
    trainer = _trainer(students, pairs, tmp_path, precompute_ref_log_probs=False)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch).item()
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    mine = dpo_batch(trainer.model, trainer.ref_model, batch, beta=0.1).metrics()
    assert mine["loss"] == pytest.approx(trl_loss, abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected"):
        assert mine[key] == pytest.approx(trl_metrics[key], abs=1e-5), key


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5])
def test_eq1_by_hand_equals_trl_when_the_policy_differs_from_the_reference(students, pairs, tmp_path, beta):
    """At initialisation policy = reference and every reward is 0, where a wrong sign or a misplaced β would
    pass; here the policy is the trained student and the reference its step-100 checkpoint."""
    args = ModelArguments(model_name_or_path=students["dsft"])
    trainer = DPOTrainer(model=get_model(args), ref_model=get_model(ModelArguments(model_name_or_path=students["dsft_early"])),
                         args=_config(tmp_path, beta=beta, precompute_ref_log_probs=False), train_dataset=pairs,
                         processing_class=get_tokenizer(args))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    trl_loss = trainer.compute_loss(trainer.model, batch).item()
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    mine = dpo_batch(trainer.model, trainer.ref_model, batch, beta=beta).metrics()
    assert abs(mine["rewards/margins"]) > 1e-3 * beta  # the policy has moved away from the reference
    assert mine["loss"] == pytest.approx(trl_loss, abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected"):
        assert mine[key] == pytest.approx(trl_metrics[key], abs=1e-5), key


def test_loss_formula_on_numbers():
    out = dpo_loss(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0]), torch.tensor([-11.0, -5.0]),
                   torch.tensor([-11.0, -5.0]), beta=0.5)
    assert out.chosen_rewards.tolist() == [0.5, 0.0] and out.rejected_rewards.tolist() == [-0.5, 0.5]
    expected = -(torch.nn.functional.logsigmoid(torch.tensor(1.0)) + torch.nn.functional.logsigmoid(torch.tensor(-0.5))) / 2
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-7)
    m = out.metrics()
    assert m["rewards/accuracies"] == 0.5 and m["rewards/margins"] == pytest.approx(0.25)


def test_precomputed_reference_equals_live_reference(students, pairs, tmp_path):
    live = _trainer(students, pairs, tmp_path / "live", precompute_ref_log_probs=False)
    pre = _trainer(students, pairs, tmp_path / "pre", precompute_ref_log_probs=True)
    assert pre.ref_model is None  # no reference model in memory during training
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(pre.train_dataset.column_names)  # computed once
    batch_pre = next(iter(pre.get_train_dataloader()))
    batch_live = next(iter(live.get_train_dataloader()))
    assert torch.equal(batch_pre["input_ids"], batch_live["input_ids"])
    ref_c, ref_r = sequence_logps(live.ref_model, batch_live["input_ids"], batch_live["attention_mask"],
                                  batch_live["completion_mask"]).chunk(2)
    assert torch.allclose(batch_pre["ref_chosen_logps"], ref_c, atol=1e-5)
    assert torch.allclose(batch_pre["ref_rejected_logps"], ref_r, atol=1e-5)
    pre.model.train(), live.model.train()
    assert pre.compute_loss(pre.model, batch_pre).item() == pytest.approx(
        live.compute_loss(live.model, batch_live).item(), abs=1e-5)


def test_dpo_training_raises_the_chosen_replies(students, pairs, tmp_path):
    trainer = _trainer(students, pairs, tmp_path, precompute_ref_log_probs=True, num_train_epochs=3)
    trainer.train()
    log = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    assert log[-1]["rewards/margins"] > log[0]["rewards/margins"]
    assert log[-1]["loss"] < log[0]["loss"]


def test_lora_reference_is_the_adapter_disabled(students, pairs, tmp_path):
    model_args, data_args, dpo_args = read_recipe(TOY_RECIPE, TYPES, output_dir=str(tmp_path / "lora"),
                                                  use_peft=True, lora_r=4, lora_alpha=8, num_train_epochs=2,
                                                  per_device_train_batch_size=4, learning_rate=5e-3,
                                                  eval_strategy="no")
    trainer = train(model_args, data_args, dpo_args, datasets=(pairs, None))
    out = Path(dpo_args.output_dir)
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    base = get_model(ModelArguments(model_name_or_path=students["dsft"]))
    batch = next(iter(trainer.get_train_dataloader()))
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    with torch.no_grad():
        with trainer.model.disable_adapter():
            disabled = sequence_logps(trainer.model, *args)
        enabled = sequence_logps(trainer.model, *args)
        original = sequence_logps(base, *args)
    assert torch.allclose(disabled, original, atol=1e-4)  # the reference: the dSFT model itself
    assert not torch.allclose(enabled, original, atol=1e-3)  # the policy moved


def test_qlora_dpo_runs_on_cpu(students, pairs, tmp_path):
    import bitsandbytes as bnb

    model_args, data_args, dpo_args = read_recipe(TOY_RECIPE, TYPES, output_dir=str(tmp_path / "qlora"),
                                                  use_peft=True, load_in_4bit=True, lora_r=4, lora_alpha=8,
                                                  lora_target_modules="all-linear", num_train_epochs=1,
                                                  per_device_train_batch_size=4, eval_strategy="no")
    trainer = train(model_args, data_args, dpo_args, datasets=(pairs, None))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    assert all(e["loss"] == e["loss"] for e in trainer.state.log_history if "loss" in e)


def test_toy_recipe_end_to_end_through_the_cli(tmp_path, students):
    out = tmp_path / "dpo"
    proc = subprocess.run([sys.executable, "-m", "handbook.dpo", "--config", str(TOY_RECIPE), "--output_dir", str(out),
                           "--num_train_epochs", "2"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = json.loads((out / "log_history.json").read_text())
    evals = [e for e in log if "eval_rewards/accuracies" in e]
    assert len(evals) == 2 and evals[-1]["eval_rewards/accuracies"] > 0.7
    assert evals[-1]["eval_rewards/margins"] > 0
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*/dpo/*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dpo_recipe_parses_against_the_installed_stack(recipe):
    _, _, args = parse_config(TYPES, ["--config", str(recipe)])
    assert args.precompute_ref_log_probs


def test_paper_values_in_the_recipes():
    _, data, full = parse_config(TYPES, ["--config", str(ROOT / "recipes/zephyr-7b-beta/dpo/config_full.yaml")])
    assert (full.beta, full.learning_rate, full.lr_scheduler_type, full.num_train_epochs) == (0.1, 5e-7, "linear", 3)
    assert full.warmup_steps == 0.1 and full.max_length == 1024
    # one process here: the whole global batch of 32 in accumulation (8 GPUs: 2 × 2 × 8)
    assert full.per_device_train_batch_size * full.gradient_accumulation_steps == 32
    assert (data.dataset_name, data.dataset_train_split) == ("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")
    _, _, v2 = parse_config(TYPES, ["--config", str(ROOT / "recipes/zephyr-7b-beta/dpo/config_full_v2.yaml")])
    assert (v2.beta, v2.num_train_epochs, v2.lr_scheduler_type) == (0.01, 1, "cosine")
    assert v2.per_device_train_batch_size * v2.gradient_accumulation_steps == 128  # the revision's 8 × 2 × 8 GPUs
    m, _, q = parse_config(TYPES, ["--config", str(ROOT / "recipes/zephyr-7b-beta/dpo/config_qlora.yaml")])
    assert m.load_in_4bit and m.use_peft and m.lora_r == m.lora_alpha == 128
    assert q.learning_rate == 5e-6 and q.optim == "paged_adamw_32bit"


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("rejected"), "row 1: field 'rejected' is missing"),
    (lambda r: r["rejected"][1].update(content=r["chosen"][1]["content"]), "row 1: fields 'chosen' and 'rejected' have the same reply"),
    (lambda r: r["chosen"][1].update(content=""), "row 1: field 'chosen': the assistant's reply is empty"),
    (lambda r: r.update(prompt="another prompt"), "row 1: field 'chosen': the first turn does not match the prompt"),
    (lambda r: r.update(prompt=""), "row 1: field 'prompt' is missing or empty"),
])
def test_malformed_triples_are_refused(mutate, message):
    rows = [_triple("q?", "good", "bad"), _triple("r?", "good", "bad")]
    mutate(rows[1])
    with pytest.raises(ValueError, match=message):
        to_trl_pairs(rows)


def test_ddpo_resumes_from_its_last_checkpoint(students, pairs, tmp_path):
    """Killed after checkpoint-2, a rerun with ``resume_from_checkpoint: true`` goes on at step 3 with the
    steps an uninterrupted run takes (same losses), and leaves the earlier checkpoint as it was."""
    from transformers import TrainerCallback

    class KilledAfterFirstCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt("killed")

    def run(out, resume=False, callbacks=None):
        args = ModelArguments(model_name_or_path=students["dsft"])
        config = _config(tmp_path, output_dir=str(out), max_steps=4, save_strategy="steps", save_steps=2,
                         per_device_train_batch_size=2, precompute_ref_log_probs=True,
                         resume_from_checkpoint="true" if resume else None)
        return train(args, DPODataArguments(), config, datasets=(pairs, None), callbacks=callbacks)

    straight = run(tmp_path / "straight")
    losses = {e["step"]: e["loss"] for e in straight.state.log_history if "loss" in e}
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", callbacks=[KilledAfterFirstCheckpoint()])
    assert (tmp_path / "killed" / "checkpoint-2").is_dir() and not (tmp_path / "killed" / "checkpoint-4").exists()
    class Steps(TrainerCallback):
        taken = []

        def on_step_end(self, args, state, control, **kwargs):
            Steps.taken.append(state.global_step)

    resumed = run(tmp_path / "killed", resume=True, callbacks=[Steps()])
    assert Steps.taken == [3, 4]  # went on from checkpoint-2, not from step 1
    logged = {e["step"]: e["loss"] for e in resumed.state.log_history if "loss" in e}
    assert sorted(logged) == [1, 2, 3, 4]  # the killed run's log, continued
    for step, loss in logged.items():
        assert loss == pytest.approx(losses[step], rel=1e-4)
