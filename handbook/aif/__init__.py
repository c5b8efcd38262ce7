"""AIF — AI feedback through preferences: a response pool, teacher ratings, preference triples.

* :mod:`.pool` — every prompt to each model of a pool (cached, resumable);
* :mod:`.rating` — UltraFeedback's four aspects and an overall score, parsed from any judge's reply;
* :mod:`.binarize` — rated completions → (prompt, chosen, rejected) by the paper's rule and others;
* :mod:`.ultrafeedback` — the raw ``openbmb/UltraFeedback`` schema → rated rows;
* :mod:`.pipeline` — pool → ratings → triples from a recipe; ``python -m handbook.aif_data`` runs it.
"""
