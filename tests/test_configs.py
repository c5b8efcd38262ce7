"""One config path for every CLI and for ``read_recipe``: keys, value types and choices checked before any work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trl import DPOConfig, SFTConfig

import handbook.aif_data as aif_main
import handbook.dpo
import handbook.dsft_data
import handbook.evaluate
import handbook.sft
from handbook.aif.pipeline import AIFArguments, ConvertArguments
from handbook.aif.pool import PoolMemberSpec, build_pool
from handbook.core.configs import (ConfigError, HandbookParser, load_yaml, parse_command, parse_config, read_recipe,
                                   RECIPES_DIR)
from handbook.core.models import ModelArguments
from handbook.ddpo.training import DPODataArguments
from handbook.dsft.training import SFTDataArguments
from handbook.dsft_data import DsftDataArguments

SFT = [ModelArguments, SFTDataArguments, SFTConfig]
DPO = [ModelArguments, DPODataArguments, DPOConfig]
AIF = [AIFArguments]
SFT_RECIPE = RECIPES_DIR / "toy" / "sft" / "config.yaml"
DPO_RECIPE = RECIPES_DIR / "toy" / "dpo" / "config.yaml"
AIF_RECIPE = RECIPES_DIR / "toy" / "aif" / "config.yaml"


def _recipe(tmp_path, base: Path, name="bad.yaml", **changes) -> Path:
    """``base`` with ``changes`` (a value of ``...`` deletes the key), written to ``tmp_path / name``."""
    config = yaml.safe_load(base.read_text())
    for key, value in changes.items():
        if value is ...:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _recipe_text(tmp_path, base: Path, line: str, name="bad.yaml") -> Path:
    """``base`` with one YAML line set as a person would write it (``eval_strategy: no``, ``learning_rate: 1e-5``):
    each top-level key's line replaces the base's own line for it (recipes refuse a key given twice), else is added."""
    keys = {part.split(":", 1)[0] + ":" for part in line.splitlines() if part and not part[0].isspace()}
    kept = [old for old in base.read_text().splitlines() if not any(old.startswith(key) for key in keys)]
    path = tmp_path / name
    path.write_text("\n".join(kept) + "\n" + line + "\n")
    return path


@pytest.fixture
def no_work(monkeypatch):
    """The CLIs' work functions replaced by ones that record a call: a bad config must fail before them."""
    calls = []

    def record(name):
        def work(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} ran although the config is bad")
        return work

    monkeypatch.setattr(handbook.sft, "train", record("sft.train"))
    monkeypatch.setattr(handbook.dpo, "train", record("dpo.train"))
    monkeypatch.setattr(handbook.dsft_data, "run", record("dsft_data.run"))
    monkeypatch.setattr(aif_main, "run_generate", record("aif.run_generate"))
    monkeypatch.setattr(aif_main, "run_convert", record("aif.run_convert"))
    monkeypatch.setattr(aif_main, "prompts_from", record("aif.prompts_from"))
    monkeypatch.setattr(handbook.evaluate, "run_mt_bench", record("evaluate.run_mt_bench"))
    monkeypatch.setattr(handbook.evaluate, "model_backend", record("evaluate.model_backend"))
    return calls


# --- wrong types and values outside the choices, in a YAML recipe -------------------------------------------
def _choices(dataclass_types, key) -> str:
    """The choices of ``key`` as the message lists them, taken from the installed configs (not written here)."""
    from handbook.core.configs import HandbookParser

    choices = HandbookParser(dataclass_types)._actions_by_key[key].choices
    assert choices, key
    return "allowed values: " + ", ".join(str(getattr(c, "value", c)) for c in choices)


SFT_BAD = [
    # (YAML line, key, the bad value as the message shows it, what the message must name as allowed; CHOICES: the
    # field's choices as the installed TRL / transformers define them, so that a new choice upstream breaks nothing)
    ("per_device_train_batch_size: 2.5", "per_device_train_batch_size", "2.5 (float)", "expected an integer (int)"),
    ("num_train_epochs: [1, 2]", "num_train_epochs", "[1, 2] (list)", "expected a number (float)"),
    ("max_steps: many", "max_steps", '"many" (str)', "expected an integer (int)"),
    ("packing: maybe", "packing", '"maybe" (str)', "expected a boolean (true/false)"),
    ("per_device_train_batch_size: null", "per_device_train_batch_size", "null", "expected an integer (int)"),
    ("dataset_name: [toy]", "dataset_name", '["toy"] (list)', "expected a string (str)"),
    ("model_name_or_path: {path: toy}", "model_name_or_path", '{"path": "toy"} (dict)', "expected a string (str) or null"),
    ("train_sampling_strategy: group_by_lenght", "train_sampling_strategy", '"group_by_lenght" (str)',
     "CHOICES (did you mean 'group_by_length'?)"),
    ("lr_scheduler_type: cosin", "lr_scheduler_type", '"cosin" (str)', "CHOICES (did you mean 'cosine'?)"),
    ("eval_strategy: every_step", "eval_strategy", '"every_step" (str)', "CHOICES"),
    ("eval_strategy: no", "eval_strategy", "false (bool)", "CHOICES (YAML reads unquoted yes/no"),
    ("save_strategy: sometimes", "save_strategy", '"sometimes" (str)', "CHOICES"),
    ("optim: adamw_fast", "optim", '"adamw_fast" (str)', "CHOICES"),
    ("dtype: float64", "dtype", '"float64" (str)', "allowed values: auto, bfloat16, float16, float32"),
    ("log_level: loud", "log_level", '"loud" (str)', "CHOICES"),
    ("loss_type: focal", "loss_type", '"focal" (str)', "CHOICES"),
]


@pytest.mark.parametrize("line,key,shown,allowed", SFT_BAD, ids=[b[0] for b in SFT_BAD])
def test_bad_sft_value_fails_before_any_work_naming_file_key_value_and_allowed(tmp_path, no_work, line, key, shown,
                                                                               allowed):
    recipe = _recipe_text(tmp_path, SFT_RECIPE, line)
    with pytest.raises(ConfigError) as err:
        handbook.sft.main(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    message = str(err.value)
    assert message.startswith(f"{recipe}: `{key}`: invalid value {shown}; "), message
    if "CHOICES" in allowed:
        allowed = allowed.replace("CHOICES", _choices(SFT, key))
    assert allowed in message, message
    assert no_work == []
    with pytest.raises(ConfigError, match=f"`{key}`"):  # and through read_recipe, as an exception, not SystemExit
        read_recipe(recipe, SFT)


DPO_BAD = [
    ("beta: true", "beta", "invalid value true (bool); expected a number (float)"),
    ("beta: high", "beta", 'invalid value "high" (str); expected a number (float)'),
    ("truncation_mode: keep_middle", "truncation_mode", "CHOICES"),
    ("train_sampling_strategy: group_by_lenght", "train_sampling_strategy", "did you mean 'group_by_length'?"),
    ("precompute_ref_log_probs: 2", "precompute_ref_log_probs", "expected a boolean (true/false)"),
    ("loss_weights: [1, one]", "loss_weights", "expected a list of a number (float) or null"),
    ("max_train_samples: 10.5", "max_train_samples", "expected an integer (int) or null"),
]


@pytest.mark.parametrize("line,key,expected", DPO_BAD, ids=[b[0] for b in DPO_BAD])
def test_bad_dpo_value_fails_before_any_work(tmp_path, no_work, line, key, expected):
    recipe = _recipe_text(tmp_path, DPO_RECIPE, line)
    with pytest.raises(ConfigError) as err:
        handbook.dpo.main(["--config", str(recipe)])
    if "CHOICES" in expected:
        expected = expected.replace("CHOICES", _choices(DPO, key))
    assert str(err.value).startswith(f"{recipe}: `{key}`: ") and expected in str(err.value), str(err.value)
    assert no_work == []


def test_every_bad_value_is_reported_at_once(tmp_path):
    recipe = _recipe_text(tmp_path, SFT_RECIPE, "per_device_train_batch_size: 2.5\nlr_scheduler_type: cosin")
    with pytest.raises(ConfigError) as err:
        parse_config(SFT, ["--config", str(recipe)])
    assert "`per_device_train_batch_size`" in str(err.value) and "`lr_scheduler_type`" in str(err.value)


def test_strings_convert_as_argparse_converts_them(tmp_path):
    # YAML 1.1 reads `1e-5` as a string; a quoted number or boolean is what the command line would give
    recipe = _recipe_text(tmp_path, SFT_RECIPE, 'learning_rate: 1e-5\nmax_steps: "12"\npacking: "false"\n'
                                                "max_train_samples: null\ndataset_config: 2023")
    model_args, data_args, args = parse_config(SFT, ["--config", str(recipe)])
    assert args.learning_rate == 1e-5 and isinstance(args.learning_rate, float)
    assert args.max_steps == 12 and args.packing is False
    assert data_args.max_train_samples is None and data_args.dataset_config == "2023"


def test_list_and_scalar_for_list_fields(tmp_path):
    recipe = _recipe_text(tmp_path, DPO_RECIPE, "loss_type: sigmoid\nloss_weights: [1]\n"
                                                "lora_target_modules: all-linear")
    model_args, _, args = parse_config(DPO, ["--config", str(recipe)])
    assert args.loss_type == ["sigmoid"] and args.loss_weights == [1.0]
    assert model_args.lora_target_modules == "all-linear"
    recipe = _recipe_text(tmp_path, DPO_RECIPE, "loss_type: [sigmoid, hinge]\nloss_weights: [1, 0.5]")
    assert parse_config(DPO, ["--config", str(recipe)])[2].loss_type == ["sigmoid", "hinge"]


# --- the command line --------------------------------------------------------------------------------------
def test_command_line_overrides_the_recipe_and_is_checked_too(tmp_path):
    _, _, args = parse_config(SFT, ["--config", str(SFT_RECIPE), "--per_device_train_batch_size", "4",
                                    "--lr_scheduler_type", "linear", "--learning_rate=1e-4", "--packing"])
    assert (args.per_device_train_batch_size, args.lr_scheduler_type, args.learning_rate, args.packing) == \
        (4, "linear", 1e-4, True)
    _, data_args, args = parse_config(SFT, ["--config", str(SFT_RECIPE), "--max_train_samples", "8", "--max_length",
                                            "none", "--report_to", "none"])
    assert (data_args.max_train_samples, args.max_length, args.report_to) == (8, None, [])  # "none": no integration
    for argv, key, expected in [
        (["--per_device_train_batch_size", "2.5"], "per_device_train_batch_size", 'invalid value "2.5" (str); expected an integer'),
        (["--train_sampling_strategy", "group_by_lenght"], "train_sampling_strategy", "(did you mean 'group_by_length'?)"),
        (["--bf16", "lots"], "bf16", "expected a boolean (true/false)"),
        (["--dtype", "float64"], "dtype", "allowed values: auto, bfloat16, float16, float32"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_config(SFT, ["--config", str(SFT_RECIPE), *argv])
        assert str(err.value).startswith(f"command line: `{key}`: ") and expected in str(err.value), str(err.value)


def test_command_line_errors_are_config_errors_not_system_exit(tmp_path):
    with pytest.raises(ConfigError, match="command line: unexpected arguments \\['stray'\\]"):
        parse_config(SFT, ["--config", str(SFT_RECIPE), "stray"])
    with pytest.raises(ConfigError, match="command line: the following arguments are required: --output_dir"):
        parse_config(AIF, [])
    with pytest.raises(ConfigError, match="command line: unknown key `output-dir`: did you mean `output_dir`"):
        parse_config(SFT, ["--config", str(SFT_RECIPE), "--output-dir", "x"])
    with pytest.raises(ConfigError, match="command line: unknown key `learning_rat`: did you mean `learning_rate`"):
        parse_config(SFT, ["--config", str(SFT_RECIPE), "--learning_rat", "1"])  # no argparse abbreviation


def test_help_still_prints_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config(AIF, ["--help"])
    assert exit_.value.code == 0 and "--toy_prompts_per_category" in capsys.readouterr().out


# --- renamed keys, env ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,hint", [
    ("max_seq_length", "renamed `max_length`"),
    ("warmup_ratio", "write the ratio as `warmup_steps`"),
    ("evaluation_strategy", "renamed `eval_strategy`"),
    ("torch_dtype", "renamed `dtype`"),
])
def test_renamed_keys_keep_their_hint_in_file_command_line_and_overrides(tmp_path, key, hint):
    recipe = _recipe_text(tmp_path, SFT_RECIPE, f"{key}: 1")
    with pytest.raises(ConfigError, match=rf"bad.yaml: unknown key `{key}`: .*{hint}"):
        parse_config(SFT, ["--config", str(recipe)])
    with pytest.raises(ConfigError, match=rf"command line: unknown key `{key}`: .*{hint}"):
        parse_config(SFT, ["--config", str(SFT_RECIPE), f"--{key}", "1"])
    with pytest.raises(ConfigError, match=rf"keyword arguments: unknown key `{key}`: .*{hint}"):
        read_recipe(SFT_RECIPE, SFT, **{key: 1})


def test_env_mapping_sets_environment_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDBOOK_TEST_CONFIG_VAR", raising=False)
    recipe = _recipe_text(tmp_path, AIF_RECIPE, "env:\n  HANDBOOK_TEST_CONFIG_VAR: 7")
    read_recipe(recipe, AIF)
    assert os.environ["HANDBOOK_TEST_CONFIG_VAR"] == "7"
    recipe = _recipe_text(tmp_path, AIF_RECIPE, "env: [HANDBOOK_TEST_CONFIG_VAR]", name="bad_env.yaml")
    with pytest.raises(ConfigError, match="bad_env.yaml: `env` must be a mapping"):
        read_recipe(recipe, AIF)


# --- read_recipe -------------------------------------------------------------------------------------------
def test_read_recipe_overrides_are_checked_and_may_be_lists_or_mappings(tmp_path):
    _, _, args = read_recipe(SFT_RECIPE, SFT, output_dir=str(tmp_path), max_steps=3, eval_strategy="no",
                             report_to=["none"])
    assert (args.max_steps, args.eval_strategy, args.output_dir) == (3, "no", str(tmp_path))
    with pytest.raises(ConfigError, match=r"keyword arguments: `max_steps`: invalid value 2.5 \(float\); expected an integer"):
        read_recipe(SFT_RECIPE, SFT, max_steps=2.5)
    with pytest.raises(ConfigError, match="keyword arguments: `eval_strategy`: .*allowed values: .*steps"):
        read_recipe(SFT_RECIPE, SFT, eval_strategy="sometimes")
    (aif,) = read_recipe(AIF_RECIPE, AIF, output_dir=str(tmp_path), judge={"type": "toy-judge", "noise": 0.0})
    assert aif.judge == {"type": "toy-judge", "noise": 0.0}


def test_a_dataclass_check_is_named_by_the_file(tmp_path):
    recipe = _recipe(tmp_path, AIF_RECIPE, batch_size=0)
    with pytest.raises(ConfigError, match=f"{recipe}: `batch_size`: invalid value 0; must be at least 1"):
        read_recipe(recipe, AIF)


# --- every shipped recipe still parses ------------------------------------------------------------------------
RECIPE_TYPES = {"sft": SFT, "dpo": DPO, "aif": AIF}
RECIPES = sorted(p for p in RECIPES_DIR.rglob("*.yaml") if "accelerate_configs" not in p.parts)


def test_every_recipe_has_a_known_stage():
    assert RECIPES and all(p.parent.name in RECIPE_TYPES for p in RECIPES), RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_every_shipped_recipe_parses(recipe):
    instances = read_recipe(recipe, RECIPE_TYPES[recipe.parent.name])
    assert len(instances) == len(RECIPE_TYPES[recipe.parent.name])
    if recipe.parent.name == "aif":
        assert [PoolMemberSpec.from_spec(m, n).name for n, m in enumerate(instances[0].pool)]


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_toy_recipes_train_without_activation_checkpointing_the_paper_recipes_with_it(stage):
    """TRL turns activation (gradient) checkpointing on by default; the toy model's activations are a few MB, so
    its recipes turn it off (the recomputation is pure cost), while the 7B recipes keep it."""
    toy = read_recipe(RECIPES_DIR / "toy" / stage / "config.yaml", RECIPE_TYPES[stage])[-1]
    assert toy.activation_checkpointing is False and toy.gradient_checkpointing is False
    full = read_recipe(RECIPES_DIR / "zephyr-7b-beta" / stage / "config_full.yaml", RECIPE_TYPES[stage])[-1]
    assert full.activation_checkpointing is True


# --- AIF: its arguments, the pool members, the commands -------------------------------------------------------
AIF_BAD = [
    ({"score": "overal"}, "`score`: invalid value \"overal\" (str); allowed values: overall, fine_grained (did you mean 'overall'?)"),
    ({"rule": "zephir"}, "`rule`: invalid value \"zephir\" (str); allowed values: zephyr, h4, argilla, argilla_strict, best_vs_worst"),
    ({"max_retries": "lots"}, "`max_retries`: invalid value \"lots\" (str); expected an integer (int)"),
    ({"max_retries": -1}, "`max_retries`: invalid value -1; must be at least 0"),
    ({"batch_size": 0}, "`batch_size`: invalid value 0; must be at least 1"),
    ({"judge": "toy-judge"}, "`judge`: invalid value \"toy-judge\" (str); expected a mapping (dict)"),
    ({"pool": {"name": "a"}}, "`pool`: invalid value {\"name\": \"a\"} (dict); expected a list of a mapping (dict)"),
    ({"toy_prompts_per_category": 2.5}, "`toy_prompts_per_category`: invalid value 2.5 (float)"),
]


@pytest.mark.parametrize("changes,message", AIF_BAD, ids=[str(c) for c, _ in AIF_BAD])
def test_bad_aif_value_fails_before_any_work(tmp_path, no_work, changes, message):
    recipe = _recipe(tmp_path, AIF_RECIPE, output_dir=str(tmp_path / "out"), **changes)
    with pytest.raises(ConfigError) as err:
        aif_main.main(["generate", "--config", str(recipe)])
    assert str(err.value).startswith(f"{recipe}: ") and message in str(err.value), str(err.value)
    assert no_work == [] and not (tmp_path / "out").exists()


POOL_BAD = [
    (1, {"temprature": 0.5}, "unknown key `pool[1].temprature`: did you mean `temperature`?"),
    (0, {"temperature": "hot"}, "`pool[0].temperature`: invalid value \"hot\" (str); expected a number (float)"),
    (2, {"max_new_tokens": 32.5}, "`pool[2].max_new_tokens`: invalid value 32.5 (float); expected an integer (int)"),
    (3, {"seed": True}, "`pool[3].seed`: invalid value true (bool); expected an integer (int) or null"),
    (0, {"backend": "toy"}, "`pool[0].backend`: invalid value \"toy\" (str); expected a mapping (dict)"),
    (1, {"name": ["a"]}, "`pool[1].name`: invalid value [\"a\"] (list); expected a string (str)"),
    (1, {"top_p": 1.5}, "`pool[1].top_p`: invalid value 1.5; must be in (0, 1]"),
    (1, {"name": "teacher"}, "`pool[1].name`: 'teacher' is the name of pool[0] too"),
]


@pytest.mark.parametrize("n,change,message", POOL_BAD, ids=[m.split(":")[0] for _, _, m in POOL_BAD])
def test_bad_pool_member_fails_in_the_recipe_and_in_build_pool(tmp_path, no_work, n, change, message):
    pool = yaml.safe_load(AIF_RECIPE.read_text())["pool"]
    pool[n].update(change)
    recipe = _recipe(tmp_path, AIF_RECIPE, pool=pool)
    with pytest.raises(ConfigError) as err:
        aif_main.main(["generate", "--config", str(recipe)])
    assert str(err.value).startswith(f"{recipe}: ") and message in str(err.value), str(err.value)
    assert no_work == []

    def no_backend(*args, **kwargs):
        raise AssertionError("a backend was built for a bad pool")

    with pytest.raises(ConfigError) as err:
        build_pool(pool, no_backend)
    assert message in str(err.value)


def test_pool_member_missing_field():
    with pytest.raises(ConfigError, match=r"pool\[1\]: field 'backend' is missing"):
        PoolMemberSpec.from_pool([{"name": "a", "backend": {"type": "toy"}}, {"name": "b"}])
    with pytest.raises(ConfigError, match=r"`pool\[0\]`: invalid value 'toy'; expected a mapping"):
        PoolMemberSpec.from_pool(["toy"])


def test_build_pool_takes_a_good_pool():
    built = []
    members = build_pool([{"name": "a", "backend": {"type": "x"}, "temperature": 0.5},
                          {"name": "b", "backend": {"type": "x"}, "max_new_tokens": 8, "seed": 9}],
                         lambda spec, shard=None, deadline=None: built.append(spec) or object())
    assert len(built) == 1  # the same backend spec is built once
    assert [(m.name, m.sampling.temperature, m.sampling.max_new_tokens, m.sampling.seed) for m in members] == \
        [("a", 0.5, 256, 0), ("b", 1.0, 8, 9)]


def test_aif_dataclass_checks_its_values_when_constructed_directly():
    with pytest.raises(ConfigError, match="`score`: invalid value \"overal\""):
        AIFArguments(output_dir="x", score="overal")
    with pytest.raises(ConfigError, match=r"unknown key `pool\[0\].temprature`"):
        AIFArguments(output_dir="x", pool=[{"name": "a", "backend": {"type": "toy"}, "temprature": 1}])


def test_aif_commands(tmp_path, no_work):
    command, (args,) = parse_command(aif_main.COMMANDS, ["generate", "--config", str(AIF_RECIPE), "--max_retries", "3",
                                                         "--judge", "{type: toy-judge, noise: 0.2}"])
    assert command == "generate" and args.max_retries == 3 and args.judge == {"type": "toy-judge", "noise": 0.2}
    command, (conv,) = parse_command(aif_main.COMMANDS, ["convert", "--input", "uf.jsonl", "--output_dir", "out",
                                                         "--no_decontaminate", "--score", "fine_grained"])
    assert (command, conv.rule, conv.score, conv.fix_overall, conv.decontaminate) == \
        ("convert", "zephyr", "fine_grained", True, False)
    for argv, message in [
        (["generate", "--config", str(AIF_RECIPE), "--max_retries", "lots"],
         'command line: `max_retries`: invalid value "lots" (str); expected an integer (int)'),
        (["convert", "--input", "a", "--output_dir", "b", "--rule", "argila"],
         "command line: `rule`: invalid value \"argila\" (str); allowed values: zephyr, h4, argilla, argilla_strict, best_vs_worst"),
        (["convert", "--input", "a", "--output_dir", "b", "--score", "overal"],
         "allowed values: overall, fine_grained (did you mean 'overall'?)"),
        (["convert", "--input", "a", "--output_dir", "b", "--rule", "argilla", "--score", "overall"],
         "the argilla rule scores by the mean of the aspect ratings"),
        (["convert", "--input", "a", "--output_dir", "b", "--keep_benchmark_prompts"],
         "command line: unknown key `keep_benchmark_prompts`"),
        (["convert", "--input", "a"], "command line: the following arguments are required: --output_dir"),
        (["rate"], "command line: unknown command 'rate'; choose from generate, convert"),
        ([], "command line: a command is required; choose from generate, convert"),
    ]:
        with pytest.raises(ConfigError) as err:
            aif_main.main(argv)
        assert message in str(err.value), (argv, str(err.value))
    assert no_work == []


def test_convert_arguments_from_a_yaml_file(tmp_path):
    recipe = tmp_path / "convert.yaml"
    recipe.write_text("input: uf.jsonl\noutput_dir: out\nrule: best_vs_worst\nfix_overall: false\n")
    command, (args,) = parse_command(aif_main.COMMANDS, ["convert", "--config", str(recipe), "--seed", "7"])
    assert (args.rule, args.fix_overall, args.seed, args.score) == ("best_vs_worst", False, 7, None)
    assert isinstance(args, ConvertArguments)


# --- evaluate: underscores, subcommands -----------------------------------------------------------------------
def test_evaluate_commands_take_underscored_flags(no_work):
    command, (args,) = parse_command(handbook.evaluate.COMMANDS, [
        "mt-bench", "--model", "toy-dsft", "--model_id", "dsft", "--output_dir", "out", "--max_new_tokens", "40",
        "--judge_base_url", "http://127.0.0.1:1/v1", "--judge_model", "m", "--api_key_env", "KEY",
        "--max_concurrency", "2", "--judge_prompts", "jp.jsonl", "--reference_answers", "ra.jsonl"])
    assert (command, args.model_id, args.max_new_tokens, args.max_concurrency, args.judge_prompts) == \
        ("mt-bench", "dsft", 40, 2, "jp.jsonl")
    command, (args,) = parse_command(handbook.evaluate.COMMANDS, [
        "win-rate", "--model", "a", "--reference_model", "b", "--output_dir", "out"])
    assert (command, args.reference_model, args.judge_base_url) == ("win-rate", "b", None)
    for argv, message in [
        (["mt-bench", "--model", "a", "--model-id", "x", "--output_dir", "o"],
         "command line: unknown key `model-id`: did you mean `model_id`?"),
        (["mt-bench", "--model", "a", "--output_dir", "o", "--max_new_tokens", "lots"],
         'command line: `max_new_tokens`: invalid value "lots" (str); expected an integer (int)'),
        (["mt-bench", "--model", "a", "--output_dir", "o", "--judge_base_url", "http://x/v1"],
         "`judge_model` is required with `judge_base_url`"),
        (["win-rate", "--model", "a", "--output_dir", "o"],
         "command line: the following arguments are required: --reference_model"),
        (["alpaca-eval"], "command line: unknown command 'alpaca-eval'; choose from mt-bench, win-rate"),
    ]:
        with pytest.raises(ConfigError) as err:
            handbook.evaluate.main(argv)
        assert message in str(err.value), (argv, str(err.value))
    assert no_work == []


# --- dsft_data: the teacher mapping ---------------------------------------------------------------------------
def test_dsft_data_teacher_mapping_from_yaml_and_command_line(tmp_path, no_work):
    recipe = tmp_path / "data.yaml"
    recipe.write_text("output_dir: out\nteacher: {type: openai, base_url: 'http://127.0.0.1:1/v1', model: m}\n"
                      "temperature: 1e-1\n")
    (args,) = parse_config([DsftDataArguments], ["--config", str(recipe)])
    assert args.teacher == {"type": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
    assert args.temperature == 0.1
    (args,) = parse_config([DsftDataArguments], ["--config", str(recipe), "--teacher", '{"type": "toy"}'])
    assert args.teacher == {"type": "toy"}
    recipe.write_text("output_dir: out\nteacher: toy\n")
    with pytest.raises(ConfigError, match=f"{recipe}: `teacher`: invalid value \"toy\" \\(str\\); expected a mapping"):
        handbook.dsft_data.main(["--config", str(recipe)])
    with pytest.raises(ConfigError, match="command line: `teacher`: invalid value \"toy\" \\(str\\); expected a mapping"):
        handbook.dsft_data.main(["--output_dir", "out", "--teacher", "toy"])
    assert no_work == []


# --- the parser is TRL's ---------------------------------------------------------------------------------------
def test_the_parser_is_trls():
    from trl import TrlParser

    parser = HandbookParser(AIF)
    assert isinstance(parser, TrlParser)
    (args,) = parser.parse_args_and_config(["--config", str(AIF_RECIPE), "--seed", "1"])
    assert args.seed == 1 and args.rule == "zephyr"


def test_cli_exits_with_the_message(tmp_path):
    recipe = _recipe(tmp_path, AIF_RECIPE, output_dir=str(tmp_path / "out"), score="overal")
    proc = subprocess.run([sys.executable, "-m", "handbook.aif_data", "generate", "--config", str(recipe)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "`score`: invalid value \"overal\"" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


# --- the global batch of a recipe, on any number of processes -----------------------------------------
GLOBAL_BATCH_RECIPES = {"zephyr-7b-beta/sft/config_full.yaml": 512, "zephyr-7b-beta/dpo/config_full.yaml": 32,
                        "zephyr-7b-beta/dpo/config_full_v2.yaml": 128, "zephyr-7b-beta/sft/config_qlora.yaml": 8,
                        "zephyr-7b-beta/dpo/config_qlora.yaml": 32}


@pytest.mark.parametrize("recipe,global_batch", sorted(GLOBAL_BATCH_RECIPES.items()))
@pytest.mark.parametrize("processes", [1, 8, 16])
def test_recipes_keep_their_global_batch_on_any_number_of_processes(recipe, global_batch, processes, monkeypatch):
    from trl import DPOConfig, SFTConfig

    from handbook.core.configs import recipe_path
    from handbook.ddpo.training import DPODataArguments

    stage_types = ([ModelArguments, SFTDataArguments, SFTConfig] if "/sft/" in recipe
                   else [ModelArguments, DPODataArguments, DPOConfig])
    import handbook.core.configs as configs

    monkeypatch.setattr(configs, "world_size", lambda: processes)  # as under `accelerate launch` (WORLD_SIZE)
    per_device = load_yaml(recipe_path(recipe))["per_device_train_batch_size"]
    if global_batch % (per_device * processes):
        with pytest.raises(ConfigError, match="not a multiple"):
            read_recipe(recipe_path(recipe), stage_types, output_dir="unused")
        return
    *_, training = read_recipe(recipe_path(recipe), stage_types, output_dir="unused")
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps * processes == global_batch


def test_global_batch_and_accumulation_are_not_both_set(tmp_path):
    from trl import SFTConfig

    recipe = tmp_path / "both.yaml"
    recipe.write_text("output_dir: out\nper_device_train_batch_size: 4\nglobal_batch_size: 32\n"
                      "gradient_accumulation_steps: 2\n")
    with pytest.raises(ConfigError, match="set one of"):
        read_recipe(recipe, [ModelArguments, SFTDataArguments, SFTConfig])
    recipe.write_text("output_dir: out\nper_device_train_batch_size: 4\nglobal_batch_size: 32\n")
    *_, training = read_recipe(recipe, [ModelArguments, SFTDataArguments, SFTConfig])
    assert training.gradient_accumulation_steps == 8
    with pytest.raises(ConfigError, match="set one of"):
        parse_config([ModelArguments, SFTDataArguments, SFTConfig],
                     ["--config", str(recipe), "--gradient_accumulation_steps", "2"])
    *_, training = parse_config([ModelArguments, SFTDataArguments, SFTConfig],
                                ["--config", str(recipe), "--per_device_train_batch_size", "8"])
    assert training.gradient_accumulation_steps == 4  # a new per-device batch keeps the step
    recipe.write_text("output_dir: out\nper_device_train_batch_size: 4\nglobal_batch_size: 30\n")
    with pytest.raises(ConfigError, match="not a multiple of per_device_train_batch_size 4"):
        read_recipe(recipe, [ModelArguments, SFTDataArguments, SFTConfig])


def test_a_field_type_pydantic_cannot_cache_is_left_to_the_dataclass():
    """An annotation that cannot key the adapters' cache (unhashable metadata) is not a crash in the checker."""
    from typing import Annotated

    from handbook.core.configs import _convert

    assert _convert("3", Annotated[int, {"help": ["x"]}]) == "3"
    assert _convert("3", int) == 3
