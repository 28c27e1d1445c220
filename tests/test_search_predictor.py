"""The search's predictor-skip with the predictor of better leave-one-out quality (dse.search.context): the logit
surrogate shares its single-layer runs with the knapsack sensitivities, the choice and its gate, and a search with the
surrogate chosen (fake additive-logit network, real surrogate, run loop and storage)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from dse.layer_config import LayerConfig
import optuna

from hypothesis import given, settings
from hypothesis import strategies as st

from dse.predict import (MIN_GATE_POINTS, TRIAL_WINDOW, Candidate, LogitSurrogate, LooQuality, PredictorGate,
                         leave_one_out, prediction_quality, random_configs, spearman, surrogate_candidate)
from dse.present import predictor_line
from dse.search import rundir, seeds
from dse.search.context import Sensitivities, SetupClock, predictor_gate
from dse.search.objective import ATTR_GATE, Objective, _config_key, predictor_record
from dse.search.study import SearchContext, run_search
from tests.fakes import _CTX, MULTS, ctx_factory, fake_energy, fake_space, make_ctx, settings_


class AdditiveLogitNet:
    """Two-class fake network whose logits are exactly additive in the layers' choices (so the first-order surrogate
    is exact): class 0 is right, its margin is the exact logit; each approximate layer adds severity x a fixed
    per-image, per-layer weight to class 1. Counts the network runs and the images they covered."""

    def __init__(self, n=2000, seed=0):
        r = np.random.default_rng(seed)
        self.margin = np.where(r.random(n) < 0.1, -1.0, r.uniform(0.05, 1.0, n))
        self.g = {layer: r.random(n) for layer in fake_space().layers}
        self.labels = np.zeros(n, dtype=int)
        self.n_images, self.runs, self.images = n, 0, 0

    def logits(self, config, start, stop):
        self.runs += 1
        self.images += stop - start
        out = np.zeros((stop - start, 2))
        out[:, 0] = self.margin[start:stop]
        for layer, lc in config.items():
            out[:, 1] += 8 * MULTS[lc.multiplier][0] * (0.5 if lc.cv else 1.0) * self.g[layer][start:stop]
        return out

    def correct(self, config, start, stop):
        return self.logits(config, start, stop).argmax(1) == self.labels[start:stop]


def _surrogate(net, n):
    return LogitSurrogate(lambda c: net.logits(c, 0, n), net.labels[:n])


def test_sensitivities_are_the_surrogates_single_layer_runs():
    net, space = AdditiveLogitNet(), fake_space()
    sur = _surrogate(net, 300)
    sens = Sensitivities(net, 300, SetupClock(None), lambda: len(seeds.candidates(space, fake_energy)), None,
                         surrogate=sur)
    items = seeds.layer_items(space, sens, fake_energy)
    n_items = sum(len(v) for v in items.values())
    assert n_items > 0 and sens.counts["measured"] == n_items
    assert net.runs == 1 + n_items == 1 + sur.measured  # exact once, each single-layer choice once
    for layer, v in items.items():
        for lc, loss, _ in v:  # the measured single-layer accuracy drop on the same images
            exact, approx = net.correct({}, 0, 300), net.correct({layer: lc}, 0, 300)
            assert loss == pytest.approx(exact.mean() - approx.mean(), abs=1e-12)
    runs = net.runs
    cfg = {layer: v[0][0] for layer, v in items.items() if v}
    sur.raw_loss(cfg)
    assert net.runs == runs  # a configuration of measured choices costs no network run


def test_measured_choices_stay_free_past_the_setup_budget():
    net, space = AdditiveLogitNet(), fake_space()
    sur = _surrogate(net, 300)
    lc = space.choices["fc1"].multipliers[1]
    sur.single_loss("fc1", LayerConfig(lc))
    clock = SetupClock(1.0)
    clock.t0 -= 10
    sens = Sensitivities(net, 300, clock, lambda: len(seeds.candidates(space, fake_energy)), None, surrogate=sur)
    runs = net.runs
    items = seeds.layer_items(space, sens, fake_energy)
    assert net.runs == runs and sens.counts["measured"] == 1
    assert [x[0] for x in items["fc1"]] == [LayerConfig(lc)] and items["conv2"] == []


def _cfgs(space, n, seed):
    return [space.config_from_params(space.params_from_config(c))
            for c in random_configs(space.searchable, list(MULTS), n, seed=seed)]


def _gate_on_fit_set(net, space, n_fit=600, n=10):
    sur = _surrogate(net, n_fit)
    cfgs = [{}] + _cfgs(space, n, 3)
    accs = [float(net.correct(c, 0, n_fit).mean()) for c in cfgs]
    return sur, predictor_gate([surrogate_candidate(sur)], sur, cfgs, accs, n_fit)


def test_gate_keeps_the_surrogate_where_it_is_exact():
    net, space = AdditiveLogitNet(), fake_space()
    _, (gate, estimate, info) = _gate_on_fit_set(net, space)
    # additive logits: the first-order surrogate is exact, the AME (fake multipliers have no table) cannot predict
    assert info["kind"] == "logit surrogate" and info["active"] and "disabled" not in info, info
    assert info["loo_mean_error"] < 1e-9 and estimate is None
    cfg = _cfgs(space, 1, 9)[0]
    true = net.correct({}, 0, 600).mean() - net.correct(cfg, 0, 600).mean()
    assert gate.predicted(cfg) == pytest.approx(true, abs=1e-9)


class Candidates:
    """Fault injection: a candidate that predicts the true loss of the configurations it was fitted on and noise for
    every other one (it memorised its fit set); the gate must switch it off once trials show that."""

    def __init__(self, truth, fit_keys):
        self.truth, self.fit_keys, self.rng = truth, fit_keys, np.random.default_rng(0)

    def candidate(self):
        def features(c):
            key = _config_key(c)
            return np.array([self.truth(c) if key in self.fit_keys else self.rng.uniform(0.0, 0.3)])

        def fit(X, y):
            return lambda f: float(f[0])
        return Candidate("memoriser", features, fit, lambda X, y: leave_one_out(fit, X, y))


def test_gate_switches_off_a_predictor_that_fails_on_trials_and_the_search_stops_skipping():
    ctx = make_ctx()
    space, ev = ctx.space, ctx.evaluator
    exact = ev.correct({}, 0, ev.n_images)
    truth = lambda c: float(exact.mean() - ev.correct(c, 0, ev.n_images).mean())  # noqa: E731
    fit_cfgs = [{}] + _cfgs(space, 12, 5)
    fault = Candidates(truth, {_config_key(c) for c in fit_cfgs})
    gate = PredictorGate([fault.candidate()])
    assert gate.observe([(("fit", i), c, truth(c)) for i, c in enumerate(fit_cfgs)]) is not None
    assert gate.state.active and gate.state.quality.mean_error == 0.0   # perfect on what it memorised
    obj = Objective(space, ev, fake_energy, 0.01, predictor=gate, predictor_skip=2.0, fidelities=[0],
                    predictor_max_share=math.inf)   # the fake's trials take no time: the gate's logic, not its cost
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(obj, n_trials=60)
    trials = study.trials
    off = [t.number for t in trials if "predictor off" in t.user_attrs.get(ATTR_GATE, "")]
    assert off, "the gate never switched the noisy predictor off"
    skipped = [t.number for t in trials if t.user_attrs.get("skipped") == "predictor"]
    assert skipped and max(skipped) < off[0] <= len(trials) - 10   # it skipped while on, never after
    assert not gate.state.active and "predictor off" in gate.state.line()
    # every full-fidelity trial became a refit point
    assert gate.state.points == len(fit_cfgs) + sum(1 for t in trials if t.user_attrs.get("full")
                                                  and "duplicate_of" not in t.user_attrs
                                                  and t.number < trials[-1].number)


def test_gate_switches_on_once_enough_good_points_arrive():
    net, space = AdditiveLogitNet(), fake_space()
    sur = _surrogate(net, 600)
    truth = lambda c: float(net.correct({}, 0, 600).mean() - net.correct(c, 0, 600).mean())  # noqa: E731
    gate = PredictorGate([surrogate_candidate(sur)])
    cfgs = _cfgs(space, 20, 4)
    lines = [gate.observe([(i, c, truth(c))]) for i, c in enumerate(cfgs)]
    first_on = next(i for i, s in enumerate(lines) if s)
    assert first_on + 1 == MIN_GATE_POINTS and "predictor on" in lines[first_on]   # on at the first verdict
    assert gate.gate(cfgs[0]) == pytest.approx(truth(cfgs[0]), abs=1e-9)
    noisy = np.random.default_rng(1)
    for j, c in enumerate(_cfgs(space, 30, 8)):   # measured losses that have nothing to do with the surrogate
        line = gate.observe([(100 + j, c, noisy.uniform(0, 0.3))])
        if line:
            break
    assert line and "predictor off" in line and gate.gate(cfgs[0]) is None


def test_search_with_the_surrogate_skips_predicted_infeasible_never_seeds(tmp_path):
    net, space = AdditiveLogitNet(), fake_space()
    n_fit = 600
    sur, (predict, _, info) = _gate_on_fit_set(net, space, n_fit)
    assert info["kind"] == "logit surrogate" and info["active"], info
    hold = AdditiveLogitNet(1000, seed=1)
    _CTX["ctx"] = SearchContext(space=space, evaluator=net, holdout=hold, energy=fake_energy, predictor=predict,
                                sensitivity=Sensitivities(net, n_fit, SetupClock(None), lambda: 0, None,
                                                          surrogate=sur),
                                baseline={"float": {"search": 0.9, "holdout": 0.9}}, info={"predictor": info})
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_loss_pp = 1.0\n")
    s = settings_(n_trials=30, predictor_skip=2.0, seeds=("uniform", "knapsack"), predictor_max_share=math.inf)
    res = run_search(budget, s, ctx_factory, run_dir=tmp_path / "run", progress=False)
    assert res["info"]["predictor"]["kind"] == "logit surrogate" and res["trials"]["skipped_predictor"] > 0
    rec = res["trials"]["predictor_record"]   # which predictor predicted the trials, and how well, measured on them
    assert rec["used"] == {"logit surrogate": sum(rec["used"].values())} and rec["on"] > 0
    assert rec["measured"] >= MIN_GATE_POINTS and rec["spearman"] > 0.5 and rec["passes"] is not None
    assert f"Spearman {rec['spearman']:.2f}" in predictor_line(res["info"]["predictor"], res["trials"])
    # the gate's own time, measured inside every trial it ran before, is part of those trials' time
    assert 0 < rec["seconds"] < rec["trial_seconds"]
    assert f"the predictor took {rec['seconds']:.1f} s" in predictor_line(res["info"]["predictor"], res["trials"])
    study = rundir.load_study(tmp_path / "run")
    exact = net.correct({}, 0, net.n_images)
    seed_predicted_over = 0
    for t in study.trials:
        cfg = space.config_from_params(t.params)
        over = predict.predicted(cfg) > s.predictor_skip * s.budget_loss
        if t.user_attrs.get("seed"):
            assert t.user_attrs.get("skipped") != "predictor" and t.user_attrs["images"] > 0
            seed_predicted_over += over
        elif t.user_attrs.get("skipped") == "predictor":
            assert over and t.user_attrs["images"] == 0
            true_loss = exact.mean() - net.correct(cfg, 0, net.n_images).mean()
            assert true_loss > s.budget_loss  # what it skipped was infeasible
    assert seed_predicted_over > 0  # some seed was predicted infeasible and still emulated


def test_provisional_set_up_points_give_way_to_the_searchs_own():
    net, space = AdditiveLogitNet(), fake_space()
    sur = _surrogate(net, 600)
    truth = lambda c: float(net.correct({}, 0, 600).mean() - net.correct(c, 0, 600).mean())  # noqa: E731
    gate = PredictorGate([surrogate_candidate(sur)])
    noisy = np.random.default_rng(2)
    gate.observe([(("fit", i), c, noisy.uniform(0, 0.3)) for i, c in enumerate(_cfgs(space, 12, 6))],
                 provisional=True)
    assert not gate.state.active and gate.state.points == 12    # set-up points that fit nothing: off
    lines = [gate.observe([(i, c, truth(c))]) for i, c in enumerate(_cfgs(space, MIN_GATE_POINTS, 7))]
    assert lines[-1] and "predictor on" in lines[-1] and not any(lines[:-1])
    assert gate.state.points == MIN_GATE_POINTS and gate.state.quality.mean_error < 1e-9


class Optimist:
    """Fault injection: a candidate whose own quality estimate is perfect whatever it predicts (its predictions are
    noise); only the gate's record of its predictions on later trials can show that."""

    def __init__(self):
        self.rng = np.random.default_rng(3)

    def candidate(self):
        def fit(X, y):
            return lambda f: float(f[0])
        return Candidate("optimist", lambda c: np.array([self.rng.uniform(0.0, 0.3)]), fit,
                         lambda X, y: LooQuality(1.0, 0.0, 0.0))


def test_the_record_on_trials_switches_off_a_predictor_whose_own_quality_estimate_is_wrong():
    net, space = AdditiveLogitNet(), fake_space()
    truth = lambda c: float(net.correct({}, 0, 600).mean() - net.correct(c, 0, 600).mean())  # noqa: E731
    gate = PredictorGate([Optimist().candidate()])
    cfgs = _cfgs(space, 40, 11)
    lines = [gate.observe([(i, c, truth(c))]) for i, c in enumerate(cfgs)]
    on = [i for i, s in enumerate(lines) if s and "predictor on" in s]
    off = [i for i, s in enumerate(lines) if s and "predictor off" in s]
    assert on == [MIN_GATE_POINTS - 1]   # its claimed quality switches it on at the first verdict ...
    # ... until MIN_GATE_POINTS of its predictions, made after the fit stood on these points, were measured
    assert off == [2 * MIN_GATE_POINTS - 1], lines
    assert not gate.state.active and gate.gate(cfgs[0]) is None
    r = gate.state.record
    assert r is not None and not r.good_enough and gate.state.quality.good_enough
    assert "predicted before measuring" in gate.state.line()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(MIN_GATE_POINTS, 40))
def test_the_gate_record_scores_exactly_what_it_predicted_before_each_point(seed, n):
    """The record: the latest TRIAL_WINDOW points observed once the fit stood on the search's own points, each against
    the gate's prediction just before it was observed (several points in one observe call included)."""
    rng = np.random.default_rng(seed)
    cand = Candidate("linear", lambda c: np.array([c["x"]]), lambda X, y: (lambda f, m=np.polyfit(X[:, 0], y, 1):
                                                                           float(np.polyval(m, f[0]))),
                     lambda X, y: leave_one_out(lambda a, b: (lambda f, m=np.polyfit(a[:, 0], b, 1):
                                                              float(np.polyval(m, f[0]))), X, y))
    gate = PredictorGate([cand])
    xs = rng.uniform(0, 1, n + 10)
    ys = 0.05 * xs + rng.normal(0, 0.01, xs.size)
    gate.observe([(("fit", i), {"x": x}, y) for i, (x, y) in enumerate(zip(xs[:10], ys[:10]))], provisional=True)
    own, scored = 0, []
    i = 10
    while i < xs.size:
        k = int(rng.integers(1, 4))
        batch = list(range(i, min(i + k, xs.size)))
        before = [gate.predicted({"x": xs[j]}) for j in batch]
        own_fit = own >= MIN_GATE_POINTS
        gate.observe([(j, {"x": xs[j]}, ys[j]) for j in batch])
        if own_fit:
            scored += [(p, ys[j]) for p, j in zip(before, batch)]
        own += len(batch)
        i += len(batch)
    last = scored[-TRIAL_WINDOW:]
    want = prediction_quality([p for p, _ in last], [y for _, y in last])
    assert gate.state.record == want
    assert gate.state.record_points == (len(last) if want is not None else gate.state.record_points)
    if want is not None:
        assert gate.state.active == (gate.state.quality.good_enough and want.good_enough)


def _trial(**ua):
    return optuna.trial.create_trial(value=0.0, user_attrs=ua)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.2), st.floats(-0.01, 0.3), st.booleans(), st.booleans(),
                          st.sampled_from(["AME", "logit surrogate"]), st.booleans()), min_size=0, max_size=30))
def test_predictor_record_scores_full_fidelity_trials_against_their_recorded_predictions(rows):
    trials = [_trial(predicted_loss=p, loss=y, full=full, predictor={"kind": k, "active": on},
                     **({"duplicate_of": 0} if dup else {}))
              for i, (p, y, full, dup, k, on) in enumerate(rows)]
    r = predictor_record(trials)
    pairs = [(p, y) for p, y, full, dup, _, _ in rows if full and not dup]
    own = [row for row in rows if not row[3]]   # re-proposals carry their original's prediction: not counted
    assert r["measured"] == len(pairs) and r["on"] == sum(row[5] for row in own)
    assert r["used"] == {k: sum(row[4] == k for row in own) for k in {row[4] for row in own}}
    if len(pairs) < MIN_GATE_POINTS:
        assert r["spearman"] is None and r["passes"] is None
    else:
        p, y = np.array(pairs).T
        assert r["mean_error"] == pytest.approx(np.mean(np.abs(p - y)))
        want = spearman(p, y)
        assert (np.isnan(want) and np.isnan(r["spearman"])) or r["spearman"] == pytest.approx(want)
        assert r["passes"] == (r["spearman"] >= 0.9 and r["mean_error"] <= 0.005)


def _linear_candidate():
    def fit(X, y):
        m = np.polyfit(X[:, 0], y, 1)
        return lambda f: float(np.polyval(m, f[0]))
    return Candidate("linear", lambda c: np.array([c["x"]]), fit, lambda X, y: leave_one_out(fit, X, y))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_the_gate_judges_its_predictors_on_the_losses_within_its_focus(seed):
    """Points far beyond the skip line follow another relation (a predictor that ranks them wrongly still puts them
    all over the line): with a focus the gate fits and judges on the points within it and stays on; without, the far
    points switch it off."""
    rng = np.random.default_rng(seed)
    near = [({"x": x}, 0.01 * x + rng.normal(0, 2e-4)) for x in rng.uniform(0, 3, 20)]
    far = [({"x": x}, 0.9 - 0.1 * x + rng.normal(0, 2e-4)) for x in rng.uniform(4, 8, 20)]
    stream = [p for pair in zip(near, far) for p in pair]
    gates = {f: PredictorGate([_linear_candidate()], focus=f) for f in (None, 0.04)}
    for g in gates.values():
        for i, (c, y) in enumerate(stream):
            g.observe([(i, c, y)])
    focused, plain = gates[0.04], gates[None]
    assert focused.state.active and focused.state.points == len(near)
    # the record: in-focus points predicted by fits on in-focus points (after the first MIN_GATE_POINTS of them)
    assert focused.state.record is not None and focused.state.record_points == len(near) - MIN_GATE_POINTS
    assert focused.predicted({"x": 2.0}) == pytest.approx(0.02, abs=2e-3)
    assert not plain.state.active and plain.state.points == len(stream)
    # fewer in-focus points than MIN_GATE_POINTS: it fits on all of them, as without a focus
    few = PredictorGate([_linear_candidate()], focus=0.04)
    few.observe([(i, c, y) for i, (c, y) in enumerate(near[:MIN_GATE_POINTS - 1] + far)])
    assert few.state.points == MIN_GATE_POINTS - 1 + len(far) and not few.state.active


def test_the_search_gate_focus_is_twice_its_skip_line():
    from dse.predict import GATE_FOCUS
    from dse.search.context import gate_focus

    s = settings_(predictor_skip=2.0)
    assert gate_focus(s) == pytest.approx(GATE_FOCUS * 2.0 * s.budget_loss) and GATE_FOCUS == 2.0


def test_the_propagated_surrogate_build_stops_at_the_deadline_within_a_batch(tmp_path, monkeypatch):
    """The search's deadline passes during the first batch of the propagated surrogate's build (its all-exact run on
    the set-up's 300 images, two batches): no second batch runs, the gate chooses between the other candidates, the
    set-up says so, and the run ends with its results and no trial."""
    from dse.predict import PropagatedSurrogate
    from dse.search.context import PROPAGATED_CUT, search_from_budget
    from dse.search.deadline import Deadline

    made: list = []
    after = Deadline.after.__func__
    monkeypatch.setattr(Deadline, "after", classmethod(lambda cls, s: made.append(after(cls, s)) or made[-1]))
    batches: list[int] = []
    init = PropagatedSurrogate.__init__

    def slow_build(self, emulator, x, *a, **kw):
        run = emulator.run

        def first_batch_passes_the_deadline(xb, *ra, **rkw):
            batches.append(len(xb))
            made[0].at = time.time()
            return run(xb, *ra, **rkw)
        emulator.run = first_batch_passes_the_deadline
        try:
            init(self, emulator, x, *a, **kw)
        finally:
            del emulator.run
    monkeypatch.setattr(PropagatedSurrogate, "__init__", slow_build)
    b = tmp_path / "b.toml"
    b.write_text("[data]\nimages = 600\n[search]\nworkers = 1\nn_trials = 2\nracing = [0]\ntimeout_s = 600\n"
                 "[space]\nmultipliers = ['drum4']\ncv = [false]\n")
    res = search_from_budget(str(b), run_dir=tmp_path / "run")
    assert batches == [256]
    assert PROPAGATED_CUT in res["info"]["predictor"]["setup_budget"]
    assert "propagated surrogate" not in res["info"]["predictor"]["candidates"]
    assert res["trials"]["complete"] == 0 and res["best"] is None and res["no_best"]


def test_a_costly_candidate_gets_features_on_its_schedule_and_of_what_it_predicted():
    """A candidate whose features need network runs (``at_hand``) is computed on every set-up point, every trial
    while it has fewer than COSTLY_WARMUP, then every COSTLY_EVERY-th trial and every trial it predicted before it
    was measured; a cheap candidate on every point."""
    from dse.predict import COSTLY_EVERY, COSTLY_WARMUP

    calls = {"cheap": [], "costly": []}
    seen: set = set()

    def make(kind, at_hand, off):
        def features(c):   # the costly one keeps what it computed, as the surrogates do
            if kind == "cheap" or c["x"] not in seen:
                calls[kind].append(c["x"])
            if kind == "costly":
                seen.add(c["x"])
            return np.array([0.01 * c["x"]])
        fit = lambda X, y: (lambda f: float(f[0]) if off is None else off)  # noqa: E731
        return Candidate(kind, features, fit, lambda X, y: leave_one_out(fit, X, y), at_hand)
    costly = make("costly", lambda c: c["x"] in seen, 0.0)   # a constant: never kept by itself
    gate = PredictorGate([make("cheap", None, None), costly])
    gate.observe([(("fit", i), {"x": -1.0 - i}, -0.01 * (1 + i)) for i in range(3)], provisional=True)
    n = COSTLY_WARMUP + 5 * COSTLY_EVERY
    for i in range(n):
        if i == n - 2:
            gate._best, gate._model = costly, (lambda f: 0.0)   # kept: its prediction computes the features
            assert gate.predicted({"x": float(i)}) == 0.0
        gate.observe([(i, {"x": float(i)}, 0.01 * i)])
    assert gate.state.kind == "cheap" and set(calls["cheap"]) == {-1.0, -2.0, -3.0} | set(map(float, range(n)))
    want = list(range(COSTLY_WARMUP)) + [i for i in range(COSTLY_WARMUP, n) if i % COSTLY_EVERY == 0 or i == n - 2]
    assert calls["costly"] == [-1.0, -2.0, -3.0] + [float(i) for i in want]
    rows = gate._rows["costly"][3:]
    assert [i for i, r in enumerate(rows) if r is not None] == want


class _Slow:
    """The fake evaluator taking ``seconds`` per call (a trial's emulation time that the gate's can be set against)."""

    def __init__(self, ev, seconds):
        self.ev, self.seconds, self.n_images = ev, seconds, ev.n_images

    def correct(self, config, start, stop):
        time.sleep(self.seconds)
        return self.ev.correct(config, start, stop)


def test_a_gate_slower_than_its_share_of_the_trials_sits_out_trials_and_the_report_says_so():
    """Fault injection: a predictor whose every prediction takes longer than a trial. The gate runs before a trial
    only while its time is within [search] predictor_max_share of the trials' own (nothing skipped, so nothing saved):
    it sits out most trials, its time stays within the share plus one call, and the record says how many it sat out."""
    from dse.present import cost_line
    from dse.search.objective import ATTR_PAUSED, ATTR_PREDICTOR_S
    from dse.search.study import irreproducible

    ctx = make_ctx()
    ev = _Slow(ctx.evaluator, 0.004)

    def features(c):
        time.sleep(0.03)
        return np.array([0.0])
    slow = Candidate("slow", features, lambda X, y: (lambda f: 0.0), lambda X, y: LooQuality(0.5, 0.0, 0.0))
    gate = PredictorGate([slow])
    share = 0.2
    obj = Objective(ctx.space, ev, fake_energy, 0.01, predictor=gate, predictor_skip=2.0, fidelities=[0],
                    predictor_max_share=share)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(obj, n_trials=40)
    ua = [t.user_attrs for t in study.trials]
    ran, paused = sum(ATTR_PREDICTOR_S in a for a in ua), sum(bool(a.get(ATTR_PAUSED)) for a in ua)
    assert ran + paused == len(ua) and ran >= 2 and paused > len(ua) / 2
    a = obj.allowance
    assert a.skipped == 0 and a.gate_s <= share * a.trial_s + max(a[ATTR_PREDICTOR_S] for a in ua if ATTR_PREDICTOR_S in a)
    rec = predictor_record(study.trials)
    assert rec["paused"] == paused and f"sat out {paused} trials" in cost_line(rec)
    # which trials it sat out depends on timing: a one-process run saying it is reproducible would be a false promise
    why = irreproducible(1, rec["paused"])
    assert why and "sat out trials" in why and "predictor_max_share = inf" in why
    # the same gate with an allowance it cannot reach runs before every trial
    fast = Objective(ctx.space, ev, fake_energy, 0.01, predictor=PredictorGate([slow]), predictor_skip=2.0,
                     fidelities=[0], predictor_max_share=math.inf)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(fast, n_trials=10)
    assert predictor_record(study.trials)["paused"] == 0 and "sat out" not in cost_line(predictor_record(study.trials))
    assert irreproducible(1, 0) is None and "2 processes" in irreproducible(2, 0)


def test_the_gate_skips_saved_count_towards_its_allowance():
    from dse.search.objective import GateAllowance

    a = GateAllowance(0.1)
    a.ran(1.0, skipped=True)
    assert a.allows()                       # nothing measured yet: no trial time to bound it by
    a = GateAllowance(0.1)
    a.ran(1.0, skipped=False)
    a.trial(5.0)
    assert not a.allows()                   # 1 s so far + 1 s expected (its latest run) against 0.1 x 5 s
    a.trial(5.0)
    assert not a.allows()                   # 2 s against 0.1 x 10 s
    a.trial(10.0)
    assert a.allows()                       # 2 s against 0.1 x 20 s
    a.ran(2.0, skipped=True)                # a skip saves a trial of the mean measured time, 20 / 3 s
    assert a.allows() and (a.gate_s, a.skipped) == (3.0, 1)   # 3 + 2 s against 2 + 6.67 s
    a.ran(3.0, skipped=False)
    assert not a.allows()                   # 6 + 3 s against 8.67 s
    assert GateAllowance(math.inf).allows()
    b = GateAllowance(math.inf)               # [search] predictor_max_share = inf: no bound
    b.ran(100.0, skipped=False)
    b.trial(0.0)                            # a trial too quick for the clock: inf x 0 s must not read as no allowance
    assert b.allows()
    b.trial(1.0)
    assert b.allows()


class _Flapper:
    """A candidate whose leave-one-out quality passes the bar on the refits listed in ``passes`` (by points so far)
    and fails on the others; its predictions are the measured losses themselves, so its record always passes."""

    def __init__(self, passes):
        self.passes = passes

    def candidate(self):
        good, bad = LooQuality(1.0, 0.0, 0.0), LooQuality(0.5, 0.02, 0.05)
        return Candidate("flapper", lambda c: np.array([c["loss"]]), lambda X, y: (lambda f: float(f[0])),
                         lambda X, y: good if self.passes(len(y)) else bad)


@pytest.mark.parametrize("hold", [5, 3])
def test_a_gate_whose_quality_hovers_at_the_bar_does_not_flap(hold):
    """Fault injection: a quality alternating above and below the bar at every point. Without hysteresis the gate
    switched at every point; with it, it switches off at the first failure and comes back only after ``hold``
    passing refits in a row, never while the bar fails."""
    from dse.predict import GATE_HOLD

    assert GATE_HOLD >= 3
    n = 60
    pattern = lambda k: k < 12 or (k % 2 == 0 and k < 40) or k >= 40   # noqa: E731
    gate = PredictorGate([_Flapper(pattern).candidate()], hold=hold)
    lines, states = [], []
    for i in range(n):
        lines.append(gate.observe([(i, {"loss": 0.001 * i}, 0.001 * i)]))
        states.append(gate.state.active)
        if gate.state.active:
            assert gate.state.quality.good_enough and gate.gate({"loss": 0.0}) is not None   # never on below the bar
    # the refit after point i stands on i + 1 points: on at the first verdict, off at the first failure (13 points),
    # on again once it passed on ``hold`` refits in a row (from 40 points on), never in between
    switches = [i for i, s in enumerate(lines) if s]
    assert switches == [MIN_GATE_POINTS - 1, 12, 38 + hold], (switches, lines)
    assert not any(states[12:38 + hold]) and all(states[38 + hold:])
    assert "held off since it switched off" in gate_line_at(pattern, hold, 41)


def gate_line_at(pattern, hold, n):
    gate = PredictorGate([_Flapper(pattern).candidate()], hold=hold)
    for i in range(n):
        gate.observe([(i, {"loss": 0.001 * i}, 0.001 * i)])
    return gate.state.line()


def test_points_observed_at_once_cost_at_most_one_costly_run():
    """After the gate sat out trials it observes their points at once: a candidate whose features need network runs
    gets those of the latest only (one run per refit), a cheap one those of every point."""
    runs = []

    def costly(c):
        runs.append(c["x"])
        return np.array([c["x"]])
    fit = lambda X, y: (lambda f: float(f[0]))  # noqa: E731
    gate = PredictorGate([Candidate("cheap", lambda c: np.array([c["x"]]), fit, lambda X, y: leave_one_out(fit, X, y)),
                          Candidate("costly", costly, fit, lambda X, y: leave_one_out(fit, X, y), lambda c: False)])
    gate.observe([(i, {"x": 0.01 * i}, 0.01 * i) for i in range(6)])
    assert runs == [0.05] and [r is None for r in gate._rows["costly"]] == [True] * 5 + [False]
    assert all(r is not None for r in gate._rows["cheap"])


@pytest.mark.parametrize("hand", [True, False])
def test_the_gate_averages_the_candidates_its_search_cannot_tell_apart(hand):
    """The gate's prediction is the kept candidate's averaged with those as good enough as it and within ``ensemble``
    of its leave-one-out Spearman whose features are at hand; 0: the kept candidate alone."""
    def cand(kind, rho, value, at_hand=None):
        return Candidate(kind, lambda c: np.array([c["loss"]]), lambda X, y: (lambda f: value),
                         lambda X, y: LooQuality(rho, 0.001, 0.002), at_hand)

    def gate(ensemble):
        g = PredictorGate([cand("a", 0.95, 0.01), cand("b", 0.90, 0.03), cand("c", 0.80, 0.5),
                           cand("d", 0.93, 0.08, lambda c: hand), cand("e", 0.95, 0.2)], ensemble=ensemble)
        for i in range(MIN_GATE_POINTS):
            g.observe([(i, {"loss": 0.001 * i}, 0.001 * i)])
        return g
    alone = gate(0.0)
    assert alone.predicted({"loss": 0.0}) == pytest.approx(0.01) and alone.state.kind == "a"   # not even e
    both = [0.01, 0.03, 0.2] + ([0.08] if hand else [])   # d only while its features are at hand; e ties a
    assert gate(0.1).predicted({"loss": 0.0}) == pytest.approx(np.mean(both))
    assert gate(0.3).predicted({"loss": 0.0}) == pytest.approx(np.mean(both))   # c: not good enough, never averaged
    on = gate(0.1)
    assert on.state.active and on.gate({"loss": 0.0}) == pytest.approx(max(np.mean(both) - 0.002, 0.0))
