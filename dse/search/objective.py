"""The Optuna objective: sample a configuration, energy from the injected energy model, accuracy loss by racing.

Narrow injected interfaces (so tests use fakes):

* ``evaluator.correct(config, start, stop) -> bool[stop - start]``: per-image correctness of ``config`` on images
  ``start:stop`` of the (shuffled) search split; ``evaluator.n_images``: size of the split.
* ``energy(config) -> {"system", "multiplier", "latency", optional "components": {name: {"exact", "config"}},
  optional "layers"}``: relative to all-exact FxP8 (components and layers as fractions of the all-exact network).
* ``predictor(config) -> predicted loss (fraction)`` or None.

Every return path sets the constraint ``accuracy_loss = loss - budget`` (feasible when <= 0) before returning, including
trials stopped early by the race, trials skipped by the predictor, duplicates and trials that raise.
"""
from __future__ import annotations

import json
import os

import numpy as np
import optuna
from optuna.trial import TrialState

from dse.layer_config import config_to_dict
from dse.search.racing import race
from dse.search.space import SearchSpace

CONSTRAINT = "accuracy_loss"


def _config_key(config: dict) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)


class Objective:
    """Callable objective. ``mode``: "constrained" (minimise relative system energy) or "pareto" (energy, loss)."""

    def __init__(self, space: SearchSpace, evaluator, energy, budget_loss: float, mode: str = "constrained",
                 fidelities=(500, 2000, 0), confidence: float = 0.95, predictor=None, predictor_skip: float = 2.0):
        self.space, self.evaluator, self.energy = space, evaluator, energy
        self.budget_loss, self.mode = float(budget_loss), mode
        self.fidelities, self.confidence = list(fidelities), confidence
        self.predictor, self.predictor_skip = predictor, predictor_skip
        self._exact = None
        self._cache: dict[str, dict] = {}
        self._constrained: set[int] = set()

    @property
    def correct_exact(self) -> np.ndarray:
        """FxP8-exact per-image correctness on the whole search split (computed once)."""
        if self._exact is None:
            self._exact = np.asarray(self.evaluator.correct({}, 0, self.evaluator.n_images), dtype=bool)
        return self._exact

    def _values(self, energy: dict, loss: float):
        return float(energy["system"]) if self.mode == "constrained" else (float(energy["system"]), float(loss))

    def _finish(self, trial, attrs: dict):
        attrs = dict(attrs, pid=os.getpid())
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        trial.set_constraint(CONSTRAINT, float(attrs["loss"]) - self.budget_loss)
        self._constrained.add(trial.number)
        return self._values(attrs["energy"], attrs["loss"])

    def _previous(self, trial, key: str) -> dict | None:
        """Result of an identical configuration already evaluated (this process or any worker of the study)."""
        if key in self._cache:
            return dict(self._cache[key])
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            ua = t.user_attrs
            if "loss" in ua and "duplicate_of" not in ua and json.dumps(ua.get("config"), sort_keys=True) == key:
                prev = {k: v for k, v in ua.items() if k not in ("seed", "pid")}
                return dict(prev, duplicate_of=t.number)
        return None

    def __call__(self, trial: optuna.Trial):
        try:
            config = self.space.suggest(trial)
            key = _config_key(config)
            prev = self._previous(trial, key)
            if prev is not None:
                return self._finish(trial, prev)
            energy = dict(self.energy(config))
            attrs = {"config": config_to_dict(config), "energy": energy}
            # enqueued seeds (all exact, uniform, knapsack) are always emulated: they anchor the search
            if self.predictor is not None and self.predictor_skip and not trial.user_attrs.get("seed"):
                pred = float(self.predictor(config))
                attrs["predicted_loss"] = pred
                if pred > self.predictor_skip * self.budget_loss:
                    attrs.update(loss=pred, skipped="predictor", images=0)
                    return self._finish(trial, attrs)
            exact = self.correct_exact
            res = race(lambda a, b: self.evaluator.correct(config, a, b), exact, self.budget_loss,
                       self.fidelities, self.confidence)
            attrs.update(accuracy=res.stats.acc, accuracy_exact=res.stats.acc_exact, loss=res.loss,
                         loss_se=res.stats.se, images=res.images, full=not res.stopped,
                         stages=[list(s) for s in res.stages])
            if res.stopped:
                attrs["skipped"] = "racing"
            self._cache[key] = dict(attrs, duplicate_of=trial.number)
            return self._finish(trial, attrs)
        except BaseException as exc:
            # failed trial: still record an (infeasible) constraint, then let Optuna mark it FAIL / stop
            if trial.number not in self._constrained:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:300])
                trial.set_constraint(CONSTRAINT, 1.0 - self.budget_loss)
            raise
