"""The run's wall-clock deadline (``[search] timeout_s``), one absolute time shared by every process of a run.

Set once when ``dse search`` starts (set-up included) and handed to every worker. Each process's run loop starts no
trial once it has passed, and while a trial runs the deadline is *armed* (:meth:`Deadline.trial`): the emulating
evaluators check it at each batch boundary and raise :class:`RunTimeout`, which ends that trial (failed, an enqueued
seed is enqueued again) and the process's run loop. Hold-out checks, in a trial or in the final check, stop at it
too (they report "not checked" instead of raising). The exact baselines of the results stop at it too (reported as not
measured). In the set-up, calibration and the float baselines stop at it batch by batch, keep what they computed in
the run directory and raise :class:`SetupTimeout`; the other set-up stages stop measuring (bounded by the set-up
clock). So a run ends within about one batch of the deadline.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass


class RunTimeout(Exception):
    """The run's deadline passed during a trial (not an error: the run stops starting new work)."""


class SetupTimeout(Exception):
    """The run's deadline passed during a set-up stage that cannot be left out (FxP8 calibration, the float
    baselines): the search stops before its first trial. The message is the one line the user sees: what was done,
    where it is kept, and how to go on (not an error: the exit status is that of any other deadline stop)."""


SETUP_RESUME = "re-run the same command to continue from there, or raise [search] timeout_s"
SETUP_NO_TIME = ("this run had no time left for any of it: raise [search] timeout_s and re-run the same command to "
                 "continue from there")


@dataclass
class Deadline:
    """``at``: time.time() seconds. :meth:`check` raises only while a trial runs (:meth:`trial`)."""

    at: float
    armed: bool = False

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline | None":
        return None if seconds is None else cls(time.time() + float(seconds))

    def passed(self) -> bool:
        return time.time() >= self.at

    @contextlib.contextmanager
    def trial(self):
        """Arm :meth:`check` while the block (one trial, or a set-up stage that measures) runs; a block nested in an
        armed one leaves it armed."""
        was, self.armed = self.armed, True
        try:
            yield self
        finally:
            self.armed = was

    def check(self) -> None:
        """Raise RunTimeout when a trial is running and the deadline has passed."""
        if self.armed and self.passed():
            raise RunTimeout("[search] timeout_s reached")
