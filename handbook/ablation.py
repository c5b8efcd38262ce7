"""The paper's Table 3 in miniature: which stage of the recipe does the work?

Tunstall et al. (2023), Table 3, trains every row for **one epoch** from Mistral-7B and scores it on MT-Bench
and AlpacaEval (v1, against text-davinci-003, GPT-4 as the judge):

=====================  ========  ==============  =============================================================
row                    MT-Bench  AlpacaEval (%)  what it is
=====================  ========  ==============  =============================================================
dDPO without dSFT      4.76      30.76           DPO straight from the base model
dSFT-1                 6.64      85.65           dSFT, one epoch
dSFT-2                 6.19      78.54           dSFT-1, then one more SFT epoch on the top-ranked
                                                 UltraFeedback answers (the AIF ``chosen`` responses)
dSFT + dDPO            7.00      86.07           dSFT-1, then dDPO on the AIF pairs
=====================  ========  ==============  =============================================================

dSFT-2 is the control that matters: it sees the same better answers as dDPO, but learns them by imitation
instead of by preference; that it scores *below* dSFT-1 is the paper's evidence that the gain comes from the
preference objective, not from seeing better answers.

:func:`train_ablation_models` trains the rows a notebook cannot take ready-made (the tier decides which:
:func:`handbook.tiers.ablation_models`) with the tier's own dSFT and dDPO recipes and the entry points' ``train`` (``handbook.sft`` / ``handbook.dpo``);
:func:`table3_frame` and :func:`win_rate_frame` put the measured numbers beside the paper's;
:func:`paper_orders` checks the paper's orderings on the measured scores, without assuming they hold.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .core.models import ModelArguments
from .ddpo.training import DPODataArguments
from .dpo import train as train_dpo
from .dsft.training import SFTDataArguments
from .sft import train as train_sft
from .tiers import Choice, dpo_datasets, fallback, read_sized_recipe, stage_setup

logger = logging.getLogger(__name__)

# Tunstall et al. 2023, Table 3 (1 epoch each): (MT-Bench, AlpacaEval % vs text-davinci-003).
PAPER_TABLE3 = {"ddpo_without_dsft": (4.76, 30.76), "dsft": (6.64, 85.65), "dsft2": (6.19, 78.54),
                "dsft_ddpo": (7.00, 86.07)}
ROWS = ("base", "ddpo_without_dsft", "dsft", "dsft2", "dsft_ddpo")
LABELS = {"base": "base", "ddpo_without_dsft": "dDPO w/o dSFT", "dsft": "dSFT-1", "dsft2": "dSFT-2",
          "dsft_ddpo": "dSFT + dDPO", "dsft_ddpo_on_policy": "dSFT + dDPO (student in the pool)",
          "notebook_04": "dSFT + dDPO (notebook 04, recipe's epochs)"}
# The paper's orderings (Table 3), each (higher row, lower row, what it shows).
PAPER_ORDERS = (
    ("dsft_ddpo", "dsft", "dDPO adds to dSFT"),
    ("dsft", "dsft2", "one more SFT epoch on the chosen answers does not (dSFT-2 is below dSFT-1)"),
    ("dsft_ddpo", "dsft2", "the gain is the preference objective's, not the better answers'"),
    ("dsft", "ddpo_without_dsft", "dDPO needs dSFT first"),
)


def chosen_dialogues(pairs):
    """dSFT-2's data: each preference pair's prompt followed by its ``chosen`` answer, as SFT dialogues
    (``messages``), from TRL pairs (``prompt``/``chosen`` message lists) or AIF triples (``chosen`` is the
    whole conversation)."""
    from datasets import Dataset

    rows = []
    for n, p in enumerate(pairs):
        chosen = p.get("chosen")
        if not chosen or chosen[-1].get("role") != "assistant":
            raise ValueError(f"pair {n}: field 'chosen' does not end with an assistant turn")
        messages = list(p["prompt"]) + list(chosen) if isinstance(p.get("prompt"), list) else list(chosen)
        rows.append({"messages": messages})
    if not rows:
        raise ValueError("no preference pairs: dSFT-2 has nothing to train on")
    return Dataset.from_list(rows)


def train_ablation_models(models: dict[str, Choice], tier: str, output_dir: str | Path, data_overrides: dict,
                          *, epochs: float = 1, seed: int = 0, max_steps: int | None = None,
                          max_length: int | None = None, batch_size: int | None = None,
                          max_samples: int | None = None) -> tuple[dict[str, str], dict[str, int]]:
    """Train every row of ``models`` whose source is ``train``; return ``(paths, pairs)``: each row's model
    directory (rows with a ready model keep theirs, ``skip`` rows are left out) and the number of training pairs
    each trained row saw.

    Rows: ``ddpo_without_dsft`` (the tier's dDPO recipe from ``base``), ``dsft_ddpo`` (the same from ``dsft``),
    ``dsft2`` (the tier's dSFT recipe from ``dsft`` on the chosen answers of the same pairs, ``epochs`` epochs
    whatever the recipe's ``max_steps``), ``dsft_ddpo_on_policy`` (toy only: dDPO from ``dsft`` on the pairs of
    the on-policy toy AIF recipe). Every run is ``epochs`` epochs (Table 3: one), unless ``max_steps`` is given.
    ``data_overrides`` are the dDPO recipe's data fields (:func:`handbook.tiers.dpo_data_choice`).
    """
    from trl import DPOConfig, SFTConfig

    out = Path(output_dir)
    sizes = dict(max_steps=max_steps, max_length=max_length, batch_size=batch_size, max_samples=max_samples)
    paths, seen, pairs = {}, {}, {}
    for name, choice in models.items():
        if choice.source == "skip":
            continue
        if choice.source != "train":
            paths[name] = choice.value
            continue
        start = paths["base"] if name == "ddpo_without_dsft" else paths["dsft"]
        if name == "dsft2":
            m_args, d_args, s_args = read_sized_recipe(
                stage_setup("sft", tier).recipe_file, [ModelArguments, SFTDataArguments, SFTConfig], **sizes,
                model_name_or_path=start, output_dir=str(out / name), seed=seed, eval_strategy="no",
                num_train_epochs=epochs)
            if max_steps is None:
                s_args.max_steps = -1  # the SFT recipe counts steps; Table 3 counts epochs
            data = chosen_dialogues(_pairs(pairs, "default", tier, data_overrides, sizes, out, seed, paths["dsft"]))
            train_sft(m_args, d_args, s_args, datasets=(data, None))
            seen[name] = len(data)
        else:
            variant = "on_policy" if name == "dsft_ddpo_on_policy" else "default"
            m_args, d_args, b_args = read_sized_recipe(
                stage_setup("dpo", tier).recipe_file, [ModelArguments, DPODataArguments, DPOConfig], **sizes,
                model_name_or_path=start, output_dir=str(out / name), seed=seed, eval_strategy="no",
                num_train_epochs=epochs, **data_overrides)
            train_pairs = _pairs(pairs, variant, tier, data_overrides, sizes, out, seed, paths["dsft"])
            train_dpo(m_args, d_args, b_args, datasets=(train_pairs, None))
            seen[name] = len(train_pairs)
        paths[name] = str(out / name)
        logger.info("%s: trained from %s on %d examples", name, start, seen[name])
    return paths, seen


def _pairs(cache: dict, variant: str, tier: str, data_overrides: dict, sizes: dict, out: Path, seed: int,
           student: str):
    """The training pairs of ``variant`` (``default``: the tier's dDPO data; ``on_policy``: the toy on-policy
    AIF recipe's, its pool sampling ``student`` — this run's dSFT model — where the recipe names ``toy-dsft``),
    loaded once."""
    from trl import DPOConfig

    from .toy.preferences import TOY_AIF_ON_POLICY_RECIPE

    if variant not in cache:
        overrides = dict(data_overrides)
        aif_recipe = None
        if variant == "on_policy":
            if not fallback("table3/dsft_ddpo_on_policy", tier):
                raise ValueError("the on-policy variant exists at the toy tier only (toy/aif/on_policy.yaml)")
            overrides = {"toy_data_dir": str(out / "data")}
            aif_recipe = TOY_AIF_ON_POLICY_RECIPE
        _, d_args, b_args = read_sized_recipe(stage_setup("dpo", tier).recipe_file,
                                              [ModelArguments, DPODataArguments, DPOConfig], **sizes,
                                              output_dir=str(out), seed=seed, **overrides)
        cache[variant], _ = dpo_datasets(d_args, b_args.output_dir, aif_recipe=aif_recipe,
                                         student=student if variant == "on_policy" else None)
    return cache[variant]


def table3_frame(scores: dict[str, float], tier: str):
    """Table 3 side by side: this run's MT-Bench score and rank per row, the paper's score and rank. Both are
    1–10 judge grades averaged over questions, but of other models, questions and judges: compare orders, not
    values."""
    import pandas as pd

    rows = [n for n in ROWS if n in scores]
    ours = pd.Series({n: scores[n] for n in rows}).rank(ascending=False, method="min")
    paper_rows = [n for n in rows if n in PAPER_TABLE3]
    paper = pd.Series({n: PAPER_TABLE3[n][0] for n in paper_rows}).rank(ascending=False, method="min")
    frame = pd.DataFrame({LABELS[n]: {f"MT-Bench ({tier})": scores[n], f"rank ({tier})": ours[n],
                                      "MT-Bench (paper)": PAPER_TABLE3[n][0] if n in PAPER_TABLE3 else None,
                                      "rank (paper)": paper[n] if n in paper.index else None}
                          for n in rows}).T
    return frame.astype({f"rank ({tier})": "Int64", "rank (paper)": "Int64"})


def win_rate_frame(vs_teacher: dict, tier: str):
    """Win rates against this run's reference (the teacher) beside the paper's AlpacaEval. The references
    differ — the paper's is text-davinci-003, a weaker model than its GPT-4 judge; here the teacher that wrote the
    dSFT data — so the two columns are not comparable in value, only in order."""
    import pandas as pd

    rows = [n for n in LABELS if n in vs_teacher]
    return pd.DataFrame({LABELS[n]: {f"win rate vs the teacher % ({tier})": vs_teacher[n].win_rate
                                     if vs_teacher[n] else None,
                                     "± s.e.": vs_teacher[n].standard_error if vs_teacher[n] else None,
                                     "AlpacaEval % vs text-davinci-003 (paper)": PAPER_TABLE3[n][1]
                                     if n in PAPER_TABLE3 else None}
                         for n in rows}).T


def paper_orders(scores: dict[str, float]) -> list[dict]:
    """Each of the paper's Table 3 orderings (:data:`PAPER_ORDERS`) whose two rows were measured: the claim,
    the two measured scores and whether the measurement reproduces it (strictly higher)."""
    return [{"claim": f"{LABELS[hi]} > {LABELS[lo]}", "meaning": why, "measured": f"{scores[hi]} vs {scores[lo]}",
             "holds": scores[hi] > scores[lo]}
            for hi, lo, why in PAPER_ORDERS if hi in scores and lo in scores]
