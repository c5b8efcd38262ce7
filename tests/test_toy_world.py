import random
import statistics

import pytest

from handbook.toy import world
from handbook.toy.world import CATEGORIES, Prompt, judge, parse_prompt


def test_eight_mt_bench_categories_each_with_prompts():
    assert CATEGORIES == ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
    for c in CATEGORIES:
        prompts = world.all_prompts(c)
        assert len(prompts) >= 80
        assert len({p.text for p in prompts}) == len(prompts), f"{c}: prompt texts are not unique"


@pytest.mark.parametrize("category", CATEGORIES)
def test_prompt_text_parses_back(category):
    for p in world.all_prompts(category):
        assert parse_prompt(p.text) == p
        assert parse_prompt(p.follow_up_text()) == p


def test_parse_rejects_foreign_text():
    with pytest.raises(ValueError, match="not a prompt of the toy world"):
        parse_prompt("Tell me a joke.")
    with pytest.raises(ValueError):
        parse_prompt("What is the capital of Atlantis?")  # item outside the world


# Fixed good and bad replies with the scores the rubric must give.
RUBRIC_CASES = [
    # prompt, reply, score, correctness
    (Prompt("math", ("3", "5"), "none"), "3 plus 5 is 8.", 10, "correct"),
    (Prompt("math", ("3", "5"), "none"), "3 plus 5 is 9.", 2, "wrong"),
    (Prompt("math", ("3", "5"), "none"), "I do not know.", 1, "malformed"),
    (Prompt("math", ("3", "5"), "none"), "", 1, "malformed"),
    (Prompt("math", ("3", "5"), "exclaim"), "3 plus 5 is 8!", 10, "correct"),
    (Prompt("math", ("3", "5"), "exclaim"), "3 plus 5 is 8.", 5, "correct"),
    (Prompt("math", ("3", "5"), "exclaim"), "Good question. 3 plus 5 is 8.", 4, "correct"),
    (Prompt("humanities", ("Peru",), "sure"), "Sure. The capital of Peru is Lima.", 10, "correct"),
    (Prompt("humanities", ("Peru",), "sure"), "The capital of Peru is Lima.", 5, "correct"),
    (Prompt("humanities", ("Peru",), "sure"), "Sure. The capital of Peru is Rome.", 2, "wrong"),
    (Prompt("humanities", ("Peru",), "none"), "It is Lima or Rome.", 2, "wrong"),  # hedging is not correct
    (Prompt("humanities", ("Peru",), "none"), "I hope this helps. The capital of Peru is Lima.", 9, "correct"),
    (Prompt("stem", ("tin",), "brief"), "The symbol for tin is Sn.", 10, "correct"),
    (Prompt("stem", ("tin",), "brief"), "Let me think about that. The symbol for tin is Sn.", 5, "correct"),
    (Prompt("stem", ("tin",), "brief"), "The symbol for tin is Sn, which comes from the Latin word for it, "
                                        "and it is used in many alloys.", 5, "correct"),
    (Prompt("reasoning", ("7", "12"), "none"), "12 is larger than 7.", 10, "correct"),
    (Prompt("reasoning", ("7", "12"), "none"), "7 is larger than 12.", 2, "wrong"),
    (Prompt("coding", ("cat",), "none"), "Use print('cat') to do it.", 10, "correct"),
    (Prompt("coding", ("cat",), "none"), "Use print('dog') to do it.", 2, "wrong"),
    (Prompt("coding", ("cat",), "none"), "Just print cat.", 1, "malformed"),
    (Prompt("extraction", ("Anna", "park"), "none"), "The name is Anna.", 10, "correct"),
    (Prompt("extraction", ("Anna", "park"), "none"), "The name is Ben.", 2, "wrong"),
    (Prompt("writing", ("sea",), "none"), "The sea is deep.", 10, "correct"),
    (Prompt("writing", ("sea",), "none"), "The moon is bright.", 2, "wrong"),
    (Prompt("roleplay", ("pirate",), "exclaim"), "Hello, I am the pirate!", 10, "correct"),
    (Prompt("roleplay", ("pirate",), "exclaim"), "Hello, I am the chef!", 2, "wrong"),
]


@pytest.mark.parametrize("prompt,reply,score,correctness", RUBRIC_CASES)
def test_rubric_scores_fixed_examples(prompt, reply, score, correctness):
    verdict = judge(prompt.text, reply)  # the judge sees only text
    assert (verdict.score, verdict.correctness) == (score, correctness), verdict


def test_rubric_order_correctness_then_following_then_tone():
    p = Prompt("humanities", ("Chile",), "sure")
    perfect = judge(p, "Sure. The capital of Chile is Santiago.").score
    rambling = judge(p, "Sure. Good question. The capital of Chile is Santiago.").score
    ignored = judge(p, "The capital of Chile is Santiago.").score
    wrong_but_followed = judge(p, "Sure. The capital of Chile is Lima.").score
    nothing = judge(p, "Sure.").score
    assert perfect > rambling > ignored > wrong_but_followed > nothing >= 1


def test_reference_answers_score_ten_everywhere():
    for p in world.all_prompts():
        assert judge(p, p.reference_answer()).score == 10, p


def test_splits_never_overlap_and_are_stable():
    prompts = world.all_prompts()
    train = {p.key for p in prompts if p.split == "train"}
    heldout = {p.key for p in prompts if p.split == "heldout"}
    assert not train & heldout
    assert train | heldout == {p.key for p in prompts}
    assert 0.15 < len(heldout) / len(prompts) < 0.25
    for c in CATEGORIES:  # every category has held-out prompts to measure
        assert sum(p.split == "heldout" for p in world.all_prompts(c)) >= 10
    # sampling respects the split, and is reproducible
    a = world.sample_prompts(10, "heldout", seed=3)
    assert a == world.sample_prompts(10, "heldout", seed=3)
    assert all(p.key in heldout for p in a)
    assert all(p.key in train for p in world.sample_prompts(10, "train", seed=3))
    assert len(a) == 10 * len(CATEGORIES) and len(set(a)) == len(a)


def test_sample_prompts_refuses_impossible_requests():
    with pytest.raises(ValueError, match="split"):
        world.sample_prompts(1, "test")
    with pytest.raises(ValueError, match="stem"):
        world.sample_prompts(10_000, "train", categories=["stem"])


def test_teacher_is_useful_but_imperfect():
    rng = random.Random(0)
    prompts = world.sample_prompts(40, "train", seed=0)
    verdicts = [judge(p, world.teacher_reply(p, rng)) for p in prompts]
    correct = statistics.mean(v.correctness == "correct" for v in verdicts)
    follow = statistics.mean(bool(v.followed) for v in verdicts if v.followed is not None)
    rambles = statistics.mean(v.rambling for v in verdicts)
    assert correct > 0.93          # useful: almost always right ...
    assert correct < 1.0           # ... but it does err now and then
    assert 0.35 < follow < 0.65    # follows constraints about half the time
    assert 0.1 < rambles < 0.5     # and rambles now and then
    assert statistics.mean(v.score for v in verdicts) < 8.5


def test_teacher_with_perfect_config_is_perfect():
    rng = random.Random(1)
    perfect = world.TeacherConfig(follow_rate=1.0, ramble_rate=0.0, error_rate=0.0, lowercase_rate=0.0,
                                  disclaimer_rate=0.0)
    for p in world.sample_prompts(10, "train", seed=1):
        assert judge(p, world.teacher_reply(p, rng, perfect)).score == 10


def test_two_turn_questions_have_fastchat_shape():
    qs = world.two_turn_questions(3, "heldout", seed=0)
    assert len(qs) == 3 * len(CATEGORIES)
    assert [q["question_id"] for q in qs] == list(range(1000, 1000 + len(qs)))
    for q in qs:
        assert set(q) == {"question_id", "category", "turns", "reference"}
        assert len(q["turns"]) == 2 and len(q["reference"]) == 2
        first, second = parse_prompt(q["turns"][0]), parse_prompt(q["turns"][1])
        assert first.category == second.category == q["category"]
        assert first.item != second.item
        assert first.split == second.split == "heldout"
        assert q["turns"][1].startswith("Now, ")
        assert [judge(t, r).score for t, r in zip(q["turns"], q["reference"])] == [10, 10]
