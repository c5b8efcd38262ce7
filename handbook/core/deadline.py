"""A run's time bound (the commands' ``--max_total_seconds``) as a value passed to what it bounds.

A :class:`Deadline` is made once, when a run starts (:func:`handbook.core.runner.guarded_run`), and handed
explicitly to the two things that wait: an :class:`~handbook.core.backends.OpenAIBackend` (no request started or
retried past it, none waiting beyond it, a ``Retry-After`` past it not waited for) and
:class:`~handbook.core.runner.ResumableCalls` (no batch started past it). There is no process-wide setting:
code that was not given a deadline is not bounded by one.

    deadline = Deadline.after(args.max_total_seconds)   # None without a bound
    judge = OpenAIBackend(url, model, deadline=deadline)
    with ResumableCalls(path, meta, keys, total, deadline=deadline) as calls: ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock, ``seconds`` after the moment it was made; ``option`` names the setting
    in messages (``the time bound of 30 s (`max_total_seconds`) ran out``)."""

    seconds: float
    option: str = "max_total_seconds"
    at: float = field(default=-1.0, compare=False)

    def __post_init__(self):
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not self.seconds > 0:
            raise ValueError(f"`{self.option}`: invalid value {self.seconds!r}; must be greater than 0")
        if self.at < 0:
            object.__setattr__(self, "at", time.monotonic() + self.seconds)

    @classmethod
    def after(cls, seconds: float | None, option: str = "max_total_seconds") -> Deadline | None:
        """A deadline ``seconds`` from now, or ``None`` for ``seconds=None`` (no bound)."""
        return None if seconds is None else cls(seconds, option)

    def left(self) -> float:
        """Seconds left (0 once it has passed)."""
        return max(0.0, self.at - time.monotonic())

    def passed(self) -> bool:
        return self.left() <= 0

    def message(self) -> str:
        return f"the time bound of {self.seconds:g} s (`{self.option}`) ran out"


def time_left(deadline: Deadline | None) -> float | None:
    """``deadline.left()``, or ``None`` without a deadline."""
    return None if deadline is None else deadline.left()
