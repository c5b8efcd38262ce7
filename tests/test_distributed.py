"""Multi-process runs on the CPU: 2 processes over gloo (DDP) and DeepSpeed ZeRO-3, both CLIs.

`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs runs 2 processes over
gloo (`--cpu --num_processes 2` would silently run one). Each 2-process run is compared with a
1-process run of the same global batch: per-step losses within 1e-4 (relative) and saved weights
within 1e-4 (absolute) for DDP; ZeRO-3 within 1e-3.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # two processes launched per test (torchrun / accelerate)

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
DDP = ["--multi_gpu", "--num_processes", "2"]
ZERO3 = ["--config_file", str(ROOT / "recipes/accelerate_configs/zero3.yaml"), "--num_processes", "2",
         "--mixed_precision", "no"]


def _run(cmd, timeout=900):
    env = dict(os.environ, TQDM_DISABLE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    return proc


def _losses(out):
    return [e["loss"] for e in json.loads((Path(out) / "log_history.json").read_text()) if "loss" in e]


def _max_weight_difference(a, b):
    wa, wb = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


SFT = ["-m", "handbook.sft", "--config", str(ROOT / "recipes/toy/sft/config.yaml"), "--max_steps", "6",
       "--logging_steps", "1", "--eval_strategy", "no", "--toy_prompts_per_category", "12", "--toy_replies_per_prompt", "1"]


@pytest.fixture(scope="module")
def sft_single(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft1") / "model"
    _run([sys.executable] + SFT + ["--output_dir", str(out), "--per_device_train_batch_size", "8"])
    return out


@pytest.mark.parametrize("launcher,tolerance", [(DDP, 1e-4), (ZERO3, 1e-3)], ids=["ddp", "zero3"])
def test_sft_two_processes_match_one(tmp_path, sft_single, launcher, tolerance):
    out = tmp_path / "model"
    _run(ACCELERATE + launcher + SFT + ["--output_dir", str(out), "--per_device_train_batch_size", "4"])
    single, double = _losses(sft_single), _losses(out)
    assert len(single) == len(double) == 6
    for a, b in zip(single, double):
        assert abs(a - b) <= tolerance * abs(a), (single, double)
    assert _max_weight_difference(sft_single, out) < tolerance  # ZeRO-3's save gathers the full weights


DPO = ["-m", "handbook.dpo", "--config", str(ROOT / "recipes/toy/dpo/config.yaml"), "--num_train_epochs", "1",
       "--logging_steps", "1", "--toy_prompts_per_category", "10", "--toy_eval_prompts_per_category", "4",
       "--max_train_samples", "64"]  # a whole number of global batches: a ragged last batch is padded differently


@pytest.fixture(scope="module")
def dpo_single(tmp_path_factory):
    from handbook.toy.students import toy_students

    toy_students()  # built before any multi-process launch
    base = tmp_path_factory.mktemp("dpo")
    out = base / "single"
    _run([sys.executable] + DPO + ["--output_dir", str(out), "--per_device_train_batch_size", "16",
                                   "--toy_data_dir", str(base / "data")])
    return out, base / "data"


@pytest.mark.parametrize("launcher,tolerance", [(DDP, 1e-4), (ZERO3, 1e-3)], ids=["ddp", "zero3"])
def test_dpo_two_processes_match_one(tmp_path, dpo_single, launcher, tolerance):
    single_out, data = dpo_single  # the triples were saved to disk by the single run: precompute needs that
    out = tmp_path / "model"
    _run(ACCELERATE + launcher + DPO + ["--output_dir", str(out), "--per_device_train_batch_size", "8",
                                        "--toy_data_dir", str(data)])
    single, double = _losses(single_out), _losses(out)
    assert len(single) == len(double) > 1
    for a, b in zip(single, double):
        assert abs(a - b) <= tolerance * abs(a), (single, double)
    evals = [e for e in json.loads((out / "log_history.json").read_text()) if "eval_rewards/accuracies" in e]
    assert evals and evals[-1]["eval_rewards/accuracies"] > 0.5
    assert _max_weight_difference(single_out, out) < tolerance


def test_sharded_generation_returns_exactly_the_single_process_rows(tmp_path):
    from handbook.toy.students import toy_students

    model = toy_students()["dsft"]
    script = str(ROOT / "tests/scripts/sharded_generate.py")
    _run([sys.executable, script, model, str(tmp_path / "one.json")])
    _run(ACCELERATE + DDP + [script, model, str(tmp_path / "two.json")])
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert (one["world_size"], one["backend"]) == (1, "TransformersBackend")
    assert (two["world_size"], two["backend"]) == (2, "ShardedBackend")
    assert len(two["replies"]) == 37 and two["replies"] == one["replies"]


@pytest.mark.parametrize("name", ["ddp.yaml", "zero3.yaml", "fsdp.yaml"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "recipes/accelerate_configs" / name))
    assert config.distributed_type.value in ("MULTI_GPU", "DEEPSPEED", "FSDP")
    if name == "zero3.yaml":
        assert config.deepspeed_config["zero_stage"] == 3


def test_slurm_launcher_is_valid_bash_and_runs_the_handbook_clis():
    script = (ROOT / "recipes/launch.slurm").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "recipes/launch.slurm")]).returncode == 0
    assert "accelerate launch" in script and "-m handbook.$TASK" in script and "--machine_rank" in script


def test_memory_estimates():
    from handbook.tools.memory import MISTRAL_7B, lora_params, training_hours, training_memory

    full = training_memory(MISTRAL_7B, "full", n_gpus=1, zero3=False, micro_batch=1)
    assert full["weights"] + full["gradients"] + full["optimizer (fp32 master + Adam)"] == pytest.approx(
        16 * 7.24, abs=0.05)  # 16 bytes per parameter
    sharded = training_memory(MISTRAL_7B, "full", n_gpus=8, micro_batch=1)
    assert sharded["weights"] == pytest.approx(full["weights"] / 8, abs=0.01)
    assert lora_params(MISTRAL_7B, 16) == pytest.approx(41.9e6, rel=0.01)  # the known count for Mistral-7B, r=16
    qlora = training_memory(MISTRAL_7B, "qlora", lora_r=16, micro_batch=1)
    assert 3.5 < qlora["weights"] < 4.5
    live = training_memory(MISTRAL_7B, "full", stage="dpo", reference="live")
    assert live["reference model"] > 0 and "reference model" not in training_memory(MISTRAL_7B, "full", stage="dpo")
    assert training_hours(1e9, n_params=1e9, n_gpus=1, peak_tflops=100, mfu=0.5) == pytest.approx(6e18 / 5e13 / 3600)
    with pytest.raises(ValueError):
        training_memory(method="lora")
