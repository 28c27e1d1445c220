"""The search's predictor-skip with the predictor of better leave-one-out quality (dse.search.context): the logit
surrogate shares its single-layer runs with the knapsack sensitivities, the choice and its gate, and a search with the
surrogate chosen (fake additive-logit network, real surrogate, run loop and storage)."""
from __future__ import annotations

import numpy as np
import pytest

from dse.layer_config import LayerConfig
from dse.predict import LogitSurrogate, LooQuality, random_configs
from dse.search import rundir, seeds
from dse.search.context import FittedPredictor, Sensitivities, SetupClock, choose_predictor, fit_surrogate
from dse.search.study import SearchContext, run_search
from tests.fakes import _CTX, MULTS, ctx_factory, fake_energy, fake_space, settings_


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


def _fit(kind, spearman, mean_error, loss=0.0):
    return FittedPredictor(kind, 11, LooQuality(spearman, mean_error, 2 * mean_error), lambda c: loss, {})


def test_choose_predictor_keeps_the_better_and_gates_it():
    predict, estimate, info = choose_predictor([_fit("AME", 0.78, 0.043, 0.1), _fit("logit surrogate", 0.99, 0.002,
                                                                                   0.2)], 300)
    assert info["kind"] == "logit surrogate" and info["loo_spearman"] == 0.99 and "disabled" not in info
    assert predict({}) == pytest.approx(0.2 - 0.004) and estimate is None  # AME not good enough: no estimate
    assert set(info["candidates"]) == {"AME", "logit surrogate"}
    predict, estimate, info = choose_predictor([_fit("AME", 0.95, 0.003, 0.1), _fit("logit surrogate", 0.5, 0.001)],
                                               300)
    assert info["kind"] == "AME" and predict({}) == pytest.approx(0.1 - 0.006) and estimate({}) == 0.1
    predict, estimate, info = choose_predictor([_fit("AME", 0.6, 0.05), _fit("logit surrogate", 0.8, 0.01)], 300)
    assert predict is None and info["kind"] == "logit surrogate"
    assert "logit surrogate was the better" in info["disabled"]
    assert choose_predictor([None, None], 300)[0] is None


def test_search_with_the_surrogate_skips_predicted_infeasible_never_seeds(tmp_path):
    net, space = AdditiveLogitNet(), fake_space()
    n_fit = 600
    sur = _surrogate(net, n_fit)
    cfgs = [{}] + [space.config_from_params(space.params_from_config(c))
                   for c in random_configs(space.searchable, list(MULTS), 10, seed=3)]
    accs = [float(net.correct(c, 0, n_fit).mean()) for c in cfgs]
    ame = _fit("AME", 0.6, 0.04)  # stands in for a poorly ranking AME: the surrogate must win
    predict, _, info = choose_predictor([ame, fit_surrogate(sur, cfgs, accs)], n_fit)
    assert info["kind"] == "logit surrogate" and predict is not None, info
    hold = AdditiveLogitNet(1000, seed=1)
    _CTX["ctx"] = SearchContext(space=space, evaluator=net, holdout=hold, energy=fake_energy, predictor=predict,
                                sensitivity=Sensitivities(net, n_fit, SetupClock(None), lambda: 0, None,
                                                          surrogate=sur),
                                baseline={"float": {"search": 0.9, "holdout": 0.9}}, info={"predictor": info})
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_loss_pp = 1.0\n")
    s = settings_(n_trials=30, predictor_skip=2.0)
    res = run_search(budget, s, ctx_factory, run_dir=tmp_path / "run", progress=False)
    assert res["info"]["predictor"]["kind"] == "logit surrogate" and res["trials"]["skipped_predictor"] > 0
    study = rundir.load_study(tmp_path / "run")
    exact = net.correct({}, 0, net.n_images)
    seed_predicted_over = 0
    for t in study.trials:
        cfg = space.config_from_params(t.params)
        over = predict(cfg) > s.predictor_skip * s.budget_loss
        if t.user_attrs.get("seed"):
            assert t.user_attrs.get("skipped") != "predictor" and t.user_attrs["images"] > 0
            seed_predicted_over += over
        elif t.user_attrs.get("skipped") == "predictor":
            assert over and t.user_attrs["images"] == 0
            true_loss = exact.mean() - net.correct(cfg, 0, net.n_images).mean()
            assert true_loss > s.budget_loss  # what it skipped was infeasible
    assert seed_predicted_over > 0  # some seed was predicted infeasible and still emulated
