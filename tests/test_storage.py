"""Run directories and storages: absolute paths, journal lock and repair, study names, several processes on one
study (seeds once, distinct sampler streams, exactly n_trials), determinism, atomic results, PostgreSQL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from dse.cli import main
from dse.errors import DseError
from dse.report import list_studies, load_run, summarize
from dse.search import liveness, rundir
from dse.search.study import PROCESS_ATTR, n_processes, run_search, seed_configs
from tests.fakes import _CTX, ctx_factory, make_ctx, settings_
from tests.search_process import PG_URL, ROOT, alive, children, finish, fresh_pg_budget, spawn

needs_pg = pytest.mark.skipif(not PG_URL, reason="DSE_TEST_POSTGRES_URL is not set (.ci/run sets it)")


@pytest.fixture
def budget_file(tmp_path):
    p = tmp_path / "fake.toml"
    p.write_text("[budget]\nmax_loss_pp = 1.0\n")
    return p


def _run(budget, run_dir, **kw):
    _CTX["ctx"] = make_ctx()
    return run_search(budget, settings_(**kw), ctx_factory, run_dir=run_dir, progress=False)


# ---------------------------------------------------------------- run directory and journal


def test_relative_run_dir_is_made_absolute_and_stale_lock_does_not_block(tmp_path, budget_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _run(budget_file, "rel/run", n_trials=3)
    assert Path(res["run_dir"]).is_absolute() and Path(res["run_dir"]) == tmp_path / "rel" / "run"
    assert rundir.default_run_dir(budget_file, 0).is_absolute()
    # a lock file left by a killed process (the old symlink lock dangled here and the resume spun at 100 % CPU)
    lock = tmp_path / "rel" / "run" / "journal.log.lock"
    lock.unlink(missing_ok=True)
    os.symlink("rel/run/journal.log", lock)  # dangling, as the relative symlink lock left it
    t0 = time.monotonic()
    res = _run(budget_file, "rel/run", n_trials=6)
    assert res["trials"]["complete"] == 6 and time.monotonic() - t0 < 60


def test_flock_is_released_when_its_holder_dies(tmp_path):
    j = tmp_path / "j.log"
    code = ("import sys, time; from pathlib import Path; from dse.search.rundir import FlockLock;"
            f"l = FlockLock(Path({str(j)!r})); l.acquire(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    p.kill()
    p.wait(timeout=10)
    got = []
    t = threading.Thread(target=lambda: got.append(rundir.FlockLock(j).acquire()), daemon=True)
    t.start()
    t.join(timeout=10)
    assert got == [True]


def test_torn_last_record_is_dropped_with_one_warning(tmp_path, budget_file, capsys):
    run = tmp_path / "run"
    _run(budget_file, run, n_trials=4)
    journal = run / "journal.log"
    before = {t.number: t.values for t in rundir.load_study(run).get_trials(states=(TrialState.COMPLETE,))}
    with open(journal, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"x","trial_id":3,"sta')  # disk full in the middle of a record
    s = summarize(load_run(run))  # readers skip the torn record
    assert s["trials"]["complete"] == 4
    capsys.readouterr()
    res = _run(budget_file, run, n_trials=8)
    err = capsys.readouterr().err
    assert err.count("torn last record") == 1 and err.count("\n") == 1
    assert res["trials"]["complete"] == 8 and journal.read_bytes().endswith(b"\n")
    after = {t.number: t.values for t in rundir.load_study(run).get_trials(states=(TrialState.COMPLETE,))}
    assert all(after[k] == v for k, v in before.items())


@pytest.mark.parametrize("content", [b"hello world\n", b"\x00\x01\x02\n{}\n", b"[1, 2]\n"])
def test_garbage_journal_is_one_line_error(tmp_path, budget_file, capsys, content):
    run = tmp_path / "run"
    _run(budget_file, run, n_trials=2)
    (run / "journal.log").write_bytes(content)
    for argv in (["report", str(run)], ["report", str(run), "--list"], ["export", str(run), "-o", "x.toml"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not an Optuna journal record" in err, err
    with pytest.raises(DseError, match="not an Optuna journal"):
        _run(budget_file, run, n_trials=2)
    assert (run / "journal.log").read_bytes() == content  # nothing rewritten


def test_report_tells_not_found_from_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "file.log").write_text("x\n")
    assert main(["report", str(tmp_path / "file.log")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "not found" not in err


def test_results_written_atomically_by_concurrent_writers(tmp_path):
    errors = []

    def writer(i):
        try:
            for _ in range(50):
                rundir.write_results(tmp_path, {"writer": i, "pad": "x" * 5000})
                json.loads((tmp_path / "results.json").read_text())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    ts = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not errors and not list(tmp_path.glob("*.tmp"))


# ---------------------------------------------------------------- study names


def test_different_budget_on_same_storage_gets_its_own_study(tmp_path, capsys):
    url = f"journal://{tmp_path / 'shared.log'}"
    b1, b2 = tmp_path / "b1.toml", tmp_path / "b2.toml"
    b1.write_text("[budget]\nmax_accuracy_loss = 1.0\n")
    b2.write_text("[budget]\nmax_accuracy_loss = 0.2\n")
    r1 = _run(b1, tmp_path / "r1", n_trials=4, storage=url)
    r2 = _run(b2, tmp_path / "r2", n_trials=3, storage=url, budget_loss=0.002)
    assert r1["study"] != r2["study"] and r2["trials"]["complete"] == 3  # not 0 (it used to reuse r1's study)
    rows = list_studies(storage=url)
    assert sorted(r["study"] for r in rows) == sorted([r1["study"], r2["study"]])
    assert {r["study"]: r["complete"] for r in rows} == {r1["study"]: 4, r2["study"]: 3}
    assert main(["report", "--storage", url, "--list"]) == 0
    out = capsys.readouterr().out
    assert sum(1 for ln in out.splitlines() if r1["study"] in ln or r2["study"] in ln) == 2  # one table row each
    assert main(["report", str(tmp_path / "r1"), "--list"]) == 0  # the run directory's storage
    assert r2["study"] in capsys.readouterr().out
    assert main(["report", "--storage", url, "--study", r2["study"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["study"] == r2["study"]
    assert main(["report", "--storage", url]) == 2
    assert "--study" in capsys.readouterr().err
    # the name ignores how long / how parallel: a larger n_trials continues the same study
    r1b = _run(b1, tmp_path / "r1", n_trials=6, storage=url)
    assert r1b["study"] == r1["study"] and r1b["trials"]["complete"] == 6


def _ctx_on_files(model: Path, data: Path):
    ctx = make_ctx()
    ctx.model_path, ctx.data_specs = str(model), {"search": str(data)}
    return ctx


def test_study_name_follows_model_and_data_content(tmp_path, budget_file):
    """Changing the model or a data file in place gives a new study; re-running unchanged resumes the same one."""
    import numpy as np

    model, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    model.write_bytes(b"onnx" * 100)
    np.savez(data, x=np.zeros((4, 8, 8), np.uint8), y=np.arange(4))
    url = f"journal://{tmp_path / 'shared.log'}"

    def run(run_dir, n):
        _CTX["ctx"] = _ctx_on_files(model, data)
        return run_search(budget_file, settings_(n_trials=n, storage=url), ctx_factory, run_dir=run_dir,
                          progress=False)
    first = run(tmp_path / "r1", 3)
    again = run(tmp_path / "r1", 5)  # unchanged: the same study, resumed
    assert again["study"] == first["study"] and again["trials"]["complete"] == 5
    raw = bytearray(data.read_bytes())
    raw[-30] ^= 0xFF  # one byte of the data file changed in place (same size, same times as far as we care)
    data.write_bytes(bytes(raw))
    with pytest.raises(DseError, match="a data file"):
        run(tmp_path / "r1", 5)
    new_data = run(tmp_path / "r2", 2)
    assert new_data["study"] != first["study"] and new_data["trials"]["complete"] == 2  # not the old 5
    model.write_bytes(b"onnx" * 99 + b"ONNX")
    new_model = run(tmp_path / "r3", 2)
    assert new_model["study"] not in (first["study"], new_data["study"])
    assert len(list_studies(storage=url)) == 3


def test_data_fingerprint(tmp_path, monkeypatch):
    from dse.data import FINGERPRINT_BLOCK, fingerprint

    big = tmp_path / "big.bin"
    raw = bytearray(os.urandom(5 * FINGERPRINT_BLOCK + 123))
    big.write_bytes(bytes(raw))
    base = fingerprint(str(big))
    assert fingerprint(str(big)) == base
    for at in (10, len(raw) // 2, len(raw) - 10):  # start, middle and end blocks
        raw[at] ^= 1
        big.write_bytes(bytes(raw))
        assert fingerprint(str(big)) != base
        raw[at] ^= 1
    big.write_bytes(bytes(raw))
    os.utime(big, (1, 1))
    assert fingerprint(str(big)) == base  # times do not count
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big.bin").write_bytes(bytes(raw))
    assert fingerprint(str(tmp_path / "elsewhere" / "big.bin")) == base  # nor where the copy lives
    # image folders: paths and sizes, never the images themselves
    folder = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            (folder / c / f"{i}.png").write_bytes(b"x" * (10 + i))
    base = fingerprint(str(folder))
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    assert fingerprint(str(folder)) == base and not [f for f in opened if str(folder) in f]
    monkeypatch.undo()
    (folder / "dog" / "3.png").write_bytes(b"x")
    assert fingerprint(str(folder)) != base
    (folder / "dog" / "3.png").unlink()
    assert fingerprint(str(folder)) == base
    (folder / "cat" / "0.png").write_bytes(b"y" * 11)  # re-encoded: another size
    assert fingerprint(str(folder)) != base
    assert fingerprint("fashion-mnist:search") != fingerprint("fashion-mnist:holdout")


# ---------------------------------------------------------------- determinism


def test_one_process_same_seed_same_study(tmp_path, budget_file):
    def params(run):
        _run(budget_file, run, n_trials=15, seed=5)
        return [(t.params, t.values) for t in rundir.load_study(run).trials]
    a, b = params(tmp_path / "a"), params(tmp_path / "b")
    assert a == b and len(a) >= 15
    s = summarize(load_run(tmp_path / "a"))
    assert s["reproducible"] and s["processes"] == 1


# ---------------------------------------------------------------- several processes on one study


def _check_shared_study(run_dir, n_trials, n_processes):
    study = rundir.load_study(run_dir)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials  # exactly, not 61 for 60
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    seeds = [json.dumps(t.system_attrs["fixed_params"], sort_keys=True) for t in trials
             if "fixed_params" in t.system_attrs and "failed_trial" not in t.system_attrs
             and not t.user_attrs.get("surplus") and t.state != TrialState.FAIL]
    assert len(seeds) == len(set(seeds))  # every seed configuration enqueued once (re-runs aside)
    procs = {k: v for k, v in study.user_attrs.items() if k.startswith(PROCESS_ATTR)}
    assert len(procs) == n_processes and sorted(v["number"] for v in procs.values())[0] == 0
    assert len({v["sampler_seed"] for v in procs.values()}) == n_processes  # distinct sampler streams
    sampled = [json.dumps(t.params, sort_keys=True) for t in complete if "fixed_params" not in t.system_attrs]
    assert len(set(sampled)) >= 0.5 * len(sampled)  # (same-seed processes gave 36 distinct in 61)
    s = summarize(load_run(run_dir))
    assert not s["reproducible"] and s["processes"] == n_processes
    return study


def test_two_search_processes_share_one_journal_study(tmp_path, budget_file):
    run = tmp_path / "run"
    ps = [spawn(budget_file, run, n_trials=30) for _ in range(2)]
    for p in ps:
        finish(p)
    study = _check_shared_study(run, 30, 2)
    seeds = seed_configs(make_ctx(), settings_(n_trials=30))
    enq = [t for t in study.trials if "fixed_params" in t.system_attrs and "failed_trial" not in t.system_attrs
           and not t.user_attrs.get("surplus")]
    assert len(enq) == len(seeds)


def test_workers_process_dies_with_its_parent(tmp_path, budget_file):
    p = spawn(budget_file, tmp_path / "run", n_trials=500, workers=2)
    try:
        kids = children(p.pid, timeout=30)
        assert kids
    finally:
        p.kill()
        p.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(k) for k in kids)


# ---------------------------------------------------------------- PostgreSQL


def test_plain_postgresql_url_maps_to_psycopg():
    assert rundir.sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert rundir.sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert rundir.sqlalchemy_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"


@needs_pg
def test_two_processes_on_postgresql_with_a_kill(tmp_path):
    """Two `dse search` processes on one PostgreSQL study (as on two machines); one is killed -9 in the middle of a
    trial: the other finishes, the dead trial is failed by its missing heartbeats and re-run, seeds once, exactly
    n_trials."""
    b = fresh_pg_budget(tmp_path, "pg2")
    # The process to be killed evaluates slowly (2 s per evaluation, a trial takes two or more), so the trial seen
    # RUNNING cannot complete in the moment between that read and the kill (with 0.04 s it once did, on a fresh CI
    # machine); the victims are still taken from the study after the kill, not from that read.
    ps = [spawn(b, tmp_path / f"run{i}", storage=PG_URL, n_trials=40, trial_sleep=2.0 if i == 0 else 0.04)
          for i in range(2)]
    victim, st = None, None
    deadline = time.monotonic() + 120  # both processes joined and trials are under way (startup is slow under load)
    while victim is None and time.monotonic() < deadline:
        try:
            st = st or rundir.load_study(tmp_path / "run1")
        except DseError:
            time.sleep(0.2)
            continue
        trials = st.get_trials(deepcopy=False)
        mine = [t.number for t in trials if t.state == TrialState.RUNNING
                and t.user_attrs.get(liveness.BEAT_ATTR, {}).get("pid") == ps[0].pid]
        if n_processes(st) == 2 and sum(t.state == TrialState.COMPLETE for t in trials) >= 8 and mine:
            ps[0].kill()  # mid-trial: it holds a running trial with its heartbeat
            victim = mine[0]
        time.sleep(0.05)
    assert victim is not None, "the first process never ran a trial"
    ps[0].communicate(timeout=30)
    finish(ps[1], timeout=180)
    study = _check_shared_study(tmp_path / "run1", 40, 2)
    trials = study.get_trials(deepcopy=False)
    killed = [t.number for t in trials if t.user_attrs.get(liveness.BEAT_ATTR, {}).get("pid") == ps[0].pid
              and t.state != TrialState.COMPLETE]
    assert victim in killed
    assert all(trials[k].state == TrialState.FAIL for k in killed)
    assert all(any(k in liveness.history(t) for t in trials) for k in killed), "a killed trial was not re-run"
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get(liveness.SURPLUS_ATTR)]
    assert all(any(t.number in liveness.history(u) for u in trials) for t in failed)
    complete = [liveness.lineage(t) for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == len(set(complete))  # no trial ran to completion twice


@needs_pg
def test_empty_database_schema_race(tmp_path):
    """Processes opening an empty database at once: no IntegrityError from creating the schema twice."""
    import sqlalchemy

    db = f"dse_race_{os.getpid()}_{time.time_ns() % 10 ** 6}"
    admin = sqlalchemy.create_engine(rundir.sqlalchemy_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    url = PG_URL.rsplit("/", 1)[0] + "/" + db
    code = ("import sys; from dse.search import rundir; s = rundir.open_storage(sys.argv[1]);"
            "print(len(s.get_all_studies()))")
    ps = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for p in ps:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0 and out.strip() == "0", err[-2000:]
    finally:
        admin.dispose()
        with sqlalchemy.create_engine(rundir.sqlalchemy_url(PG_URL), isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
