"""The dDPO objective (the paper's Eq. 1), written out plainly.

For a prompt x with a chosen reply y_w and a rejected reply y_l:

1. the **sequence log-probability** of each reply under a model: the sum, over the reply's tokens
   only, of log π(token | everything before it);
2. the **implicit reward** of a reply: r(x, y) = β · (log π_θ(y|x) − log π_ref(y|x)), how much more
   likely the policy makes the reply than the frozen reference (the dSFT model) does;
3. the **loss**: −log σ(r(x, y_w) − r(x, y_l)), small when the policy has raised the chosen reply
   relative to the rejected one, measured against the reference.

The metrics are those TRL's ``DPOTrainer`` logs: ``rewards/chosen``, ``rewards/rejected`` (mean
implicit rewards), ``rewards/margins`` (their mean difference), ``rewards/accuracies`` (share of
pairs whose chosen reward is higher) and ``logps/chosen``, ``logps/rejected``.

The reference's log-probabilities need no gradient and never change: they can be computed once,
before training (``precompute_ref_log_probs``), which is what makes dDPO cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log π(token_t | tokens_<t) over the completion tokens of each row → shape ``[batch]``.

    ``completion_mask`` is 1 on the reply's tokens and 0 on the prompt and padding. The logits at
    position t predict token t+1, hence the shift by one.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = input_ids[:, 1:]
    token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(dim=1)


@dataclass
class DPOOutput:
    loss: torch.Tensor              # mean over the batch
    chosen_rewards: torch.Tensor    # β·(log π − log π_ref) of each chosen reply
    rejected_rewards: torch.Tensor
    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor

    def metrics(self) -> dict[str, float]:
        """The reward metrics as TRL logs them."""
        return {
            "loss": self.loss.item(),
            "rewards/chosen": self.chosen_rewards.mean().item(),
            "rewards/rejected": self.rejected_rewards.mean().item(),
            "rewards/margins": (self.chosen_rewards - self.rejected_rewards).mean().item(),
            "rewards/accuracies": (self.chosen_rewards > self.rejected_rewards).float().mean().item(),
            "logps/chosen": self.policy_chosen_logps.mean().item(),
            "logps/rejected": self.policy_rejected_logps.mean().item(),
        }


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta: float) -> DPOOutput:
    """Eq. 1 from the four sequence log-probabilities of a batch of pairs."""
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return DPOOutput(losses.mean(), chosen_rewards.detach(), rejected_rewards.detach(),
                     policy_chosen_logps.detach(), policy_rejected_logps.detach())


def dpo_batch(policy, reference, batch: dict, beta: float, ref_logps: tuple | None = None) -> DPOOutput:
    """Eq. 1 on one collated batch whose first half holds the chosen rows and second half the rejected.

    (That is the layout of TRL's DPO collator: ``input_ids``, ``attention_mask``, ``completion_mask``.)
    ``ref_logps`` = precomputed ``(ref_chosen, ref_rejected)``; otherwise the reference scores the
    batch now, forward only.
    """
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    policy_chosen, policy_rejected = sequence_logps(policy, *args).chunk(2)
    if ref_logps is None:
        with torch.no_grad():
            ref_chosen, ref_rejected = sequence_logps(reference, *args).chunk(2)
    else:
        ref_chosen, ref_rejected = ref_logps
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
