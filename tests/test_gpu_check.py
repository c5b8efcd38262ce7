"""CPU smoke test of the GPU check (bench/gpu_check.py): the handbook's SFT and dDPO entry points on the
Zephyr recipes with a tiny random-init model and synthetic data, measured into a JSON."""

import json
import pytest

pytestmark = pytest.mark.slow  # the GPU check's recipes, run on the CPU


def test_gpu_check_runs_the_recipes_and_records_each_stage(load_bench, tmp_path):
    gpu_check = load_bench("gpu_check")
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--size", "tiny", "--steps", "3", "--warmup", "1", "--no-notebooks", "--sft-rows", "32",
                           "--pairs", "16", "--sft-mean-tokens", "96", "--dpo-mean-tokens", "32",
                           "--max-length", "256", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["stage"] for r in result["stages"]] == ["sft", "dpo"]
    for row in result["stages"]:
        assert row["recipe"].startswith("zephyr-7b-beta/")
        assert row["steps"] == 3 and row["measured_steps"] == 2
        assert row["real_tokens_per_s"] > 0 and 0 < row["real_token_share"] <= 1
        assert row["non_embedding_parameters"] > 0 and row["peak_memory_gb"] >= 0
        assert row["mfu"] is None  # no GPU: no peak FLOP/s to divide by
    sft, dpo = result["stages"]
    assert sft["real_token_share"] == 1.0  # packed, padding-free: every processed token is real
    assert dpo["real_token_share"] < 1.0  # chosen and rejected rows padded together
