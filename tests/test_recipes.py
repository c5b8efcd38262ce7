"""Every recipe under ``recipes/`` starts, as written, up to and including its first optimizer step.

Only the model (the toy base, a tiny local Mistral-architecture model), the dataset (a few local rows in
the real schema, under the recipe's own split names) and the output directory are swapped, and the run
stops after one step (``max_steps 1``). Everything else — precision, attention, packing, LoRA / 4-bit,
optimizer, schedule, logging integrations, evaluation and save settings — is the recipe's, so a missing
package, a dead key or a bad value fails here rather than on a cluster after a 7B model has loaded.
Neither flash-attn nor tensorboard is installed on the test machine: the recipes that ask for them
must still start (the handbook falls back to SDPA and drops the missing logger, saying so).
"""

import json
from pathlib import Path

import pytest
from trl import DPOConfig, SFTConfig

from handbook.core.configs import RECIPES_DIR, load_yaml, parse_config
from handbook.core.models import ModelArguments
from handbook.dpo import DPODataArguments
from handbook.dpo import train as dpo_train
from handbook.sft import SFTDataArguments
from handbook.sft import train as sft_train

RECIPES = sorted(p for p in RECIPES_DIR.rglob("*.yaml") if "accelerate_configs" not in p.parts)
SFT_RECIPES = [p for p in RECIPES if p.parent.name == "sft"]
DPO_RECIPES = [p for p in RECIPES if p.parent.name == "dpo"]


def test_every_recipe_is_covered():
    assert set(RECIPES) == set(SFT_RECIPES) | set(DPO_RECIPES) | {p for p in RECIPES if p.parent.name == "aif"}
    assert len(SFT_RECIPES) >= 4 and len(DPO_RECIPES) >= 4


def _swapped(recipe: Path, toy_base, data: str, out: Path) -> list[str]:
    config = load_yaml(recipe)
    argv = ["--config", str(recipe), "--model_name_or_path", str(toy_base), "--dataset_name", data,
            "--output_dir", str(out), "--max_steps", "1"]
    if config.get("dataset_config"):
        argv += ["--dataset_config", "null"]
    return argv


def _first_step(trainer, out: Path):
    import math

    assert trainer.state.global_step == 1  # one optimizer step was taken
    results = json.loads((out / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"]) and results["train_loss"] > 0
    return results


@pytest.mark.parametrize("recipe", SFT_RECIPES, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_sft_recipe_starts_as_written(recipe, toy_base, recipe_data, tmp_path):
    model_args, data_args, training_args = parse_config(
        [ModelArguments, SFTDataArguments, SFTConfig], _swapped(recipe, toy_base, recipe_data["sft"], tmp_path))
    written = load_yaml(recipe)
    assert training_args.learning_rate == pytest.approx(float(written["learning_rate"]))
    assert training_args.packing == written.get("packing", False)
    trainer = sft_train(model_args, data_args, training_args)
    _first_step(trainer, tmp_path)


@pytest.mark.parametrize("recipe", DPO_RECIPES, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_dpo_recipe_starts_as_written(recipe, toy_base, recipe_data, tmp_path):
    model_args, data_args, training_args = parse_config(
        [ModelArguments, DPODataArguments, DPOConfig], _swapped(recipe, toy_base, recipe_data["dpo"], tmp_path))
    written = load_yaml(recipe)
    assert training_args.beta == pytest.approx(float(written["beta"]))
    trainer = dpo_train(model_args, data_args, training_args)
    _first_step(trainer, tmp_path)
