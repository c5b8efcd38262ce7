"""dSFT — distilled supervised fine-tuning: dialogues written by a teacher, filtered, trained on.

* :mod:`.dialogues` — x0 → y0 → x1 (the teacher plays the user) → y1 …, resumable;
* :mod:`.filters` — ultrachat_200k's filters (truecasing, disclaimers, de-duplication) and schema checks;
* :mod:`.training` — TRL's ``SFTTrainer`` on the dialogues, assistant tokens only.
"""
