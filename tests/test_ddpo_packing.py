"""Padding-free dDPO (handbook.ddpo.packing): the same Eq. 1, the same numbers as TRL's padded batches."""

import logging
import tempfile

import numpy as np
import pytest
import torch

from handbook.ddpo.packing import ATTENTION, enable_packed_forward, pack_rows, packing_unsupported


@pytest.fixture(scope="module")
def random_toy(toy_tokenizer):
    from handbook.tools.synthetic import random_mistral

    with tempfile.TemporaryDirectory() as tmp:
        random_mistral(tmp, toy_tokenizer, "toy", seed=0)
        yield tmp


@pytest.fixture(scope="module")
def pairs(toy_tokenizer):
    from handbook.tools.synthetic import synthetic_pairs

    return synthetic_pairs(toy_tokenizer, 24, 10, 20, 0.6, 256, seed=0)  # lengths spread (lognormal, CV 0.6)


def _config(tmp, **kw):
    from trl import DPOConfig

    base = dict(output_dir=str(tmp), per_device_train_batch_size=4, max_length=256, report_to=[], save_strategy="no",
                seed=0, use_cpu=True, bf16=False, logging_steps=1, disable_tqdm=True, learning_rate=5e-4)
    return DPOConfig(**{**base, **kw})


def _trainer(cls, model_dir, tokenizer, pairs, tmp, dtype=torch.float32, trainer_kw=None, on_model=None, **kw):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if on_model is not None:
        on_model(model)
    return cls(model=model, args=_config(tmp, **kw), train_dataset=pairs, processing_class=tokenizer,
               **(trainer_kw or {}))


def _step_losses(trainer):
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


def test_pack_rows_lays_rows_end_to_end():
    input_ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    rows = pack_rows(input_ids, mask)
    assert rows.input_ids.tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert rows.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert rows.cu_seq_lens.tolist() == [0, 3, 5, 9] and rows.max_length == 4
    labels = torch.tensor([[-100, 6, 7, -100], [8, 9, -100, -100], [1, -100, 3, 4]])
    # each row's first token is no target: the previous row's last token must not learn to predict it
    assert rows.labels(labels).tolist() == [[-100, 6, 7, -100, 9, -100, -100, 3, 4]]
    # packed output t scores packed token t + 1; padded [i, t] scores token t + 1 of row i; zeros at padding
    scores = torch.arange(1.0, 9.0).unsqueeze(0)  # T - 1 = 8 entries
    assert rows.unpack(scores).tolist() == [[1, 2, 3], [4, 5, 0], [6, 7, 8]]
    with pytest.raises(ValueError, match=r"rows \[1\] are not right-padded"):
        pack_rows(input_ids, torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]]))


def _fused_model(tokenizer, dtype, **config):
    """A random toy Mistral with TRL's fused LM head (every per-token output), in eval mode."""
    from trl.trainer.utils import add_fused_lm_head

    from handbook.tools.synthetic import random_mistral_model

    model = random_mistral_model(tokenizer, "toy", seed=0)
    for key, value in config.items():
        setattr(model.config, key, value)
    model = model.to(dtype).eval()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs"))
    return model


@pytest.mark.parametrize("sliding_window", [None, 7])
def test_packed_forward_equals_the_padded_forward(toy_tokenizer, sliding_window):
    """Every per-token output and every gradient, row by row, in float64 (so that only rounding differs);
    with a sliding window shorter than the rows, it is kept within each row too."""
    torch.manual_seed(0)
    lengths = [9, 23, 4, 17, 23, 12]
    input_ids = torch.randint(3, 1000, (len(lengths), max(lengths)))
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    labels = input_ids.masked_fill((mask == 0) | (torch.arange(max(lengths)) < 3), -100)  # 3 prompt tokens
    outputs, grads = [], []
    for packed in (False, True):
        model = _fused_model(toy_tokenizer, torch.float64, sliding_window=sliding_window)
        if packed:
            assert enable_packed_forward(model) and model.config._attn_implementation == ATTENTION
        out = model(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True, use_cache=False)
        out.log_probs.sum().backward()
        outputs.append(out)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    padded, packed = outputs
    assert packed.log_probs.shape == padded.log_probs.shape == (len(lengths), max(lengths) - 1)
    for name in ("log_probs", "entropy", "mean_logits", "log_sum_sq_probs"):
        torch.testing.assert_close(getattr(packed, name), getattr(padded, name), rtol=0, atol=1e-10)
    assert torch.equal(packed.is_top1, padded.is_top1) and torch.equal(packed.label_mask, padded.label_mask)
    # (TRL's fused head accumulates in float32: its mean over all tokens, summed in another order, differs by an ulp)
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-9)
    # attention across rows would change them: the check can fail
    model = _fused_model(toy_tokenizer, torch.float64, sliding_window=sliding_window)
    leaky = model(input_ids=pack_rows(input_ids, mask).input_ids, use_cache=False).logits
    assert not torch.allclose(leaky[0, lengths[0]:lengths[0] + 3],
                              model(input_ids=input_ids[1:2, :3], use_cache=False).logits[0], atol=1e-6)


def test_segment_attention_leaves_masked_calls_to_sdpa(toy_tokenizer):
    """Calls with a padding mask (generation, any padded forward) compute what transformers' sdpa computes."""
    plain = _fused_model(toy_tokenizer, torch.float64)
    packing = _fused_model(toy_tokenizer, torch.float64)
    enable_packed_forward(packing)
    input_ids = torch.randint(3, 1000, (3, 11))
    mask = torch.ones_like(input_ids)
    mask[1, 7:] = 0
    mask[2, :4] = 0  # left padding too
    for kwargs in (dict(attention_mask=mask), {}):
        torch.testing.assert_close(packing(input_ids=input_ids, use_cache=False, **kwargs).logits,
                                   plain(input_ids=input_ids, use_cache=False, **kwargs).logits, rtol=0, atol=1e-10)
    generated = [m.generate(input_ids[:2], attention_mask=mask[:2], max_new_tokens=4, do_sample=False)
                 for m in (plain, packing)]
    assert torch.equal(*generated)


def test_per_pair_log_probs_equal_trl(toy_tokenizer, random_toy, pairs, tmp_path):
    """Per pair, the packed forward gives TRL's log-probs: batch by batch (TRL's own batches, both trainers'
    ``compute_ref_log_probs``), the precomputed reference columns, and one training batch's loss, gradients
    and metrics. In float64 the two differ by rounding only (TRL's fused head still sums in float32, so the
    stored columns differ by at most an ulp where the handbook's length-sorted pass batches pairs otherwise)."""
    from trl import DPOTrainer

    from handbook.ddpo.batching import HandbookDPOTrainer

    for dtype in (torch.float64, torch.float32):
        kw = dict(precompute_ref_log_probs=True, precompute_ref_batch_size=8)
        trl = _trainer(DPOTrainer, random_toy, toy_tokenizer, pairs, tmp_path / "trl", dtype, **kw)
        mine = _trainer(HandbookDPOTrainer, random_toy, toy_tokenizer, pairs, tmp_path / "mine", dtype, **kw)
        assert mine.packed_models == [mine.model]
        batches = list(trl.get_train_dataloader())
        assert np.mean([b["attention_mask"].float().mean() for b in batches]) < 0.9  # padding to leave out
        with torch.no_grad():
            for batch in batches:
                theirs = torch.cat(trl.compute_ref_log_probs(trl.model, batch))
                ours = torch.cat(mine.compute_ref_log_probs(mine.model, batch))
                assert ours.shape == theirs.shape == (2 * len(batch["ref_chosen_logps"]),)
                torch.testing.assert_close(ours, theirs, rtol=0 if dtype is torch.float64 else 1e-6,
                                           atol=1e-9 if dtype is torch.float64 else 1e-5)
        assert mine.train_dataset["prompt_ids"] == trl.train_dataset["prompt_ids"]
        for column in ("ref_chosen_logps", "ref_rejected_logps"):
            np.testing.assert_allclose(mine.train_dataset[column], trl.train_dataset[column], rtol=2.5e-7, atol=1e-5)
        losses, grads = [], []
        for trainer in (trl, mine):
            loss = trainer.compute_loss(trainer.model, batches[0])
            loss.backward()
            losses.append(loss.item())
            grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
        assert losses[1] == pytest.approx(losses[0], abs=1e-6)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5 if dtype is torch.float32 else 1e-7)
        ours, theirs = (t._metrics["train" if t.model.training else "eval"] for t in (mine, trl))
        for key in ("logps/chosen", "logps/rejected", "entropy", "mean_token_accuracy", "rewards/margins"):
            assert ours[key][-1] == pytest.approx(theirs[key][-1], rel=1e-6, abs=1e-6)


def test_whole_run_per_step_losses_equal_the_padded_runs(toy_tokenizer, random_toy, pairs, tmp_path):
    """Two epochs, per-step losses: packed = the handbook's padded run (same grouped batches, precomputed
    reference), and packed = TRL's defaults (same random batches, live reference, packed as well)."""
    from trl import DPOTrainer

    from handbook.ddpo.batching import HandbookDPOTrainer
    from handbook.tools.measure import TokenCounter

    grouped = dict(precompute_ref_log_probs=True, train_sampling_strategy="group_by_length", num_train_epochs=2)
    runs = {}
    for name, cls, pack, kw in (("padded", HandbookDPOTrainer, False, grouped),
                                ("packed", HandbookDPOTrainer, True, grouped),
                                ("trl", DPOTrainer, None, dict(num_train_epochs=2)),
                                ("packed-live", HandbookDPOTrainer, True, dict(num_train_epochs=2))):
        counters = []  # on the backbones: what the transformer computes, the precomputed reference pass included
        trainer = _trainer(cls, random_toy, toy_tokenizer, pairs, tmp_path / name,
                           trainer_kw=None if pack is None else dict(pack_rows=pack),
                           on_model=lambda m: counters.append(TokenCounter(m.base_model)), **kw)
        if trainer.ref_model is not None:
            counters.append(TokenCounter(trainer.ref_model.base_model))
        trainer.train()
        runs[name] = (_step_losses(trainer), sum(c.real for c in counters) / sum(c.processed for c in counters), trainer)
    assert len(runs["padded"][0]) == len(runs["trl"][0]) == 12
    np.testing.assert_allclose(runs["packed"][0], runs["padded"][0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(runs["packed-live"][0], runs["trl"][0], rtol=0, atol=1e-5)
    assert max(abs(a - b) for a, b in zip(runs["packed"][0], runs["trl"][0])) > 1e-3  # other batches: other losses
    assert runs["packed"][1] == runs["packed-live"][1] == 1.0  # no padding computed, reference pass included
    assert runs["padded"][1] < 0.95 and runs["trl"][1] < runs["padded"][1]
    live = runs["packed-live"][2]
    assert live.ref_model is not None and len(live.packed_models) == 2  # the live reference packs too
    assert [m.packed_calls for m in live.packed_models] == [12, 12]


def test_pack_rows_false_and_unsupported_models_stay_padded(toy_tokenizer, random_toy, pairs, tmp_path, caplog):
    from handbook.ddpo.batching import HandbookDPOTrainer

    trainer = _trainer(HandbookDPOTrainer, random_toy, toy_tokenizer, pairs, tmp_path, trainer_kw=dict(pack_rows=False))
    assert trainer.packed_models == [] and trainer.model.config._attn_implementation == "sdpa"
    model = _fused_model(toy_tokenizer, torch.float32)
    model.config._attn_implementation = "flex_attention"
    assert "flex_attention" in packing_unsupported(model)
    with caplog.at_level(logging.WARNING, logger="handbook.ddpo.packing"):
        assert not enable_packed_forward(model)
    assert "stay padded" in caplog.text


def test_the_handbooks_dpo_packs_by_default(toy_base, pairs, tmp_path):
    """``handbook.ddpo.training.train`` (the CLI's and the notebooks' dDPO) packs unless ``pack_rows: false``."""
    from handbook.core.models import ModelArguments
    from handbook.ddpo.training import DPODataArguments, train

    assert DPODataArguments().pack_rows is True
    for pack in (True, False):
        args = _config(tmp_path / str(pack), max_steps=1, precompute_ref_log_probs=True)
        trainer = train(ModelArguments(model_name_or_path=str(toy_base)), DPODataArguments(pack_rows=pack), args,
                        datasets=(pairs.select(range(8)), None))
        assert bool(trainer.packed_models) is pack


def test_lora_policy_and_its_adapter_free_reference_pack(toy_tokenizer, random_toy, pairs, tmp_path):
    """With PEFT the reference is the policy with its adapter disabled: both forwards pack, and the
    per-step losses are TRL's on the same (random) batches."""
    from peft import LoraConfig
    from trl import DPOTrainer

    from handbook.ddpo.batching import HandbookDPOTrainer
    from handbook.tools.measure import TokenCounter

    runs = {}
    for name, cls, extra in (("trl", DPOTrainer, {}), ("packed", HandbookDPOTrainer, dict(pack_rows=True))):
        counters = []
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        trainer = _trainer(cls, random_toy, toy_tokenizer, pairs, tmp_path / name, learning_rate=1e-2, num_train_epochs=1,
                           trainer_kw=dict(peft_config=lora, **extra),
                           on_model=lambda m: counters.append(TokenCounter(m.base_model)))
        trainer.train()
        runs[name] = (_step_losses(trainer), counters[0].real / counters[0].processed, trainer)
    packed = runs["packed"][2]
    assert len(packed.packed_models) == 1 and packed.ref_model is None
    assert packed.packed_models[0].packed_calls == 2 * 6  # policy and adapter-free reference, every step
    assert len(runs["trl"][0]) == 6
    np.testing.assert_allclose(runs["packed"][0], runs["trl"][0], rtol=0, atol=1e-5)
    assert max(abs(x - np.log(2)) for x in runs["trl"][0]) > 1e-3  # the adapter moved: policy ≠ reference
    assert runs["packed"][1] == 1.0 and runs["trl"][1] < 0.95
