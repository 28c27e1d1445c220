"""Search driver tests with fake evaluators/energy (fast, independent of the model pipeline)."""
from __future__ import annotations

import itertools
import math
import json
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import given, settings, strategies as st
from optuna.trial import TrialState

from dse.errors import DseError
from dse.layer_config import LayerConfig, config_from_dict, config_to_dict
from dse.search import rundir, seeds
from dse.search.objective import (ATTR_CONFIRM, ATTR_GATE, ATTR_HOLDOUT, ATTR_LOSS_UCB, ATTR_VERIFIED, CONSTRAINT,
                                  Objective, _config_key)
from dse.search.racing import paired_stats, race, resolve_fidelities
from dse.arith.multipliers import axbxp_name
from tests.fakes import _CTX, LAYERS, MULTS, FakeEvaluator, FixedPredictor, ctx_factory, fake_energy, fake_space, make_ctx, settings_
from dse.search.space import SearchSpace
from dse.search.study import run_search

@pytest.fixture
def budget_file(tmp_path):
    p = tmp_path / "fake.toml"
    p.write_text("[budget]\nmax_loss_pp = 1.0\n")
    return p


# ---------------------------------------------------------------- space


def test_static_space_names_and_sorted_choices():
    sp = fake_space()
    assert sp.searchable == ["conv2", "fc1", "fc2"]  # first/last pinned
    assert sp.param_names == ["conv2.mult", "conv2.cv", "fc1.mult", "fc1.cv", "fc2.mult", "fc2.cv"]
    assert list(sp.choices["fc1"].multipliers) == sorted(MULTS)
    assert "axbxp_k2_w2_a2_static" in sp.choices["fc1"].multipliers
    assert sp.choices["fc1"].cv == (False, True)
    cfg = sp.config_from_params({"fc1.mult": "exact", "fc1.cv": True, "conv2.mult": "drum6", "conv2.cv": True})
    assert cfg["fc1"] == LayerConfig("exact", False)  # exact + cv normalised
    assert cfg["conv2"] == LayerConfig("drum6", True) and cfg["conv1"] == LayerConfig()
    assert sp.config_from_params(sp.params_from_config(cfg)) == cfg


def test_space_overrides_and_errors():
    sp = SearchSpace.build(LAYERS, ["drum6"], overrides={"fc3": {"pin": False, "multipliers": ["mitchell"]},
                                                         "fc1": {"pin": True}})
    assert sp.searchable == ["conv2", "fc2", "fc3"]
    assert sp.choices["fc3"].multipliers == ("exact", "mitchell")
    with pytest.raises(DseError, match="key 'space.layers.nope' is not a layer of the model; valid layers: conv1, conv2, fc1, fc2, fc3"):
        SearchSpace.build(LAYERS, ["drum6"], overrides={"nope": {}})
    with pytest.raises(DseError, match="no searchable layer"):
        SearchSpace.build(["a", "b"], ["drum6"])
    with pytest.raises(DseError, match="not in the search space"):
        fake_space().params_from_config({"fc1": LayerConfig("bogus")})


# ---------------------------------------------------------------- racing


def _reference_stats(e, a):
    n = len(e)
    b = sum(1 for x, y in zip(e, a) if x and not y)
    c = sum(1 for x, y in zip(e, a) if y and not x)
    p12, p21 = (b + 0.5) / (n + 2), (c + 0.5) / (n + 2)
    return (b - c) / n, ((p12 + p21 - (p12 - p21) ** 2) / (n + 2)) ** 0.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300))
def test_paired_stats_matches_reference(pairs):
    e = np.array([p[0] for p in pairs])
    a = np.array([p[1] for p in pairs])
    s = paired_stats(e, a)
    loss, se = _reference_stats(list(e), list(a))
    assert s.loss == pytest.approx(loss, abs=1e-12)
    assert s.se == pytest.approx(se, rel=1e-12)
    assert s.loss == pytest.approx(e.mean() - a.mean(), abs=1e-12)
    assert s.se > 0


def test_resolve_fidelities():
    assert resolve_fidelities([500, 2000, 0], 3000) == [500, 2000, 3000]
    assert resolve_fidelities([500, 5000], 1000) == [500, 1000]
    assert resolve_fidelities([], 10) == [10]
    with pytest.raises(DseError, match="fidelities"):
        resolve_fidelities([-1], 10)


def test_race_stops_infeasible_early_and_keeps_feasible():
    ev = FakeEvaluator(3000)
    exact = ev.correct({}, 0, 3000)
    bad = {"fc1": LayerConfig(axbxp_name(2, 2, 2, "static"))}
    r = race(lambda a, b: ev.correct(bad, a, b), exact, 0.01, [300, 1000, 0])
    assert r.stopped and r.images == 300 and r.loss > 0.1
    good = {"fc1": LayerConfig("drum6")}
    ev.images = 0
    r = race(lambda a, b: ev.correct(good, a, b), exact, 0.01, [300, 1000, 0])
    assert not r.stopped and r.images == 3000 and ev.images == 3000  # each image evaluated once
    assert [s[0] for s in r.stages] == [300, 1000, 3000]
    assert r.loss == pytest.approx(exact.mean() - ev.correct(good, 0, 3000).mean())
    # borderline: loss just over the budget is not stopped early (not significant at 300 images)
    mid = {"fc1": LayerConfig("perf_2_2")}
    r = race(lambda a, b: ev.correct(mid, a, b), exact, 0.015, [300, 1000, 0])
    assert r.stages[0][1] - 1.645 * r.stages[0][2] <= 0.015


# ---------------------------------------------------------------- seeds


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(20):
        items = {f"l{i}": [(LayerConfig(f"m{j}"), float(rng.uniform(-0.001, 0.01)), float(rng.uniform(0, 1)))
                           for j in range(3)] for i in range(4)}
        cap = 0.012
        got = seeds.knapsack(items, cap)
        got_save = sum(s for n, lst in items.items() for lc, l, s in lst if got.get(n) == lc)
        got_loss = sum(l for n, lst in items.items() for lc, l, s in lst if got.get(n) == lc)
        assert got_loss <= cap + 1e-12
        best = 0.0
        for combo in itertools.product(*[[None] + lst for lst in items.values()]):
            chosen = [c for c in combo if c is not None]
            if sum(c[1] for c in chosen) <= cap:
                best = max(best, sum(c[2] for c in chosen))
        assert got_save == pytest.approx(best, abs=1e-9)  # exact optimum


def test_seeds_enqueued(tmp_path, budget_file):
    ctx = make_ctx()
    _CTX["ctx"] = ctx
    res = run_search(budget_file, settings_(n_trials=3, seeds=("uniform", "knapsack")), ctx_factory,
                     run_dir=tmp_path / "run", progress=False)
    study = rundir.load_study(tmp_path / "run")
    trials = study.get_trials(deepcopy=False)
    assert trials[0].params == {p: ("exact" if p.endswith(".mult") else False) for p in ctx.space.param_names}
    assert all(t.user_attrs.get("seed") for t in trials[:3])
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    n_uniform = len(seeds.uniform(ctx.space))
    assert len(waiting) + 3 >= 1 + n_uniform + 1  # all exact + uniform + >= 1 knapsack seed queued
    # second trial is the first uniform seed: drum6 everywhere searchable
    assert {trials[1].params[f"{n}.mult"] for n in ctx.space.searchable} == {axbxp_name(2, 2, 2, "static")}
    assert res["trials"]["complete"] == 3


def test_only_the_all_exact_seed_by_default(tmp_path, budget_file):
    """Without [search] seeds only the all-exact reference is enqueued (uniform and knapsack seeds are opt-in), and a
    budget's seeds list reaches the settings."""
    from dse.budget import load_budget
    from dse.search.context import settings_from_budget

    _CTX["ctx"] = make_ctx()
    run_search(budget_file, settings_(n_trials=3), ctx_factory, run_dir=tmp_path / "run", progress=False)
    study = rundir.load_study(tmp_path / "run")
    assert [t.number for t in study.trials if t.user_attrs.get("seed")] == [0]
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    b = tmp_path / "seeds.toml"
    b.write_text('[search]\nseeds = ["knapsack"]\n')
    s = settings_from_budget(load_budget(b))
    assert s.seeds == ("knapsack",)


# ---------------------------------------------------------------- objective and study


@pytest.mark.parametrize("mode,sampler", [("constrained", "tpe"), ("pareto", "nsga2"), ("constrained", "random"),
                                          ("constrained", "qmc")])
def test_constraint_on_every_trial(tmp_path, budget_file, mode, sampler):
    ctx = make_ctx()
    _CTX["ctx"] = ctx
    res = run_search(budget_file, settings_(mode=mode, sampler=sampler, n_trials=30), ctx_factory,
                     run_dir=tmp_path / "run", progress=False)
    study = rundir.load_study(tmp_path / "run")
    done = [t for t in study.trials if t.state.is_finished()]
    assert len([t for t in done if t.state == TrialState.COMPLETE]) == 30
    for t in done:
        assert f"constraints:{CONSTRAINT}" in t.system_attrs, t.number
        assert t.constraints[CONSTRAINT] == pytest.approx(t.user_attrs[ATTR_LOSS_UCB] - 0.01)
        if "loss_se" in t.user_attrs:  # emulated: the bound adds z * se at [budget] confidence 0.95
            assert t.user_attrs[ATTR_LOSS_UCB] == pytest.approx(t.user_attrs["loss"] + 1.6449 * t.user_attrs["loss_se"],
                                                                abs=1e-4)
    stopped = [t for t in done if t.user_attrs.get("skipped") == "racing"]
    assert stopped and all(t.user_attrs["images"] < 3000 and t.constraints[CONSTRAINT] > 0 for t in stopped)
    full = [t for t in done if t.user_attrs.get("full")]
    assert all(t.user_attrs["images"] == 3000 for t in full)
    best = res["best"]
    assert best is not None and best["loss"] <= 0.01 and best["energy"]["system"] < 1.0
    assert best["verified"] and best["holdout"]["images"] == 1000 and best["holdout"]["loss"] <= 0.01
    assert res["baseline"]["fxp8"]["search"] == pytest.approx(ctx.evaluator.exact.mean())
    front = res["pareto_front"]
    assert front and all(a["energy"]["system"] <= b["energy"]["system"] and a["loss"] > b["loss"]
                         for a, b in zip(front, front[1:]))
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["best"]["trial"] == best["trial"]
    if mode == "pareto":
        assert len(study.directions) == 2


class ShiftedHoldout(FakeEvaluator):
    """Hold-out split on which ``mitchell`` flips ``factor`` times as often as on the search split."""

    def __init__(self, factor, n=1000):
        super().__init__(n, 1)
        self.factor = factor

    def p_flip(self, config):
        scaled = {n: lc for n, lc in config.items() if lc.multiplier != "mitchell"}
        p = super().p_flip(scaled)
        for lc in config.values():
            if lc.multiplier == "mitchell":
                q = min(1.0, MULTS["mitchell"][0] * self.factor * (0.5 if lc.cv else 1.0))
                p = 1 - (1 - p) * (1 - q)
        return p


def _checked_run(tmp_path, budget_file, holdout, n_holdout=3, mode="constrained"):
    ctx = make_ctx()
    ctx.holdout = holdout
    _CTX["ctx"] = ctx
    res = run_search(budget_file, settings_(n_trials=40, n_holdout=n_holdout, mode=mode), ctx_factory,
                     run_dir=tmp_path / "run", progress=False)
    return res, rundir.load_study(tmp_path / "run")


def test_best_is_hold_out_verified_walking_down_the_feasible_list(tmp_path, budget_file):
    res, study = _checked_run(tmp_path, budget_file, ShiftedHoldout(factor=6.0))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in done if t.user_attrs.get(ATTR_VERIFIED) is False]
    best = res["best"]
    assert failed, "the shifted hold-out should reject some search-feasible configurations"
    assert best["verified"] and best["holdout"]["loss"] <= 0.01
    assert study.trials[best["trial"]].user_attrs[ATTR_VERIFIED] is True
    # every search-feasible configuration cheaper than the best was checked and failed (walk down by energy)
    e_best = best["energy"]["system"]
    cheaper = [t for t in done if t.constraints[CONSTRAINT] <= 0 and t.user_attrs.get("full")
               and "duplicate_of" not in t.user_attrs and t.user_attrs["energy"]["system"] < e_best]
    checked = {d["trial"]: d for d in res["checked"]}
    for t in cheaper:
        v = t.user_attrs.get(ATTR_VERIFIED, checked.get(t.number, {}).get("verified"))
        if v is None:  # left out only once n_holdout checks failed, and then listed
            assert t.number in res["unchecked"] and sum(d["verified"] is False for d in res["checked"]) >= 3
            continue
        assert v is False, t.number
        h = t.user_attrs.get(ATTR_HOLDOUT) or checked[t.number]["holdout"]
        assert h["loss"] > 0.01
    assert len(failed) <= 3  # in-trial checks stop after n_holdout failures


def test_no_verified_best_is_said_plainly(tmp_path, budget_file, capsys):
    class AllFail(FakeEvaluator):
        def p_flip(self, config):
            return 0.0 if all(lc.multiplier == "exact" for lc in config.values()) else 0.5
    res, study = _checked_run(tmp_path, budget_file, AllFail(1000, 1), n_holdout=2)
    assert res["best"] is None and "passed the hold-out check" in res["no_best"] and "[budget] confidence" in \
        res["no_best"]
    checks = [t for t in study.trials if ATTR_VERIFIED in t.user_attrs] + [d for d in res["checked"]]
    assert sum(1 for t in study.trials if t.user_attrs.get(ATTR_VERIFIED) is False) <= 2  # bounded by n_holdout
    from dse import present
    from dse.report import best_trial, load_run, summarize
    run = load_run(tmp_path / "run")
    assert best_trial(run) is None
    present.report(summarize(run))
    assert "none of the" in capsys.readouterr().out
    with pytest.raises(DseError, match="no configuration passed the hold-out check"):
        from dse.report import export_config
        export_config(run, tmp_path / "x.toml")
    assert checks


def test_feasible_only_with_margin():
    """Measured loss just under the budget but an upper bound over it: infeasible at confidence 0.95, feasible at 0.5."""
    space = SearchSpace.build(["a", "b", "c"], ["drum6"], cv=[False])
    cfg = {"a": LayerConfig(), "b": LayerConfig("drum6"), "c": LayerConfig()}

    class Ev:
        n_images = 2000

        def correct(self, config, start, stop):
            r = np.ones(stop - start, dtype=bool)
            if config.get("b", LayerConfig()).multiplier == "drum6":
                r[(np.arange(start, stop) % 110) == 0] = False  # 19 of 2000 = 0.95 % < 1 %
            return r
    for conf, feasible in ((0.95, False), (0.5, True)):
        obj = Objective(space, Ev(), fake_energy, 0.01, fidelities=[0], feasibility_confidence=conf)
        study = optuna.create_study()
        study.enqueue_trial(space.params_from_config(cfg))
        study.optimize(obj, n_trials=1)
        t = study.trials[0]
        assert t.user_attrs["loss"] < 0.01 and (t.constraints[CONSTRAINT] <= 0) == feasible


def test_pareto_race_keeps_non_dominated_and_skips_costlier_than_exact():
    space = SearchSpace.build(["a", "b", "c"], ["perf_2_2"], cv=[False])
    ev = FakeEvaluator(3000, 0)
    costly = {"system": 1.2, "multiplier": 1.0, "latency": 1.0}
    obj = Objective(space, ev, lambda c: costly if c["b"].multiplier == "exact" else fake_energy(c), 0.01,
                    mode="pareto", fidelities=[300, 1000, 0], holdout=FakeEvaluator(1000, 1))
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.enqueue_trial({"b.mult": "perf_2_2", "b.cv": False})
    study.enqueue_trial({"b.mult": "exact", "b.cv": False})
    study.optimize(obj, n_trials=2)
    cheap, exact_like = study.trials
    # loss ~2 % is over the 1 % budget, but nothing known dominates it: raced to full fidelity (a front point)
    assert cheap.user_attrs["full"] and cheap.user_attrs["loss"] > 0.01
    assert ATTR_VERIFIED not in cheap.user_attrs  # infeasible: never a reported result
    # energy above all-exact: never checked on hold-out
    assert ATTR_VERIFIED not in exact_like.user_attrs


def test_progress_shows_only_verified_best(tmp_path, budget_file):
    from dse.present import SearchProgress
    _, study = _checked_run(tmp_path, budget_file, ShiftedHoldout(factor=6.0))
    bar = SearchProgress(40, 0)
    with bar:
        bar(study, None)
    info = bar.p.tasks[0].fields["info"]
    verified = min(t.user_attrs["energy"]["system"] for t in study.trials if t.user_attrs.get(ATTR_VERIFIED))
    assert f"best energy {verified:.4f} (hold-out verified)" in info


def test_predictor_skip_sets_constraint(tmp_path):
    ctx = make_ctx()
    obj = Objective(ctx.space, ctx.evaluator, fake_energy, 0.01, predictor=FixedPredictor(lambda cfg: 0.5),
                    predictor_skip=2.0, predictor_max_share=math.inf)  # the fakes take no time: no time bound
    study = optuna.create_study()
    study.optimize(obj, n_trials=3)
    for t in study.trials:
        assert t.user_attrs["skipped"] == "predictor" and t.constraints[CONSTRAINT] == pytest.approx(0.49)
    assert ctx.evaluator.calls == 0


def test_predictor_never_skips_enqueued_seeds():
    ctx = make_ctx()
    obj = Objective(ctx.space, ctx.evaluator, fake_energy, 0.01, predictor=FixedPredictor(lambda cfg: 0.5),
                    predictor_skip=2.0, predictor_max_share=math.inf)  # the fakes take no time: no time bound
    study = optuna.create_study()
    study.enqueue_trial({}, user_attrs={"seed": True})
    study.optimize(obj, n_trials=2)
    assert study.trials[0].user_attrs.get("skipped") != "predictor" and study.trials[0].user_attrs["images"] > 0
    assert study.trials[1].user_attrs["skipped"] == "predictor"


def test_loo_quality_is_leave_one_out_error_and_rank():
    from scipy.stats import spearmanr

    from dse.predict import AccuracyModel, loo_quality

    ames = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.7])
    accs = np.array([0.90, 0.89, 0.86, 0.80, 0.70, 0.55])
    pred = []
    for i in range(len(ames)):
        k = np.arange(len(ames)) != i
        pred.append(AccuracyModel.fit(ames[k], accs[k]).predict(ames[i]))
    err = np.abs(np.array(pred) - accs)
    q = loo_quality(ames, accs)
    assert q.worst_error == pytest.approx(err.max()) and q.mean_error == pytest.approx(err.mean()) and err.max() > 0
    assert q.spearman == pytest.approx(spearmanr(pred, accs).statistic)
    assert loo_quality([0.0, 0.0, 0.0, 0.1], [0.9, 0.9, 0.9, 0.8]).worst_error == float("inf")  # no refit without 0.1
    # a model that cannot rank the configurations is not good enough for the search
    noisy = loo_quality(ames, np.array([0.90, 0.80, 0.89, 0.70, 0.88, 0.60]))
    assert not noisy.good_enough and "Spearman" in noisy.verdict()


def test_failed_trial_has_constraint():
    ctx = make_ctx()

    def boom(cfg):
        raise RuntimeError("energy model broke")
    obj = Objective(ctx.space, ctx.evaluator, boom, 0.01)
    study = optuna.create_study()
    study.optimize(obj, n_trials=2, catch=(RuntimeError,))
    assert all(t.state == TrialState.FAIL and t.constraints[CONSTRAINT] > 0 for t in study.trials)
    assert "energy model broke" in study.trials[0].user_attrs["error"]


def test_duplicates_reuse_results():
    ctx = make_ctx()
    obj = Objective(SearchSpace.build(["a", "b", "c"], ["drum6"], cv=[False]), ctx.evaluator, fake_energy, 0.01)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(obj, n_trials=10)
    assert ctx.evaluator.calls <= 1 + 2 * 3  # exact baseline + two configs, at most 3 fidelities each
    dups = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert len(dups) == 8
    for t in dups:
        assert t.values == study.trials[t.user_attrs["duplicate_of"]].values


def test_resume_after_interrupt_loses_nothing(tmp_path, budget_file):
    ctx = make_ctx(interrupt_after=25)
    _CTX["ctx"] = ctx
    with pytest.raises(KeyboardInterrupt):
        run_search(budget_file, settings_(n_trials=20), ctx_factory, run_dir=tmp_path / "run", progress=False)
    study = rundir.load_study(tmp_path / "run")
    before = {t.number: (t.params, t.values) for t in study.trials if t.state == TrialState.COMPLETE}
    assert 0 < len(before) < 20
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.constraints[CONSTRAINT] > 0 and "KeyboardInterrupt" in t.user_attrs["error"]
                          for t in failed)
    assert not (tmp_path / "run" / "results.json").exists()
    ctx2 = make_ctx()
    _CTX["ctx"] = ctx2
    res = run_search(budget_file, settings_(n_trials=20), ctx_factory, run_dir=tmp_path / "run", progress=False)
    study = rundir.load_study(tmp_path / "run")
    after = {t.number: (t.params, t.values) for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(after) == 20 and res["trials"]["complete"] == 20
    assert all(after[k] == v for k, v in before.items())
    # a third run has nothing left to do
    ctx3 = make_ctx()
    _CTX["ctx"] = ctx3
    run_search(budget_file, settings_(n_trials=20), ctx_factory, run_dir=tmp_path / "run", progress=False)
    assert len(rundir.load_study(tmp_path / "run").get_trials(states=(TrialState.COMPLETE,))) == 20


def test_run_dir_errors(tmp_path, budget_file):
    _CTX["ctx"] = make_ctx()
    run_search(budget_file, settings_(n_trials=2), ctx_factory, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(DseError, match="resume False: run directory .* already holds a study"):
        run_search(budget_file, settings_(n_trials=2), ctx_factory, run_dir=tmp_path / "run", resume=False,
                   progress=False)
    other = tmp_path / "other.toml"
    other.write_text("[budget]\nmax_loss_pp = 2.0\n")
    with pytest.raises(DseError, match="different budget"):
        run_search(other, settings_(n_trials=2), ctx_factory, run_dir=tmp_path / "run", progress=False)
    with pytest.raises(DseError, match="SQLite"):
        run_search(budget_file, settings_(n_trials=2, workers=2, storage="sqlite:///x.db"), ctx_factory,
                   run_dir=tmp_path / "run2", progress=False)
    with pytest.raises(DseError, match="search.mode"):
        settings_(mode="fast").validate()
    with pytest.raises(DseError, match="not found"):
        rundir.load_study(tmp_path / "missing")
    with pytest.raises(DseError, match="journal.log"):
        rundir.load_study(tmp_path)


class SlowEvaluator(FakeEvaluator):
    """50 ms per evaluation; with DSE_TEST_RENDEZVOUS set, each process's first evaluation also waits (at most 120 s)
    until two processes have arrived there, so a slow worker start on a loaded machine cannot leave one idle."""

    def correct(self, config, start, stop):
        import os
        import time
        meet = os.environ.get("DSE_TEST_RENDEZVOUS")
        if meet and not getattr(self, "_met", False):
            self._met = True
            (Path(meet) / str(os.getpid())).touch()
            deadline = time.monotonic() + 120
            while len(list(Path(meet).iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.05)
        return super().correct(config, start, stop)


def slow_factory():
    """Picklable context factory for worker processes (deterministic fakes, 50 ms per evaluation)."""
    ctx = make_ctx(sensitivity=False)
    ctx.evaluator = SlowEvaluator(3000, 0)
    return ctx


def test_workers_share_one_study(tmp_path, budget_file, monkeypatch):
    (tmp_path / "meet").mkdir()
    monkeypatch.setenv("DSE_TEST_RENDEZVOUS", str(tmp_path / "meet"))
    res = run_search(budget_file, settings_(n_trials=24, workers=2), slow_factory, run_dir=tmp_path / "run",
                     progress=False)
    study = rundir.load_study(tmp_path / "run")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(done) == 24 and res["trials"]["complete"] == len(done)
    assert len({t.user_attrs["pid"] for t in done}) == 2  # both processes ran trials
    assert all(f"constraints:{CONSTRAINT}" in t.system_attrs for t in done)
    assert len({t.number for t in done}) == len(done)


class LoggedEvaluator(SlowEvaluator):
    """SlowEvaluator that appends every evaluation (pid, configuration, images) to the file $DSE_TEST_EVAL_LOG."""

    def correct(self, config, start, stop):
        import os

        with open(os.environ["DSE_TEST_EVAL_LOG"], "a") as f:
            f.write(json.dumps([os.getpid(), _config_key(config), start, stop]) + "\n")
        return super().correct(config, start, stop)


def few_configs_factory():
    """Picklable context factory: 3 searchable layers x {exact, drum6} (8 configurations), every evaluation logged."""
    ctx = make_ctx(sensitivity=False)
    ctx.space = SearchSpace.build(LAYERS, ["drum6"], cv=[False], pin_first_last=True)
    ctx.evaluator = LoggedEvaluator(3000, 0)
    return ctx


def _evaluations(log: Path) -> list:
    """(configuration, first image, last image) of every logged evaluation of an approximate configuration."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [(key, a, b) for _, key, a, b in rows if key != _config_key({})]


def test_reproposed_configurations_cost_no_emulation_across_workers_and_resumes(tmp_path, budget_file, monkeypatch,
                                                                                workers=2):
    """8 configurations, 14 trials, then the run resumed to 24: every configuration the sampler proposes again takes
    over the result of the trial that measured it (``duplicate_of``, same values and constraint, no predictor-gate
    line of its own) and is never evaluated again: no (configuration, images) evaluation happens twice, whichever
    process (workers), run (resume) or trial still running it (waited for) proposed it first."""
    log = tmp_path / "evals.log"
    monkeypatch.setenv("DSE_TEST_EVAL_LOG", str(log))
    for n in (14, 24):
        run_search(budget_file, settings_(n_trials=n, workers=workers, seeds=()), few_configs_factory,
                   run_dir=tmp_path / "run", progress=False)
    evals = _evaluations(log)
    assert evals and len(evals) == len(set(evals)), sorted(evals)
    study = rundir.load_study(tmp_path / "run")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    dups = [t for t in done if "duplicate_of" in t.user_attrs]
    assert len(done) == 24 and len(dups) >= 24 - 8
    by_number = {t.number: t for t in done}
    for t in dups:
        orig = by_number[t.user_attrs["duplicate_of"]]
        assert "duplicate_of" not in orig.user_attrs and orig.user_attrs["config"] == t.user_attrs["config"]
        assert t.values == orig.values and t.constraints == orig.constraints
        assert ATTR_GATE not in t.user_attrs and ATTR_HOLDOUT not in t.user_attrs


@pytest.mark.parametrize("alive", [True, False])
def test_reproposal_waits_for_the_trial_still_running_it(monkeypatch, alive):
    """Trial 0 runs a configuration in another process (its heartbeat goes on, or stopped: the process died) when
    trial 1 proposes it again: trial 1 waits and takes over trial 0's result when it completes (no evaluation of its
    own); for a dead trial 0 it waits no longer than liveness.STALE_S and evaluates it itself."""
    import threading
    import time

    from dse.search import liveness
    from dse.search import objective as objective_mod

    monkeypatch.setattr(liveness, "STALE_S", 0.6)
    monkeypatch.setattr(objective_mod, "DUPLICATE_POLL_S", 0.02)
    ctx = make_ctx()
    space = SearchSpace.build(["conv1"], ["perf_2_2"], cv=[False], pin_first_last=False)
    obj = Objective(space, ctx.evaluator, fake_energy, 0.05, fidelities=[0])
    study = optuna.create_study()
    params = space.params_from_config({"conv1": LayerConfig("perf_2_2")})
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    other = study.ask()  # trial 0, "in another process"
    other.set_user_attr("config", config_to_dict(space.config_from_params(params)))
    stop = threading.Event()

    def other_process():
        for i in range(20):  # 1 s of heartbeats, then the result
            if alive:
                other.set_user_attr(liveness.BEAT_ATTR, {"time": i})
            if stop.wait(0.05):
                return
        if alive:
            study.tell(other, Objective(space, FakeEvaluator(3000, 0), fake_energy, 0.05, fidelities=[0])(other))
    t = threading.Thread(target=other_process)
    t.start()
    t0 = time.monotonic()
    study.optimize(obj, n_trials=1)
    waited = time.monotonic() - t0
    stop.set()
    t.join()
    mine = study.trials[1]
    if alive:
        assert mine.user_attrs["duplicate_of"] == 0 and waited >= 0.9
        assert ctx.evaluator.calls == 0
    else:
        assert "duplicate_of" not in mine.user_attrs and ctx.evaluator.calls > 0 and waited < 0.6 + 0.9


def test_in_process_duplicate_of_an_unconfirmed_trial_keeps_its_constraint():
    """A trial that failed the confirmation is infeasible; the same configuration proposed again in the same process
    takes over that constraint (it took the search-split one alone, without the confirmation, and looked feasible)."""
    ctx = make_ctx()
    space = SearchSpace.build(["conv1"], ["perf_2_2"], cv=[False], pin_first_last=False)
    confirm = FakeEvaluator(1000, 7)
    confirm.p_flip = lambda cfg: 0.5 if cfg else 0.0  # the configuration fails on the confirmation images
    obj = Objective(space, ctx.evaluator, fake_energy, 0.05, fidelities=[0], confirm=confirm)
    study = optuna.create_study()
    params = space.params_from_config({"conv1": LayerConfig("perf_2_2")})
    for _ in range(2):
        study.enqueue_trial(params)
    calls = confirm.calls
    study.optimize(obj, n_trials=2)
    first, second = study.trials
    assert first.user_attrs[ATTR_CONFIRM]["ucb"] > 0.05 and first.constraints[CONSTRAINT] > 0
    assert second.user_attrs["duplicate_of"] == 0 and second.constraints == first.constraints
    assert confirm.calls > calls


def test_predictor_switches_once_per_switch_whichever_process_recorded_it(monkeypatch):
    """Two processes' gates switch off (trials 3 and 4), on (7 and 8) and off (11): the study's switches are 3, 7, 11
    (one line each) in the results/report and on the progress display."""
    from dse.present import SearchProgress
    from dse.search.objective import ATTR_GATE_STATE, predictor_switches

    def trial(n, state=None):
        attrs = {"energy": {"system": 1.0}, "loss": 0.0}
        if state:
            attrs.update({ATTR_GATE: f"predictor {state}: p{n}", ATTR_GATE_STATE: state})
        return optuna.trial.create_trial(value=1.0, user_attrs=attrs)

    states = {3: "off", 4: "off", 7: "on AME", 8: "on AME", 11: "off"}
    trials = [trial(n, states.get(n)) for n in range(12)]
    study = optuna.create_study()
    for t in trials:
        study.add_trial(t)
    frozen = study.get_trials()
    assert [n for n, _ in predictor_switches(frozen)] == [3, 7, 11]
    bar = SearchProgress(12, 0)
    printed = []
    monkeypatch.setattr(bar.p.console, "print", lambda line, **kw: printed.append(line))  # the console is shared
    for t in frozen:
        bar(study, t)
    assert printed == ["trial 3: predictor off: p3", "trial 7: predictor on AME: p7", "trial 11: predictor off: p11"]


def test_cli_search_and_errors(tmp_path, monkeypatch, capsys):
    from dse.cli import main
    import dse.search.context as context

    assert main(["search", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err
    assert "missing.toml" in err and err.count("\n") == 1
    seen = {}

    def fake_search(budget, **kw):
        seen.update(kw, budget=budget)
        return {"best": {"trial": 3, "energy": {"system": 0.8, "multiplier": 0.5}, "loss": 0.004,
                         "holdout": {"loss": 0.006}}, "run_dir": "runs/x-0"}
    monkeypatch.setattr(context, "search_from_budget", fake_search)
    assert main(["search", "b.toml", "--n-trials", "7", "--workers", "2", "--no-resume", "--quiet",
                 "--storage", "postgresql://h/db", "--threads", "3"]) == 0
    out = capsys.readouterr().out
    assert "best trial 3" in out and "0.8000" in out and "0.40 pp" in out and "runs/x-0" in out
    assert seen == {"budget": "b.toml", "run_dir": None, "storage": "postgresql://h/db", "n_trials": 7, "workers": 2,
                    "resume": False, "progress": None, "threads": 3, "setup_progress": None}
    from dse.present import SearchProgress, SetupProgress
    assert main(["search", "b.toml"]) == 0
    assert seen["progress"] is SearchProgress and seen["resume"] is True
    assert isinstance(seen["setup_progress"], SetupProgress)


def test_settings_from_budget(tmp_path):
    from dse.budget import AxbxpSpace, SpaceSection, load_budget
    from dse.search.context import settings_from_budget
    p = tmp_path / "b.toml"
    p.write_text("[budget]\nmax_accuracy_loss = 1.5\n[search]\nmode = 'pareto'\nn_trials = 40\nseed = 3\n"
                 "racing = [200, 1000]\npredictor_skip = 0\n")
    s = settings_from_budget(load_budget(p))
    assert (s.budget_loss, s.mode, s.n_trials, s.seed, s.fidelities, s.predictor_skip) == (0.015, "pareto", 40, 3,
                                                                                          [200, 1000], 0.0)
    sp = SpaceSection(multipliers=("drum6", "mitchell"), axbxp=AxbxpSpace(K=(2,), Lw=(2, 3), La=(3,),
                                                                          modes=("static", "dynamic")))
    assert sp.all_multipliers == sorted(["drum6", "mitchell", "axbxp_k2_w2_a3_static", "axbxp_k2_w3_a3_static",
                                            "axbxp_k2_w2_a3_dynamic", "axbxp_k2_w3_a3_dynamic"])


def test_real_end_to_end_small(tmp_path):
    """Bundled LeNet-5, few images and trials: search -> results.json -> report -> export -> dse evaluate."""
    from dse.cli import main
    from dse.config import load_config
    from dse.report import load_run, summarize

    b = tmp_path / "small.toml"
    b.write_text('[model]\npath = "lenet5"\n[data]\nimages = 400\nholdout = "fashion-mnist:holdout"\n'
                 "[budget]\nmax_accuracy_loss = 2.0\n"
                 '[search]\nn_trials = 8\nseed = 1\nracing = [150, 0]\npredictor_skip = 3.0\n'
                 '[space]\nmultipliers = ["drum5", "perf_j0_k2"]\ncv = [false, true]\n')
    run = tmp_path / "run"
    assert main(["search", str(b), "--run-dir", str(run), "--quiet"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["trials"]["complete"] == 8 and res["images"]["search"] == 400
    assert 0.5 < res["baseline"]["fxp8"]["search"] <= 1 and 0.5 < res["baseline"]["float"]["holdout"] <= 1
    study = rundir.load_study(run)
    assert all(f"constraints:{CONSTRAINT}" in t.system_attrs for t in study.trials if t.state.is_finished())
    s = summarize(load_run(run))
    assert s["best"] is not None and s["best"]["energy"]["system"] <= 1.0
    out = tmp_path / "best.toml"
    assert main(["export", str(run), "-o", str(out)]) == 0
    cfg = load_config(out)
    assert {n: c for n, c in cfg.items() if c.multiplier != "exact"} == {
        n: c for n, c in config_from_dict(s["best"]["config"]).items() if c.multiplier != "exact"}
    # dse evaluate re-checks the exported configuration: same hold-out accuracy as the search's final check
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["evaluate", "lenet5", "--config", str(out), "--json"]) == 0
    ev = json.loads(buf.getvalue())
    assert ev["configured"] == pytest.approx(res["best"]["holdout"]["accuracy"], abs=1e-12)
    assert ev["fxp8"] == pytest.approx(res["baseline"]["fxp8"]["holdout"], abs=1e-12)


def test_storage_url_recorded_and_default_budget(tmp_path, budget_file):
    from dse.search.context import default_budget_path

    assert default_budget_path().name == "default.toml" and default_budget_path().is_file()
    _CTX["ctx"] = make_ctx()
    url = f"journal://{tmp_path / 'elsewhere.log'}"
    run_search(budget_file, settings_(n_trials=3, storage=url), ctx_factory, run_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "elsewhere.log").exists() and not (tmp_path / "run" / "journal.log").exists()
    assert len(rundir.load_study(tmp_path / "run").trials) >= 3  # found through storage.txt
    with pytest.raises(DseError, match="use the same storage"):
        run_search(budget_file, settings_(n_trials=3, storage=f"journal://{tmp_path / 'x.log'}"), ctx_factory,
                   run_dir=tmp_path / "run", progress=False)


def test_worker_seeds_never_coincide_across_study_seeds():
    from dse.search.study import worker_seed
    seeds = [worker_seed(s, i) for s in range(20) for i in range(4)]
    assert len(set(seeds)) == len(seeds)  # with seed + i, (0, 1) and (1, 0) collided
    assert worker_seed(7, 0) == 7 and worker_seed(7, 1) == worker_seed(7, 1)


# ---------------------------------------------------------------- confirmation (selection-safe first pick)

class SplitEvaluator:
    """All-exact is right on every image. ``mitchell`` on layer b is a lucky configuration: no error on the search
    images, 2 % of the images wrong on any other images (confirmation, hold-out); ``drum6`` on b loses 0.2 %
    everywhere. ``lucky``: this evaluator holds search images."""

    def __init__(self, n, lucky):
        self.n_images, self.lucky = n, lucky

    def correct(self, config, start, stop):
        idx = np.arange(start, stop)
        mult = config.get("b", LayerConfig()).multiplier
        if mult == "mitchell":
            return np.ones(idx.size, dtype=bool) if self.lucky else idx % 50 != 0
        return idx % 500 != 0 if mult == "drum6" else np.ones(idx.size, dtype=bool)


def _lucky_study(confirm):
    from dse.search.study import final_check
    space = SearchSpace.build(["a", "b", "c"], ["drum6", "mitchell"], cv=[False])
    obj = Objective(space, SplitEvaluator(3000, True), fake_energy, 0.01, fidelities=[0],
                    holdout=SplitEvaluator(4000, False), confirm=confirm)
    study = optuna.create_study()
    for m in ("mitchell", "drum6"):  # the lucky one is cheaper and comes first
        study.enqueue_trial({"b.mult": m, "b.cv": False})
    study.optimize(obj, n_trials=2)
    return study, final_check(study, obj, settings_(fidelities=[0]))


def test_confirmation_rejects_a_configuration_lucky_on_the_search_images():
    # without confirmation the lucky configuration is the first pick (only hold-out catches it)
    study, res = _lucky_study(None)
    lucky, safe = study.trials
    assert lucky.user_attrs["loss"] == 0 and lucky.constraints[CONSTRAINT] <= 0
    assert res["first_pick"] == lucky.number and lucky.user_attrs[ATTR_VERIFIED] is False
    # with it the lucky configuration is infeasible, never checked on hold-out, and never the first pick
    study, res = _lucky_study(SplitEvaluator(1000, False))
    lucky, safe = study.trials
    c = lucky.user_attrs[ATTR_CONFIRM]
    assert c["images"] == 1000 and c["loss"] == pytest.approx(0.02) and c["ucb"] > 0.01
    assert lucky.constraints[CONSTRAINT] == pytest.approx(c["ucb"] - 0.01)
    assert ATTR_HOLDOUT not in lucky.user_attrs and ATTR_VERIFIED not in lucky.user_attrs
    assert res["first_pick"] == safe.number == res["best"]["trial"] and res["best"]["verified"]
    assert safe.user_attrs[ATTR_CONFIRM]["ucb"] <= 0.01 and res["best"]["confirm"]["loss"] == pytest.approx(0.002)


def test_final_check_confirms_candidates_the_search_did_not():
    """A search-feasible trial left unconfirmed during the search (e.g. by the deadline) is confirmed by the final
    check before it may be the best; failing that, it is listed in ``confirm_failed`` and the walk goes on."""
    from dse.search.study import final_check
    space = SearchSpace.build(["a", "b", "c"], ["drum6", "mitchell"], cv=[False])
    obj = Objective(space, SplitEvaluator(3000, True), fake_energy, 0.01, fidelities=[0],
                    holdout=SplitEvaluator(4000, False))  # no confirmation during the search
    study = optuna.create_study()
    for m in ("mitchell", "drum6"):
        study.enqueue_trial({"b.mult": m, "b.cv": False})
    study.optimize(obj, n_trials=2)
    for t in study.trials:  # as if never checked
        assert ATTR_CONFIRM not in t.user_attrs
    obj.confirm = SplitEvaluator(1000, False)
    res = final_check(study, obj, settings_(fidelities=[0]))
    assert res["confirm_failed"] == [0] and res["first_pick"] == 1 == res["best"]["trial"]
    obj.confirm = SplitEvaluator(1000, True)  # every candidate passes: the cheapest is the first pick
    assert final_check(study, obj, settings_(fidelities=[0]))["first_pick"] == 0


class MarginEvaluator:
    """``mitchell`` on layer b loses 0.9 % of any images (within a 1 % budget, but not at 95 % confidence on 3000
    images), ``drum6`` 0.2 %; all-exact is right everywhere."""

    def __init__(self, n):
        self.n_images = n

    def correct(self, config, start, stop):
        idx = np.arange(start, stop)
        mult = config.get("b", LayerConfig()).multiplier
        return idx % 1000 >= {"mitchell": 9, "drum6": 2}.get(mult, 0)


def test_final_check_says_what_the_margin_cost():
    """A cheaper configuration measured within budget but infeasible at the budget's confidence is named in
    ``margin_note`` with its energy, loss and image count, and the settings that would decide it; none, no note."""
    from dse.search.study import final_check
    space = SearchSpace.build(["a", "b", "c"], ["drum6", "mitchell"], cv=[False])
    obj = Objective(space, MarginEvaluator(3000), fake_energy, 0.01, fidelities=[0], holdout=MarginEvaluator(4000))
    study = optuna.create_study()
    for m in ("mitchell", "drum6"):
        study.enqueue_trial({"b.mult": m, "b.cv": False})
    study.optimize(obj, n_trials=2)
    near, safe = study.trials
    assert near.user_attrs["loss"] == pytest.approx(0.009) and near.constraints[CONSTRAINT] > 0
    res = final_check(study, obj, settings_(fidelities=[0]))
    assert res["best"]["trial"] == safe.number
    assert near.user_attrs["energy"]["system"] < safe.user_attrs["energy"]["system"]
    note = res["margin_note"]
    assert note.startswith("1 configuration cheaper than the best") and "at 0.90 pp" in note
    assert f"{near.user_attrs['energy']['system']:.4f}" in note and "3000 search images" in note
    assert "[data] images" in note and "[budget] confidence 0.95" in note
    study2 = optuna.create_study()
    study2.enqueue_trial({"b.mult": "drum6", "b.cv": False})
    study2.optimize(obj, n_trials=1)
    assert "margin_note" not in final_check(study2, obj, settings_(fidelities=[0]))


def test_search_split_parts_are_disjoint_and_sized():
    from dse.search.context import search_split
    sp = search_split(5000, 3000, None, seed=3)
    assert (sp.search.size, sp.confirm.size, sp.unused.size) == (3000, 1000, 1000)
    assert np.array_equal(np.sort(np.concatenate([sp.search, sp.confirm, sp.unused])), np.arange(5000))
    # the search images of a seed do not depend on the confirmation's size
    assert np.array_equal(search_split(5000, 3000, 0, seed=3).search, sp.search)
    assert search_split(5000, 3000, 1500, seed=3).unused.size == 500
    assert search_split(100, None, None, seed=0).confirm.size == 20  # a fifth of a small split
    assert search_split(5000, 4500, 1000, seed=0).search.size == 4000  # images is a cap
    with pytest.raises(DseError, match=r"\[data\] confirm"):
        search_split(100, None, 100, seed=0)


class NoisyEvaluator:
    """Every approximate configuration loses ``p`` of the images in truth; which images is random per configuration
    and per image set (``salt``): many similar configurations measured on the same images."""

    def __init__(self, n, salt, p=0.0105):
        self.n_images, self.salt, self.p = n, salt, p

    def correct(self, config, start, stop):
        key = json.dumps({k: [v.multiplier, v.cv] for k, v in sorted(config.items()) if v.multiplier != "exact"})
        if key == "{}":
            return np.ones(stop - start, dtype=bool)
        flips = np.random.default_rng([self.salt, zlib.crc32(key.encode())]).random(self.n_images) < self.p
        return ~flips[start:stop]


def _selection_runs(confirm: bool, runs=12, trials=50) -> int:
    """Runs (of ``runs``) whose first pick is a configuration over budget (all are: true loss 1.05 % > 1 %)."""
    from dse.search.study import final_check
    space = fake_space()
    bad = 0
    for r in range(runs):
        obj = Objective(space, NoisyEvaluator(3000, 3 * r), fake_energy, 0.01, fidelities=[0],
                        holdout=NoisyEvaluator(1000, 3 * r + 2), max_holdout_failures=1,
                        confirm=NoisyEvaluator(1000, 3 * r + 1) if confirm else None)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=r))
        study.optimize(obj, n_trials=trials)
        bad += final_check(study, obj, settings_(fidelities=[0]))["first_pick"] is not None
    return bad


def test_confirmation_makes_the_first_pick_selection_safe():
    """The winner's curse: comparing many configurations that are all over budget on the same search images, the
    cheapest one within its own 95 % bound is often one that was lucky there; a per-configuration bound is not a
    bound for the minimum. Re-measured on confirmation images it was not chosen on, it rarely survives."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    without, with_ = _selection_runs(False), _selection_runs(True)
    assert without >= 8, without  # the search-split bound alone picks an over-budget configuration in most runs (11)
    assert with_ <= 1, with_  # (0; at 40 runs of 60 trials: 38 vs 1)


def test_final_check_past_the_deadline_keeps_in_trial_verdicts():
    """Past the run's deadline the final check confirms and checks nothing new, but a trial confirmed and verified
    during the search is still the best, even when a cheaper candidate is left unconfirmed before it."""
    from dse.search.deadline import Deadline
    from dse.search.study import final_check
    space = SearchSpace.build(["a", "b", "c"], ["drum6", "mitchell"], cv=[False])
    obj = Objective(space, SplitEvaluator(3000, True), fake_energy, 0.01, fidelities=[0],
                    holdout=SplitEvaluator(4000, False), confirm=SplitEvaluator(1000, False))
    study = optuna.create_study()
    study.enqueue_trial({"b.mult": "drum6", "b.cv": False})
    study.optimize(obj, n_trials=1)  # confirmed and verified in the trial
    confirm, obj.confirm = obj.confirm, None
    study.enqueue_trial({"b.mult": "mitchell", "b.cv": False})
    study.optimize(obj, n_trials=1)  # cheaper, never confirmed
    obj.confirm, obj.deadline = confirm, Deadline.after(1e-9)
    safe, cheap = study.trials
    assert safe.user_attrs[ATTR_VERIFIED] and ATTR_CONFIRM not in cheap.user_attrs and obj.deadline.passed()
    res = final_check(study, obj, settings_(fidelities=[0]))
    assert res["unchecked"] == [cheap.number] and res["best"]["trial"] == safe.number
    assert res["first_pick"] == safe.number and "timeout_s" in res["check_note"]
