"""Table 3 in miniature (handbook.ablation), dSFT's label view (handbook.dsft.masking), the MT-Bench standard
error (handbook.evaluation.stats), the toy rubric over dialogues and the cached-student check on chained data."""

import math
import statistics

import pytest

from handbook.ablation import (LABELS, PAPER_TABLE3, chosen_dialogues, paper_orders, table3_frame,
                               win_rate_frame)
from handbook.evaluation.stats import per_question_standard_error


def test_paper_table3_is_the_papers():
    # Tunstall et al. 2023, Table 3 (1 epoch each): MT-Bench, AlpacaEval %
    assert PAPER_TABLE3 == {"ddpo_without_dsft": (4.76, 30.76), "dsft": (6.64, 85.65), "dsft2": (6.19, 78.54),
                            "dsft_ddpo": (7.00, 86.07)}


def test_paper_orders_report_each_claim_as_measured():
    # the paper's own scores satisfy all its orderings
    assert all(r["holds"] for r in paper_orders({n: v[0] for n, v in PAPER_TABLE3.items()}))
    # a run where dSFT-2 beats dSFT-1 (as the toy world's may): reported, not hidden
    scores = {"base": 1.2, "ddpo_without_dsft": 1.1, "dsft": 7.7, "dsft2": 9.3, "dsft_ddpo": 9.0}
    got = {r["claim"]: r["holds"] for r in paper_orders(scores)}
    assert got == {"dSFT + dDPO > dSFT-1": True, "dSFT-1 > dSFT-2": False, "dSFT + dDPO > dSFT-2": False,
                   "dSFT-1 > dDPO w/o dSFT": True}
    assert paper_orders({"dsft": 1.0}) == []  # only claims whose two rows were measured


def test_table3_frame_ranks_both_columns():
    scores = {"base": 1.2, "ddpo_without_dsft": 1.1, "dsft": 7.7, "dsft2": 9.3, "dsft_ddpo": 9.0}
    t = table3_frame(scores, "toy")
    assert list(t.index) == [LABELS[n] for n in ("base", "ddpo_without_dsft", "dsft", "dsft2", "dsft_ddpo")]
    assert t.loc["dSFT-2", "rank (toy)"] == 1 and t.loc["dSFT-2", "rank (paper)"] == 3
    assert t.loc["dSFT + dDPO", "rank (paper)"] == 1 and t.loc["dDPO w/o dSFT", "rank (paper)"] == 4
    assert t["rank (paper)"].isna().sum() == 1  # the base is not a row of the paper's table


def test_win_rate_frame_keeps_the_two_references_apart():
    class R:
        def __init__(self, w):
            self.win_rate, self.standard_error = w, 1.0

    t = win_rate_frame({"dsft": R(61.0), "dsft_ddpo_on_policy": R(75.0), "base": None}, "toy")
    assert "win rate vs the teacher % (toy)" in t.columns and "AlpacaEval % vs text-davinci-003 (paper)" in t.columns
    assert t.loc["dSFT-1", "AlpacaEval % vs text-davinci-003 (paper)"] == 85.65
    assert math.isnan(t.loc["dSFT + dDPO (student in the pool)", "AlpacaEval % vs text-davinci-003 (paper)"])


def test_chosen_dialogues_from_trl_pairs_and_triples():
    user = {"role": "user", "content": "Name the capital of Peru."}
    good = {"role": "assistant", "content": "Lima."}
    trl = [{"prompt": [user], "chosen": [good], "rejected": [{"role": "assistant", "content": "Quito."}]}]
    triples = [{"prompt": user["content"], "chosen": [user, good], "rejected": [user, {"role": "assistant", "content": "x"}]}]
    assert chosen_dialogues(trl)[0]["messages"] == chosen_dialogues(triples)[0]["messages"] == [user, good]
    with pytest.raises(ValueError, match="pair 0: field 'chosen'"):
        chosen_dialogues([{"prompt": [user], "chosen": [user]}])
    with pytest.raises(ValueError, match="no preference pairs"):
        chosen_dialogues([])


def test_per_question_standard_error_matches_the_definition():
    judgments = [{"model": "a", "question_id": q, "score": s} for q, s in
                 [(1, 8), (1, 6), (2, 4), (2, 4), (3, 9), (3, -1), (4, 10), (4, 10)]]
    judgments.append({"model": "b", "question_id": 1, "score": 1})
    means = [7, 4, 9, 10]  # the failed judgment (-1) left out, as FastChat's show_result.py does
    assert per_question_standard_error(judgments, "a") == pytest.approx(statistics.stdev(means) / 2)
    assert per_question_standard_error(judgments, "b") is None  # one question: no spread to measure


def test_judge_dialogues_scores_every_assistant_turn():
    from handbook.toy import world
    from handbook.toy.evaluate import judge_dialogues, teacher_quality

    p = world.Prompt("humanities", ("Kenya",), "exclaim")
    rows = [{"messages": [{"role": "user", "content": p.text}, {"role": "assistant", "content": p.reference_answer()},
                          {"role": "user", "content": p.text}, {"role": "assistant", "content": "Lima."}]}]
    verdicts = judge_dialogues(rows)
    assert [v.score for _, v in verdicts] == [10, 2]
    q = teacher_quality(verdicts)
    assert q["turns"] == 2 and q["correct"] == 0.5 and q["mean_score"] == 6
    with pytest.raises(ValueError, match="row 0: not a toy prompt"):
        judge_dialogues([{"messages": [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi"}]}])
    with pytest.raises(ValueError, match="row 0: field 'messages' does not alternate"):
        judge_dialogues([{"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": p.text}]}])


def test_trained_tokens_are_what_the_trainer_trains_on():
    """The label view is TRL's own: the SFTTrainer's tokenization and collator, not a re-implementation."""
    from trl import SFTConfig

    from handbook.core.configs import read_recipe, recipe_path
    from handbook.core.models import ModelArguments, load_model_and_tokenizer
    from handbook.dsft.masking import IGNORE_INDEX, trained_tokens
    from handbook.dsft.training import SFTDataArguments
    from handbook.tiers import resolve_model_args

    m, _, t = read_recipe(recipe_path("toy/sft/config.yaml"), [ModelArguments, SFTDataArguments, SFTConfig],
                          output_dir="unused")
    model, tok = load_model_and_tokenizer(resolve_model_args(m))
    dialogue = [{"role": "user", "content": "What is 2 + 3? Be brief."}, {"role": "assistant", "content": "5."},
                {"role": "user", "content": "What is the capital of Kenya?"}, {"role": "assistant", "content": "Nairobi."}]
    tokens, labels = trained_tokens(model, tok, t, dialogue)
    trained = [x for x, l in zip(tokens, labels) if l != IGNORE_INDEX]
    assert trained == ["5", ".", "</s>", "Nairobi", ".", "</s>"]  # the answers and their end-of-turn, nothing else
    first_answer_end = [n for n, l in enumerate(labels) if l != IGNORE_INDEX][2] + 1  # just after the first "</s>"
    t.max_length = first_answer_end  # the trainer truncates: the view follows
    tokens, labels = trained_tokens(model, tok, t, dialogue)
    assert len(tokens) == len(labels) == first_answer_end
    assert [x for x, l in zip(tokens, labels) if l != IGNORE_INDEX] == ["5", ".", "</s>"]
    t.max_length = 8  # no assistant token left: the trainer would drop the dialogue, and says so
    with pytest.raises(ValueError, match="the trainer drops this dialogue"):
        trained_tokens(model, tok, t, dialogue)


def test_cached_student_is_recognised_by_its_data(tmp_path):
    """Chained data that equals the toy recipe's reuses the cached student; one changed row does not."""
    from datasets import Dataset
    from trl import SFTConfig

    from handbook.core.configs import read_recipe
    from handbook.core.models import ModelArguments
    from handbook.dsft.training import SFTDataArguments
    from handbook.toy.dialogues import toy_sft_datasets
    from handbook.toy.students import RECIPE, cached_student_for, toy_students

    m, d, t = read_recipe(RECIPE, [ModelArguments, SFTDataArguments, SFTConfig])
    train, _, _ = toy_sft_datasets(d)
    chained = SFTDataArguments(dataset_name=str(tmp_path / "dsft_dataset"))
    assert cached_student_for(m, chained, t, train_rows=train) == toy_students()["dsft"]
    rows = train.to_list()
    rows[7]["messages"][1]["content"] += " Indeed."
    assert cached_student_for(m, chained, t, train_rows=Dataset.from_list(rows)) is None
    assert cached_student_for(m, chained, t) is None  # no rows to compare: trains
    t.max_steps = 100
    assert cached_student_for(m, chained, t, train_rows=train) is None  # another run
