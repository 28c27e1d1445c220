"""A `dse search` process on the fake (deterministic, slow) context of tests/fakes.py, for the multi-process and
fault-injection tests: ``python -m tests.search_process BUDGET RUN_DIR STORAGE N_TRIALS WORKERS``.

The fake objective goes through the real run loop, storage, seeding and worker processes; only the model is fake.
"""
from __future__ import annotations

import os
import sys
import time

from tests.fakes import FakeEvaluator, make_ctx, settings_

from dse.search.study import run_search

TRIAL_SLEEP_S = float(os.environ.get("DSE_TEST_TRIAL_SLEEP_S", "0.04"))  # per evaluation


class SleepyEvaluator(FakeEvaluator):
    def correct(self, config, start, stop):
        time.sleep(TRIAL_SLEEP_S)
        return super().correct(config, start, stop)


def factory():
    """Picklable context factory (spawned workers call it too)."""
    ctx = make_ctx()
    ctx.evaluator = SleepyEvaluator(3000, 0)
    return ctx


def main(argv: list[str]) -> int:
    budget, run_dir, storage, n_trials, workers = argv
    s = settings_(n_trials=int(n_trials), workers=int(workers), storage=storage or None)
    run_search(budget, s, factory, run_dir=run_dir, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
