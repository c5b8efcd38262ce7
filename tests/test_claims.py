"""The toy claims (handbook.toy.claims): thresholds derived from a measured spread, and the committed measurement
itself — every claim the notebooks assert was measured over seeds and CPU kernels, and holds by a margin."""

import json
import math
from pathlib import Path

import pytest

from handbook.toy import claims

ROOT = Path(__file__).resolve().parent.parent
BENCH_RESULTS = ROOT / "bench" / "results" / "claims.json"


def _stats(mean, sd, lo, hi, n=30):
    """A measured spread, symmetric about its mean (= median)."""
    return {"n": n, "mean": mean, "median": mean, "sd": sd, "sd_below": sd, "sd_above": sd, "min": lo, "max": hi}


def _claim(**kw):
    base = dict(key="x", notebook="04_ddpo", statement="x is high", value=lambda m: m["x"], floor=0.0)
    return claims.Claim(**{**base, **kw})


def test_threshold_is_four_deviations_beyond_the_median_on_the_bad_side_and_never_stricter_than_the_worst_run():
    stats = claims.describe([1.1, 1.3, 1.5, 1.7, 1.9])                          # median 1.5, sd below = sd above
    assert stats["sd_below"] == pytest.approx(math.sqrt(0.1)) == pytest.approx(stats["sd_above"])
    assert claims.threshold(_claim(), stats) == pytest.approx(1.5 - 4 * math.sqrt(0.1), abs=1e-3)
    assert claims.threshold(_claim(higher=False, floor=3.0), stats) == pytest.approx(1.5 + 4 * math.sqrt(0.1), abs=1e-3)
    tight = claims.describe([1.5, 1.5, 1.5])                                     # a spread below the resolution
    assert claims.threshold(_claim(resolution=0.05), tight) == pytest.approx(1.3)
    lucky = claims.describe([1.4, 1.5, 1.6, 1.5, 4.0])                           # one run far on the good side ...
    assert claims.threshold(_claim(), lucky) < 1.4 and claims.threshold(_claim(), lucky) > 1.0   # ... loosens nothing
    assert lucky["sd"] > 1.0 > 4 * lucky["sd_below"]
    unlucky = _stats(1.5, 0.01, 0.9, 1.6)
    assert claims.threshold(_claim(), unlucky) == pytest.approx(0.9)             # never stricter than the worst run


def test_robustness_needs_the_threshold_beyond_the_floor_and_the_worst_run_beyond_the_margin():
    good = _stats(1.5, 0.2, 1.1, 2.0)
    assert claims.robustness(_claim(worst_margin=0.3), good) == []
    wide = _stats(0.6, 0.4, 0.35, 1.6)  # fragile
    (problem,) = claims.robustness(_claim(), wide)
    assert "threshold from the spread (-1" in problem and "is not > 0" in problem
    close = _stats(0.5, 0.05, 0.2, 0.7)  # 0.2 < 0.3
    (problem,) = claims.robustness(_claim(worst_margin=0.3), close)
    assert "clears the floor 0 by 0.2, needs more than 0.3" in problem
    flipped = _stats(1.0, 0.1, -0.1, 1.2)  # reversed
    assert any("clears the floor 0 by -0.1" in p for p in claims.robustness(_claim(), flipped))


METRICS_04 = {"ddpo_mean_score": 8.3, "dsft_mean_score": 8.0, "ddpo_followed": 1.0, "dsft_followed": 0.5,
              "ddpo_correct": 0.95, "dsft_correct": 0.95, "eval_rewards_accuracy": 0.5, "train_rewards_accuracy": 1.0,
              "beta_sweep_margin_over_beta": {"0.01": 2.0, "0.1": 1.5, "0.5": 1.0},
              "beta_sweep": {"0.01": 8.0, "0.1": 9.0, "0.5": 9.0}}


def test_a_claim_on_average_needs_the_means_band_beyond_the_floor_and_every_run_on_its_side():
    gap = _stats(0.084, 0.028, 0.02, 0.13)
    assert claims.robustness(_claim(), gap)                                   # ... so not a per-run claim
    assert claims.robustness(_claim(on_average=True), gap) == []              # the mean's band: 0.084 - 4 * 0.005
    few = {**gap, "n": 3, "sd": 0.05, "min": 0.03}                              # 3 runs: the mean is not sure enough
    assert "the mean's band" in claims.robustness(_claim(on_average=True), few)[0]
    flipped = {**gap, "min": -0.01}
    assert any("by -0.01" in p for p in claims.robustness(_claim(on_average=True), flipped))


def test_summarize_runs_counts_a_data_only_notebook_once_per_data_seed():
    def run(data_seed, seed, chosen, ddpo):
        return {"data_seed": data_seed, "seed": seed, "metrics": {
            "03_aif_preferences": {"chosen_better_on_ground_truth": chosen, "judge_exact_agreement": 0.9,
                                   "judge_spearman": 0.98, "pairs_zephyr": 460, "pairs_argilla": 458,
                                   "pairs_argilla_strict": 190},
            "04_ddpo": {**METRICS_04, "ddpo_mean_score": ddpo, "dsft_mean_score": 8.0}}}

    stats = claims.summarize_runs([run(0, 0, 0.99, 9.5), run(0, 1, 0.99, 9.0), run(1, 0, 0.97, 9.3)])
    assert stats["chosen_beats_rejected"]["n"] == 2 and stats["chosen_beats_rejected"]["min"] == 0.97
    assert stats["ddpo_over_dsft"]["n"] == 3 and stats["ddpo_over_dsft"]["min"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="data seed 0 gave 0.99 and 0.5 in two runs: 03_aif_preferences is not"):
        claims.summarize_runs([run(0, 0, 0.99, 9.5), run(0, 1, 0.5, 9.0)])


def test_check_names_each_failing_claim_with_its_measured_range():
    measured = {"setup": {"description": "30 runs"}, "claims": {
        "ddpo_over_dsft": _stats(1.5, 0.2, 1.1, 2.0),
        "ddpo_follows_more": _stats(0.4, 0.05, 0.3, 0.5),
        **{c.key: _stats(0.5, 0.01, 0.45, 0.55)
           for c in claims.claims_of("04_ddpo") if c.key not in ("ddpo_over_dsft", "ddpo_follows_more")}}}
    metrics = METRICS_04
    with pytest.raises(AssertionError) as err:
        claims.check("04_ddpo", metrics, measured)
    text = str(err.value)
    assert "ddpo_over_dsft" in text and "this run 0.3, asserted >= 0.7, measured [1.1, 2] over 30 runs" in text
    assert "ddpo_follows_more" not in text and "30 runs" in text
    rows = {r["claim"]: r for r in claims.evaluate("04_ddpo", metrics, measured)}
    assert rows["ddpo_over_dsft"]["holds"] is False and rows["ddpo_follows_more"]["holds"] is True


def test_every_claim_belongs_to_a_notebook_and_reads_its_metrics():
    assert len({c.key for c in claims.CLAIMS}) == len(claims.CLAIMS)
    assert set(claims.NOTEBOOKS) == {"02_dsft_training", "03_aif_preferences", "04_ddpo", "05_evaluation"}
    with pytest.raises(KeyError, match="no claims for notebook '06_scale_up'"):
        claims.claims_of("06_scale_up")


# --- the committed measurement ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measured():
    return claims.load_measured()


def test_every_claim_was_measured_over_seeds_data_seeds_and_kernels(measured):
    setup = measured["setup"]
    assert len(setup["seeds"]) >= 5 and len(setup["data_seeds"]) >= 2
    assert {"default", "avx2"} <= set(setup["kernels"])          # and avx512 where the machine runs it
    assert set(measured["claims"]) == {c.key for c in claims.CLAIMS}
    runs = len(setup["seeds"]) * len(setup["data_seeds"]) * len(setup["kernels"])
    for c in claims.CLAIMS:
        n = measured["claims"][c.key]["n"]
        if c.notebook in claims.DATA_ONLY_NOTEBOOKS:   # once per data seed
            assert n == len(set(setup["data_seeds"]) | set(setup["extra_data_seeds"])) >= 10, c.key
        else:
            assert n == runs >= 30, c.key


def test_every_claim_holds_in_every_measured_run_with_a_margin(measured):
    problems = [p for c in claims.CLAIMS for p in claims.robustness(c, measured["claims"][c.key])]
    assert problems == []
    # the paper's central claim: dSFT + dDPO above dSFT by at least 0.3 in the worst run, in notebook 04 and Table 3
    assert measured["claims"]["ddpo_over_dsft"]["min"] >= 0.3
    assert measured["claims"]["mt_ddpo_over_dsft"]["min"] >= 0.3


def test_the_package_thresholds_are_the_bench_results_summary(measured):
    """handbook/toy/claims_measured.json is written by bench/bench_claims.py from bench/results/claims.json: the same
    runs, the same code."""
    results = json.loads(BENCH_RESULTS.read_text())
    assert results["fingerprint"] == measured["setup"]["fingerprint"]
    recomputed = claims.summarize_runs(results["runs"])
    committed = {**measured["claims"], **measured["reported"]}
    assert set(recomputed) == set(committed)
    for key, stats in recomputed.items():
        for s in ("n", "mean", "sd", "sd_below", "sd_above", "min", "max"):
            assert stats[s] == pytest.approx(committed[key][s], abs=1e-9), (key, s)
    for key, stats in measured["claims"].items():   # and the bench's own table says the same
        assert results["summary"]["claims"][key]["n"] == stats["n"]
        assert results["summary"]["claims"][key]["threshold"] == claims.threshold(claims.BY_KEY[key], stats)


def test_the_readme_tables_are_the_measurement(measured):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert claims.markdown_table(measured) in readme
    assert claims.reported_table(measured) in readme
    for name, text in claims.readme_results(measured).items():   # the result paragraphs of 03, 04, 05: generated
        begin, end = f"<!-- {name}:begin (bench/bench_claims.py writes this) -->", f"<!-- {name}:end -->"
        assert f"{begin}\n{text}\n{end}" in readme, f"README's {name} block is not the measurement's; run " \
                                                      "python bench/bench_claims.py --from-results --write-package"


def test_the_readme_results_say_what_the_numbers_say():
    """The generated paragraphs follow the measurement, including the words that depend on it."""
    def stats(mean, lo, hi, n=30):
        return {"n": n, "mean": mean, "sd": 0.1, "median": mean, "sd_below": 0.1, "sd_above": 0.1, "min": lo, "max": hi}
    keys = [c.key for c in claims.CLAIMS] + [r.key for r in claims.REPORTED]
    measured = {"setup": {"description": "a test"}, "claims": {k: stats(1.0, 0.5, 1.5) for k in
                                                                [c.key for c in claims.CLAIMS]},
                "reported": {k: stats(1.0, 0.5, 1.5) for k in [r.key for r in claims.REPORTED]}}
    assert set(keys) == set(measured["claims"]) | set(measured["reported"])
    measured["reported"]["beta_0.5"] = stats(9.0, 6.0, 9.9)
    measured["reported"]["dsft1_over_dsft2"] = stats(0.2, 0.0, 1.0)
    measured["claims"]["mt_ddpo_over_dsft"] = stats(7.0, 6.5, 7.5)
    blocks = claims.readme_results(measured)
    assert "widest spread is at β 0.5 (3.90 points" in blocks["ddpo-results"]
    assert "holds in 6 of 30 runs" in blocks["table3-results"]
    assert "+7.00 [+6.50 – +7.50]" in blocks["table3-results"] and "hold in every run" in blocks["table3-results"]
    measured["claims"]["mt_dsft_over_ddpo_without_dsft"] = stats(0.5, -0.2, 1.0)
    assert "do not hold in every run" in claims.readme_results(measured)["table3-results"]
