"""Which tokens dSFT trains on — read from TRL's own pipeline, not re-implemented.

With ``assistant_only_loss=True`` TRL's ``SFTTrainer`` tokenizes each dialogue with the chat template's
``{% generation %}`` markers (Jinja tags around the assistant's text that make
``apply_chat_template(..., return_assistant_tokens_mask=True)`` say which tokens the assistant wrote), truncates
to ``max_length``, and its collator sets every other token's label to -100, which the loss ignores.
:func:`trained_tokens` runs exactly that — the trainer's dataset preparation and its collator, on one dialogue —
so what a notebook shows is what the training run computes the loss on.
"""

from __future__ import annotations

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy ignores


def trained_tokens(model, tokenizer, training_args, dialogue: list[dict]) -> tuple[list[str], list[int]]:
    """``(tokens, labels)`` of ``dialogue`` as ``SFTTrainer`` with ``training_args`` would train on it: the
    tokens after the trainer's own tokenization and truncation, and the labels its collator builds
    (:data:`IGNORE_INDEX` where no loss is taken). A dialogue the trainer would drop (no assistant token left
    after truncation) raises ``ValueError``. Nothing is trained; ``model`` is only what the trainer
    needs to be built."""
    import copy

    from datasets import Dataset
    from trl import SFTTrainer

    args = copy.deepcopy(training_args)
    args.report_to, args.eval_strategy, args.packing = [], "no", False  # one row, as the trainer sees it
    args.dataset_num_proc = None
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"messages": dialogue}]),
                         processing_class=tokenizer)
    if len(trainer.train_dataset) == 0:
        raise ValueError(f"the trainer drops this dialogue: after truncation to max_length={args.max_length} none of "
                         "its tokens is the assistant's, so it would carry no loss")
    row = trainer.train_dataset[0]
    batch = trainer.data_collator([row])
    input_ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    return tokenizer.convert_ids_to_tokens(input_ids), labels
