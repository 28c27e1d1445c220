"""[search] timeout_s within one trial: the run's deadline (dse.search.deadline) stops the trial in progress at the next
batch boundary (also a single-layer change the logit surrogate measures inside a trial), the run loop starts no new
trial, and hold-out checks (in a trial or in the final check) stop at it; the results then say which best is verified,
or that none is, and what to do."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from optuna.trial import TrialState

from dse.budget import load_budget
from dse.search import rundir
from dse import present
from dse.layer_config import LayerConfig
from dse.predict import LogitSurrogate
from dse.report import load_run, summarize
from dse.search.context import EmulatorEvaluator
from dse.search.deadline import Deadline, RunTimeout
from dse.search.study import SearchContext, SearchSettings, run_search

from tests.fakes import FakeEvaluator, FixedPredictor, fake_energy, fake_space

BATCH_S = 0.02


class SlowEmulator:
    """Emulator stand-in: BATCH_S per batch of an approximate configuration (the exact one is instant, as the exact
    baselines are cheap next to a trial, unless ``slow_exact``: a large split's exact baseline), every prediction
    right; records when each slow batch started."""

    def __init__(self, batch_s=BATCH_S, slow_exact: bool = False):
        self.starts, self.batch_s, self.slow_exact = [], batch_s, slow_exact

    def slow(self, config) -> bool:
        return bool(config) or self.slow_exact

    def run(self, x, config, batch_size, cache=None, tag=None):
        if self.slow(config):
            self.starts.append(time.time())
            time.sleep(self.batch_s)
        return np.zeros((len(x), 3), dtype=np.float32)

    def predict(self, x, config, batch_size, cache=None, tag=None):
        return self.run(x, config, batch_size).argmax(1)


class DeadlineAtFirstRun(SlowEmulator):
    """SlowEmulator whose first slow run (or the one starting batch ``at_batch``) moves ``deadline`` to 1.5 batches
    from now: that run is cut after two batches, whatever the machine's speed before it."""

    def __init__(self, deadline, batch_s, at_batch: int = 0, slow_exact: bool = False):
        super().__init__(batch_s, slow_exact)
        self.deadline, self.at_batch = deadline, at_batch

    def run(self, x, config, batch_size, cache=None, tag=None):
        if self.slow(config) and len(self.starts) == self.at_batch:
            self.deadline.at = time.time() + 1.5 * self.batch_s
        return super().run(x, config, batch_size)


class Labels:
    """Dataset stand-in: n images, label 0."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def batches(self, batch_size, start=0, stop=None):
        stop = self.n if stop is None else min(stop, self.n)
        for i in range(start, stop, batch_size):
            j = min(i + batch_size, stop)
            yield np.zeros((j - i, 1)), np.zeros(j - i, dtype=np.int64)


def test_deadline_raises_only_inside_a_trial():
    d = Deadline(time.time() - 1)
    d.check()  # set-up, exact baselines, final check: never interrupted
    with d.trial():
        try:
            d.check()
            raise AssertionError("no RunTimeout")
        except RunTimeout:
            pass
    d.check()
    assert d.passed() and not d.armed
    with d.trial():
        with d.trial():
            pass
        assert d.armed  # a set-up measurement nested in a trial does not disarm it
    assert Deadline.after(None) is None and not Deadline.after(60).passed()


def test_timeout_stops_the_trial_in_progress(tmp_path):
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_accuracy_loss = 1.0\n")
    trial_s = 30 * BATCH_S  # 3000 images in batches of 100
    deadline = Deadline.after(600)
    # the deadline passes inside the third trial, whatever the time spent between trials (sampling, storage) on a
    # loaded machine
    emu = DeadlineAtFirstRun(deadline, BATCH_S, at_batch=60)
    ev = EmulatorEvaluator(emu, Labels(3000), batch_size=100, deadline=deadline)
    ctx = SearchContext(space=fake_space(), evaluator=ev, holdout=FakeEvaluator(1000, 1), energy=fake_energy,
                        baseline={"float": {"search": 1.0, "holdout": 1.0}}, info={"model": "fake"},
                        deadline=deadline)
    t0 = time.time()
    res = run_search(budget, SearchSettings(budget_loss=0.01, n_trials=40, workers=1, fidelities=[0]), lambda: ctx,
                     run_dir=tmp_path / "run", progress=False)
    wall = time.time() - t0
    assert not [s for s in emu.starts if s >= deadline.at]  # no batch started after the deadline
    assert wall < deadline.at - t0 + trial_s + 2.0  # generous: a shared machine
    assert 0 < res["trials"]["complete"] < 40
    study = rundir.load_study(tmp_path / "run")
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert failed and "RunTimeout" in failed[-1].user_attrs["error"]


SETUP_BUDGET = ("[data]\nimages = 40\n[search]\nworkers = 1\nn_trials = 2\nracing = [0]\ntimeout_s = 600\n"
                "[space]\nmultipliers = ['drum4']\ncv = [false]\n")


class CutAt:
    """Counts the calls of a set-up step (``target``'s ``name``, wrapped); the run's deadline (the Deadline the search
    creates, captured) passes during call ``at``, so the stage stops before its next batch."""

    def __init__(self, monkeypatch, target, name: str, at: int | None):
        self.calls, self.at, self.deadline = 0, at, None
        after = Deadline.after.__func__

        def capture(cls, seconds):
            self.deadline = after(cls, seconds)
            return self.deadline
        monkeypatch.setattr(Deadline, "after", classmethod(capture))
        step = getattr(target, name)

        def counted(*a, **kw):
            self.calls += 1
            if self.calls == self.at:
                self.deadline.at = time.time()
            return step(*a, **kw)
        monkeypatch.setattr(target, name, counted)


def _search_cli(capsys, b, run):
    from dse.cli import main

    rc = main(["search", str(b), "--run-dir", str(run), "--quiet"])
    return rc, capsys.readouterr().out


def _one_stop_line(out: str, *parts: str) -> None:
    assert out.strip() and "\n" not in out.strip(), out
    for p in ("[search] timeout_s reached during the set-up's", "re-run the same command", *parts):
        assert p in out, (p, out)


def test_calibration_stops_at_the_deadline_and_resumes_bit_identical(tmp_path, monkeypatch, capsys):
    """A calibration in 10 batches per pass: the deadline passes during the third; the search stops before the fourth
    with one line (what was done, where it is kept, how to go on), exit status 0 as for any deadline stop, no study.
    Re-running the same command continues at the fourth batch (no batch read twice) and ends with the bits of a
    calibration never stopped."""
    import dse.quant as quant
    from dse.data import load_dataset
    from dse.model.onnx_import import load_onnx, resolve_model
    from dse.search import context_cache

    graph = load_onnx(resolve_model("lenet5"))
    per_image = quant.STREAM_BUDGET // quant.stream_batch_size(graph)
    monkeypatch.setattr(quant, "STREAM_BUDGET", per_image * 100)  # 1000 calibration images: 10 batches
    b, run = tmp_path / "b.toml", tmp_path / "run"
    b.write_text(SETUP_BUDGET)
    cut = CutAt(monkeypatch, quant, "_walk", at=3)
    rc, out = _search_cli(capsys, b, run)
    assert rc == 0 and cut.calls == 3
    _one_stop_line(out, "FxP8 calibration", "pass 1 of 2, 3 of 10 batches done", str(run / "calibration.npz"))
    assert not (run / rundir.STUDY_FILE).exists() and not (run / "results.json").exists()
    cut.at, cut.calls = None, 0
    rc, out = _search_cli(capsys, b, run)
    assert rc == 0 and "run directory" in out
    assert cut.calls == 2 * 10 - 3  # the rest of the calibration, no batch twice
    ref = quant.calibrate(graph, load_dataset("fashion-mnist:calib").image_batches(100)).state()
    budget = load_budget(b)
    kept = context_cache.load_calibration(run, context_cache.calibration_key(
        budget, resolve_model("lenet5"), quant.DEFAULT_METHOD)).finished
    assert kept.meta == ref.meta and kept.arrays.keys() == ref.arrays.keys()
    assert all(ref.arrays[k].tobytes() == kept.arrays[k].tobytes() for k in ref.arrays)
    assert rundir.load_study(run) is not None


def test_a_set_up_with_no_time_for_one_batch_says_to_raise_the_timeout(tmp_path, capsys):
    """timeout_s shorter than loading the model: calibration stops before its first batch, and the line says that
    re-running with the same timeout_s cannot help (raise it)."""
    from dse.search.deadline import SETUP_NO_TIME

    b = tmp_path / "b.toml"
    b.write_text(SETUP_BUDGET.replace("timeout_s = 600", "timeout_s = 0.001"))
    rc, out = _search_cli(capsys, b, tmp_path / "run")
    assert rc == 0
    _one_stop_line(out, "FxP8 calibration", "pass 1 of 2, 0 of 1 batches done", SETUP_NO_TIME)


def _uncut(tmp_path, name: str):
    """The context cache of the same search never stopped (a run directory of its own)."""
    from dse.search import context_cache
    from dse.search.context import build_context

    b = tmp_path / "b.toml"
    build_context(str(b), run_dir=tmp_path / name)
    got, _ = context_cache._read(tmp_path / name / context_cache.FILE)
    return context_cache._decode(*got)


def test_float_baselines_stop_at_the_deadline_and_resume(tmp_path, monkeypatch, capsys):
    """The float32 baselines (40 search + 4000 hold-out images, 17 batches of at most 256): the deadline passes during
    the third batch; the search stops before the fourth with one line, the calibration and the images done are kept,
    and the re-run measures only the 14 batches left and gets the baselines of a run never stopped."""
    import dse.model.float_exec as float_exec
    import dse.quant as quant

    b, run = tmp_path / "b.toml", tmp_path / "run"
    b.write_text(SETUP_BUDGET)
    cut = CutAt(monkeypatch, float_exec, "run_float", at=3)
    walks = CutAt(monkeypatch, quant, "_walk", at=None)
    rc, out = _search_cli(capsys, b, run)
    assert rc == 0 and cut.calls == 3
    _one_stop_line(out, "float32 baselines", f"{40 + 2 * 256} of 4040 images done", str(run / "float-baselines.npz"))
    cut.at, cut.calls, walks.calls = None, 0, 0
    rc, out = _search_cli(capsys, b, run)
    assert rc == 0 and "run directory" in out and cut.calls == 17 - 3 and walks.calls == 0  # calibration kept
    res = rundir.read_results(run)
    uncut = _uncut(tmp_path, "uncut")
    assert res["baseline"]["float"] == uncut.baseline["float"]
    from dse.search import context_cache

    got, _ = context_cache._read(run / context_cache.FILE)  # the data digests (dse.search.identity) continue too
    assert context_cache._decode(*got).data == uncut.data and set(uncut.data) == {"search", "holdout"}


@pytest.mark.parametrize("at, kept", [(2, 1), pytest.param(3, 3, marks=pytest.mark.slow)])
def test_predictor_fit_stops_at_the_deadline_and_resumes(tmp_path, monkeypatch, capsys, at, kept):
    """The predictor fit's emulated configurations (one batch each; all-exact first, then the single-layer changes
    they need measured by the surrogate on first use): the deadline passes while configuration ``at`` is measured.
    Nothing starts after it: the second one's single-layer runs are cut (that configuration is not counted), the
    third needs none (counted). The search stops with one line, the measured ones and the surrogate's logits are
    kept, and the re-run measures the rest: the same accuracies and logits as a run never stopped."""
    from dse.emulate import Emulator
    from dse.search import context_cache

    b, run = tmp_path / "b.toml", tmp_path / "run"
    b.write_text(SETUP_BUDGET)
    cut = CutAt(monkeypatch, Emulator, "predict", at=at)
    rc, out = _search_cli(capsys, b, run)
    assert rc == 0 and cut.calls == at
    _one_stop_line(out, "predictor fit", f"{kept} of 11 configurations measured", str(run / context_cache.FILE))
    got, _ = context_cache._read(run / context_cache.FILE)
    part = context_cache._decode(*got)
    assert not part.predictor_done and len(part.predictor_accs) == kept
    cut.at, cut.calls = None, 0
    rc, out = _search_cli(capsys, b, run)
    assert rc == 0 and "run directory" in out
    got, _ = context_cache._read(run / context_cache.FILE)
    done, ref = context_cache._decode(*got), _uncut(tmp_path, "uncut")
    assert done.predictor_done and done.predictor_accs == ref.predictor_accs and len(ref.predictor_accs) == 11
    assert done.predictor_accs[:kept] == part.predictor_accs
    assert done.surrogate.choices == ref.surrogate.choices
    assert np.array_equal(done.surrogate.exact, ref.surrogate.exact)
    assert np.array_equal(done.surrogate.deltas, ref.surrogate.deltas)


def test_deadline_after_the_set_up_s_fit_leaves_no_trial_and_no_new_single_layer_run(tmp_path, monkeypatch):
    """timeout_s counts from the start: when it passes at the end of the predictor fit, the run still ends with its
    results (no best, and why) instead of running trials or knapsack sensitivities past it: only single-layer changes
    the logit surrogate measured in its fit count as measured."""
    from dse.emulate import Emulator
    from dse.search.context import search_from_budget

    b = tmp_path / "b.toml"
    b.write_text(SETUP_BUDGET.replace("racing = [0]", "racing = [0]\nseeds = ['knapsack']"))
    CutAt(monkeypatch, Emulator, "predict", at=11)  # the last of the 11 fit configurations
    res = search_from_budget(str(b), run_dir=tmp_path / "run")
    assert res["trials"]["complete"] == 0 and res["best"] is None and res["no_best"]
    sens = res["info"]["setup"]["sensitivities"]
    assert sens["measured"] <= len(res["info"]["searchable"]) and sens["measured"] + sens["skipped"] + sens["estimated"]


def _run_until(tmp_path, ctx, n_trials=400, **settings):
    """run_search on ``ctx``; returns (results, start time)."""
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_accuracy_loss = 1.0\n")
    t0 = time.time()
    res = run_search(budget, SearchSettings(budget_loss=0.01, n_trials=n_trials, workers=1, fidelities=[0], **settings),
                     lambda: ctx, run_dir=tmp_path / "run", progress=False)
    return res, t0


def _slow_holdout_ctx(emu, deadline) -> SearchContext:
    """A fake search (instant search split) whose 4000-image hold-out split runs on ``emu`` in chunks of 256."""
    hold = EmulatorEvaluator(emu, Labels(4000), batch_size=256)
    return SearchContext(space=fake_space(), evaluator=FakeEvaluator(3000, 0), holdout=hold, energy=fake_energy,
                         baseline={"float": {"search": 1.0, "holdout": 1.0}}, info={"model": "fake"},
                         deadline=deadline)


def test_holdout_checks_stop_at_the_deadline(tmp_path, capsys):
    """A hold-out check takes 4 s (16 chunks of 0.25 s) and the deadline passes during the first one (in a trial): it
    is cut at the deadline (the trial keeps its search result, unchecked), no hold-out chunk starts after it, the final
    check checks nothing more, and the run ends within one chunk; the results and `dse report` say that no best is
    verified, why, and what to do."""
    deadline = Deadline.after(600)
    emu = DeadlineAtFirstRun(deadline, batch_s=0.25)  # the first hold-out check is cut after two chunks
    ctx = _slow_holdout_ctx(emu, deadline)
    res, t0 = _run_until(tmp_path, ctx)
    wall = time.time() - t0
    assert emu.starts and not [s for s in emu.starts if s >= deadline.at]
    assert wall < deadline.at - t0 + emu.batch_s + 1.5  # generous: a shared machine
    assert 0 < res["trials"]["complete"] < 400 and res["best"] is None and not res["checked"]
    assert res["unchecked"] and "[search] timeout_s reached" in res["check_note"]
    assert "timeout_s passed before the hold-out check" in res["no_best"]
    assert "re-run the same command" in res["no_best"]
    s = summarize(load_run(tmp_path / "run"))
    assert s["best"] is None and s["check_note"] == res["check_note"] and s["no_best"] == res["no_best"]
    present.report(s)
    present.search_result(res)
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("[search] timeout_s reached") == 2 and out.count("timeout_s passed before the hold-out") == 2
    # resumed with time to spare, the final check verifies a best (the same trials, no new ones)
    ctx.deadline, n = Deadline.after(600), res["trials"]["complete"]
    res = run_search(tmp_path / "b.toml", SearchSettings(budget_loss=0.01, n_trials=n, workers=1, fidelities=[0]),
                     lambda: ctx, run_dir=tmp_path / "run", progress=False)
    assert res["best"]["verified"] and res["best"]["holdout"]["images"] == 4000 and "check_note" not in res


def test_surrogate_single_layer_runs_in_a_trial_stop_at_the_deadline(tmp_path):
    """The logit surrogate measures a single-layer change it lacks with a network run inside the trial that first
    needs it; that run goes through the search evaluator and stops within one batch of the deadline (build_context
    wires it the same way)."""
    deadline = Deadline.after(600)
    emu = DeadlineAtFirstRun(deadline, batch_s=0.05)  # the first single-layer run is cut after two batches
    ev = EmulatorEvaluator(emu, Labels(300), batch_size=30, deadline=deadline)  # one change: 10 batches, 0.5 s
    sur = LogitSurrogate(lambda c: ev.logits(c, 0, 300), np.zeros(300, dtype=np.int64))
    ctx = SearchContext(space=fake_space(), evaluator=FakeEvaluator(3000, 0), holdout=FakeEvaluator(1000, 1),
                        energy=fake_energy, predictor=FixedPredictor(sur.raw_loss),
                        baseline={"float": {"search": 1.0, "holdout": 1.0}}, info={"model": "fake"}, deadline=deadline)
    res, t0 = _run_until(tmp_path, ctx, seeds=(), predictor_max_share=math.inf)  # every trial asks the predictor
    assert emu.starts and not [s for s in emu.starts if s >= deadline.at] and sur.measured == 0
    assert time.time() - t0 < deadline.at - t0 + emu.batch_s + 1.5  # generous: a shared machine
    assert 0 < res["trials"]["complete"] < 400
    study = rundir.load_study(tmp_path / "run")
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert failed and "RunTimeout" in failed[-1].user_attrs["error"]
    # outside a trial (set-up) the same run is never interrupted
    assert deadline.passed() and sur.single_loss("conv2", LayerConfig("perf_2_2", True)) == 0.0


def test_exact_holdout_baseline_stops_at_the_deadline(tmp_path, capsys):
    """The hold-out split's FxP8-exact baseline (4 s: 16 chunks of 0.25 s) is the first thing a hold-out check computes;
    the deadline passes during it: it is cut within one chunk, not run to the end for the check or for the results, whose
    baseline says it was not measured, why, and what to do."""
    deadline = Deadline.after(600)
    emu = DeadlineAtFirstRun(deadline, batch_s=0.25, slow_exact=True)
    ctx = _slow_holdout_ctx(emu, deadline)
    res, t0 = _run_until(tmp_path, ctx)
    wall = time.time() - t0
    assert emu.starts and not [s for s in emu.starts if s >= deadline.at] and len(emu.starts) < 16
    assert wall < deadline.at - t0 + emu.batch_s + 1.5  # generous: a shared machine
    assert res["baseline"]["fxp8"]["holdout"] is None and res["baseline"]["fxp8"]["search"] is not None
    assert "[search] timeout_s reached" in res["baseline_note"] and "re-run the same command" in res["baseline_note"]
    s = summarize(load_run(tmp_path / "run"))
    assert s["baseline_note"] == res["baseline_note"]
    present.report(s)
    present.search_result(res)
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("FxP8-exact accuracy not measured") == 2
    # resumed with time to spare: the baseline and a verified best are measured
    ctx.deadline = Deadline.after(600)
    res = run_search(tmp_path / "b.toml", SearchSettings(budget_loss=0.01, n_trials=res["trials"]["complete"],
                                                         workers=1, fidelities=[0]),
                     lambda: ctx, run_dir=tmp_path / "run", progress=False)
    assert res["baseline"]["fxp8"]["holdout"] == 1.0 and "baseline_note" not in res and res["best"]["verified"]
