"""The prepared GPU benchmark (bench/gpu_bench.py) runs end to end on a CPU at its tiny size."""

import json

import pytest


def test_gpu_bench_tiny_cpu(tmp_path, load_bench):
    out = tmp_path / "gpu_bench.json"
    load_bench("gpu_bench").main(["--size", "tiny", "--device", "cpu", "--threads", "1", "--peak-tflops", "1.0",
                                  "--out", str(out)])
    res = json.loads(out.read_text())
    assert "sft" not in res  # the shipped dSFT path is measured by bench/gpu_check.py, not a look-alike here

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


def _tiny(gb, seed):
    import torch

    config = gb.mistral_config("tiny", 128)
    return config, gb.build_model(config, torch.device("cpu"), torch.float32, seed, False)


def test_dpo_step_is_the_handbook_objective(load_bench):
    """A timed dDPO step's loss is ``handbook.ddpo.objective`` on the same batch, live or precomputed reference."""
    import copy

    import torch

    from handbook.ddpo.objective import dpo_batch, sequence_logps

    gb = load_bench("gpu_bench")
    args = gb.parse_args(["--size", "tiny", "--device", "cpu", "--dpo-warmup", "0", "--dpo-steps", "1"])
    config, policy = _tiny(gb, 0)
    _, ref = _tiny(gb, 1)  # another model, so that the loss is not log 2
    ref.eval().requires_grad_(False)
    data = gb.make_pairs(16, 128, 56.0, 0.6, 0.3, config.vocab_size, seed=3)
    batches = gb.handbook_batches(data, 4, seed=0)
    # With 0 warm-up and 1 timed step, the one step is the epoch's longest batch, before any update.
    longest = max(batches, key=lambda b: gb.batch_stats(data, b)[1])
    batch = gb.collate(data, longest, torch.device("cpu"))
    expected = dpo_batch(copy.deepcopy(policy), ref, batch, gb.BETA).loss.item()
    assert abs(expected - torch.log(torch.tensor(2.0)).item()) > 1e-3

    live = gb._dpo_train(args, config, torch.device("cpu"), data, batches, copy.deepcopy(policy),
                         copy.deepcopy(policy), ref, None)
    assert abs(live["final_loss"] - expected) < 1e-5

    with torch.no_grad():
        rc, rr = sequence_logps(ref, **gb.collate(data, list(range(16)), torch.device("cpu"))).chunk(2)
    pre = gb._dpo_train(args, config, torch.device("cpu"), data, batches, copy.deepcopy(policy),
                        copy.deepcopy(policy), None, (rc, rr))
    assert abs(pre["final_loss"] - expected) < 1e-4  # another padding of the reference rows: float noise


def test_handbook_batches_are_the_trainers_sampler(load_bench, tmp_path):
    """gpu_bench's dDPO batches are ``HandbookDPOTrainer``'s sampler order for the same lengths and seed, and its
    reference pass runs in the trainer's order (longest first)."""
    import numpy as np

    from handbook.ddpo.batching import length_grouped_sampler, reference_pass_order

    gb = load_bench("gpu_bench")
    data = gb.make_pairs(300, 128, 56.0, 0.6, 0.3, 1024, seed=7)
    lengths = gb.pair_lengths(data)
    for bs, seed in ((4, 0), (4, 3), (6, 11)):
        batches = gb.handbook_batches(data, bs, seed)
        assert all(len(b) == bs for b in batches[:-1]) and 0 < len(batches[-1]) <= bs
        order = [i for b in batches for i in b]
        assert order == list(length_grouped_sampler(lengths, bs, seed))
        assert sorted(order) == list(range(len(lengths)))
    assert order != list(length_grouped_sampler(lengths, 6, 12))  # the seed matters

    ref_order = [i for b in gb.reference_batches(data, 8) for i in b]
    assert ref_order == reference_pass_order(lengths).tolist()
    assert [lengths[i] for i in ref_order] == sorted(lengths, reverse=True)

    # The trainer itself, where TRL is installed: its `_get_train_sampler` on a dataset of these lengths.
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig

    from handbook.ddpo.batching import HandbookDPOTrainer

    p, c, r = data["prompt_len"], data["chosen_len"], data["rejected_len"]
    dataset = Dataset.from_dict({"prompt_ids": [[1] * n for n in p],
                                 "chosen_ids": [[1] * (m - n) for m, n in zip(c, p)],
                                 "rejected_ids": [[1] * (m - n) for m, n in zip(r, p)]})
    trainer = object.__new__(HandbookDPOTrainer)  # only its sampler is asked for: no model needed
    trainer.args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=128, seed=3,
                             train_sampling_strategy="group_by_length", use_cpu=True, report_to=[])
    trainer.train_dataset = dataset
    assert list(trainer._get_train_sampler()) == [i for b in gb.handbook_batches(data, 4, seed=3) for i in b]
    assert list(trainer._get_eval_sampler(dataset)) == list(length_grouped_sampler(lengths, 8, 3))
    assert np.array_equal(reference_pass_order(lengths), np.argsort(-np.asarray(lengths), kind="stable"))
