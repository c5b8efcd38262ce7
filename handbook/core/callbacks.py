"""Trainer callbacks every handbook training run adds.

:class:`LogLastStep` — transformers logs the training loss every ``logging_steps`` steps and never at the last
step unless the step count is a multiple of it, so a run shorter than ``logging_steps`` (the small tier's recipes
log every 10 steps; a few hundred offline dialogues packed into 1,024-token rows make fewer than 10 steps) ends
with no training loss in its ``log_history`` at all, and whatever reads the log (notebook 02's loss curve, a
final-loss check) finds nothing. Evaluation already runs at the last step in that case (transformers'
``DefaultFlowCallback``); this does the same for the training loss.
"""

from __future__ import annotations

from transformers import TrainerCallback
from transformers.trainer_utils import IntervalStrategy


class LogLastStep(TrainerCallback):
    """Log the training loss at the run's last step when ``logging_steps`` would not."""

    def on_step_end(self, args, state, control, **kwargs):
        if (args.logging_strategy == IntervalStrategy.STEPS and state.max_steps > 0
                and state.global_step >= state.max_steps and state.global_step % state.logging_steps != 0):
            control.should_log = True
        return control


def with_handbook_callbacks(callbacks) -> list:
    """``callbacks`` (a list or ``None``) plus the ones every handbook run adds (once)."""
    callbacks = list(callbacks or [])
    if not any(isinstance(c, LogLastStep) or c is LogLastStep for c in callbacks):
        callbacks.append(LogLastStep())
    return callbacks
