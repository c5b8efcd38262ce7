"""The paper's figures in miniature: a per-category radar (Figure 1) and bars with error bars."""

from __future__ import annotations

import math
from typing import Mapping, Sequence


def radar(scores: Mapping[str, Mapping[str, float]], categories: Sequence[str], title: str = "", ax=None,
          max_value: float = 10.0):
    """One polygon per model over the categories (the paper's Figure 1). ``scores[model][category]``."""
    import matplotlib.pyplot as plt

    angles = [2 * math.pi * i / len(categories) for i in range(len(categories))]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5.5), subplot_kw={"projection": "polar"})
    for model, by_cat in scores.items():
        values = [by_cat.get(c, 0.0) or 0.0 for c in categories]
        ax.plot(angles + angles[:1], values + values[:1], label=model, linewidth=1.8)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.08)
    ax.set_xticks(angles)
    ax.set_xticklabels(categories)
    ax.set_ylim(0, max_value)
    ax.set_title(title, pad=18)
    # below the polar plot, never over its category labels
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=8, frameon=False)
    return ax


def bars_with_errors(means: Mapping[str, float], errors: Mapping[str, float], ylabel: str, title: str = "", ax=None):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.4))
    names = list(means)
    ax.bar(names, [means[n] for n in names], yerr=[errors.get(n, 0.0) for n in names], capsize=5,
           color=[f"C{i}" for i in range(len(names))])  # the same colours as the radar's lines
    ax.set(ylabel=ylabel, title=title)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)   # long row names: slanted, anchored at their bar
    return ax
