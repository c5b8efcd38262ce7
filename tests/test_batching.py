"""Length-aware batching for dDPO: same pairs, same reference log-probs, less padding."""

import numpy as np
import pytest
import torch
from trl import DPOConfig, DPOTrainer

from handbook.ddpo.batching import HandbookDPOTrainer, pair_lengths, padding_efficiency
from handbook.ddpo.training import to_trl_pairs
from handbook.core.models import ModelArguments, get_model, get_tokenizer
from handbook.toy import world


@pytest.fixture(scope="module")
def pairs():
    """Pairs of very different lengths: a terse and a rambling answer, either way round."""
    rows = []
    for i, p in enumerate(world.sample_prompts(8, "train", seed=11)):
        terse = p.reference_answer()
        long = " ".join([world.apply_style(p.task.answer(p.item), p.constraint, follow=False, ramble=True)] * (1 + i % 4))
        chosen, rejected = (terse, long) if i % 2 else (long, terse)
        rows.append({"prompt": p.text, "chosen": [{"role": "user", "content": p.text}, {"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "user", "content": p.text}, {"role": "assistant", "content": rejected}]})
    return to_trl_pairs(rows)


def _trainer(cls, toy_base, pairs, tmp_path, **kw):
    args = ModelArguments(model_name_or_path=str(toy_base))
    config = DPOConfig(output_dir=str(tmp_path / cls.__name__), per_device_train_batch_size=4, max_length=256,
                       report_to=[], save_strategy="no", seed=0, use_cpu=True, bf16=False, **kw)
    return cls(model=get_model(args), args=config, train_dataset=pairs, processing_class=get_tokenizer(args))


def test_sorted_reference_pass_gives_the_same_log_probs_in_the_same_order(toy_base, pairs, tmp_path):
    plain = _trainer(DPOTrainer, toy_base, pairs, tmp_path, precompute_ref_log_probs=True, precompute_ref_batch_size=8)
    mine = _trainer(HandbookDPOTrainer, toy_base, pairs, tmp_path, precompute_ref_log_probs=True,
                    precompute_ref_batch_size=8)
    assert mine.train_dataset["prompt_ids"] == plain.train_dataset["prompt_ids"]
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        np.testing.assert_allclose(mine.train_dataset[column], plain.train_dataset[column], rtol=1e-5, atol=1e-4)


def test_group_by_length_sees_every_pair_once_and_pads_less(toy_base, pairs, tmp_path):
    trainer = _trainer(HandbookDPOTrainer, toy_base, pairs, tmp_path, precompute_ref_log_probs=True,
                       train_sampling_strategy="group_by_length")
    lengths = pair_lengths(trainer.train_dataset, 256)
    assert len(set(lengths)) > 5  # a real spread
    torch.manual_seed(0)
    order = list(iter(trainer._get_train_sampler()))
    assert sorted(order) == list(range(len(pairs)))
    loader = trainer.get_train_dataloader()
    real = padded = 0
    for batch in loader:
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
    plain = _trainer(DPOTrainer, toy_base, pairs, tmp_path, precompute_ref_log_probs=True)
    plain_real = plain_padded = 0
    for batch in plain.get_train_dataloader():
        plain_real += int(batch["attention_mask"].sum())
        plain_padded += batch["attention_mask"].numel()
    assert real == plain_real  # the same tokens ...
    assert padded < plain_padded  # ... in fewer padded slots


def test_padding_efficiency_simulation():
    rng = np.random.default_rng(0)
    sigma = np.sqrt(np.log(1 + 0.6 ** 2))
    lengths = np.maximum(8, rng.lognormal(np.log(900) - sigma ** 2 / 2, sigma, 4000)).astype(int)
    random, grouped, best = (padding_efficiency(lengths, 16, order) for order in ("random", "grouped", "sorted"))
    assert 0.4 < random < 0.75 < grouped <= best <= 1.0
    assert padding_efficiency([5, 5, 5, 5], 2, "random") == 1.0
    with pytest.raises(ValueError, match="order"):
        padding_efficiency([1, 2], 2, "bogus")


def test_grouped_evaluation_runs_on_pairs(toy_base, pairs, tmp_path):
    trainer = _trainer(HandbookDPOTrainer, toy_base, pairs, tmp_path, precompute_ref_log_probs=True,
                       train_sampling_strategy="group_by_length", eval_strategy="no")
    trainer.eval_dataset = trainer.train_dataset
    sampler = trainer._get_eval_sampler(trainer.eval_dataset)
    assert sorted(sampler) == list(range(len(pairs)))
    assert trainer.evaluate()["eval_loss"] > 0
