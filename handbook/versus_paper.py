"""The toy world beside the real one: what transfers from a toy run to the paper's, and the real data's shapes.

* :func:`toy_vs_paper` — the settings that differ between the toy tier, the small tier and the paper, read from
  the recipes the handbook runs (never typed twice), with the paper's figures cited to the paper
  (Tunstall et al. 2023, Sec. 4 and 5) and the datasets' cards.
* :func:`schema_rows` — one row in each real schema the handbook reads (``HuggingFaceH4/ultrachat_200k``,
  ``openbmb/UltraFeedback``, ``HuggingFaceH4/ultrafeedback_binarized``), with toy-world content: the rows the
  tests load through the real loading code (``tests/conftest.py::recipe_data``), since no hub is reachable here.
* :func:`fastchat_questions` — FastChat's MT-Bench questions when the file is at hand, else the toy ones.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .core.configs import load_yaml
from .core.data import prompt_id
from .tiers import stage_setup
from .toy import world

# The paper's settings (Tunstall et al. 2023, Sec. 4.2 and Table 3) and the datasets' cards.
PAPER = {
    "sft_learning_rate": 2e-5, "sft_epochs": 1, "dpo_learning_rate": 5e-7, "dpo_epochs": 3, "beta": 0.1,
    "ultrachat_200k_train_sft": 207_865, "ultrafeedback_binarized_train_prefs": 61_966,
}


def _recipe(stage: str, tier: str) -> dict:
    return load_yaml(stage_setup(stage, tier).recipe_file)


def toy_sft_epochs() -> tuple[float, int]:
    """The epochs the cached toy dSFT student's steps made over its data, and the dialogues that implies
    (steps × batch / epochs), from the student's own log (``handbook.toy.students``; built here on first use)."""
    from .toy.students import toy_students

    log = json.loads((Path(toy_students()["dsft"]) / "log_history.json").read_text())
    epochs = max(e.get("epoch", 0.0) for e in log)
    recipe = _recipe("sft", "toy")
    return epochs, round(recipe["max_steps"] * recipe["per_device_train_batch_size"] / epochs)


def toy_vs_paper(toy_sft_epochs: float, toy_sft_dialogues: int, toy_pairs: int) -> list[dict]:
    """One row per setting: the toy tier's, the small tier's and the paper's value, whether a toy result about it
    carries over to the paper's scale, and why. ``toy_sft_epochs`` (the epochs the toy student's 400 steps
    make over its data), ``toy_sft_dialogues`` and ``toy_pairs`` come from a run (notebooks 02 and 03)."""
    sft = {t: _recipe("sft", t) for t in ("toy", "small", "full")}
    dpo = {t: _recipe("dpo", t) for t in ("toy", "small", "full")}
    lr_ratio = dpo["toy"]["learning_rate"] / dpo["full"]["learning_rate"]
    rows = [
        {"setting": "starting model", "toy": "random init, ~0.6 M parameters", "small": sft["small"]["model_name_or_path"]
         + " (already instruction-tuned)", "paper": sft["full"]["model_name_or_path"] + " (pretrained, not chat-tuned)",
         "transfers": "no", "why": "the toy base knows nothing, SmolLM2-Instruct already chats: neither is a capable "
                                  "but chat-naive base, so 'dDPO without dSFT' means something else at each tier"},
        {"setting": "dSFT learning rate", "toy": sft["toy"]["learning_rate"], "small": sft["small"]["learning_rate"],
         "paper": sft["full"]["learning_rate"], "transfers": "no",
         "why": "tuned per model size; a 0.6 M model needs far larger steps"},
        {"setting": "dSFT length", "toy": f"{sft['toy']['max_steps']} steps ≈ {toy_sft_epochs:.1f} epochs over "
                                          f"{toy_sft_dialogues:,} dialogues",
         "small": sft["small"].get("num_train_epochs", ""), "paper": f"{PAPER['sft_epochs']} epoch over "
                                                                     f"{PAPER['ultrachat_200k_train_sft']:,} dialogues",
         "transfers": "no", "why": "the toy data is small and repetitive; many passes are needed to learn it"},
        {"setting": "dDPO learning rate", "toy": dpo["toy"]["learning_rate"], "small": dpo["small"]["learning_rate"],
         "paper": dpo["full"]["learning_rate"], "transfers": "no",
         "why": f"the toy rate is {lr_ratio:,.0f}× the paper's; notebook 04 shows what 10× the toy rate does"},
        {"setting": "β", "toy": dpo["toy"]["beta"], "small": dpo["small"]["beta"], "paper": dpo["full"]["beta"],
         "transfers": "yes", "why": "the same Eq. 1; β's role (how far the policy may move) is scale-free"},
        {"setting": "dDPO epochs", "toy": dpo["toy"]["num_train_epochs"], "small": dpo["small"].get("num_train_epochs"),
         "paper": dpo["full"]["num_train_epochs"], "transfers": "partly",
         "why": "the schedule is the paper's; over-fitting is far weaker on the toy's few pairs"},
        {"setting": "preference pairs", "toy": f"{toy_pairs:,}", "small": "the toy world's (offline)",
         "paper": f"{PAPER['ultrafeedback_binarized_train_prefs']:,}", "transfers": "the rule, not the size",
         "why": "the binarization rule and schema are the paper's; the data is a toy domain"},
        {"setting": "teacher and judge", "toy": "programmatic (a rubric)", "small": "the toy's, or an endpoint",
         "paper": "ChatGPT writes UltraChat; GPT-4 rates UltraFeedback and judges MT-Bench", "transfers": "the protocol",
         "why": "the same prompts, parsing and aggregation; a rubric cannot be verbose-biased as GPT-4 is"},
        {"setting": "Eq. 1, templates, MT-Bench parsing", "toy": "the same code", "small": "the same code",
         "paper": "TRL, FastChat", "transfers": "yes", "why": "checked against TRL and FastChat in notebooks 04 and 05"},
    ]
    return [{k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in row.items()} for row in rows]


def _conversation(prompt: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def schema_rows(n: int = 3, seed: int = 0, split: str = "train") -> dict[str, list[dict]]:
    """Rows in each real schema for ``n`` toy prompts per category (8 categories) of the toy world's ``split``
    (``train`` or ``heldout``), with toy-world content (a toy prompt, its reference answer as the good reply,
    a wrong answer as the bad one):

    * ``ultrachat_200k`` — ``prompt``, ``prompt_id`` (sha256 of the prompt), ``messages``;
    * ``ultrafeedback_binarized`` — ``prompt``, ``prompt_id``, ``chosen``, ``rejected``, ``messages``,
      ``score_chosen``, ``score_rejected``;
    * ``UltraFeedback`` (``openbmb/UltraFeedback``, what binarization reads) — ``source``, ``instruction``,
      ``models``, ``completions`` (each ``model``, ``response``, ``annotations`` per aspect with ``Rating`` and
      ``Rationale``, ``overall_score``, ``fine-grained_score``, ``critique``, ``custom_system_prompt``,
      ``principle``)."""
    rng = random.Random(seed)
    prompts = world.sample_prompts(n, split, seed=seed)
    dialogues, pairs, raw = [], [], []
    for p in prompts:
        good, bad = p.reference_answer(), p.task.wrong_answer(p.item, rng)
        dialogues.append({"prompt": p.text, "prompt_id": prompt_id(p.text), "messages": _conversation(p.text, good)})
        pairs.append({"prompt": p.text, "prompt_id": prompt_id(p.text), "chosen": _conversation(p.text, good),
                      "rejected": _conversation(p.text, bad), "messages": _conversation(p.text, good),
                      "score_chosen": 10.0, "score_rejected": 2.0})
        completions = []
        for model, response, rating, overall in (("teacher", good, "5", 10.0), ("student", bad, "1", 2.0)):
            completions.append({
                "model": model, "response": response, "custom_system_prompt": "", "principle": "helpfulness",
                "annotations": {aspect: {"Rating": rating, "Rationale": "toy rationale"}
                                for aspect in ("helpfulness", "honesty", "instruction_following", "truthfulness")},
                "critique": "toy critique", "overall_score": overall, "fine-grained_score": float(rating)})
        raw.append({"source": "evol_instruct", "instruction": p.text, "models": [c["model"] for c in completions],
                    "completions": completions})
    return {"ultrachat_200k": dialogues, "ultrafeedback_binarized": pairs, "UltraFeedback": raw}


def save_recipe_splits(root: str | Path, n: int = 3) -> dict[str, str]:
    """:func:`schema_rows` saved as the datasets the recipes name, with their split names (``train_sft`` /
    ``test_sft``, ``train_prefs`` / ``test_prefs``): ``{"sft": path, "dpo": path}``."""
    from datasets import Dataset, DatasetDict

    rows, held_out = schema_rows(n), schema_rows(1, split="heldout")  # test rows are never training rows
    root = Path(root)
    sft, dpo = root / "sft", root / "dpo"
    DatasetDict(train_sft=Dataset.from_list(rows["ultrachat_200k"]),
                test_sft=Dataset.from_list(held_out["ultrachat_200k"])).save_to_disk(str(sft))
    DatasetDict(train_prefs=Dataset.from_list(rows["ultrafeedback_binarized"]),
                test_prefs=Dataset.from_list(held_out["ultrafeedback_binarized"])).save_to_disk(str(dpo))
    return {"sft": str(sft), "dpo": str(dpo)}


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_QUESTIONS = REPO_ROOT.parent / "shared" / "reference" / "mt_bench" / "question.jsonl"


def fastchat_questions(path: str | Path | None = None) -> tuple[list[dict], str]:
    """MT-Bench's questions and where they came from: FastChat's ``question.jsonl`` at ``path`` (or, when
    ``path`` is None, the copy beside this checkout at ``../shared/reference/mt_bench/``, if there is one);
    otherwise the toy world's two-turn questions in the same format."""
    from .toy.judges import toy_questions

    candidate = Path(path) if path else SHARED_QUESTIONS
    if candidate.is_file():
        questions = [json.loads(line) for line in candidate.read_text().splitlines() if line.strip()]
        return questions, f"FastChat's question.jsonl ({candidate})"
    if path:
        raise FileNotFoundError(f"{path}: no such question file")
    return toy_questions(), "the toy world's questions (FastChat's question.jsonl is not at hand here)"
