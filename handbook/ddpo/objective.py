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


def per_pair_terms(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                   beta: float) -> list[dict[str, float]]:
    """Eq. 1 pair by pair, for reading: implicit rewards, margin, loss and the gradient's weight.

    The weight is σ(r_l − r_w): the gradient of a pair's loss −log σ(r_w − r_l) with respect to
    log π_θ(y_w|x) is −β·σ(r_l − r_w) (and +β·σ(r_l − r_w) for y_l). ``autograd weight`` is that
    derivative as autograd computes it, divided by −β: it must equal ``weight``.
    """
    inputs = [torch.as_tensor(t, dtype=torch.float64).detach().clone()
              for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)]
    shapes = {tuple(t.shape) for t in inputs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"the four log-probabilities must be 1-D tensors of one length, got shapes {sorted(shapes)}")
    policy_chosen = inputs[0].requires_grad_(True)
    chosen_rewards = beta * (policy_chosen - inputs[2])
    rejected_rewards = beta * (inputs[1] - inputs[3])
    margins = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(margins)
    (grad_chosen,) = torch.autograd.grad(losses.sum(), policy_chosen)
    weights = torch.sigmoid(-margins)
    return [{"r_w": float(rw), "r_l": float(rl), "margin r_w − r_l": float(m), "loss −log σ(margin)": float(loss),
             "weight σ(r_l − r_w)": float(w), "autograd weight": float(-g / beta)}
            for rw, rl, m, loss, w, g in zip(chosen_rewards.detach(), rejected_rewards.detach(), margins.detach(),
                                           losses.detach(), weights.detach(), grad_chosen)]


TRL_CHECKED_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                       "logps/chosen", "logps/rejected")


def compare_with_trl(policy, reference, tokenizer, pairs, betas, batch_size: int = 8, max_length: int | None = None,
                     output_dir: str | None = None, objective=None) -> dict[float, dict]:
    """Eq. 1 by hand (:func:`dpo_batch`) against TRL's ``DPOTrainer.compute_loss`` on one batch, per β.

    ``policy`` and ``reference`` are two models (the check means something only when they differ: at
    initialisation every implicit reward is 0, where a wrong sign or a misplaced β would still agree);
    ``pairs``: a dataset in TRL's preference format, of which the first ``batch_size`` rows make the
    batch. Both sides run on the same collated batch with dropout off (the models in eval mode; their
    modes are restored afterwards). ``objective`` replaces :func:`dpo_batch` (for testing that the
    comparison catches a wrong objective). Returns ``{β: {"by hand": {...}, "TRL": {...},
    "max_difference": float}}`` over :data:`TRL_CHECKED_METRICS`.
    """
    import tempfile

    from trl import DPOConfig, DPOTrainer

    if reference is None or reference is policy:
        raise ValueError("compare_with_trl needs a reference model distinct from the policy")
    if len(pairs) == 0:
        raise ValueError("compare_with_trl needs at least one preference pair")
    objective = objective or dpo_batch
    subset = pairs.select(range(min(batch_size, len(pairs))))
    on_cpu = next(policy.parameters()).device.type == "cpu"
    modes = (policy.training, reference.training)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for beta in betas:
            args = DPOConfig(output_dir=output_dir or tmp, beta=beta, per_device_train_batch_size=len(subset),
                             max_length=max_length, report_to=[], use_cpu=on_cpu, bf16=False, fp16=False,
                             precompute_ref_log_probs=False, save_strategy="no",
                             disable_dropout=False)  # leave the caller's models as they are
            trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=subset,
                                 processing_class=tokenizer)
            batch = next(iter(trainer.get_train_dataloader()))
            trainer.model.eval()
            trainer.ref_model.eval()
            with torch.no_grad():
                trl_loss = trainer.compute_loss(trainer.model, batch).item()
                trl = {"loss": trl_loss, **{k: v[-1] for k, v in trainer._metrics["eval"].items()
                                            if k in TRL_CHECKED_METRICS}}
                mine = objective(trainer.model, trainer.ref_model, batch, beta=beta).metrics()
            missing = [k for k in TRL_CHECKED_METRICS if k not in trl]
            if missing:
                raise KeyError(f"TRL logged no {missing} (logged: {sorted(trainer._metrics['eval'])})")
            results[beta] = {"by hand": {k: mine[k] for k in TRL_CHECKED_METRICS}, "TRL": trl,
                             "max_difference": max(abs(mine[k] - trl[k]) for k in TRL_CHECKED_METRICS)}
            del trainer
    policy.train(modes[0])
    reference.train(modes[1])
    return results
