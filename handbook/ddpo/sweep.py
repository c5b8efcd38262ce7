"""Reading dDPO runs: TRL's log history as curves per evaluated set, and a β sweep.

TRL's ``DPOTrainer`` evaluated on several named sets (``eval_dataset={"train": ..., "heldout": ...}``)
logs one entry per set and evaluation: the set's loss as ``eval_<set>_loss``, its reward metrics as
``eval_rewards/*`` and ``eval_logps/*`` (without the set's name). :func:`eval_curves` splits the log
into one curve per set, the prefixes stripped (``loss``, ``rewards/margins``, ``epoch``, ...).

The margin r_w − r_l = β·(log-ratio of y_w − log-ratio of y_l) scales with β: the same policy has ten
times the margin at β = 0.5 as at β = 0.05. :func:`sweep_row` therefore also reports margin / β,
the log-ratio gap itself, which compares across β.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

SWEEP_METRICS = ("rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


def eval_curves(log_history: Sequence[Mapping[str, Any]], splits: Iterable[str]) -> dict[str, list[dict]]:
    """``{set: [entry, ...]}``: the log entries of each evaluated set, in order, with ``eval_<set>_loss``
    renamed ``loss`` and the ``eval_`` prefix stripped from every other key. A set with no entry raises
    ``ValueError`` naming it and the evaluation losses that were logged."""
    curves = {}
    for split in splits:
        key = f"eval_{split}_loss"
        rows = []
        for entry in log_history:
            if key not in entry:
                continue
            row = {"loss": entry[key]}
            for k, v in entry.items():
                if k == key:
                    continue
                row[k[len("eval_"):] if k.startswith("eval_") else k] = v
            rows.append(row)
        if not rows:
            logged = sorted({k for e in log_history for k in e if k.startswith("eval_") and k.endswith("_loss")})
            raise ValueError(f"no evaluation of the set {split!r} in the log history (evaluation losses logged: "
                             f"{logged or 'none'})")
        curves[split] = rows
    return curves


def sweep_row(beta: float, metrics: Mapping[str, float], prefix: str = "eval_") -> dict[str, float]:
    """One β's held-out numbers from an evaluation's metrics (``trainer.evaluate()``'s keys, ``prefix``
    ``"eval_"``; a row of :func:`eval_curves`, ``prefix=""``): reward accuracy, margin, margin / β and
    the policy's mean log-probabilities of chosen and rejected replies."""
    if beta <= 0:
        raise ValueError(f"β must be positive, got {beta}")
    missing = [prefix + k for k in SWEEP_METRICS if prefix + k not in metrics]
    if missing:
        raise KeyError(f"β = {beta}: the evaluation has no {missing} (it has: {sorted(metrics)})")
    get = lambda k: float(metrics[prefix + k])  # noqa: E731
    return {"reward accuracy": get("rewards/accuracies"), "margin": get("rewards/margins"),
            "margin / β": get("rewards/margins") / beta, "logps/chosen": get("logps/chosen"),
            "logps/rejected": get("logps/rejected")}


def beta_sweep(betas: Iterable[float], train_one: Callable[[float], Any],
               evaluate_policy: Callable[[Any, float], Mapping[str, float]] | None = None,
               done: Mapping[float, Mapping[str, float]] | None = None) -> dict[float, dict]:
    """``{β: row}`` for each β in order: ``train_one(β)`` trains a policy and returns its trainer, whose
    ``evaluate()`` scores the held-out pairs (:func:`sweep_row`); ``evaluate_policy(trainer.model, β)``, when
    given, adds its numbers (e.g. a rubric score). A β in ``done`` (a run already made, with the same
    data and seed) takes that row as it is and is not trained again."""
    rows = {}
    for beta in betas:
        if done is not None and beta in done:
            rows[beta] = dict(done[beta])
            continue
        trainer = train_one(beta)
        row = sweep_row(beta, trainer.evaluate())
        if evaluate_policy is not None:
            row.update(evaluate_policy(trainer.model, beta))
        rows[beta] = row
    return rows
