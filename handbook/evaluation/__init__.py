"""Evaluation — MT-Bench in FastChat's formats, AlpacaEval-style pairwise win rates, the paper's figures.

* :mod:`.mt_bench` — questions, two-turn answers, single-answer grading, aggregation;
* :mod:`.judge_prompts` — FastChat's judge prompts or the handbook's own;
* :mod:`.win_rate` — pairwise judging in both orders, win rate with its standard error;
* :mod:`.plots` — the per-category radar (Figure 1) and bars with error bars.
"""
