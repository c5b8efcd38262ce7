"""The logic notebooks 03, 04 and 06 call, tested on its own: Eq. 1's per-pair terms and the check against TRL
(``handbook.ddpo.objective``), the β sweep and TRL's log history (``handbook.ddpo.sweep``), the judge's agreement and
the rule comparison (``handbook.aif.agreement``, ``handbook.toy.ground_truth``), and the token / time / MFU
estimates from the recipes (``handbook.tools.estimates``)."""

import math
import statistics

import pandas as pd
import pytest
import yaml

from handbook.aif.agreement import (RULE_VARIANTS, compare_rules, ground_truth_order, judge_agreement, spearman,
                                    variant_name)
from handbook.ddpo.objective import compare_with_trl, dpo_batch, per_pair_terms
from handbook.ddpo.sweep import beta_sweep, eval_curves, sweep_row
from handbook.tiers import stage_setup
from handbook.tools.estimates import (ASSUMED_TOKENS_PER_ROW, assumed_tokens_per_row, mean_tokens_per_row, mfu,
                                      recipe_tokens)
from handbook.tools.memory import MISTRAL_7B
from handbook.toy import world
from handbook.toy.ground_truth import truth_score

# ---------------------------------------------------------------- Eq. 1, pair by pair


def test_per_pair_terms_on_numbers():
    # ranked right by far, not moved, ranked wrong (notebook 04's worked example)
    rows = per_pair_terms([-20.0, -30.0, -45.0], [-50.0, -28.0, -25.0], [-40.0, -30.0, -35.0], [-30.0, -28.0, -35.0],
                          beta=0.1)
    right, unmoved, wrong = rows
    assert right["r_w"] == pytest.approx(2.0) and right["r_l"] == pytest.approx(-2.0)
    assert right["margin r_w − r_l"] == pytest.approx(4.0)
    assert right["loss −log σ(margin)"] == pytest.approx(math.log1p(math.exp(-4.0)))
    assert unmoved["r_w"] == unmoved["r_l"] == 0.0 and unmoved["loss −log σ(margin)"] == pytest.approx(math.log(2))
    assert unmoved["weight σ(r_l − r_w)"] == pytest.approx(0.5)
    assert right["weight σ(r_l − r_w)"] == pytest.approx(1 / (1 + math.exp(4.0))) and right["weight σ(r_l − r_w)"] < 0.02
    assert wrong["margin r_w − r_l"] == pytest.approx(-2.0) and wrong["weight σ(r_l − r_w)"] > 0.85
    for r in rows:  # the gradient's weight as autograd finds it
        assert r["autograd weight"] == pytest.approx(r["weight σ(r_l − r_w)"], abs=1e-12)


def test_per_pair_terms_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one length"):
        per_pair_terms([-1.0, -2.0], [-1.0], [-1.0, -2.0], [-1.0, -2.0], beta=0.1)


# ---------------------------------------------------------------- Eq. 1 against TRL, the policy moved


def _triple(prompt, chosen, rejected):
    return {"prompt": prompt, "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": rejected}]}


@pytest.fixture(scope="module")
def moved_policy():
    """(policy, reference, tokenizer, pairs): the trained toy dSFT student against its step-100 checkpoint."""
    from handbook.core.models import ModelArguments, get_model, get_tokenizer
    from handbook.ddpo.training import to_trl_pairs
    from handbook.toy.students import toy_students

    students = toy_students()
    rows = []
    for p in world.sample_prompts(2, "train", seed=5):
        if p.constraint != "none":
            ignored = world.apply_style(p.task.answer(p.item), p.constraint, follow=False, ramble=True)
            rows.append(_triple(p.text, p.reference_answer(), ignored))
    args = ModelArguments(model_name_or_path=students["dsft"])
    return (get_model(args), get_model(ModelArguments(model_name_or_path=students["dsft_early"])), get_tokenizer(args),
            to_trl_pairs(rows))


def test_compare_with_trl_after_the_policy_moved(moved_policy):
    policy, reference, tokenizer, pairs = moved_policy
    betas = [0.01, 0.1, 0.5]
    policy.train()
    reference.eval()
    results = compare_with_trl(policy, reference, tokenizer, pairs, betas, batch_size=8, max_length=128)
    assert list(results) == betas
    for beta, r in results.items():
        assert r["max_difference"] <= 1e-5, (beta, r)
        assert r["by hand"]["rewards/chosen"] != 0 and r["by hand"]["rewards/rejected"] != 0  # not at initialisation
        assert abs(r["by hand"]["rewards/margins"]) > 1e-3 * beta
    # the implicit reward is β × the log-ratio: divided by β, the same for every β
    log_ratios = [r["by hand"]["rewards/chosen"] / beta for beta, r in results.items()]
    assert max(log_ratios) - min(log_ratios) < 1e-4 * max(1.0, abs(log_ratios[0]))
    assert policy.training and not reference.training  # the models' modes as they were


def test_compare_with_trl_catches_a_misplaced_beta(moved_policy):
    policy, reference, tokenizer, pairs = moved_policy
    wrong = lambda p, r, batch, beta: dpo_batch(p, r, batch, beta=2 * beta)  # noqa: E731
    (result,) = compare_with_trl(policy, reference, tokenizer, pairs, [0.1], max_length=128, objective=wrong).values()
    assert result["max_difference"] > 1e-3


def test_compare_with_trl_refuses_the_policy_as_its_own_reference(moved_policy):
    policy, _, tokenizer, pairs = moved_policy
    with pytest.raises(ValueError, match="distinct"):
        compare_with_trl(policy, policy, tokenizer, pairs, [0.1])


# ---------------------------------------------------------------- the β sweep and TRL's log history

LOG = [
    {"loss": 0.69, "step": 5, "epoch": 0.5},
    {"eval_heldout_loss": 0.68, "eval_rewards/accuracies": 0.6, "eval_rewards/margins": 0.02, "eval_logps/chosen": -30.0,
     "eval_logps/rejected": -31.0, "epoch": 0.5, "step": 5},
    {"eval_train_loss": 0.66, "eval_rewards/accuracies": 0.7, "eval_rewards/margins": 0.05, "eval_logps/chosen": -29.0,
     "eval_logps/rejected": -33.0, "epoch": 0.5, "step": 5},
    {"eval_heldout_loss": 0.60, "eval_rewards/accuracies": 0.8, "eval_rewards/margins": 0.3, "eval_logps/chosen": -31.0,
     "eval_logps/rejected": -40.0, "epoch": 1.0, "step": 10},
    {"eval_train_loss": 0.40, "eval_rewards/accuracies": 0.95, "eval_rewards/margins": 0.9, "eval_logps/chosen": -30.0,
     "eval_logps/rejected": -45.0, "epoch": 1.0, "step": 10},
]


def test_eval_curves_split_the_log_by_set():
    curves = eval_curves(LOG, ["train", "heldout"])
    assert [r["loss"] for r in curves["heldout"]] == [0.68, 0.60]
    assert [r["loss"] for r in curves["train"]] == [0.66, 0.40]
    assert curves["train"][-1]["rewards/accuracies"] == 0.95 and curves["heldout"][-1]["epoch"] == 1.0
    assert "eval_heldout_loss" not in curves["heldout"][0] and "eval_rewards/margins" not in curves["heldout"][0]


def test_eval_curves_name_a_missing_set():
    with pytest.raises(ValueError, match="'test'.*eval_heldout_loss"):
        eval_curves(LOG, ["test"])


def test_sweep_row_reports_margin_over_beta():
    row = sweep_row(0.5, {"eval_rewards/accuracies": 0.75, "eval_rewards/margins": 1.5, "eval_logps/chosen": -10.0,
                          "eval_logps/rejected": -14.0})
    assert row == {"reward accuracy": 0.75, "margin": 1.5, "margin / β": 3.0, "logps/chosen": -10.0,
                   "logps/rejected": -14.0}
    assert sweep_row(0.1, eval_curves(LOG, ["heldout"])["heldout"][-1], prefix="")["margin / β"] == pytest.approx(3.0)
    with pytest.raises(KeyError, match="eval_logps/rejected"):
        sweep_row(0.1, {"eval_rewards/accuracies": 1, "eval_rewards/margins": 1, "eval_logps/chosen": 1})
    with pytest.raises(ValueError, match="positive"):
        sweep_row(0.0, {})


class _FakeTrainer:
    def __init__(self, beta):
        self.model = f"policy-{beta}"
        self.beta = beta

    def evaluate(self):  # a policy that moved the same log-ratio gap (2.0) whatever β
        return {"eval_rewards/accuracies": 0.8, "eval_rewards/margins": 2.0 * self.beta, "eval_logps/chosen": -20.0,
                "eval_logps/rejected": -22.0}


def test_beta_sweep_trains_each_beta_once_and_reuses_a_done_run():
    trained = []

    def train_one(beta):
        trained.append(beta)
        return _FakeTrainer(beta)

    done = {0.1: {"reward accuracy": 0.9, "margin": 0.2, "margin / β": 2.0, "mean rubric score": 7.0}}
    rows = beta_sweep([0.01, 0.1, 0.5], train_one, done=done,
                      evaluate_policy=lambda m, beta: {"mean rubric score": len(m), "β seen": beta})
    assert trained == [0.01, 0.5] and list(rows) == [0.01, 0.1, 0.5]
    assert rows[0.1] == done[0.1] and rows[0.1] is not done[0.1]
    assert rows[0.5]["margin"] == pytest.approx(1.0) and rows[0.01]["margin"] == pytest.approx(0.02)
    assert rows[0.5]["margin / β"] == pytest.approx(rows[0.01]["margin / β"]) == pytest.approx(2.0)
    assert rows[0.5]["mean rubric score"] == len("policy-0.5") and rows[0.5]["β seen"] == 0.5   # told which β


# ---------------------------------------------------------------- judge agreement and the rule comparison


def test_spearman_matches_pandas_with_ties():
    x = [1, 2, 2, 3, 5, 5, 5, 8, 9, 10]
    y = [2, 1, 3, 3, 4, 6, 5, 9, 7, 10]
    expected = pd.DataFrame({"x": x, "y": y}).corr(method="spearman").iloc[0, 1]  # (as notebook 03 computed it)
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([4, 4, 4], [1, 2, 3]))


def test_judge_agreement_leaves_out_unscored_completions():
    a = judge_agreement([10, 9, None, 5, float("nan"), 2], [10, 10, 1, 5, 4, 2])
    assert a.compared == 4 and a.unscored == 2
    assert a.exact == pytest.approx(3 / 4)
    assert a.spearman == pytest.approx(spearman([10, 9, 5, 2], [10, 10, 5, 2]))
    with pytest.raises(ValueError, match="3 scores against 2"):
        judge_agreement([1, 2, 3], [1, 2])


def _completion(model, response, overall, aspects):
    return {"model": model, "response": response, "overall": overall, "status": "ok",
            "aspects": {f"a{i}": {"rating": r} for i, r in enumerate(aspects)}}


ROWS = [
    {"prompt": "p1", "completions": [_completion("m1", "best", 9, [5, 5]), _completion("m2", "mid", 6, [4, 3]),
                                     _completion("m3", "worst", 2, [1, 1]), _completion("m4", "low", 4, [2, 2])]},
    {"prompt": "p2", "completions": [_completion("m1", "a", 7, [4, 4]), _completion("m2", "b", 7, [4, 4]),
                                     _completion("m3", "c", 3, [2, 1]), _completion("m4", "d", 7, [3, 3])]},
    {"prompt": "p3", "completions": [_completion(m, m, 5, [3, 3]) for m in ("m1", "m2", "m3", "m4")]},  # all equal
]
TRUTH = {"best": 10, "mid": 6, "worst": 1, "low": 3, "a": 8, "b": 8, "c": 2, "d": 6, "m1": 5, "m2": 5, "m3": 5, "m4": 5}


def test_ground_truth_order():
    triples = compare_rules(ROWS, seed=0)["best_vs_worst"].triples
    assert ground_truth_order(triples, lambda p, r: TRUTH[r]) == 1.0
    swapped = [dict(t, chosen=t["rejected"], rejected=t["chosen"]) for t in triples]
    assert ground_truth_order(swapped, lambda p, r: TRUTH[r]) == 0.0
    with pytest.raises(ValueError, match="no triples"):
        ground_truth_order([], lambda p, r: 0)


def test_compare_rules_measures_every_rule_on_both_scales():
    results = compare_rules(ROWS, seed=0, truth=lambda p, r: TRUTH[r])
    assert list(results) == [variant_name(r, s) for r, s in RULE_VARIANTS]
    assert list(results) == ["zephyr", "zephyr (fine_grained)", "h4", "argilla", "argilla_strict", "best_vs_worst"]
    h4 = results["h4"]   # p3's all-tie prompt gives a pair too (a tied one); p2's rejected may tie with the chosen
    assert len(h4.triples) == 3 and not h4.report.dropped and h4.report.tied_pairs >= 1
    bvw = results["best_vs_worst"]
    # p1: best (9; 5.0) vs worst (2; 1.0); p2: a (7; 4.0) vs c (3; 1.5); p3 all equal: dropped
    assert len(bvw.triples) == 2 and bvw.report.dropped["all scores equal"] == 1
    assert bvw.margin_overall == pytest.approx(((9 - 2) + (7 - 3)) / 2)
    assert bvw.margin_fine_grained == pytest.approx(((5 - 1) + (4 - 1.5)) / 2)
    # every rule's pairs on both scales, within each scale's range
    for r in results.values():
        assert r.margin_overall is not None and r.margin_fine_grained is not None
        assert 0 < r.margin_fine_grained <= 4 and r.margin_overall <= 9
    # on the same prompts and chosen replies, the worst rejected reply gives the largest overall margin
    assert [t["prompt"] for t in results["zephyr"].triples] == [t["prompt"] for t in bvw.triples]
    assert results["zephyr"].margin_overall <= bvw.margin_overall
    strict = results["argilla_strict"]  # p2's best mean (4.0) is tied, p3's too: only p1 remains
    assert len(strict.triples) == 1 and strict.report.dropped["best score tied"] == 2
    assert strict.margin_fine_grained == pytest.approx(5 - strict.triples[0]["score_rejected"])
    row = results["zephyr"].row()
    assert set(row) == {"pairs", "dropped", "chosen better by ground truth", "mean margin, overall (1–10)",
                        "mean margin, aspects' mean (1–5)"}
    assert "chosen better by ground truth" not in compare_rules(ROWS, seed=0)["zephyr"].row()


def test_compare_rules_names_a_triple_without_its_completion():
    from handbook.aif.agreement import _margins

    (triple,) = compare_rules(ROWS[:1], seed=0)["zephyr"].triples
    with pytest.raises(ValueError, match="triple 0: field 'model_chosen'"):
        _margins([dict(triple, model_chosen="nobody")], ROWS[:1])


def test_toy_truth_score_is_the_rubric():
    p = next(p for p in world.sample_prompts(2, "train", seed=5) if p.constraint != "none")
    assert truth_score(p.text, p.reference_answer()) == 10
    ignored = world.apply_style(p.task.answer(p.item), p.constraint, follow=False, ramble=False)
    assert truth_score(p.text, ignored) == world.judge(p, ignored).score < 10
    with pytest.raises(ValueError):
        truth_score("not a prompt of the toy world", "x")


# ---------------------------------------------------------------- token, time and MFU estimates from the recipes


def test_recipe_tokens_of_the_full_recipes():
    sft_file, dpo_file = stage_setup("sft", "full").recipe_file, stage_setup("dpo", "full").recipe_file
    sft_recipe, dpo_recipe = yaml.safe_load(open(sft_file)), yaml.safe_load(open(dpo_file))
    sft = recipe_tokens(sft_file, 1_000, "test")
    assert (sft.stage, sft.rows, sft.epochs, sft.reference) == ("sft", 207_865, sft_recipe["num_train_epochs"], "none")
    assert sft.tokens_per_row == 1_000  # packing with bfd_split keeps every token: no cap at max_length
    assert sft.tokens == 207_865 * 1_000 * sft_recipe["num_train_epochs"]
    dpo = recipe_tokens(dpo_file, 900, "test")
    assert (dpo.stage, dpo.rows, dpo.epochs) == ("dpo", 61_966, dpo_recipe["num_train_epochs"])
    assert dpo.reference == ("precomputed" if dpo_recipe["precompute_ref_log_probs"] else "live")
    assert dpo.tokens == 61_966 * 900 * dpo_recipe["num_train_epochs"]
    capped = recipe_tokens(dpo_file, 10 * dpo_recipe["max_length"], "test")
    assert capped.tokens_per_row == 2 * dpo_recipe["max_length"]  # chosen and rejected, each cut at max_length


def test_flops_hours_and_mfu():
    dpo_file = stage_setup("dpo", "full").recipe_file
    pre = recipe_tokens(dpo_file, 900, "test", reference="precomputed")
    live = recipe_tokens(dpo_file, 900, "test", reference="live")
    n = MISTRAL_7B.n_params
    assert live.flops(n) == pytest.approx(8 * n * live.tokens)
    assert pre.flops(n) == pytest.approx(6 * n * pre.tokens + 2 * n * pre.tokens_per_epoch)
    assert pre.flops(n) / live.flops(n) == pytest.approx((6 * pre.epochs + 2) / (8 * pre.epochs))
    hours = live.hours(n, n_gpus=16, mfu=0.4)
    assert live.hours(n, n_gpus=8, mfu=0.4) == pytest.approx(2 * hours)
    assert live.hours(n, n_gpus=16, mfu=0.2) == pytest.approx(2 * hours)
    assert mfu(live.flops(n), hours * 3600, n_gpus=16) == pytest.approx(0.4)  # mfu inverts hours
    with pytest.raises(ValueError, match="mfu"):
        live.hours(n, 16, 0.0)


def test_the_dsft_estimate_is_the_papers_order_of_magnitude():
    sft_file = stage_setup("sft", "full").recipe_file
    estimate = recipe_tokens(sft_file, *assumed_tokens_per_row(sft_file))
    assert "assumed" in estimate.tokens_per_row_source and "dataset card" in estimate.rows_source
    assert 1 <= estimate.hours(MISTRAL_7B.n_params, 16, 0.4) <= 4  # the paper: runs took 2–4 hours


def test_recipe_tokens_errors_name_the_recipe_and_field(tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"dataset_name": "someone/else", "dataset_train_split": "train",
                                       "num_train_epochs": 1}))
    with pytest.raises(ValueError, match=r"unknown\.yaml: fields 'dataset_name' / 'dataset_train_split'"):
        recipe_tokens(unknown, 100, "test")
    with pytest.raises(ValueError, match=r"unknown\.yaml: field 'dataset_name' = 'someone/else'"):
        assumed_tokens_per_row(unknown)
    assert recipe_tokens(unknown, 100, "test", rows=50, rows_source="counted").tokens == 5_000
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump({"dataset_name": "HuggingFaceH4/ultrachat_200k", "dataset_train_split": "train_sft",
                                     "num_train_epochs": 1, "max_steps": 10}))
    with pytest.raises(ValueError, match=r"steps\.yaml: field 'max_steps'"):
        recipe_tokens(steps, 100, "test")
    no_epochs = tmp_path / "no_epochs.yaml"
    no_epochs.write_text(yaml.safe_dump({"dataset_name": "HuggingFaceH4/ultrachat_200k"}))
    with pytest.raises(ValueError, match=r"no_epochs\.yaml: field 'num_train_epochs' is missing"):
        recipe_tokens(no_epochs, 100, "test")
    assert set(ASSUMED_TOKENS_PER_ROW) == {"HuggingFaceH4/ultrachat_200k", "HuggingFaceH4/ultrafeedback_binarized"}


def test_mean_tokens_per_row_measured_with_the_chat_template(toy_tokenizer):
    prompts = [p for p in world.sample_prompts(1, "train", seed=3)][:4]
    dialogues = [{"messages": [{"role": "user", "content": p.text},
                               {"role": "assistant", "content": p.reference_answer()}]} for p in prompts]

    def length(conversation):
        ids = toy_tokenizer.apply_chat_template(conversation, tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    expected = statistics.fmean(length(d["messages"]) for d in dialogues)
    assert mean_tokens_per_row(dialogues, toy_tokenizer, "sft") == pytest.approx(expected)
    pairs = [{"chosen": d["messages"], "rejected": d["messages"][:1] + [{"role": "assistant", "content": "no."}]}
             for d in dialogues]
    full = mean_tokens_per_row(pairs, toy_tokenizer, "dpo")
    assert full == pytest.approx(statistics.fmean(length(p["chosen"]) + length(p["rejected"]) for p in pairs))
    assert mean_tokens_per_row(pairs, toy_tokenizer, "dpo", max_length=5) == 10  # each side cut at max_length
    with pytest.raises(ValueError, match="row 1: field 'rejected'"):
        mean_tokens_per_row([pairs[0], {"chosen": pairs[0]["chosen"]}], toy_tokenizer, "dpo")


def test_quiet_libraries_silences_library_bars_and_warnings_but_not_errors():
    """In a fresh process (it changes process-wide settings): what notebooks 02-06 call first."""
    import subprocess
    import sys

    code = (
        "import warnings, datasets, transformers\n"
        "from handbook.notebook import quiet_libraries\n"
        "quiet_libraries()\n"
        "assert not datasets.is_progress_bar_enabled()\n"
        "assert transformers.utils.logging.get_verbosity() == transformers.utils.logging.ERROR\n"
        "assert not transformers.utils.logging.is_progress_bar_enabled()\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('default')\n"
        "    from handbook.notebook import quiet_libraries as q; q()\n"
        "    warnings.warn_explicit('old', FutureWarning, 'x.py', 1, module='transformers.training_args')\n"
        "    warnings.warn_explicit('ours', UserWarning, 'y.py', 1, module='handbook.tiers')\n"
        "assert [str(w.message) for w in caught] == ['ours'], [str(w.message) for w in caught]\n"
        "print('quiet')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "quiet" in proc.stdout, proc.stderr[-2000:]
