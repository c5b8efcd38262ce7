"""What goes wrong in DPO, measured: degenerate replies and how far the policy has moved from its reference.

DPO's loss only asks that the chosen reply's log-ratio exceed the rejected one's; nothing in it stops the policy
from moving probability mass to replies neither of them contains. The KL term of the objective Eq. 1 comes from
(``max E[r] − β KL(π ‖ π_ref)``, Rafailov et al. 2023, Eq. 3) is what holds it back, priced by β: the smaller β,
the further the policy may drift. Two signs that it drifted too far:

* **degenerate replies** (:func:`is_degenerate`): empty, or stuck repeating a short phrase — the classic failure of a
  policy pushed past what its reference would say;
* **KL to the reference** (:func:`kl_to_reference`): along the policy's own greedy reply to each prompt, the exact
  per-token KL divergence ``Σ_v π(v | x, y_<t) log π(v | x, y_<t) / π_ref(v | x, y_<t)``, summed over the reply's
  tokens. It is the KL of the objective's penalty measured on the replies the policy actually writes (one greedy
  trajectory per prompt, not an expectation over sampled ones), in nats.

Notebook 04 puts both beside the β sweep's reward margins.
"""

from __future__ import annotations

import re
from typing import Sequence

# a reply stuck in a loop: one phrase of 1-4 words repeated at least this many times in a row, or one
# punctuation mark this many times (``!!!!!``, ``.....``)
REPEATS_IN_A_ROW = 3
PUNCTUATION_RUN = 5


def is_degenerate(reply: str, repeats: int = REPEATS_IN_A_ROW) -> bool:
    """True for an empty reply, one in which a phrase of one to four words occurs ``repeats`` times in a row
    (``"the the the"``, ``"is Lima is Lima is Lima"``; case and punctuation ignored), or one with a punctuation
    mark :data:`PUNCTUATION_RUN` times in a row (``"The capital!!!!!!"``)."""
    words = re.findall(r"[\w']+", reply.lower())
    if not words:
        return True
    if re.search(r"([^\w\s])\1{%d,}" % (PUNCTUATION_RUN - 1), reply):
        return True
    for n in range(1, 5):
        for start in range(0, len(words) - n * repeats + 1):
            phrase = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == phrase for k in range(1, repeats)):
                return True
    return False


def degenerate_share(replies: Sequence[str]) -> float:
    """The share of ``replies`` that :func:`is_degenerate` flags."""
    if not replies:
        raise ValueError("no replies to check")
    return sum(map(is_degenerate, replies)) / len(replies)


def kl_to_reference(policy, reference, tokenizer, conversations: Sequence[list[dict]], replies: Sequence[str],
                    batch_size: int = 32) -> list[float]:
    """Per conversation, ``Σ_t KL(π(· | x, y_<t) ‖ π_ref(· | x, y_<t))`` in nats over the tokens of ``replies``
    (the policy's own replies to ``conversations``, rendered with the tokenizer's chat template as in training).
    0 when the policy is the reference; larger the further it has moved on what it writes."""
    import torch

    if len(conversations) != len(replies):
        raise ValueError(f"{len(conversations)} conversations but {len(replies)} replies")
    out: list[float] = []
    device = next(policy.parameters()).device
    for start in range(0, len(replies), batch_size):
        rows = []
        for conv, reply in zip(conversations[start:start + batch_size], replies[start:start + batch_size]):
            prompt_ids = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"]
            full_ids = tokenizer.apply_chat_template(conv + [{"role": "assistant", "content": reply}],
                                                     tokenize=True, return_dict=True)["input_ids"]
            if full_ids[:len(prompt_ids)] != prompt_ids:
                raise ValueError("the chat template renders the prompt differently inside the whole conversation")
            rows.append((full_ids, len(prompt_ids)))
        width = max(len(ids) for ids, _ in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        reply_mask = torch.zeros((len(rows), width), dtype=torch.float)
        for i, (ids, n_prompt) in enumerate(rows):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            attention[i, :len(ids)] = 1
            reply_mask[i, n_prompt - 1:len(ids) - 1] = 1.0   # logits at position t predict token t + 1
        input_ids, attention, reply_mask = input_ids.to(device), attention.to(device), reply_mask.to(device)
        with torch.no_grad():
            logp = torch.log_softmax(policy(input_ids=input_ids, attention_mask=attention).logits.float(), dim=-1)
            logq = torch.log_softmax(reference(input_ids=input_ids, attention_mask=attention).logits.float(), dim=-1)
            per_token = (logp.exp() * (logp - logq)).sum(-1)
        out.extend((per_token * reply_mask).sum(1).tolist())
    return out
