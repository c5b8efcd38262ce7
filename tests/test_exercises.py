"""Every notebook exercise has a check (handbook.exercises): it says "not attempted" at the notebook's defaults, ✓ when
the exercise's expectation holds and ✗ when it does not; and doing an exercise never breaks its notebook's checks."""

import math
import re

import pytest

from handbook import exercises as ex
from handbook.toy import world
from handbook.tutorial import NOTEBOOKS_DIR, discover_notebooks, run_notebook

pytestmark = pytest.mark.notebooks  # each test executes a notebook through papermill

NA, OK, BAD, DONE = ex.NOT_ATTEMPTED, ex.CORRECT, ex.WRONG, ex.DONE


def test_every_exercise_of_every_notebook_has_a_check_and_the_notebook_calls_it():
    import json

    for nb_path in discover_notebooks():
        nb = json.loads(nb_path.read_text())
        text = ["".join(c["source"]) for c in nb["cells"]]
        exercises_md = next(t for t in text if t.startswith("## Exercises"))
        numbers = [int(n) for n in re.findall(r"^(\d+)\. \*\*", exercises_md, flags=re.M)]
        code = "\n".join(t for c, t in zip(nb["cells"], text) if c["cell_type"] == "code")
        prefix = nb_path.name[:2]
        assert numbers == list(range(1, len(numbers) + 1)), nb_path.name
        for n in numbers:
            assert hasattr(ex, f"nb{prefix}_{n}"), f"{nb_path.name}: exercise {n} has no handbook.exercises.nb{prefix}_{n}"
            assert f"exercises.nb{prefix}_{n}(" in code, f"{nb_path.name}: exercise {n}'s check is never called"
        assert "exercises={o.exercise: o.status for o in exercise_outcomes}" in code, nb_path.name
        assert "Expect" not in exercises_md or "check" in exercises_md.lower(), nb_path.name
    assert sum(1 for name in dir(ex) if re.fullmatch(r"nb\d\d_\d", name)) == 26


def test_00_guesses_against_the_rubric():
    prompt = world.Prompt("humanities", ("Kenya",), "exclaim").text
    assert ex.nb00_1(prompt, {}).status == NA
    right = {"The capital of Kenya is Nairobi!": world.judge(prompt, "The capital of Kenya is Nairobi!").score,
             "The capital of Kenya is Lima!": world.judge(prompt, "The capital of Kenya is Lima!").score}
    assert ex.nb00_1(prompt, right).status == OK
    wrong = ex.nb00_1(prompt, {"The capital of Kenya is Lima!": 10})
    assert wrong.status == BAD and "the rubric 2" in wrong.detail


def test_00_teacher_and_small_tier():
    assert ex.nb00_2(None, 0.5, 8.0, 8.0).status == NA
    assert ex.nb00_2({"follow_rate": 0.9}, 0.88, 9.3, 8.1).status == OK
    assert ex.nb00_2({"follow_rate": 0.9}, 0.6, 9.3, 8.1).status == BAD       # not near 90 %
    assert ex.nb00_2({"follow_rate": 0.9}, 0.9, 7.9, 8.1).status == BAD       # the mean fell
    assert ex.nb00_2({"follow_rate": 0.1}, 0.12, 7.0, 8.1).status == OK       # a less obedient teacher
    assert ex.nb00_3("toy", 1.0, 30).status == NA
    assert ex.nb00_3("small", 6.0, 30).status == OK
    assert ex.nb00_3("small", 1.5, 30).status == BAD


def test_01_checks():
    two = [{"messages": [{}, {}]}] * 4
    assert ex.nb01_1(2, two, 12).status == NA
    assert ex.nb01_1(1, two, 4).status == OK
    assert ex.nb01_1(1, two, 8).status == BAD
    assert ex.nb01_2(None, 5, 3).status == NA
    assert ex.nb01_2({"lowercase_rate": 0, "disclaimer_rate": 0}, 0, 0).status == OK
    assert ex.nb01_2({"lowercase_rate": 0, "disclaimer_rate": 0}, 2, 0).status == BAD
    assert ex.nb01_3(0, 0, True).status == NA
    assert ex.nb01_3(5, 5, True).status == OK
    assert ex.nb01_3(5, 7, True).status == BAD
    assert ex.nb01_3(5, 5, False).status == BAD
    rows = [{"messages": [{"content": "hi"}, {"content": "hello"}]}]
    assert ex.nb01_4("toy", rows, 1).status == NA
    assert ex.nb01_4("endpoint", rows, 1).status == OK
    assert ex.nb01_4("endpoint", [{"messages": [{"content": "hi"}, {"content": " "}]}], 1).status == BAD


def test_02_checks():
    assert ex.nb02_1(None, 0.2, 7.9).status == NA
    assert ex.nb02_1(False, 1.0, 7.9).status == OK
    assert ex.nb02_1(False, 0.4, 7.9).status == BAD
    assert ex.nb02_2("toy", None, 400, 7.9).status == NA
    assert ex.nb02_2("toy", 100, 400, 4.0).status == OK
    assert ex.nb02_2("toy", 100, 400, 8.9).status == BAD
    assert ex.nb02_2("small", 20, None, 3.0).status == DONE
    assert ex.nb02_3("recipe", False, 1504).status == NA
    assert ex.nb02_3("previous", True, 1504).status == NA
    assert ex.nb02_3("previous", False, 752).status == OK
    assert ex.nb02_4("toy", 0.1, 1.0, 8.0).status == NA
    assert ex.nb02_4("small", 1.2, None, None).status == OK
    assert ex.nb02_4("small", math.nan, None, None).status == BAD


def test_03_checks():
    pairs = {"zephyr": 460, "zephyr (fine_grained)": 458, "argilla": 458}
    assert ex.nb03_1("zephyr", "overall", 460, pairs).status == NA
    assert ex.nb03_1("zephyr", "fine_grained", 458, pairs).status == OK
    assert ex.nb03_1("zephyr", "fine_grained", 460, pairs).status == BAD
    margins = {"zephyr": 4.1, "best_vs_worst": 6.0, "h4": 3.9}
    assert ex.nb03_2("zephyr", margins).status == NA
    assert ex.nb03_2("best_vs_worst", margins).status == OK
    assert ex.nb03_2("best_vs_worst", {**margins, "h4": 7.0}).status == BAD
    assert ex.nb03_3(None, 0.92, 0.98).status == NA
    assert ex.nb03_3(0.4, 0.63, 0.93).status == OK
    assert ex.nb03_3(0.4, 0.92, 0.98).status == BAD     # the noise did not reach the judge
    assert ex.nb03_3(0.4, None, None).status == DONE


def test_04_checks():
    sweep = {0.01: {"logps/rejected": -49.5}, 0.1: {"logps/rejected": -47.4}, 0.5: {"logps/rejected": -44.9}}
    assert ex.nb04_1(sweep, None).status == NA
    assert ex.nb04_1(sweep, 0.01).status == OK
    assert ex.nb04_1(sweep, 0.5).status == BAD
    assert ex.nb04_2(None, 0.88).status == NA
    assert ex.nb04_2("best_vs_worst", 0.9).status == DONE
    at_init = {0.1: {"by hand": {"rewards/chosen": 0.0, "rewards/rejected": 0.0, "loss": math.log(2)}}}
    assert ex.nb04_3(None).status == NA
    assert ex.nb04_3(at_init).status == OK
    moved = {0.1: {"by hand": {"rewards/chosen": 0.3, "rewards/rejected": -0.2, "loss": 0.45}}}
    assert ex.nb04_3(moved).status == BAD
    assert ex.nb04_4(None, 0.96, 0.88).status == NA
    assert ex.nb04_4(1, 0.85, 0.84).status == OK
    assert ex.nb04_4(1, 0.99, 0.84).status == BAD


def test_05_checks():
    scores = {"base": 1.2, "dsft": 7.7, "dsft2": 8.7, "ddpo_without_dsft": 1.3, "dsft_ddpo": 8.7}
    assert ex.nb05_1(1, scores).status == NA
    assert ex.nb05_1(3, scores).status == DONE
    se = {n: 0.2 for n in scores}
    apart = ["dsft_ddpo > dsft", "dsft > ddpo_without_dsft"]   # 1.0 and 6.4 apart; dsft2 vs dsft_ddpo: 0 apart
    assert ex.nb05_2(scores, se, None).status == NA
    assert ex.nb05_2(scores, se, apart).status == OK
    assert ex.nb05_2(scores, se, apart[:1]).status == BAD
    assert ex.nb05_2(scores, {n: 0.5 for n in scores}, ["dsft > ddpo_without_dsft"]).status == OK  # 1.0 < 2·0.71
    assert ex.nb05_3(None, scores).status == NA
    assert ex.nb05_3("best_vs_worst", scores).status == DONE
    assert ex.nb05_4("toy", 0, 100).status == NA
    assert ex.nb05_4("endpoint", 0, 160).status == OK
    assert ex.nb05_4("endpoint", 3, 160).status == BAD


def test_06_checks():
    from handbook.tools.memory import MISTRAL_7B, training_memory

    at_32 = training_memory(MISTRAL_7B, method="full", n_gpus=32, seq_len=2048, micro_batch=16, stage="sft")
    sharded = 16 * MISTRAL_7B.n_params / 32 / 1e9    # 2 + 2 + 12 bytes per parameter over 32 GPUs
    assert ex.nb06_1(None, at_32).status == NA
    assert ex.nb06_1(sharded, at_32).status == OK
    assert ex.nb06_1(16 * MISTRAL_7B.n_params / 8 / 1e9, at_32).status == BAD
    hours_at_40 = 3.0
    mfu_for = lambda h: 0.4 * hours_at_40 / h   # noqa: E731
    assert ex.nb06_2(None, mfu_for).status == NA
    assert ex.nb06_2(0.45, mfu_for).status == OK     # 2-4 h needs 0.30-0.60
    assert ex.nb06_2(0.2, mfu_for).status == BAD
    assert ex.nb06_3(None, 20.0, 24.0).status == NA
    assert ex.nb06_3(0.83, 20.0, 24.0).status == OK
    assert ex.nb06_3(0.75, 20.0, 24.0).status == BAD
    assert ex.nb06_4("toy", 1000.0, 1.0).status == NA
    assert ex.nb06_4("small", 100.0, 3.0).status == DONE


def test_saved_rule_of_reads_notebook_03s_metrics(tmp_path):
    from handbook.tiers import Choice

    (tmp_path / "triples").mkdir()
    (tmp_path / "metrics.json").write_text('{"saved_rule": "best_vs_worst"}')
    assert ex.saved_rule_of(Choice({"dataset_name": str(tmp_path / "triples")}, "previous")) == "best_vs_worst"
    assert ex.saved_rule_of(Choice({"toy_data_dir": "x"}, "recipe")) is None


# Doing an exercise end to end: the notebook's own checks still pass, and the exercise's check says ✓. These are the
# three exercises that used to make their notebook's checks cell fail.
@pytest.mark.parametrize("notebook, parameters, exercise", [
    ("00_handbook_and_toy_world", {"teacher_config": {"follow_rate": 0.9}}, "00.2"),
    ("01_dsft_data", {"teacher_config": {"lowercase_rate": 0, "disclaimer_rate": 0}, "prompts_per_category": 40}, "01.2"),
    ("03_aif_preferences", {"judge_noise": 0.4}, "03.3"),
])
def test_doing_an_exercise_keeps_the_notebook_green(tmp_path, notebook, parameters, exercise):
    _, metrics = run_notebook(NOTEBOOKS_DIR / f"{notebook}.ipynb", tmp_path / notebook, parameters)
    assert metrics["exercises"][exercise] == OK, metrics["exercises"]
    others = {k: v for k, v in metrics["exercises"].items() if k != exercise}
    assert set(others.values()) <= {NA}, others
