"""The prepared GPU benchmark (bench/gpu_bench.py) runs end to end on a CPU at its tiny size."""

import json


def test_gpu_bench_tiny_cpu(tmp_path, load_bench):
    out = tmp_path / "gpu_bench.json"
    load_bench("gpu_bench").main(["--size", "tiny", "--device", "cpu", "--threads", "1", "--peak-tflops", "1.0",
                                  "--out", str(out)])
    res = json.loads(out.read_text())

    sft = res["sft"]
    assert sft["status"] == "ok"
    assert sft["tokens_per_s"] > 0 and sft["real_token_share"] == 1.0
    assert sft["mfu"] is not None and sft["mfu"] > 0 and "mfu_incl_attn" in sft

    dpo = res["dpo"]
    default, handbook = dpo["dpo_trl_default"], dpo["dpo_handbook"]
    for r in (default, handbook):
        assert r["status"] == "ok"
        assert r["real_tokens_per_s"] > 0 and r["processed_tokens_per_s"] >= r["real_tokens_per_s"]
        assert 0 < r["real_token_share"] <= 1 and 0 < r["epoch_real_token_share"] <= 1
        assert r["mfu_real"] is not None and r["mfu_real"] > 0 and "mfu_processed" in r
        assert r["whole_run"]["total_s"] > 0 and r["whole_run"]["real_tokens_per_s"] > 0
    # Length grouping pads less than random batches.
    assert handbook["epoch_real_token_share"] > default["epoch_real_token_share"]
    assert default["flops_per_token"] == 8 * res["meta"]["model"]["n_params_flops"]
    assert handbook["flops_per_token"] == 6 * res["meta"]["model"]["n_params_flops"]
    assert handbook["ref_pass"]["time_s"] > 0
    assert dpo["comparison"]["whole_run_speedup"] > 0
