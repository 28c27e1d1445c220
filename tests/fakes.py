"""Fakes for the search tests: a deterministic per-image evaluator, a fake energy model and space, and the
SearchContext built from them (the run loop, storage, seeding and workers stay real; only the model is fake).

``ctx_factory`` is the picklable context factory spawned workers call: tests put their context in ``_CTX["ctx"]``.
"""
from __future__ import annotations

import numpy as np

from dse.arith.multipliers import axbxp_name
from dse.search.space import SearchSpace
from dse.search.study import SearchContext, SearchSettings

LAYERS = ["conv1", "conv2", "fc1", "fc2", "fc3"]
# fake multipliers: (flip probability per layer, energy saving per layer)
MULTS = {"exact": (0.0, 0.0), "drum6": (0.001, 0.04), "mitchell": (0.004, 0.08), "perf_2_2": (0.02, 0.12),
         axbxp_name(2, 2, 2, "static"): (0.3, 0.16)}


class FakeEvaluator:
    """Per-image correctness: exact is right on ~90 % of images; each approximate layer flips right->wrong with its
    probability (cv halves it) using a fixed per-image uniform, so results are deterministic and paired."""

    def __init__(self, n=3000, seed=0, interrupt_after=None):
        r = np.random.default_rng(seed)
        self.exact = r.random(n) < 0.9
        self.u = r.random(n)
        self.n_images = n
        self.calls = 0
        self.images = 0
        self.interrupt_after = interrupt_after

    def p_flip(self, config):
        p = 0.0
        for lc in config.values():
            q = MULTS[lc.multiplier][0] * (0.5 if lc.cv else 1.0)
            p = 1 - (1 - p) * (1 - q)
        return p

    def correct(self, config, start, stop):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        self.images += stop - start
        return self.exact[start:stop] & (self.u[start:stop] >= self.p_flip(config))


def fake_energy(config):
    save = sum(MULTS[lc.multiplier][1] - (0.01 if lc.cv else 0.0) for lc in config.values())
    e = 1.0 - save / len(LAYERS)
    return {"system": e, "multiplier": e ** 2, "latency": 1.0,
            "components": {"multiplier": {"exact": 0.5, "config": 0.5 * e ** 2}, "sram": {"exact": 0.5, "config": 0.5}}}


def fake_space(cv=(False, True)):
    return SearchSpace.build(LAYERS, sorted(MULTS), cv=list(cv), pin_first_last=True)


def make_ctx(n=3000, interrupt_after=None, sensitivity=True):
    space = fake_space()
    ev = FakeEvaluator(n, 0, interrupt_after)
    hold = FakeEvaluator(1000, 1)
    def sens(layer, lc):
        return FakeEvaluator(n, 0).p_flip({layer: lc}) * 0.9
    return SearchContext(space=space, evaluator=ev, holdout=hold, energy=fake_energy,
                         sensitivity=sens if sensitivity else None,
                         baseline={"float": {"search": 0.91, "holdout": 0.905}}, info={"model": "fake"})


class FixedPredictor:
    """A predictor with the objective's interface (dse.predict.PredictorGate) that always predicts ``fn(config)``
    and is always on; it records the points it is told about."""

    def __init__(self, fn):
        from dse.predict import GateState

        self.fn, self.points = fn, {}
        self.state = GateState("fixed", 0, None, True, {})

    def observe(self, points):
        self.points.update({k: (c, loss) for k, c, loss in points})
        return None

    def predicted(self, config):
        return self.fn(config)

    def worth_predicting(self, config):
        return True

    gate = predicted


_CTX = {}


def ctx_factory():
    return _CTX["ctx"]


def settings_(**kw):
    base = dict(budget_loss=0.01, n_trials=25, seed=1, fidelities=[300, 1000, 0])
    base.update(kw)
    return SearchSettings(**base)
