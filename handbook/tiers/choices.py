"""The per-tier choices the notebooks make, each a :class:`Choice` (what is used, where it comes from, and the one
line that says so), so that a notebook holds no tier logic of its own:

* who writes and who judges: :func:`teacher_choice`, :func:`judge_choice` (an OpenAI-compatible endpoint from
  config; the toy world's teacher and judge at ``toy``, and at ``small`` without an endpoint; the ``full`` tier
  requires endpoints) and :func:`prompts_choice` (toy prompts for a toy teacher or judge, else a hub slice);
* the data and models of each stage: :func:`data_choice` (one ordered fallback for the dSFT dialogues and the
  preference triples: the earlier notebook's output, the recipe's, the hub's, the toy world's built fresh),
  :func:`aif_arguments`, :func:`dpo_start_choice`, :func:`heldout_check_choice`, :func:`mt_bench_questions_choice`,
  :func:`ablation_models`;
* where things come from: :func:`previous_output` (what an earlier notebook of the same run left).

Every choice with a fallback is one call of :func:`choose`, which walks the choice's steps in the order the table
gives (:data:`handbook.tiers.table.FALLBACKS`: e.g. the dSFT data at ``small`` is hub → this run's notebook 01 →
the toy world's); a function here says only what each step finds, never which tier tries it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..core.configs import read_recipe
from .names import prompts_from
from .table import (MISTRAL_7B_SFT_HUB_ID, NOTEBOOK_OUTPUTS, SMOLLM2_HUB_ID, ULTRACHAT, ULTRAFEEDBACK, ZEPHYR_7B_HUB_ID,
                    fallback, get_tier, hub_reachable, require_hub, stage_setup)


@dataclass(frozen=True)
class Choice:
    """One per-tier choice of a notebook: what is used (``value``: a backend spec, a model name, recipe
    overrides, prompts...), where it comes from (``source``: ``toy``, ``endpoint``, ``hub``, ``previous``,
    ``recipe``, ``fresh``, ``local``, ``train``, ``skip``) and the one line a notebook prints to say so
    (``note``; empty where there is nothing to say)."""

    value: Any
    source: str
    note: str = ""

    def say(self) -> Choice:
        """Print the note (if any) and return the choice, for ``x = tiers.something(...).say()``."""
        if self.note:
            print(self.note)
        return self


def choose(what: str, tier: str, steps: Mapping[str, Callable[[], Choice | None]], *, required: str = "",
           optional: bool = False) -> Choice | None:
    """The one chooser: walk ``what``'s fallback at ``tier`` (:func:`handbook.tiers.table.fallback`) and return the
    first step's choice that is there (``steps[name]()`` gives a :class:`Choice`, or ``None`` when its source is
    missing; a step may raise, as the hub step does at ``full`` offline). When none is there: ``None`` if
    ``optional`` (a row that does not exist at this tier), else ``ValueError(required)``."""
    order = fallback(what, tier)
    unknown = [name for name in order if name not in steps]
    if unknown:
        raise ValueError(f"{what}: the fallback names step(s) {unknown} that the chooser does not define")
    for name in order:
        choice = steps[name]()
        if choice is not None:
            return choice
    if optional:
        return None
    raise ValueError(required or f"{tier} tier: no source for {what} (tried {', '.join(order) or 'nothing'})")


_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")


def previous_output(output_dir: str | os.PathLike, what: str) -> Path | None:
    """The output ``what`` (``dialogues``, ``dsft_model``, ``triples``, ``ddpo_model``) that an earlier notebook
    wrote into its sibling folder of this run, or ``None`` when it is not there (complete: a saved dataset, a
    model with weights)."""
    notebook, name = NOTEBOOK_OUTPUTS[what]
    path = Path(output_dir).expanduser().resolve().parent / notebook / name
    if what.endswith("model"):
        found = _has_weights(path)
    else:
        found = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    return path if found else None


def _has_weights(path: str | os.PathLike) -> bool:
    return any((Path(path) / f).exists() for f in _WEIGHTS)


def endpoint_spec(base_url: str, model: str | None, role: str) -> dict:
    """The backend spec of an OpenAI-compatible endpoint (the key: ``$OPENAI_API_KEY``)."""
    if not model:
        raise ValueError(f"{role}_base_url is set but {role}_model is not: name the endpoint's model")
    return {"type": "openai", "base_url": base_url, "model": model}


TEACHER_ROLES = {"dsft": "writes the dSFT data for the SmolLM2 student", "pool": "answers as the pool's teacher",
                 "reference": "is the win-rate reference"}


def _given_else_toy(what: str, tier: str, given: Choice | None, toy: Any, full_error: str, small_note: str) -> Choice:
    """The fallback the teacher, the judge and MT-Bench's questions share (``given``, else the toy world's): what
    the user gave (an endpoint, a file); else the toy world's ``toy`` — the tier's own at ``toy``, a stand-in at
    ``small`` (saying so: ``small_note``); ``full`` requires what is given (``full_error``)."""
    return choose(what, tier, {"given": lambda: given, "toy": lambda: Choice(toy, "toy"),
                               "stand_in": lambda: Choice(toy, "toy", small_note)}, required=full_error)


def teacher_choice(tier: str, base_url: str | None = None, model: str | None = None, role: str = "dsft") -> Choice:
    """The teacher — who writes the dSFT data (``role`` ``dsft``), answers as the AIF pool's teacher (``pool``)
    and is the win-rate reference (``reference``): the endpoint when ``base_url`` is given; else the toy teacher
    at ``toy`` and ``small``; ``full`` requires an endpoint (a 135M model writing a 7B student's data would not
    be the paper's recipe)."""
    get_tier(tier)
    if role not in TEACHER_ROLES:
        raise ValueError(f"role must be one of {', '.join(TEACHER_ROLES)}, got {role!r}")
    given = (Choice(endpoint_spec(base_url, model, "teacher"), "endpoint", f"teacher: {model} at {base_url}")
             if base_url else None)
    return _given_else_toy("teacher", tier, given, {"type": "toy"},
                           "full tier: the teacher must be a GPT-4-class OpenAI-compatible endpoint (a small model "
                           "cannot write a 7B student's data); set teacher_base_url and teacher_model",
                           f"small tier without teacher_base_url: the toy teacher {TEACHER_ROLES[role]} "
                           "(on the toy world's prompts)")


def judge_choice(tier: str, base_url: str | None = None, model: str | None = None, kind: str = "rating") -> Choice:
    """Who judges: the endpoint when ``base_url`` is given; else the toy world's judge at ``toy`` and ``small``
    (``kind``: ``rating``, UltraFeedback-style ratings for AIF; ``mt-bench``, MT-Bench's judge prompts);
    ``full`` requires an endpoint."""
    get_tier(tier)
    if kind not in ("rating", "mt-bench"):
        raise ValueError(f"kind must be 'rating' or 'mt-bench', got {kind!r}")
    given = (Choice(endpoint_spec(base_url, model, "judge"), "endpoint", f"judge: {model} at {base_url}")
             if base_url else None)
    toy = {"type": "toy-judge", "noise": 0.1} if kind == "rating" else {"type": "toy-mt-judge"}
    return _given_else_toy("judge", tier, given, toy,
                           "full tier: the judge must be a GPT-4-class OpenAI-compatible endpoint; set judge_base_url "
                           "and judge_model",
                           "small tier without judge_base_url: the toy rubric judge stands in for GPT-4 "
                           "(on the toy world's prompts)")


def judge_name(judge: Choice) -> str:
    """The judge's name in FastChat's files: the endpoint's model, or ``toy-rubric``."""
    return judge.value["model"] if judge.source == "endpoint" else "toy-rubric"


_HUB_PROMPTS = {"sft": (ULTRACHAT, "train_sft"), "aif": (ULTRAFEEDBACK, "train_prefs")}


def prompts_choice(stage: str, tier: str, backends: list[Choice], per_category: int, seed: int = 0,
                   split: str = "train") -> Choice:
    """The prompts a stage's teacher / pool and judge get: the toy world's at ``toy`` and wherever one of
    ``backends`` is a toy one (they know only the toy world); else a hub slice (``per_category`` × 8 prompts:
    ultrachat_200k's for ``sft``, UltraFeedback's for ``aif``); offline the toy world's (``full`` cannot run
    offline)."""
    from ..toy import world

    get_tier(tier)
    toy = Choice(prompts_from("toy", per_category, seed, split), "toy")

    def hub() -> Choice | None:
        name, hub_split = _HUB_PROMPTS[stage]
        if not hub_reachable():
            require_hub(tier, f"the prompts ({name})")
            return None
        from datasets import load_dataset

        prompts = load_dataset(name, split=f"{hub_split}[:{per_category * len(world.CATEGORIES)}]")["prompt"]
        return Choice(list(prompts), "hub", f"prompts: the first {len(prompts)} of {name} ({hub_split})")

    return choose("prompts", tier, {
        "toy": lambda: toy,
        "toy_backend": lambda: toy if any(b.source == "toy" for b in backends) else None,
        "hub": hub,
        "stand_in": lambda: Choice(toy.value, "toy", "no hub: the toy world's prompts go to the endpoint")})


@dataclass(frozen=True)
class DataSource:
    """What a training stage's data is, for :func:`data_choice`: the earlier notebook's output it prefers
    (``output``, a key of :data:`NOTEBOOK_OUTPUTS`), the hub dataset it stands for, and the words of its notes."""

    label: str       # the notes' subject: "dSFT data"
    output: str      # NOTEBOOK_OUTPUTS key: "dialogues"
    made: str        # "the dialogues notebook 01 wrote"
    missing: str     # "no dialogues from notebook 01"
    toy_recipe: str  # what the toy recipe builds: "the toy recipe's (the toy teacher's, built here)"
    fresh: str       # what stands in, built fresh, offline at the small tier: "the toy teacher's dialogues"
    hub: str         # the hub dataset: "ultrachat_200k"
    previous_overrides: tuple = ()  # recipe overrides beside the previous output's path


DATA_SOURCES = {
    "sft": DataSource("dSFT data", "dialogues", "the dialogues notebook 01 wrote", "no dialogues from notebook 01",
                      "the toy recipe's (the toy teacher's, built here)", "the toy teacher's dialogues",
                      "ultrachat_200k", (("eval_strategy", "no"),)),  # no eval split: no held-out loss line
    "dpo": DataSource("preference pairs", "triples", "the triples notebook 03 made", "no triples from notebook 03",
                      "the toy AIF recipe's (built here)", "the toy AIF recipe's triples", "ultrafeedback_binarized"),
}


def data_choice(stage: str, tier: str, output_dir: str | os.PathLike,
                data_dir: str | os.PathLike | None = None) -> Choice:
    """A training stage's data (``stage``: ``sft`` or ``dpo``, :data:`DATA_SOURCES`) as overrides of the tier's
    recipe, the first of an ordered fallback that exists: ``toy`` — the earlier notebook's output in this run, else
    the toy recipe's own data; ``small`` — the hub's slice when the hub is reachable, else the earlier notebook's
    output, else the toy world's built fresh; ``full`` — the recipe's hub dataset (hub required)."""
    source = DATA_SOURCES[stage]
    data_dir = str(data_dir or Path(output_dir) / "data")
    previous = previous_output(output_dir, source.output)
    at_previous = {"dataset_name": str(previous), "dataset_train_split": "train", "dataset_test_split": None,
                   **dict(source.previous_overrides)}

    def hub() -> Choice | None:
        if not hub_reachable():
            require_hub(tier, source.hub)
            return None
        return Choice({}, "hub", f"{tier} tier: the recipe's slice of {source.hub} (max_train_samples)")

    return choose("data", tier, {
        "previous": lambda: previous and Choice(at_previous, "previous",
                                                f"{source.label}: {source.made} in this run ({previous})"),
        "recipe": lambda: Choice({"toy_data_dir": data_dir}, "recipe",
                                 f"{source.label}: {source.missing} in this run, so {source.toy_recipe}"),
        "hub": hub,
        "instead": lambda: previous and Choice(at_previous, "previous",
                                               f"{tier} tier offline: no hub, so {source.made} in this run "
                                               f"({previous}) stand in for {source.hub}"),
        "stand_in": lambda: Choice({"dataset_name": "toy", "toy_data_dir": data_dir}, "fresh",
                                   f"{tier} tier offline: no hub and {source.missing} in this run, so {source.fresh}, "
                                   f"built fresh, stand in for {source.hub}")})


def sft_data_choice(tier: str, output_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Choice:
    """The dSFT data: :func:`data_choice` for ``sft`` (the dialogues of notebook 01, ultrachat_200k)."""
    return data_choice("sft", tier, output_dir, data_dir)


def dpo_data_choice(tier: str, output_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Choice:
    """The preference triples: :func:`data_choice` for ``dpo`` (the triples of notebook 03,
    ultrafeedback_binarized)."""
    return data_choice("dpo", tier, output_dir, data_dir)


def dpo_start_choice(tier: str, output_dir: str | os.PathLike) -> Choice:
    """The model dDPO starts from (and its reference): notebook 02's dSFT model of this run when there is one;
    else ``toy``, the recipe's (the cached toy dSFT student); ``small`` / ``full``, the recipe's dSFT directory, else a stand-in
    (``small``: SmolLM2-135M-Instruct, already instruction-tuned; ``full``: the paper's published dSFT model)."""
    setup = stage_setup("dpo", tier)
    previous = previous_output(output_dir, "dsft_model")

    def hub() -> Choice:
        require_hub(tier, MISTRAL_7B_SFT_HUB_ID)
        return Choice(MISTRAL_7B_SFT_HUB_ID, "hub", f"no {tier} dSFT model from notebook 02 or at {setup.model}: the "
                                                    f"paper's published one, {MISTRAL_7B_SFT_HUB_ID}")

    return choose("dsft_model", tier, {
        "previous": lambda: previous and Choice(str(previous), "previous",
                                                f"dSFT model: notebook 02's, from this run ({previous})"),
        "recipe": lambda: Choice(setup.model, "recipe", "dSFT model: no model from notebook 02 in this run, so the "
                                                        "cached toy dSFT student (the toy recipe's run)"),
        "local": lambda: (Choice(setup.model, "local", f"dSFT model: the recipe's ({setup.model})")
                          if _has_weights(setup.model) else None),
        "stand_in": lambda: Choice(SMOLLM2_HUB_ID, "fresh", f"no {tier} dSFT model from notebook 02 in this run: "
                                                            "SmolLM2-135M-Instruct (already instruction-tuned) stands "
                                                            "in for it"),
        "hub": hub})


def heldout_check_choice(tier: str) -> Choice:
    """Whether notebooks 02 and 04 score their models on held-out toy prompts with the toy rubric: at ``toy``
    and ``small`` (there a quick offline check); not at ``full``, where MT-Bench in notebook 05 measures."""
    return choose("heldout_check", tier, {
        "toy": lambda: Choice(True, "toy"),
        "stand_in": lambda: Choice(True, "toy", f"{tier} tier: the toy rubric scores replies to held-out toy prompts "
                                                "(a quick offline check; notebook 05 runs MT-Bench, with a judge "
                                                "endpoint when given)"),
        "skip": lambda: Choice(False, "skip", f"{tier} tier: no toy-rubric check here (the toy rubric does not "
                                              "measure a 7B model); notebook 05 runs MT-Bench with the judge "
                                              "endpoint")})


def mt_bench_questions_choice(tier: str, questions_path: str | None, n_per_category: int, seed: int = 0) -> Choice:
    """MT-Bench's questions: FastChat's ``question.jsonl`` when ``questions_path`` is given (at most
    ``n_per_category`` per category; required at ``full``), else the toy MT-Bench."""
    from ..evaluation.mt_bench import load_questions
    from ..toy.judges import toy_questions

    given = None
    if questions_path:
        questions, seen = [], {}
        for q in load_questions(questions_path):
            seen[q["category"]] = seen.get(q["category"], 0) + 1
            if seen[q["category"]] <= n_per_category:
                questions.append(q)
        given = Choice(questions, "local", f"MT-Bench: {len(questions)} of FastChat's questions ({questions_path})")
    return _given_else_toy("mt_bench_questions", tier, given, None if given else toy_questions(n_per_category, seed),
                           "full tier: MT-Bench needs FastChat's question file; set questions_path "
                           "(fastchat/llm_judge/data/mt_bench/question.jsonl)",
                           "small tier without questions_path: the toy MT-Bench (two-turn held-out toy questions) "
                           "stands in for FastChat's 80 questions")


def ablation_models(tier: str, output_dir: str | os.PathLike) -> dict[str, Choice]:
    """The rows of the paper's Table 3 for notebook 05 (:mod:`handbook.ablation`), each a :class:`Choice` whose
    value is a model name, or ``None`` with source ``train`` (train it here, one epoch as in Table 3) or ``skip``.

    * ``base`` — the toy base; SmolLM2-135M-Instruct (``small``); Mistral-7B (``full``).
    * ``dsft`` (dSFT-1) — notebook 02's model of this run, else the tier's stand-in (:func:`dpo_start_choice`).
    * ``ddpo_without_dsft``, ``dsft2``, ``dsft_ddpo`` — trained here at ``toy`` and ``small``; at ``full`` a 7B run
      needs ``accelerate launch``: dSFT + dDPO is notebook 04's model (or the paper's published one), the other
      two are skipped.
    * ``dsft_ddpo_on_policy`` (``toy`` only) — dSFT + dDPO on the pairs of the on-policy toy AIF recipe (the
      student in the pool), beside the off-policy default.
    * ``notebook_04`` (``toy`` and ``small``, when notebook 04 ran in this run) — its dSFT + dDPO model, trained for
      the recipe's epochs (toy: three, as Zephyr-7B-β), beside Table 3's one-epoch rows.
    """
    dsft = dpo_start_choice(tier, output_dir)
    base = stage_setup("sft", tier).model
    rows = {"base": Choice(base, "toy" if base == "toy" else ("hub" if hub_reachable() else "local")), "dsft": dsft}
    ddpo = previous_output(output_dir, "ddpo_model")
    skip = ("{} tier: {} is not trained in a notebook (a 7B run needs `accelerate launch`: `python -m handbook.{}` "
            "with the tier's recipe)")

    def hub() -> Choice:
        require_hub(tier, ZEPHYR_7B_HUB_ID)
        return Choice(ZEPHYR_7B_HUB_ID, "hub", f"no dDPO model from notebook 04: the paper's, {ZEPHYR_7B_HUB_ID}")

    for row, (title, module, previous_note) in TABLE3_ROWS.items():
        choice = choose(f"table3/{row}", tier, {
            "train": lambda: Choice(None, "train"),
            "skip": lambda: Choice(None, "skip", skip.format(tier, title, module)),
            "previous": lambda: ddpo and Choice(str(ddpo), "previous", previous_note.format(ddpo)),
            "hub": hub}, optional=True)
        if choice is not None:
            rows[row] = choice
    return rows


# Table 3's rows beyond the base and dSFT-1, in the order notebook 05 shows them: (what it is, the entry point that
# trains it at full, the note when notebook 04's model of this run fills it); which tier trains, skips or reuses
# each row is :data:`handbook.tiers.table.FALLBACKS`' ``table3/<row>``.
TABLE3_ROWS = {
    "ddpo_without_dsft": ("dDPO without dSFT", "dpo", ""),
    "dsft2": ("dSFT-2", "sft", ""),
    "dsft_ddpo": ("dSFT + dDPO", "dpo", "dSFT + dDPO: notebook 04's model, from this run ({})"),
    "dsft_ddpo_on_policy": ("dSFT + dDPO on the on-policy pairs", "dpo", ""),
    "notebook_04": ("notebook 04's dSFT + dDPO model", "dpo",
                    "beside Table 3: notebook 04's dSFT + dDPO model, trained for the recipe's epochs ({})"),
}


def aif_arguments(tier: str, output_dir: str | os.PathLike, *, data_seed: int = 0, prompts_per_category: int = 60,
                  teacher: Choice | None = None, judge: Choice | None = None, max_new_tokens: int | None = None):
    """``(AIFArguments, notes)`` of notebook 03 at ``tier``: the pool of four models and the judge.

    ``toy``: the toy AIF recipe (off-policy, as in the paper: the toy teacher and three scripted responders of
    other quality — nothing sampled from the student; the toy judge), a judge endpoint replacing the toy judge and
    a teacher endpoint the toy teacher when given. ``small`` / ``full``
    (no recipe file): the dSFT model (:func:`dpo_start_choice`) at temperatures 1.0 and 0.7, the starting
    model (SmolLM2-135M-Instruct / Mistral-7B) and the teacher (:func:`teacher_choice`); the judge from
    :func:`judge_choice`. Unlike the paper's pool (and the toy one) this is partly on-policy: offline there are no
    other models to sample; with a hub, the small and full dDPO recipes train on ultrafeedback_binarized's
    off-policy pairs instead. ``max_new_tokens`` caps every generated completion.

    ``data_seed`` shifts every seed of the AIF data by the same amount — the prompt sample (``toy_prompt_seed``),
    each pool member's sampling and the draw of the rejected completion (``seed``) — so that ``data_seed`` 0 is
    the recipe's data and another value is another draw of the same design.
    """
    from ..aif.pipeline import AIFArguments

    teacher = teacher or teacher_choice(tier)
    judge = judge or judge_choice(tier, kind="rating")
    notes = [c.note for c in (teacher, judge) if c.note]
    setup = stage_setup("aif", tier)
    if setup.recipe is not None:  # the toy tier: the toy AIF recipe
        (args,) = read_recipe(setup.recipe_file, [AIFArguments], output_dir=str(output_dir),
                              toy_prompts_per_category=prompts_per_category)
        args.toy_prompt_seed += data_seed
        args.seed += data_seed
        args.pool = [dict(m, seed=m.get("seed", 0) + data_seed) for m in args.pool]
        notes.append("AIF pool: off-policy, as in the paper: four responders other than the student (notebook 02's "
                     "model is not needed here; recipes/toy/aif/on_policy.yaml samples the student instead)")
        if judge.source != "toy":
            args.judge = judge.value
        if max_new_tokens is not None:
            args.pool = [dict(m, max_new_tokens=max_new_tokens) for m in args.pool]
        if teacher.source != "toy":
            args.pool = [dict(m, backend=teacher.value) if m["name"] == "teacher" else m for m in args.pool]
        return args, notes
    dsft = dpo_start_choice(tier, output_dir)
    notes.append(dsft.note)
    base = stage_setup("sft", tier).model  # the tier's starting model: SmolLM2-135M-Instruct, Mistral-7B
    tokens = max_new_tokens or 256
    local = lambda name: {"type": "transformers", "model_name_or_path": name, "batch_size": 16}  # noqa: E731
    pool = [
        {"name": "dsft-t1.0", "backend": local(dsft.value), "temperature": 1.0, "max_new_tokens": tokens,
         "seed": 0 + data_seed},
        {"name": "dsft-t0.7", "backend": local(dsft.value), "temperature": 0.7, "max_new_tokens": tokens,
         "seed": 1 + data_seed},
        {"name": "smollm2-instruct" if base == SMOLLM2_HUB_ID else "base", "backend": local(base), "temperature": 1.0,
         "max_new_tokens": tokens, "seed": 2 + data_seed},
        {"name": "teacher", "backend": teacher.value, "temperature": 1.0, "max_new_tokens": tokens,
         "seed": 3 + data_seed},
    ]
    args = AIFArguments(output_dir=str(output_dir), prompts="toy", toy_prompts_per_category=prompts_per_category,
                        pool=pool, judge=judge.value, batch_size=16)
    args.toy_prompt_seed += data_seed
    args.seed += data_seed
    return args, notes
