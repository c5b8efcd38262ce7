"""Smoke test of bench/bench_generation.py: tiny sizes, toy model only, no HTTP."""


def test_generation_bench_smoke(load_bench):
    result = load_bench("bench_generation").run(prompts=6, max_new_tokens=6, batch_sizes=[1, 3, 6], sizes=["toy"],
                                                http=False)
    rows = result["local"]["toy"]["rows"]
    assert [r["batch_size"] for r in rows] == [1, 3, 6]
    assert all(r["new_tokens"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    assert all(r["new_tokens"] <= r["prompts"] * 6 for r in rows)
    # greedy, left-padded: batched replies equal one-at-a-time replies, token for token
    assert result["toy_batched_equals_one_at_a_time"] is True
    assert len({r["new_tokens"] for r in rows}) == 1
    assert result["generation_batched_speedup"] > 0 and result["generation_batched_speedup_model"] == "toy"
    assert "http_concurrency_speedup" in result and result["http"] == {"skipped": "--no-http"}


def test_new_tokens_are_counted_up_to_the_first_eos(load_bench):
    import torch

    new = torch.tensor([[5, 6, 2, 3, 3], [5, 6, 7, 8, 9], [2, 3, 3, 3, 3]])
    assert load_bench("bench_generation").count_new_tokens(new, eos_token_id=2) == [3, 5, 1]
