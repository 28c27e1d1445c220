"""The run's wall-clock deadline (``[search] timeout_s``), one absolute time shared by every process of a run.

Set once when ``dse search`` starts (set-up included) and handed to every worker; the emulating evaluators check it at
each batch boundary and raise :class:`RunTimeout`, which ends the trial in progress (failed, an enqueued seed is
enqueued again) and makes the process's run loop stop starting new trials. So a run ends within about one batch of
the deadline, plus the final hold-out checks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


class RunTimeout(Exception):
    """The run's deadline passed (not an error: the run stops starting new work)."""


@dataclass
class Deadline:
    """``at``: time.time() seconds. One-shot: :meth:`check` raises once (interrupting the trial in progress); the
    work a process does after its run loop stopped (final hold-out checks, baselines) then runs to its end."""

    at: float
    fired: bool = False

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline | None":
        return None if seconds is None else cls(time.time() + float(seconds))

    def passed(self) -> bool:
        return time.time() >= self.at

    def check(self) -> None:
        """Raise RunTimeout the first time this is called after the deadline."""
        if not self.fired and self.passed():
            self.fired = True
            raise RunTimeout("[search] timeout_s reached")
