"""A `dse search` process on the fake (deterministic, slow) context of tests/fakes.py, for the multi-process and
fault-injection tests: ``python -m tests.search_process BUDGET RUN_DIR STORAGE N_TRIALS WORKERS``, and the helpers
the tests start, finish and inspect such processes with.

The fake objective goes through the real run loop, storage, seeding and worker processes; only the model is fake.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fakes import FakeEvaluator, make_ctx, settings_

from dse.search.study import run_search

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("DSE_TEST_POSTGRES_URL")
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


# ---------------------------------------------------------------- for the tests


def spawn(budget, run_dir, storage="", n_trials=20, workers=1, heartbeat=1, trial_sleep=0.04) -> subprocess.Popen:
    """Start this module as a `dse search` process in its own session (``heartbeat``: DSE_HEARTBEAT_S)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), DSE_HEARTBEAT_S=str(heartbeat),
               DSE_TEST_TRIAL_SLEEP_S=str(trial_sleep))
    return subprocess.Popen([sys.executable, "-m", "tests.search_process", str(budget), str(run_dir), storage,
                             str(n_trials), str(workers)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(p: subprocess.Popen, timeout=120) -> str:
    """Wait for a spawned search to end successfully; on timeout kill it with its workers and fail."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the process and its workers (own session)
        p.communicate(timeout=30)
        raise
    assert p.returncode == 0, err[-3000:]
    return err


def children(pid, timeout) -> list[int]:
    """Child pids of ``pid`` once it has any (up to ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kids = [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            kids = []
        if kids:
            return kids
        time.sleep(0.2)
    return []


def cmdline(pid) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def alive(pid) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def fresh_pg_budget(tmp_path, tag: str) -> Path:
    """A budget whose study name is new on the shared test database (the seed is part of the name)."""
    b = tmp_path / f"{tag}.toml"
    b.write_text(f"[budget]\nmax_loss_pp = 1.0\n[search]\nseed = {time.time_ns() % 10 ** 9}\n")
    return b


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
