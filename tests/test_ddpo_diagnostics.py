import math

import pytest
import torch

from handbook.core.models import ModelArguments, load_model_and_tokenizer
from handbook.ddpo.diagnostics import degenerate_share, is_degenerate, kl_to_reference


@pytest.mark.parametrize("reply, degenerate", [
    ("", True),
    ("   ", True),
    ("the the the", True),
    ("Lima is Lima is Lima is", True),                          # a two-word phrase, three times in a row
    ("The capital of Peru is Lima, Lima, Lima.", True),          # punctuation ignored
    ("The capital of Peru is Lima.", False),
    ("Lima. Lima. Nairobi.", False),                             # twice is not a loop
    ("one two three four one two three four one two three four", True),
    ("a b c d e a b c d e a b c d e", False),                    # a five-word phrase is not counted
    ("The capital!!!!!!!!!!!.!.!....", True),                     # a punctuation mark five times in a row
    ("Sure. The!............................", True),
    ("Wait... what?!", False),                                   # three dots are an ellipsis
    ("!!!!!", True),                                             # no word at all
])
def test_degenerate_replies(reply, degenerate):
    assert is_degenerate(reply) is degenerate


def test_degenerate_share():
    assert degenerate_share(["ok answer", "x x x", "fine", ""]) == 0.5
    with pytest.raises(ValueError, match="no replies"):
        degenerate_share([])


@pytest.fixture(scope="module")
def toy_model(toy_base):
    return load_model_and_tokenizer(ModelArguments(model_name_or_path=toy_base))


def test_kl_is_zero_against_itself_and_exact_against_a_shifted_model(toy_model):
    model, tokenizer = toy_model
    convs = [[{"role": "user", "content": "What is the capital of Peru?"}],
             [{"role": "user", "content": "Spell cat backwards."}]]
    replies = ["The capital of Peru is Lima.", "tac"]
    assert kl_to_reference(model, model, tokenizer, convs, replies) == pytest.approx([0.0, 0.0], abs=1e-6)

    # A reference whose output bias favours one token: the KL along each reply is the sum, over the reply's
    # positions, of KL(softmax(z) || softmax(z + e_k)), computed here independently from the logits.
    import copy
    reference = copy.deepcopy(model)
    k = 5
    bias_shift = 2.0

    class Shifted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = out.logits.clone()
            out.logits[..., k] += bias_shift
            return out

    shifted = Shifted(reference)
    got = kl_to_reference(model, shifted, tokenizer, convs, replies)
    for conv, reply, value in zip(convs, replies, got):
        prompt = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(conv + [{"role": "assistant", "content": reply}], tokenize=True,
                                             return_dict=True)["input_ids"]
        with torch.no_grad():
            z = model(input_ids=torch.tensor([full])).logits[0].float()
        p = torch.log_softmax(z, -1)
        q = torch.log_softmax(z + bias_shift * torch.nn.functional.one_hot(torch.tensor(k), z.shape[-1]), -1)
        expected = sum(float((p[t].exp() * (p[t] - q[t])).sum()) for t in range(len(prompt) - 1, len(full) - 1))
        assert value == pytest.approx(expected, rel=1e-4)
        assert value > 0 and math.isfinite(value)


def test_kl_refuses_mismatched_lengths(toy_model):
    model, tokenizer = toy_model
    with pytest.raises(ValueError, match="2 conversations but 1 replies"):
        kl_to_reference(model, model, tokenizer, [[{"role": "user", "content": "a"}]] * 2, ["x"])
