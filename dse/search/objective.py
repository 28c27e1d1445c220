"""The Optuna objective: sample a configuration, energy from the injected energy model, accuracy loss by racing.

Narrow injected interfaces (so tests use fakes):

* ``evaluator.correct(config, start, stop) -> bool[stop - start]``: per-image correctness of ``config`` on images
  ``start:stop`` of the (shuffled) search split; ``evaluator.n_images``: size of the split.
* ``energy(config) -> {"system", "multiplier", "latency", optional "components": {name: {"exact", "config"}},
  optional "layers"}``: relative to all-exact FxP8 (components and layers as fractions of the all-exact network).
* ``predictor``: a gated, refitting loss predictor (dse.predict.PredictorGate) or None: before each trial it is told
  the study's full-fidelity points so far (``observe([(trial number, config, loss)])``, which refits it and returns a
  line when its gate switches on or off, recorded as the trial's ``predictor_gate``, and the state it switched to,
  ``state.active``/``state.kind``, as ``predictor_gate_state``); ``predicted(config)`` (plain,
  recorded as ``predicted_loss``) and ``gate(config)`` (conservative loss the trial is skipped with; None while the
  gate is off); ``state`` (dse.predict.GateState: the kept predictor's ``kind``, ``active``), recorded with the
  prediction as ``predictor``; ``worth_predicting(config)``: whether a prediction is worth its cost while the gate is
  off. The gate's time is bounded by ``predictor_max_share`` (:class:`GateAllowance`): past it, a trial runs without
  the gate (``predictor_paused``).

Every return path sets the constraint ``accuracy_loss = bound - budget`` (feasible when <= 0) before returning,
including trials stopped early by the race, trials skipped by the predictor, duplicates and trials that raise.

Duplicates: a configuration the sampler proposes again is not emulated again; the trial takes over the result of the
study's trial that evaluated it (``duplicate_of``; any process, this run or an earlier one; one still running it in
another process is waited for), so it costs no emulation and its constraint is the original's.
``bound`` (:func:`feasibility_bound`) is ``loss_ucb``, the one-sided upper confidence bound of the paired loss at
``[budget] confidence`` (the predicted loss for predictor-skipped trials), or, for a confirmed trial, the larger of it
and the same bound on the confirmation images; so "feasible" means "within budget with that confidence on the search
images" and, once confirmed, "also on images it was not chosen on".

Confirmation (``confirm``: an evaluator on the search split's confirmation images, dse.search.context.search_split;
None = off): the cheapest configuration within the bound on the search images is the one, of many similar ones
compared on the same images, whose luck on them was best (the winner's curse), so a per-configuration bound does not
hold for it. Before a trial can become the reported result it is re-measured on the confirmation images, which did
not take part in choosing it, and stays feasible only if its upper confidence bound there is within budget too
(``confirm``: accuracy, loss, se, ucb, images). Only confirmed trials are checked on hold-out.

Hold-out verification happens inside the trial (trial attributes cannot change once a trial has finished): a trial
that is feasible at full fidelity and could become the reported result (cheaper than every verified trial in
constrained mode; not dominated by a full-fidelity trial in Pareto mode) is confirmed (above) and, if that passes,
re-evaluated on the hold-out split and gets
``holdout`` (accuracy, loss, se, images) and ``holdout_verified`` (hold-out loss within budget). At most
``max_holdout_failures`` trials of a study fail that check; later candidates are left unchecked. A hold-out check
stops at the run's ``deadline`` (dse.search.deadline) and leaves the trial unchecked.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from dse.layer_config import config_from_dict, config_to_dict
from dse.search import liveness
from dse.search.deadline import Deadline
from dse.search.racing import paired_stats, race
from dse.search.space import SearchSpace

CONSTRAINT = "accuracy_loss"
# trial user attributes written here and read by the study driver, the progress line and the report
ATTR_LOSS_UCB = "loss_ucb"            # upper confidence bound of the search-split loss (see feasibility_bound)
ATTR_HOLDOUT = "holdout"              # {"accuracy", "loss", "se", "images"} on the hold-out split
ATTR_VERIFIED = "holdout_verified"    # True: hold-out loss within budget; absent: never checked
ATTR_CONFIRM = "confirm"              # {"accuracy", "loss", "se", "ucb", "images"} on the confirmation images
ATTR_GATE = "predictor_gate"         # the predictor gate's line when it switched on or off before this trial
ATTR_GATE_STATE = "predictor_gate_state"  # beside it: "on <predictor>" or "off", the state it switched to
ATTR_PREDICTOR = "predictor"          # {"kind", "active"}: the predictor the gate kept when it predicted this trial
ATTR_PREDICTOR_S = "predictor_s"      # wall seconds the gate took before this trial (refit on the points so far, predict)
ATTR_PAUSED = "predictor_paused"      # True: the gate did not run before this trial (its time reached its allowance)
EXACT_ENERGY = 1.0                    # relative system energy of all-exact FxP8: anything costing more is dominated
HOLDOUT_CHUNK = 256                   # hold-out images per step of a check (the deadline is looked at between steps)


def predictor_switches(trials) -> list[list]:
    """``[trial number, gate line]`` of the study's predictor-gate switches, in trial order. Every process of a study
    refits its own gate on the study's points, so with several workers each records the same switch on a trial of
    its own: a switch to the state the study's previous switch reached already is left out (one line per switch)."""
    out, last = [], None
    for t in sorted((t for t in trials if ATTR_GATE in t.user_attrs), key=lambda t: t.number):
        state = t.user_attrs.get(ATTR_GATE_STATE)  # None on runs from before the state was recorded: every line
        if state is None or state != last:
            out.append([t.number, t.user_attrs[ATTR_GATE]])
        last = state
    return out


def predictor_record(trials) -> dict:
    """How the search's predictor did on its own trials: how many trials each kept candidate predicted (``used``) and
    with the gate on (``on``), and the recorded predictions (made before each trial was measured) against the losses
    measured afterwards at full fidelity: ``measured`` pairs, their Spearman and mean error (None below
    dse.predict.MIN_GATE_POINTS pairs) and whether that passes the bar; ``seconds``: the gate's time in the trials it
    ran before, ``trial_seconds``: those trials' whole time (the gate's included)."""
    from collections import Counter

    from dse.predict import prediction_quality

    ua = [t.user_attrs for t in trials if "duplicate_of" not in t.user_attrs]   # a re-proposal was not predicted
    used = Counter(a[ATTR_PREDICTOR]["kind"] for a in ua if ATTR_PREDICTOR in a)
    pairs = [(a["predicted_loss"], a["loss"]) for a in ua if "predicted_loss" in a and a.get("full")]
    q = prediction_quality(*zip(*pairs)) if pairs else None
    timed = [t for t in trials if (ATTR_PREDICTOR_S in t.user_attrs or ATTR_PAUSED in t.user_attrs)
             and t.datetime_complete is not None]
    return {"used": dict(used), "on": sum(bool(a[ATTR_PREDICTOR]["active"]) for a in ua if ATTR_PREDICTOR in a),
            "measured": len(pairs), "spearman": None if q is None else q.spearman,
            "mean_error": None if q is None else q.mean_error, "passes": None if q is None else q.good_enough,
            "seconds": sum(float(t.user_attrs.get(ATTR_PREDICTOR_S, 0.0)) for t in timed),
            "trial_seconds": sum((t.datetime_complete - t.datetime_start).total_seconds() for t in timed),
            "paused": sum(bool(t.user_attrs.get(ATTR_PAUSED)) for t in timed)}


@dataclass
class GateAllowance:
    """The predictor gate's time in this process against what it may spend: ``share`` (``[search]
    predictor_max_share``) of the trials' own time (the gate's excluded) plus the trial time its skips saved (each
    skipped trial counted at the mean time of the trials measured here). The gate runs before a trial only while its
    time so far and that of its latest run are within that (and until a trial was measured here), so it never costs
    more than that share beyond what it saved, give or take one run. ``share`` inf: no bound
    (``predictor_max_share = inf``, as in a budget)."""

    share: float
    gate_s: float = 0.0
    trial_s: float = 0.0
    measured: int = 0
    skipped: int = 0
    last_s: float = 0.0   # the gate's latest run: what the next one is expected to cost

    def allows(self) -> bool:
        if math.isinf(self.share) or not self.measured:   # nothing measured here yet: no trial time to bound it by
            return True
        saved = self.skipped * self.trial_s / self.measured
        return self.gate_s + self.last_s <= self.share * self.trial_s + saved

    def ran(self, seconds: float, skipped: bool) -> None:
        self.gate_s += seconds
        self.last_s = seconds
        self.skipped += bool(skipped)

    def trial(self, seconds: float) -> None:
        """A trial measured here took ``seconds`` besides the gate's."""
        self.trial_s += seconds
        self.measured += 1


def full_trials(study) -> list:
    """The study's complete full-fidelity trials that measured their configuration (not re-proposals of another's)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("full") and "duplicate_of" not in t.user_attrs]


def feasibility_bound(attrs: dict) -> float:
    """The loss bound a trial's feasibility is decided on: its search-split upper confidence bound, or the larger of
    that and its confirmation-image bound once it was confirmed."""
    if attrs.get(ATTR_CONFIRM) is not None:
        return max(float(attrs[ATTR_LOSS_UCB]), float(attrs[ATTR_CONFIRM]["ucb"]))
    return float(attrs[ATTR_LOSS_UCB])


def _config_key(config: dict) -> str:
    return json.dumps(config_to_dict(config), sort_keys=True)


# attributes of a trial that a re-proposal of its configuration does not take over: how the trial ran (its seed flag,
# process, heartbeat), its hold-out check (only the original is a candidate for the result) and the predictor gate's
# switch (a switch of the gate of the process that ran it, before it)
_NOT_REUSED = ("seed", "pid", ATTR_HOLDOUT, ATTR_VERIFIED, ATTR_GATE, ATTR_GATE_STATE, liveness.BEAT_ATTR)
DUPLICATE_POLL_S = 0.2  # how often a re-proposal looks whether the trial running its configuration has finished


def _reused(attrs: dict, number: int) -> dict:
    """The result attributes of trial ``number`` (``attrs``) for a trial that re-proposes its configuration."""
    return dict({k: v for k, v in attrs.items() if k not in _NOT_REUSED}, duplicate_of=number)


class Objective:
    """Callable objective. ``mode``: "constrained" (minimise relative system energy) or "pareto" (energy, loss)."""

    def __init__(self, space: SearchSpace, evaluator, energy, budget_loss: float, mode: str = "constrained",
                 fidelities=(500, 2000, 0), confidence: float = 0.95, predictor=None, predictor_skip: float = 2.0,
                 feasibility_confidence: float = 0.95, holdout=None, max_holdout_failures: int = 3,
                 deadline: Deadline | None = None, confirm=None, predictor_max_share: float = 0.1):
        self.space, self.evaluator, self.energy = space, evaluator, energy
        self.budget_loss, self.mode = float(budget_loss), mode
        self.fidelities, self.confidence = list(fidelities), confidence
        self.predictor, self.predictor_skip = predictor, predictor_skip
        self.allowance = GateAllowance(predictor_max_share)
        self.feasibility_confidence = float(feasibility_confidence)
        self.holdout, self.max_holdout_failures = holdout, int(max_holdout_failures)
        self.deadline, self.confirm = deadline, confirm
        self._exact = None
        self._exact_other: dict[int, np.ndarray] = {}  # id(evaluator) -> FxP8-exact correctness on its images
        self._cache: dict[str, dict] = {}
        self._constrained: set[int] = set()

    @property
    def correct_exact(self) -> np.ndarray:
        """FxP8-exact per-image correctness on the whole search split (computed once)."""
        if self._exact is None:
            self._exact = np.asarray(self.evaluator.correct({}, 0, self.evaluator.n_images), dtype=bool)
        return self._exact

    def _until_deadline(self, ev, config: dict) -> np.ndarray | None:
        """Per-image correctness of ``config`` on all of ``ev``'s images, HOLDOUT_CHUNK images at a time; None when
        the run's deadline passed between two chunks (work outside trials never raises RunTimeout)."""
        hits = []
        for a in range(0, ev.n_images, HOLDOUT_CHUNK):
            if self.deadline is not None and self.deadline.passed():
                return None
            hits.append(np.asarray(ev.correct(config, a, min(a + HOLDOUT_CHUNK, ev.n_images)), dtype=bool))
        return np.concatenate(hits) if hits else np.zeros(0, dtype=bool)

    def _exact_on(self, ev) -> np.ndarray | None:
        """FxP8-exact per-image correctness on all of ``ev``'s images (computed once per evaluator: hold-out,
        confirmation); None while the run's deadline has cut its computation short."""
        if self._exact_other.get(id(ev)) is None:
            self._exact_other[id(ev)] = self._until_deadline(ev, {})
        return self._exact_other[id(ev)]

    @property
    def correct_exact_holdout(self) -> np.ndarray | None:
        """FxP8-exact per-image correctness on the whole hold-out split (computed once); None while the run's deadline
        has cut its computation short."""
        return self._exact_on(self.holdout)

    def exact_accuracies(self) -> dict:
        """FxP8-exact accuracy ``{"search", "holdout"}`` for the results: each measured now unless known already, and
        None when the run's deadline passed before it was measured (the results then say so instead of running
        on)."""
        if self._exact is None:
            self._exact = self._until_deadline(self.evaluator, {})
        out = {}
        for split, hits in (("search", self._exact), ("holdout", self.correct_exact_holdout)):
            out[split] = None if hits is None else float(hits.mean())
        return out

    def _paired_check(self, ev, config: dict):
        """PairedStats of ``config`` vs FxP8 exact on all of ``ev``'s images; None when the run's deadline passed
        before the check (or the exact baseline it is paired with) was through (HOLDOUT_CHUNK images at a time)."""
        exact = self._exact_on(ev)
        hits = None if exact is None else self._until_deadline(ev, config)
        return None if hits is None else paired_stats(exact, hits)

    def holdout_check(self, config: dict) -> dict | None:
        """Paired loss of ``config`` vs FxP8 exact on the whole hold-out split: ``{accuracy, loss, se, images}``;
        None when the run's deadline passed before the check was through."""
        st = self._paired_check(self.holdout, config)
        return None if st is None else {"accuracy": st.acc, "loss": st.loss, "se": st.se, "images": st.n}

    def confirm_check(self, config: dict) -> dict | None:
        """Paired loss of ``config`` on the confirmation images with its upper confidence bound at ``[budget]
        confidence``: ``{accuracy, loss, se, ucb, images}`` (the trial attribute ATTR_CONFIRM); None when the run's
        deadline passed first."""
        st = self._paired_check(self.confirm, config)
        return None if st is None else {"accuracy": st.acc, "loss": st.loss, "se": st.se,
                                        "ucb": st.upper(self.feasibility_confidence), "images": st.n}

    def confirmed(self, attrs: dict) -> bool | None:
        """Whether a trial may be the reported result as far as confirmation goes: True when confirmation is off or
        the trial passed it, False when it failed, None when it was not confirmed yet."""
        if self.confirm is None:
            return True
        if attrs.get(ATTR_CONFIRM) is None:
            return None
        return attrs[ATTR_CONFIRM]["ucb"] <= self.budget_loss

    def _values(self, energy: dict, loss: float):
        return float(energy["system"]) if self.mode == "constrained" else (float(energy["system"]), float(loss))

    def _finish(self, trial, attrs: dict):
        attrs = dict(attrs, pid=os.getpid())
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        trial.set_constraint(CONSTRAINT, feasibility_bound(attrs) - self.budget_loss)
        self._constrained.add(trial.number)
        return self._values(attrs["energy"], attrs["loss"])

    def _previous(self, trial, key: str) -> dict | None:
        """Result of an identical configuration already evaluated (this process or any process of the study, this run
        or an earlier one), without emulating it again. An earlier trial still running it (in another process) is
        waited for while its heartbeat goes on (dse.search.liveness) and the run's deadline has not passed; None when
        there is none or it failed (then this trial evaluates the configuration)."""
        if key in self._cache:
            return dict(self._cache[key])
        beats: dict[int, tuple] = {}  # trial number -> (its last heartbeat, monotonic time it was first seen)
        while True:
            same = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                    if t.number != trial.number and "duplicate_of" not in t.user_attrs
                    and json.dumps(t.user_attrs.get("config"), sort_keys=True) == key]
            done = [t for t in same if t.state == TrialState.COMPLETE and "loss" in t.user_attrs]
            if done:
                return _reused(done[0].user_attrs, done[0].number)
            now = time.monotonic()
            for t in same:
                beat = json.dumps(t.user_attrs.get(liveness.BEAT_ATTR), sort_keys=True)
                if beats.get(t.number, ("",))[0] != beat:
                    beats[t.number] = (beat, now)
            if not any(t.state == TrialState.RUNNING and t.number < trial.number
                       and now - beats[t.number][1] < liveness.STALE_S for t in same):
                return None
            if self.deadline is not None and self.deadline.passed():
                self.deadline.check()  # RunTimeout inside a trial
                return None
            time.sleep(DUPLICATE_POLL_S)

    @staticmethod
    def _full_points(study) -> list[tuple[float, float, dict]]:
        """(energy, loss, user attrs) of the study's full-fidelity, non-duplicate trials."""
        return [(float(t.user_attrs["energy"]["system"]), float(t.user_attrs["loss"]), t.user_attrs)
                for t in full_trials(study)]

    def _stop_above(self, energy: float, full: list) -> float:
        """Loss above which the race may stop this configuration. Constrained: the budget. Pareto: the loss of the best
        known full-fidelity point that costs no more energy (all-exact: loss 0 at energy 1), so every configuration
        that could still be on the front is raced to full fidelity."""
        if self.mode == "constrained":
            return self.budget_loss
        known = [loss for e, loss, _ in full if e <= energy]
        if energy >= EXACT_ENERGY:
            known.append(0.0)
        return min(known, default=np.inf)

    def _candidate(self, attrs: dict, full: list) -> bool:
        """Whether a finished trial could become the reported result: full fidelity, within the bound on the search
        images, cheaper than all-exact, and (constrained) cheaper than every verified trial / (Pareto) not dominated
        by a full-fidelity trial."""
        if not attrs["full"] or feasibility_bound(attrs) > self.budget_loss:
            return False
        energy = float(attrs["energy"]["system"])
        if energy >= EXACT_ENERGY:
            return False  # never better than all-exact, which needs no check
        if self.mode == "constrained":
            return all(e > energy for e, _, ua in full if ua.get(ATTR_VERIFIED))
        return not any(e <= energy and loss <= attrs["loss"] for e, loss, _ in full)

    def _check(self, config: dict, attrs: dict, full: list) -> None:
        """Confirm a candidate for the reported result (when confirmation is on) and, if that passes, check it on
        hold-out while fewer than ``max_holdout_failures`` trials of the study failed that check; the results go into
        ``attrs``. A check the run's deadline interrupts leaves the trial unconfirmed / unchecked."""
        if not self._candidate(attrs, full):
            return
        if self.confirm is not None:
            c = self.confirm_check(config)
            if c is None:
                return
            attrs[ATTR_CONFIRM] = c
            if not self.confirmed(attrs):
                return
        if self.holdout is None or sum(ua.get(ATTR_VERIFIED) is False for _, _, ua in full) >= self.max_holdout_failures:
            return
        h = self.holdout_check(config)
        if h is not None:
            attrs[ATTR_HOLDOUT] = h
            attrs[ATTR_VERIFIED] = h["loss"] <= self.budget_loss

    def _predict(self, trial, config: dict, attrs: dict) -> float | None:
        """Refit the predictor on the full-fidelity points so far, record its prediction (and a gate switch) in
        ``attrs``; the conservative loss to skip this trial with, or None (gate off, not over the skip line, or an
        enqueued seed: seeds are always emulated, they anchor the search)."""
        switched = self.predictor.observe([(t.number, config_from_dict(t.user_attrs["config"]),
                                            float(t.user_attrs["loss"])) for t in full_trials(trial.study)])
        if switched:
            st = self.predictor.state
            attrs[ATTR_GATE], attrs[ATTR_GATE_STATE] = switched, f"on {st.kind}" if st.active else "off"
        pred = self.predictor.predicted(config) if self.predictor.worth_predicting(config) else None
        if pred is not None:
            attrs["predicted_loss"] = pred
            attrs[ATTR_PREDICTOR] = {"kind": self.predictor.state.kind, "active": self.predictor.state.active}
        conservative = self.predictor.gate(config)
        if trial.user_attrs.get("seed") or conservative is None:
            return None
        return conservative if conservative > self.predictor_skip * self.budget_loss else None

    def __call__(self, trial: optuna.Trial):
        try:
            config = self.space.suggest(trial)
            key = _config_key(config)
            trial.set_user_attr("config", config_to_dict(config))  # a process re-proposing it meanwhile waits for it
            prev = self._previous(trial, key)
            if prev is not None:
                return self._finish(trial, prev)
            t_start = time.perf_counter()
            energy = dict(self.energy(config))
            attrs = {"config": config_to_dict(config), "energy": energy}
            full = self._full_points(trial.study)
            gate_s = 0.0
            if self.predictor is not None and self.predictor_skip:
                if not self.allowance.allows():
                    attrs[ATTR_PAUSED] = True
                else:
                    t0 = time.perf_counter()
                    skip = self._predict(trial, config, attrs)
                    gate_s = attrs[ATTR_PREDICTOR_S] = time.perf_counter() - t0
                    self.allowance.ran(gate_s, skip is not None)
                    if skip is not None:
                        attrs.update(loss=skip, skipped="predictor", images=0)
                        attrs[ATTR_LOSS_UCB] = skip
                        return self._finish(trial, attrs)
            exact = self.correct_exact
            res = race(lambda a, b: self.evaluator.correct(config, a, b), exact,
                       self._stop_above(float(energy["system"]), full), self.fidelities, self.confidence)
            attrs.update(accuracy=res.stats.acc, accuracy_exact=res.stats.acc_exact, loss=res.loss,
                         loss_se=res.stats.se, images=res.images, full=not res.stopped,
                         stages=[list(s) for s in res.stages])
            attrs[ATTR_LOSS_UCB] = res.stats.upper(self.feasibility_confidence)
            if res.stopped:
                attrs["skipped"] = "racing"
            self._check(config, attrs, full)
            self._cache[key] = _reused(attrs, trial.number)
            self.allowance.trial(time.perf_counter() - t_start - gate_s)
            return self._finish(trial, attrs)
        except BaseException as exc:
            # failed trial: still record an (infeasible) constraint, then let Optuna mark it FAIL / stop
            if trial.number not in self._constrained:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:300])
                trial.set_constraint(CONSTRAINT, 1.0 - self.budget_loss)
            raise
