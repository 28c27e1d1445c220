"""The search context's identity (dse.search.identity): every process of a shared study checks it computed the same
FxP8 calibration, search and hold-out data and float32 baselines as the process that created it; an exported
configuration carries the calibration's digest and ``dse evaluate --config`` says whether its own matches."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.budgets import TINY_BUDGET
from tests.search_process import PG_URL
from tests.other_machine import CALIBRATED, perturbed

from dse.cli import main
from dse.config import META_CALIBRATION, META_CONTEXT
from dse.quant import CalibrationState
from dse.search import context_cache, identity, rundir

ROOT = Path(__file__).resolve().parents[1]
HERE = socket.gethostname()
needs_pg = pytest.mark.skipif(not PG_URL, reason="DSE_TEST_POSTGRES_URL is not set (.ci/run sets it)")


def _complete(run_dir) -> dict:
    """{trial number: (params, loss)} of the complete trials of the study in ``run_dir``."""
    st = rundir.load_study(run_dir)
    return {t.number: (t.params, t.user_attrs["loss"]) for t in st.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE"}


def _other_machine(host: str, perturb: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tests.other_machine", host, perturb, *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def _budget(d: Path, calib: str | None = None, seed: int = 0) -> Path:
    """TINY_BUDGET, calibrated on ``calib`` when given; ``seed`` names a new study on a shared database."""
    b = d / "b.toml"
    text = TINY_BUDGET.replace("[data]\n", f"[data]\ncalib = '{calib}'\n") if calib else TINY_BUDGET
    b.write_text(text.replace("[search]\n", f"[search]\nseed = {seed}\n"))
    return b


def _calib_file(d: Path) -> Path:
    """The bundled calibration split as a .npz of its own (its file times can then play another machine's copy)."""
    from dse.data import bundled_split

    x, y = bundled_split("calib")
    np.savez(d / "calib.npz", x=x, y=y)
    return d / "calib.npz"


@pytest.mark.parametrize("shared", ["journal", pytest.param("postgresql", marks=needs_pg)])
def test_a_perturbed_calibration_on_another_machine_stops_with_one_line_and_the_copied_file_fixes_it(tmp_path,
                                                                                                    shared):
    """Machine A creates the study; machine B (another host, its own run directory, its copy of the calibration data
    with other file times, A's journal or the PostgreSQL database as storage) calibrates one float32 step apart: it
    exits 2 with one line that names the calibration, both hosts and the fix, and A's trials are intact. Copying A's
    calibration.npz into B's run directory fixes it: B loads it (no calibration computed), its stale context cache
    is recomputed, and its trials join the study."""
    calib = _calib_file(tmp_path)
    b = _budget(tmp_path, str(calib), seed=time.time_ns() % 10**9 if shared == "postgresql" else 0)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    storage = f"journal://{run_a / rundir.JOURNAL_FILE}" if shared == "journal" else PG_URL
    assert main(["search", str(b), "--run-dir", str(run_a), "--quiet", "--storage", storage]) == 0
    before = _complete(run_a)
    assert len(before) == 3
    st = os.stat(calib)
    os.utime(calib, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # B's copy of the data: other file times
    r = _other_machine("machine-b", "calibration", "search", b, "--run-dir", run_b, "--storage", storage, "--quiet")
    err = r.stderr.replace(CALIBRATED + "\n", "")
    assert r.returncode == 2, r.stderr[-3000:]
    assert err.count("\n") == 1 and err.startswith("error: study ") and "Traceback" not in r.stderr, err
    for needle in ("FxP8 calibration differs", "machine-b", f"host {HERE}", f"{run_a}/calibration.npz", str(run_b),
                   "trials are kept"):
        assert needle in err, (needle, err)
    for other in ("search data", "hold-out data", "float32 baseline"):
        assert other not in err
    assert _complete(run_a) == before

    shutil.copy(run_a / context_cache.CALIBRATION_FILE, run_b / context_cache.CALIBRATION_FILE)
    r = _other_machine("machine-b", "calibration", "search", b, "--run-dir", run_b, "--storage", storage, "--quiet",
                       "--n-trials", 5)
    assert r.returncode == 0, r.stderr[-3000:]
    assert CALIBRATED not in r.stderr  # loaded, not computed again
    after = _complete(run_a)
    assert len(after) == 5 and all(after[k] == v for k, v in before.items())
    hosts = identity_hosts(run_a)
    assert hosts == {HERE, "machine-b"}
    # B's run directory holds A's calibration as its own now (B's key and host)
    got, _ = context_cache._read(run_b / context_cache.CALIBRATION_FILE)
    meta, arrays = got
    assert meta["state"]["host"] == "machine-b"
    assert CalibrationState(meta["state"]["meta"], arrays).digest() == \
        rundir.load_study(run_a).user_attrs[identity.ATTR]["calibration"]


def identity_hosts(run_dir) -> set:
    from dse.report import context_summary

    c = context_summary(rundir.load_study(run_dir))
    return set(c["hosts"])


def test_a_copied_calibration_is_not_taken_for_this_hosts_own_stale_one(tmp_path):
    """A finished calibration file whose local key no longer matches (the data's file times changed) is used only
    when another host wrote it (a copy from the machine that created the study); this host's own is recomputed."""
    state = CalibrationState({"input_name": "x", "layers": [], "act_quant": {}}, {"0.w": np.arange(3.0)})
    context_cache.save_calibration(tmp_path, "old key", state, "portable")
    assert context_cache.load_calibration(tmp_path, "new key", "portable").finished is None
    got, _ = context_cache._read(tmp_path / context_cache.CALIBRATION_FILE)
    meta, arrays = got
    meta["state"]["host"] = "machine-a"
    context_cache._write(tmp_path / context_cache.CALIBRATION_FILE, meta, arrays)
    stored = context_cache.load_calibration(tmp_path, "new key", "portable")
    assert stored.copied_from == "machine-a" and stored.finished.meta == state.meta
    assert context_cache.load_calibration(tmp_path, "new key", "other content").finished is None


def _folder(d: Path, invert: bool = False) -> Path:
    """80 bundled 28x28 search images as uncompressed PNGs (the size of a file does not depend on its pixels)."""
    from PIL import Image

    from dse.data import bundled_split

    x, y = bundled_split("search")
    for i, (a, k) in enumerate(zip(x[:80], y[:80])):
        (d / "imgs" / f"class{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - a if invert else a).save(d / "imgs" / f"class{k}" / f"{i:03d}.png", compress_level=0)
    return d / "imgs"


def test_other_images_behind_the_same_search_folder_are_caught(tmp_path, capsys, monkeypatch):
    """The same file names and sizes (the study's name is the same) but other pixels in the search folder on the
    second machine: it stops with the line naming the search data (and the float32 baseline, measured on them), not
    the calibration."""
    imgs = _folder(tmp_path)
    b = tmp_path / "b.toml"
    b.write_text(TINY_BUDGET.replace("[data]\n", f"[data]\nsearch = '{imgs}'\nconfirm = 10\n"))
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert main(["search", str(b), "--run-dir", str(run_a), "--quiet"]) == 0
    sizes = sorted(f.stat().st_size for f in imgs.rglob("*.png"))
    _folder(tmp_path, invert=True)
    assert sorted(f.stat().st_size for f in imgs.rglob("*.png")) == sizes
    capsys.readouterr()
    monkeypatch.setattr(socket, "gethostname", lambda: "machine-b")
    assert main(["search", str(b), "--run-dir", str(run_b), "--storage", f"journal://{run_a / 'journal.log'}",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this process's search data" in err and "[data] search" in err, err
    assert "calibration" not in err.split("fix:")[0] and "Pillow" in err


def test_a_format_or_version_change_alone_keeps_the_study_and_a_changed_calibration_says_why(tmp_path, capsys,
                                                                                           monkeypatch):
    """A resumed run whose context cache and calibration file are recomputed (a new cache format, another dse
    version) but come out the same continues the study; one whose calibration changed with the version stops and
    says to start a new run directory or run the recorded version."""
    import dse
    import dse.quant

    b = _budget(tmp_path)
    run = tmp_path / "run"
    assert main(["search", str(b), "--run-dir", str(run), "--quiet"]) == 0
    monkeypatch.setattr(context_cache, "FORMAT", context_cache.FORMAT + 1)
    monkeypatch.setattr(dse, "__version__", dse.__version__ + ".post1")
    assert main(["search", str(b), "--run-dir", str(run), "--quiet", "--n-trials", 4]) == 0
    assert len(_complete(run)) == 4
    monkeypatch.setattr(dse, "__version__", dse.__version__ + ".post2")
    monkeypatch.setattr(dse.quant, "calibrate", perturbed(dse.quant.calibrate))
    capsys.readouterr()
    assert main(["search", str(b), "--run-dir", str(run), "--quiet", "--n-trials", 5]) == 2
    err = capsys.readouterr().err.replace(CALIBRATED + "\n", "")
    assert err.count("\n") == 1 and "FxP8 calibration differs" in err and "start a new run directory" in err, err
    assert "copy" not in err  # the calibration file of this very run directory was the one recomputed
    assert len(_complete(run)) == 4


def test_export_carries_the_calibration_digest_and_evaluate_compares_it(tmp_path, capsys, monkeypatch):
    """dse export writes the search's calibration digest into [meta]; dse evaluate --config with the same
    calibration says it matches, with a perturbed one that it differs (text and --json), and evaluates either way."""
    import dse.quant

    b = _budget(tmp_path)
    run = tmp_path / "run"
    assert main(["search", str(b), "--run-dir", str(run), "--quiet"]) == 0
    cfg = tmp_path / "c.toml"
    assert main(["export", str(run), "--trial", "1", "-o", str(cfg)]) == 0
    rec = rundir.load_study(run).user_attrs[identity.ATTR]
    from dse.config import load_config_meta

    meta = load_config_meta(cfg)[1]
    assert meta[META_CALIBRATION] == rec["calibration"] and meta[META_CONTEXT] == rec["digest"]
    capsys.readouterr()
    assert main(["evaluate", "lenet5", "--config", str(cfg), "--images", "50"]) == 0
    out = capsys.readouterr().out
    assert f"calibration: the same as the search's ({rec['calibration'][:12]})" in out
    monkeypatch.setattr(dse.quant, "calibrate", perturbed(dse.quant.calibrate))
    assert main(["evaluate", "lenet5", "--config", str(cfg), "--images", "50", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    chk = res["calibration_check"]
    assert not chk["matches"] and chk["search"] == rec["calibration"] and chk["here"] != rec["calibration"]
    assert "configured" in res
    assert main(["evaluate", "lenet5", "--config", str(cfg), "--images", "50"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"calibration: differs from the one the search used ({rec['calibration'][:12]} there" in out


def test_report_shows_the_context_and_its_confirmations(tmp_path, capsys):
    b = _budget(tmp_path)
    run = tmp_path / "run"
    assert main(["search", str(b), "--run-dir", str(run), "--quiet"]) == 0
    assert main(["search", str(b), "--run-dir", str(run), "--quiet", "--n-trials", 4]) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["context"]
    rec = rundir.load_study(run).user_attrs[identity.ATTR]
    assert c["digest"] == rec["digest"] and c["confirmed"] == 2 and c["hosts"] == [HERE] and c["host"] == HERE
    assert main(["report", str(run)]) == 0
    assert f"context {rec['digest'][:12]}" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("parts, needles", [
    (["baseline"], ["float32 baseline differs", "same numpy and scipy"]),
    (["search", "holdout"], ["search data and hold-out data differ", "[data] search and holdout"]),
    (["calibration", "holdout"], ["FxP8 calibration and hold-out data differ", "calibration.npz", "[data] holdout"]),
])
def test_the_mismatch_line_names_every_part_that_differs(parts, needles):
    mine = identity.ContextIdentity("c" * 64, "s" * 64, "h" * 64, "b" * 64)
    rec = dict(mine.record("/there/run"), host="machine-a", **{k: "0" * 64 for k in parts})
    msg = identity.mismatch_message("b-123", rec, mine, "/here/run")
    assert identity.differing(rec, mine) == parts
    for n in needles + ["study b-123", "machine-a", f"host {HERE}", "0" * identity.SHOW]:
        assert n in msg, (n, msg)
    assert identity.mismatch_message("b-123", mine.record(), mine) is None


def _ident(cal: str = "c") -> identity.ContextIdentity:
    return identity.ContextIdentity(cal * 64, "s" * 64, "h" * 64, "b" * 64)


def test_join_study_records_the_creators_context_and_checks_every_other_process(tmp_path):
    """The creator records its identity; a joining process with the same one is counted as confirming it, one with
    another stops with ContextMismatch before it adds anything to the study (the path of spawned workers too)."""
    from tests.fakes import settings_

    from dse.search.study import PROCESS_ATTR, join_study

    storage = rundir.open_storage(f"journal://{tmp_path / 'j.log'}")
    s = settings_()
    study, k = join_study(storage, "st", s, create=True, ctx_identity=_ident(), run_dir=tmp_path)
    assert k == 0 and study.user_attrs[identity.ATTR]["digest"] == _ident().digest
    _, k2 = join_study(storage, "st", s, create=False, ctx_identity=_ident(), run_dir=tmp_path)
    assert k2 != 0
    attrs = dict(study.user_attrs)
    with pytest.raises(identity.ContextMismatch, match="FxP8 calibration differs"):
        join_study(storage, "st", s, create=False, ctx_identity=_ident("d"), run_dir=tmp_path / "other")
    assert dict(study.user_attrs) == attrs
    procs = [v for k, v in attrs.items() if k.startswith(PROCESS_ATTR)]
    assert [p["context"] for p in procs] == [_ident().digest] * 2


def test_a_study_from_before_records_gets_the_first_checking_process_s(tmp_path):
    """A study with trials but no record (created before identities were recorded): the first process to check
    records its own at once (no wait), and later processes are checked against it."""
    import optuna

    storage = rundir.open_storage(f"journal://{tmp_path / 'j.log'}")
    study = optuna.create_study(study_name="old", storage=storage)
    study.enqueue_trial({})
    rec = identity.check(study, _ident(), tmp_path, wait_s=60)
    assert rec["digest"] == _ident().digest and study.user_attrs[identity.ATTR]["digest"] == _ident().digest
    with pytest.raises(identity.ContextMismatch):
        identity.check(study, _ident("d"), tmp_path)


def split_factory():
    """Picklable context factory: the fake context, with one identity in the process that creates the study and
    another in every spawned worker (a worker whose own context came out different)."""
    import multiprocessing as mp

    from tests.fakes import make_ctx

    ctx = make_ctx()
    ctx.identity = _ident("w" if mp.parent_process() is not None else "c")
    return ctx


def test_a_spawned_worker_with_another_context_stops_with_one_line_and_the_others_finish(tmp_path, capfd):
    """A worker process (workers = 2) whose context differs from its parent's prints one error line and exits; the
    parent runs the study's trials alone and only its process is recorded."""
    from tests.fakes import settings_

    from dse.search.study import PROCESS_ATTR, run_search

    b = tmp_path / "b.toml"
    b.write_text(TINY_BUDGET)
    res = run_search(b, settings_(n_trials=6, workers=2), split_factory, run_dir=tmp_path / "run", progress=False)
    assert res["trials"]["complete"] == 6
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: worker")]
    assert len(lines) == 1 and "FxP8 calibration differs" in lines[0] and "Traceback" not in err, err
    attrs = rundir.load_study(tmp_path / "run").user_attrs
    assert [v["context"] for k, v in attrs.items() if k.startswith(PROCESS_ATTR)] == [_ident("c").digest]
