"""The search's loss predictors (AME and the logit surrogate, dse.predict) on held-out configurations of a budget's
model, measured the way the search uses them.

Run:  python benchmarks/bench_predict.py search_spaces/default.toml [--images 5000] [--near 40] [--uniform 20]
      [--seed 0] [--propagated-images N [N ...]] [--write-results]
      python benchmarks/bench_predict.py search_spaces/default.toml --search-seeds 11 12 13 [--json FILE]

Protocol (one budget file; its model, data, space, energy model and set-up as `dse search` builds them, but on
``--images`` images of the search split instead of the budget's cap, so each measured loss has a small sampling
error, reported as the paired standard error of every loss):

* the search's context (dse.search.context.build_context): FxP8 calibration, the logit and propagated surrogates on
  the first 300 search images and the predictor gate fitted on the set-up's configurations (all-exact + 10 with few
  approximate layers), the knapsack sensitivities (the surrogate's single-layer runs), all of them measured (no
  ``setup_budget_s``: with it, a loaded machine leaves some out and the knapsack's configurations change);
* ``--near`` configurations from the distribution the search visits near the budget: the knapsack's choice at a
  random capacity (0.25-3x the budget) over a random 70 % of the single-layer items; and ``--uniform`` uniform random
  configurations of the space (each searchable layer approximate with probability q ~ U(0, 1));
* every configuration measured on every image no predictor saw (paired loss vs FxP8 exact, standard error): the
  search images past the surrogates' first 300 and the whole hold-out split (4000 bundled images); their split-half
  reliability (Spearman of the losses on the even vs the odd images, stepped up by Spearman-Brown) is reported for
  the search images alone and for all of them, and the ceiling, sqrt(reliability), is the Spearman a predictor that
  knew the true losses could be expected to show against these measurements; every Spearman is also given as a
  fraction of it;
* as trials arrive, through the search's own dse.predict.PredictorGate (its ``focus`` from the budget, the set-up's
  points provisional, refitted on every point): each candidate alone in the gate, then the gate over all of them
  (the predictor the search uses: each prediction made by the candidate it keeps at that point); every point is
  predicted before it is added (prequential: every prediction is held out). Near-budget: the stream of near-budget
  configurations, reported over its second half; uniform: the near-budget stream followed by the uniform
  configurations, reported over all of these;
* set-up fit only: each candidate fitted on the set-up's points alone, on the near-budget second half;
* before: the previous protocol (all-exact + 10 random configurations with 20-100 % of the layers approximate, the
  raw surrogate loss alone) on the same held-out sets.
``--propagated-images``: the propagated surrogate on other image counts (the first in the main table, the
search's gate with each of the others on the same points below it; the evaluation images start past the most).
``--write-results`` replaces this budget's row block in the "## Predictor" section of benchmarks/RESULTS.md.

``--search-seeds S [S ...]``: instead, the third held-out set, the distribution the gate is used on: the
configurations real searches of the budget propose (dse.search's study, sampler, seeds, objective with racing and
confirmation, and run loop, with the budget's settings and sampler seed S, on the budget's own search and
confirmation images, which are the first of the whole split in the same seeded order), one search per seed. Each
search has a fresh gate of its own that the objective refits on its full-fidelity trials (as in ``dse search``) and
that predicts every proposal before it is measured, but never skips one (its time bound lifted), so every proposal
is measured; its skip decisions are recorded. Every distinct proposal but all-exact is then measured on the same
evaluation images as above and scored: over all of them and over those within the gate's focus, each with its
ceiling and floor; with the skips the gate would have made and how many of those were within budget.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_edit import budget_with  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _budget_copy(path: Path, images: int, out: Path) -> Path:
    """The budget with ``[data] images = images`` and ``confirm = 0`` (the search's confirmation images are not
    needed here: every loss is measured on all ``images``; other keys unchanged, relative paths resolved as before)."""
    return budget_with(path, "data", {"images": images, "confirm": 0}, out)


def near_budget_configs(space, items, budget: float, n: int, rng) -> list[dict]:
    """Knapsack choices at random capacities over random 70 % subsets of the single-layer items."""
    from dse.search import seeds

    out = []
    while len(out) < n:
        sub = {k: [it for it in v if rng.uniform() < 0.7] for k, v in items.items()}
        cfg = seeds.knapsack(sub, budget * rng.uniform(0.25, 3.0))
        cfg = space.config_from_params(space.params_from_config(cfg))
        if any(lc.multiplier != "exact" for lc in cfg.values()) and cfg not in out:
            out.append(cfg)
    return out


def uniform_configs(space, n: int, rng, q_range=(0.0, 1.0)) -> list[dict]:
    """Each searchable layer approximate with probability q ~ U(q_range), a uniformly chosen (multiplier, cv)."""
    from dse.layer_config import LayerConfig

    out = []
    while len(out) < n:
        q = rng.uniform(*q_range)
        cfg = {}
        for name in space.searchable:
            c = space.choices[name]
            mults = [m for m in c.multipliers if m != "exact"]
            if mults and rng.uniform() < q:
                cfg[name] = LayerConfig(str(mults[rng.integers(len(mults))]), bool(c.cv[rng.integers(len(c.cv))]))
        if cfg:
            out.append(space.config_from_params(space.params_from_config(cfg)))
    return out


def eval_hits(ctx, cfg: dict, skip: int) -> np.ndarray:
    """Per-image correctness of ``cfg`` on the evaluation images: the search split past its first ``skip`` images
    (the surrogates' own) and then the whole hold-out split; no predictor has seen any of them."""
    ev, hv = ctx.evaluator, ctx.holdout
    return np.concatenate([ev.correct(cfg, skip, ev.n_images), hv.correct(cfg, 0, hv.n_images)])


def measure(ctx, cfgs: list[dict], skip: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness rows [configs, images] on the evaluation images (:func:`eval_hits`), wall time of each."""
    hits, secs = [], []
    for c in cfgs:
        t0 = time.perf_counter()
        hits.append(eval_hits(ctx, c, skip))
        secs.append(time.perf_counter() - t0)
    return np.array(hits), np.array(secs)


@dataclass(frozen=True)
class Measured:
    """Paired losses of a set of configurations on some images: loss, standard error, and the losses on the even and
    on the odd images (two independent halves of the same size)."""

    loss: np.ndarray
    se: np.ndarray
    halves: np.ndarray

    @classmethod
    def of(cls, exact: np.ndarray, hits: np.ndarray) -> "Measured":
        from dse.search.racing import paired_stats

        st = [paired_stats(exact, h) for h in hits]
        halves = [[paired_stats(exact[k::2], h[k::2]).loss for k in (0, 1)] for h in hits]
        return cls(np.array([t.loss for t in st]), np.array([t.se for t in st]), np.array(halves).reshape(-1, 2))

    def reliability(self) -> float:
        """Split-half reliability: Spearman of the two halves' losses stepped up to the whole set (Spearman-Brown),
        the rank agreement of two independent measurements of this size."""
        return reliability(self.halves)


def reliability(halves: np.ndarray) -> float:
    """Spearman of the losses on two independent halves of the images, stepped up to both (Spearman-Brown)."""
    from dse.predict import spearman

    r = spearman(halves[:, 0], halves[:, 1])
    return 2 * r / (1 + r) if r > -1 else float("nan")


def ceiling(rel: float) -> float:
    """The Spearman a predictor that knew the true losses would show against one noisy measurement of reliability
    ``rel``: its square root (Spearman's attenuation; a measurement agrees with its own repeat by ``rel``, with the
    truth by ``sqrt(rel)``). 0 when the halves do not agree at all, nan when they cannot be ranked."""
    return float(np.sqrt(max(rel, 0.0))) if np.isfinite(rel) else float("nan")


def error_floor(se: np.ndarray) -> float:
    """The mean absolute error a predictor that knew the true losses would show against measurements with standard
    errors ``se`` (normal sampling error: E|N(0, se^2)| = se sqrt(2 / pi))."""
    return float(np.mean(se) * np.sqrt(2 / np.pi))


def _scores(pred, y) -> dict:
    from dse.predict import spearman

    pred, y = np.asarray(pred, float), np.asarray(y, float)
    ok = np.isfinite(pred)
    if ok.sum() < 2:
        return {"spearman": float("nan"), "mae": float("nan"), "n": int(ok.sum())}
    return {"spearman": spearman(pred[ok], y[ok]), "mae": float(np.mean(np.abs(pred[ok] - y[ok]))),
            "worst": float(np.max(np.abs(pred[ok] - y[ok]))), "n": int(ok.sum())}


def _feature_lists(cands, cfgs) -> dict:
    return {c.kind: [None if r is None else r.tolist() for r in _rows(c, cfgs)] for c in cands}


def _rows(cand, cfgs):
    return [cand.features(c) for c in cfgs]


def _timed_rows(cand, cfgs) -> tuple[list, list[float]]:
    """Feature rows and the wall time of each (a configuration's first prediction: nothing cached for it)."""
    rows, secs = [], []
    for c in cfgs:
        t0 = time.perf_counter()
        rows.append(cand.features(c))
        secs.append(time.perf_counter() - t0)
    return rows, secs


def _fit_predict(cand, rows_fit, y_fit, rows_new) -> list[float]:
    keep = [i for i, r in enumerate(rows_fit) if r is not None]
    f = cand.fit(np.stack([rows_fit[i] for i in keep]), np.asarray(y_fit)[keep])
    return [float("nan") if r is None else float(f(r)) for r in rows_new]


def gate_stream(cands, setup: list, stream: list, start: int, focus: float | None) -> tuple[list, list, list]:
    """What the search's gate (dse.predict.PredictorGate over ``cands``, its ``focus``) predicts for stream points
    ``start..``: each predicted by the candidate the gate keeps after the set-up's points (provisional, as in the
    search) and every stream point before it, then added. ``setup``/``stream``: (config, loss) pairs. Returns the
    predictions, the kept candidate and whether the gate was on at each."""
    gate, cands = fresh_gate(cands, setup, focus)
    preds, kinds, active = [], [], []
    for i, (c, y) in enumerate(stream):
        p = gate.predicted(c)   # every point, as the search predicts every trial (a costly candidate's schedule)
        if i >= start:
            preds.append(float("nan") if p is None else p)
            kinds.append(gate.state.kind)
            active.append(gate.state.active)
        gate.observe([(i, c, y)])
    for c in cands:
        if isinstance(c.features, _Seen):
            COMPUTED[c.kind] = COMPUTED.get(c.kind, 0) + len(c.features.seen)
    return preds, kinds, active


def fresh_gate(cands, setup: list, focus: float | None):
    """A new gate of the search (dse.predict.PredictorGate over ``cands`` as in a search that met only this stream's
    points, :func:`_as_in_a_search`) that has observed the set-up's ``(config, loss)`` points, provisionally, as the
    search's gate has when its first trial starts (dse.search.context.predictor_gate). Returns it and its candidates."""
    from dse.predict import PredictorGate

    cands = [_as_in_a_search(c) for c in cands]
    gate = PredictorGate(cands, focus=focus)
    gate.observe([(("fit", i), c, y) for i, (c, y) in enumerate(setup)], provisional=True)
    return gate, cands


COMPUTED: dict = {}   # the propagated surrogate's feature rows the gate streams computed (network runs)


class _Seen:
    """A candidate's features, counting the configurations they were asked for (the stream's own cache)."""

    def __init__(self, features):
        self.features, self.seen = features, set()

    @staticmethod
    def key(c: dict) -> tuple:
        return tuple(sorted((n, lc.multiplier, lc.cv) for n, lc in c.items() if lc.multiplier != "exact"))

    def __call__(self, c: dict):
        self.seen.add(self.key(c))
        return self.features(c)


def _as_in_a_search(cand):
    """The propagated surrogate's candidate with what is at hand as in a search that met only this stream's points
    (the bench computed all its rows already, and its own cache would make every point at hand); the others as they
    are (the logit surrogate's single-layer changes are measured in the set-up, as in a search)."""
    from dataclasses import replace

    if cand.kind != "propagated surrogate":
        return cand
    f = _Seen(cand.features)
    return replace(cand, features=f, at_hand=lambda c: f.key(c) in f.seen)


def _propagated(ctx, n: int, seed: int):
    """The search's gate candidates with the propagated surrogate rebuilt on the first ``n`` search images."""
    from dse.predict import PropagatedSurrogate, propagated_candidate

    data = ctx.evaluator.data
    prop = propagated_candidate(PropagatedSurrogate(ctx.evaluator.emulator, data.images(0, n), data.y[:n], seed))
    return [prop if c.kind == prop.kind else c for c in ctx.predictor.candidates]


def logit_features(logits: np.ndarray, labels: np.ndarray, m0: np.ndarray, acc_exact: float) -> np.ndarray:
    """The propagated surrogate's features (dse.predict.PropagatedSurrogate.features) of any logits."""
    from dse.predict import churn, gaussian_loss, margins, soft_loss

    soft, s = soft_loss(margins(logits, labels), m0)
    return np.array([acc_exact - float(np.mean(logits.argmax(1) == labels)), soft, s, gaussian_loss(m0, s),
                     churn(logits, labels, m0)])


def _wide(ctx, m: int):
    """The search's gate candidates with the logit surrogate on the first ``m`` search images (every single-layer
    change measured on those), and a control-variate candidate: the propagated surrogate's features plus the wide
    logit surrogate's (the same definitions) on all ``m`` images minus on the propagated surrogate's own images."""
    from dataclasses import replace

    from dse.predict import LogitSurrogate, surrogate_candidate

    ev = ctx.evaluator
    wide = LogitSurrogate(lambda c: ev.logits(c, 0, m), ev.data.y[:m])
    cands = [surrogate_candidate(wide) if c.kind == "logit surrogate" else c for c in ctx.predictor.candidates]
    prop = next((c for c in cands if c.kind == "propagated surrogate"), None)
    if prop is None:
        return cands, wide
    k = ctx.sensitivity.surrogate.n_images
    lab, m0 = wide.labels, wide.margins(wide.exact)
    acc_all, acc_k = float(np.mean(m0 > 0)), float(np.mean(m0[:k] > 0))

    def cv(c):
        f = prop.features(c)
        if f is None:
            return None
        z = wide.logits(c)
        return f + logit_features(z, lab, m0, acc_all) - logit_features(z[:k], lab[:k], m0[:k], acc_k)
    return cands + [replace(prop, kind="propagated - logit + wide logit", features=cv)], wide


class NeverSkips:
    """The search's gate as dse.search.objective drives it, except that it never skips a trial: every proposal is
    predicted (``worth_predicting`` always; the run lifts the gate's time bound) and then measured, and what the gate
    would have done is kept in ``would``: per configuration (dse.search.objective's key), the conservative loss it
    would have skipped it with (None while the gate was off or could not predict it)."""

    def __init__(self, gate):
        self.inner, self.would = gate, {}

    @property
    def state(self):
        return self.inner.state

    def observe(self, points):
        return self.inner.observe(points)

    def worth_predicting(self, config: dict) -> bool:
        return True

    def predicted(self, config: dict):
        return self.inner.predicted(config)

    def gate(self, config: dict):
        from dse.search.objective import _config_key

        self.would[_config_key(config)] = self.inner.gate(config)
        return None


class Slice:
    """Images ``a:b`` of an evaluator as an evaluator (dse.search.objective's interface)."""

    def __init__(self, ev, a: int, b: int):
        self.ev, self.a, self.n_images = ev, int(a), int(b - a)

    def correct(self, config: dict, start: int, stop: int):
        return self.ev.correct(config, self.a + start, self.a + stop)


def search_split_sizes(ctx, budget: Path) -> tuple[int, int]:
    """(search images, confirmation images) of the budget's own search. ``ctx`` must hold the whole search split in
    the budget's seeded order (``--images`` = all of it, no confirmation): the budget's search images are then its
    first ones and its confirmation images the next (dse.search.context.search_split: one permutation per seed)."""
    from dse.budget import load_budget
    from dse.search.context import search_split

    if ctx.unused is not None or ctx.confirm is not None:
        raise SystemExit("--search-seeds needs --images = the whole search split (5000 bundled images)")
    b = load_budget(budget)
    sp = search_split(ctx.evaluator.n_images, b.data.images, b.data.confirm, int(b.search.seed))
    return int(sp.search.size), int(sp.confirm.size)


def search_proposals(ctx, s, sampler_seed: int, setup: list, focus: float | None, sizes: tuple[int, int]):
    """The configurations a search of the budget proposes with sampler seed ``sampler_seed``: dse.search's own study
    (join_study, the budget's sampler settings), seeds (enqueue_seeds), objective (racing, confirmation, duplicates)
    and run loop, on the budget's search and confirmation images (``sizes``: the first images of ``ctx``'s
    evaluator), one process, no timeout, the hold-out check left out (it decides no constraint), with a fresh search
    gate (set-up points provisional, refitted on every full-fidelity trial by the objective) that predicts every
    proposal before it is measured and never skips one (:class:`NeverSkips`). Returns the study's trials in order
    and the gate wrapper."""
    from dataclasses import replace

    import optuna

    from dse.search import study as st

    k, m = sizes
    gate = NeverSkips(fresh_gate(ctx.predictor.candidates, setup, focus)[0])
    s2 = replace(s, seed=int(sampler_seed), workers=1, timeout_s=None, storage=None,
                 predictor_max_share=float("inf"))
    ctx2 = replace(ctx, evaluator=Slice(ctx.evaluator, 0, k), confirm=Slice(ctx.evaluator, k, k + m) if m else None,
                   holdout=None, unused=None, predictor=gate, deadline=None)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study, process = st.join_study(optuna.storages.InMemoryStorage(), f"proposals-{sampler_seed}", s2, create=True)
    st.enqueue_seeds(study, ctx2, s2, process)
    st.run_loop(study, st._objective(ctx2, s2), s2)
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number), gate


def _measured(trials):
    """(trial, user attributes, configuration) of every trial that measured its configuration, in order: a loss
    recorded, not a re-proposal answered from the first."""
    from dse.layer_config import config_from_dict

    for t in trials:
        ua = t.user_attrs
        if "loss" in ua and "duplicate_of" not in ua:
            yield t, ua, config_from_dict(ua["config"])


def proposal_rows(trials, gate: NeverSkips, skip_line: float) -> list[dict]:
    """One row per configuration the search measured (re-proposals, answered from the first, and all-exact left out),
    in trial order: its configuration, the gate's prediction made before the trial (``predicted``, None: none), the
    kept candidate and whether the gate was on, whether it would have skipped it (on, conservative loss over
    ``skip_line``), and what the search measured (loss on its images, full fidelity or raced out, feasible)."""
    from dse.search.objective import ATTR_PREDICTOR, _config_key
    from dse.search.study import is_feasible

    rows = []
    for t, ua, cfg in _measured(trials):
        if all(lc.multiplier == "exact" for lc in cfg.values()):
            continue
        cons = gate.would.get(_config_key(cfg))
        rows.append({"trial": t.number, "config": cfg, "predicted": ua.get("predicted_loss"),
                     "kind": ua.get(ATTR_PREDICTOR, {}).get("kind"),
                     "active": bool(ua.get(ATTR_PREDICTOR, {}).get("active")),
                     "skip": cons is not None and cons > skip_line, "search_loss": float(ua["loss"]),
                     "full": bool(ua.get("full")), "energy": float(ua["energy"]["system"]),
                     "feasible": is_feasible(t)})
    return rows


def run_search_stream(budget: Path, images: int, sampler_seeds: tuple) -> dict:
    """The third held-out set: the configurations real searches of the budget propose (:func:`search_proposals`,
    one search per sampler seed), each predicted by the search's gate as the trials arrive and measured on the same
    evaluation images as the other sets (:func:`eval_hits`)."""
    from dse.budget import load_budget
    from dse.search.context import build_context, setup_fit_configs, settings_from_budget
    from dse.search.objective import _config_key

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = build_context(str(_budget_copy(budget, images, Path(tmp) / budget.name)), setup_budget_s=1e12)
    s = settings_from_budget(load_budget(budget))
    sur = ctx.sensitivity.surrogate
    sizes = search_split_sizes(ctx, budget)
    # every single-layer change of the logit surrogate measured first (the other sets' set-up measures those the
    # knapsack uses), so that what it has at hand does not depend on the searches before
    from dse.layer_config import LayerConfig

    for name, c in ctx.space.choices.items():
        for mult in c.multipliers:
            for cv in c.cv:
                sur.delta(name, LayerConfig(mult, cv))
    fit0 = setup_fit_configs(ctx.space, s.seed)
    m0 = sur.n_images
    setup = [(c, sur.acc_exact - float(ctx.evaluator.correct(c, 0, m0).mean())) for c in fit0]
    focus, line = ctx.predictor.focus, s.predictor_skip * s.budget_loss
    skip = max([sur.n_images] + [c.features.__self__.n_images for c in ctx.predictor.candidates
                                 if hasattr(getattr(c.features, "__self__", None), "n_images")])   # no surrogate saw one
    exact = eval_hits(ctx, {}, skip)
    t_setup = time.perf_counter() - t0
    n = ctx.evaluator.n_images
    fit_points = {"loss": [y for _, y in setup], **_feature_lists(ctx.predictor.candidates, fit0)}
    out = {"budget": str(budget), "model": ctx.info["model"], "images": int(exact.size), "search_images": n - skip,
           "holdout_images": int(exact.size - (n - skip)), "skip": skip, "budget_loss": s.budget_loss,
           "layers": len(ctx.space.searchable), "setup_s": t_setup, "focus": focus, "skip_line": line,
           "trials": s.n_trials, "sampler": s.sampler, "racing": list(s.fidelities), "search_split": list(sizes),
           "setup_points": fit_points, "seeds": {}}
    hits: dict = {}
    for seed in sampler_seeds:
        t0 = time.perf_counter()
        trials, gate = search_proposals(ctx, s, seed, setup, focus, sizes)
        t_search = time.perf_counter() - t0
        rows = proposal_rows(trials, gate, line)
        t0 = time.perf_counter()
        for r in rows:
            key = _config_key(r["config"])
            if key not in hits:
                hits[key] = eval_hits(ctx, r["config"], skip)
        t_measure = time.perf_counter() - t0
        out["seeds"][str(seed)] = stream_scores(rows, Measured.of(exact, np.array(
            [hits[_config_key(r["config"])] for r in rows])), focus, s.budget_loss)
        out["seeds"][str(seed)].update(search_s=t_search, measure_s=t_measure, proposals=len(trials),
                                       duplicates=sum("duplicate_of" in t.user_attrs for t in trials),
                                       stream=stream_points(ctx.predictor.candidates, trials))
        print(f"seed {seed}: {stream_line(out, seed)}", flush=True)
    return out


def stream_points(cands, trials) -> list[dict]:
    """The points a search's gate met, for replaying other gates on them offline: every trial that measured its
    configuration (all-exact included), in order, with what the search measured and each candidate's features."""
    out = []
    for t, ua, cfg in _measured(trials):
        out.append({"trial": t.number, "config": [[n, lc.multiplier, bool(lc.cv)] for n, lc in cfg.items()
                                                  if lc.multiplier != "exact"],
                    "full": bool(ua.get("full")), "search_loss": float(ua["loss"]),
                    **{c.kind: (None if f is None else f.tolist()) for c in cands for f in [c.features(cfg)]}})
    return out


def stream_scores(rows: list[dict], m: Measured, focus: float, budget_loss: float) -> dict:
    """Scores of the gate's predictions of ``rows`` against their measured losses ``m``: over all, and over those
    measured within the gate's ``focus``, each with its ceiling and floor; the kept candidates, how often the gate
    was on, and its skip decisions with what they would have cost (skipped configurations within budget)."""
    pred = np.array([np.nan if r["predicted"] is None else r["predicted"] for r in rows], float)
    y = m.loss
    inside = y <= focus
    skipped = [i for i, r in enumerate(rows) if r["skip"]]
    feasible = [r["energy"] for r in rows if r["feasible"]]
    sub = Measured(m.loss[inside], m.se[inside], m.halves[inside])
    return {"n": len(rows), "loss": y.tolist(), "se": m.se.tolist(), "halves": m.halves.tolist(),
            "predicted": pred.tolist(), "trials": [r["trial"] for r in rows],
            "all": {**_scores(pred, y), "ceiling": ceiling(m.reliability()), "floor": error_floor(m.se)},
            "focus": {**_scores(pred[inside], y[inside]), "ceiling": ceiling(sub.reliability()) if inside.sum() > 2
                      else float("nan"), "floor": error_floor(sub.se) if inside.any() else float("nan"),
                      "count": int(inside.sum())},
            "kept": [r["kind"] for r in rows], "active": [r["active"] for r in rows],
            "raced": sum(not r["full"] for r in rows), "within_budget": int(np.sum(y <= budget_loss)),
            "search_feasible": len(feasible), "best_energy": min(feasible, default=float("nan")),
            "skipped": len(skipped), "skipped_within_budget": [rows[i]["energy"] for i in skipped
                                                               if y[i] <= budget_loss],
            "skipped_search_feasible": sum(rows[i]["feasible"] for i in skipped)}


def stream_line(r: dict, seed) -> str:
    d = r["seeds"][str(seed)]
    a, f = d["all"], d["focus"]
    return (f"{d['n']} configurations ({d['raced']} raced out), losses {100 * min(d['loss']):.2f}..."
            f"{100 * max(d['loss']):.2f} pp; all: {a['spearman']:.3f} (ceiling {a['ceiling']:.3f}) / "
            f"{100 * a['mae']:.2f} pp (floor {100 * a['floor']:.2f}); within focus ({f['count']}): "
            f"{f['spearman']:.3f} (ceiling {f['ceiling']:.3f}) / {100 * f['mae']:.2f} pp; "
            f"on for {sum(d['active'])}, would skip {d['skipped']}")


def stream_table(r: dict) -> str:
    """The search-stream set's table: one row per sampler seed."""
    from collections import Counter

    head = (f"`{Path(r['budget']).name}` ({Path(r['model']).name}, {r['layers']} searchable layers, budget "
            f"{100 * r['budget_loss']:.1f} pp, {r['sampler']} sampler, {r['trials']} trials, racing {r['racing']} on "
            f"{r['search_split'][0]} search images (+ {r['search_split'][1]} confirmation)): losses on {r['images']} "
            f"images no predictor saw ({r['search_images']} search-split images past the surrogates' first "
            f"{r['skip']}, {r['holdout_images']} hold-out); gate focus {100 * r['focus']:.1f} pp, skip line "
            f"{100 * r['skip_line']:.1f} pp; set-up {r['setup_s']:.0f} s")
    lines = [head, "", "| sampler seed | measured configurations (raced out; re-proposals) | losses (SE median) | all: "
             "Spearman (of ceiling) / MAE (floor) | within the focus: n, Spearman (of ceiling) / MAE (floor) | kept "
             "candidate; gate on | would skip; of them within budget (energy) / feasible in the search | search "
             "best energy | search s, measure s |", "|---|---|---|---|---|---|---|---|---|"]
    for seed, d in r["seeds"].items():
        a, f = d["all"], d["focus"]
        kept = ", ".join(f"{k} {v}" for k, v in Counter(str(k) for k in d["kept"]).most_common())
        cost = ", ".join(f"{e:.4f}" for e in d["skipped_within_budget"])
        lines.append(
            f"| {seed} | {d['n']} ({d['raced']}; {d['duplicates']}) | {100 * min(d['loss']):.2f}.."
            f"{100 * max(d['loss']):.2f} pp ({100 * np.median(d['se']):.2f} pp) | {_fmt(a, a['ceiling'])} "
            f"({100 * a['floor']:.2f} pp) | {f['count']}, {_fmt(f, f['ceiling'])} ({100 * f['floor']:.2f} pp) | "
            f"{kept}; {sum(d['active'])} | {d['skipped']}; {len(d['skipped_within_budget'])}"
            f"{f' ({cost})' if cost else ''} / {d['skipped_search_feasible']} | {d['best_energy']:.4f} | "
            f"{d['search_s']:.0f}, {d['measure_s']:.0f} |")
    return "\n".join(lines)


def run(budget: Path, images: int, n_near: int, n_uniform: int, seed: int, prop_images: tuple = (),
        logit_images: tuple = ()) -> dict:
    from dse.budget import load_budget
    from dse.predict import LossModel, surrogate_candidate
    from dse.search import seeds
    from dse.search.context import build_context, setup_fit_configs, settings_from_budget

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # no set-up budget: every sensitivity measured, so the knapsack's configurations do not depend on the load
        ctx = build_context(str(_budget_copy(budget, images, Path(tmp) / budget.name)), setup_budget_s=1e12)
    s = settings_from_budget(load_budget(budget))
    sur = ctx.sensitivity.surrogate
    items = seeds.layer_items(ctx.space, ctx.sensitivity, ctx.energy)
    t_setup = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    near = near_budget_configs(ctx.space, items, s.budget_loss, n_near, rng)
    uni = uniform_configs(ctx.space, n_uniform, rng)
    old = [{}] + uniform_configs(ctx.space, 10, np.random.default_rng(seed + 7919), (0.2, 1.0))
    fit0 = setup_fit_configs(ctx.space, s.seed)
    ns = [int(m) for m in prop_images] or [sur.n_images]   # the search's: the logit surrogate's images
    n, skip = ctx.evaluator.n_images, max([sur.n_images, *ns, *logit_images])   # no surrogate saw one
    half = half_of(n_near)
    t0 = time.perf_counter()
    exact = eval_hits(ctx, {}, skip)
    (h_near, _), (h_uni, t_uni) = measure(ctx, near, skip), measure(ctx, uni, skip)
    # the set-up's fit points as the search has them: accuracies on the surrogate's images
    m0 = sur.n_images
    y_fit0 = np.array([sur.acc_exact - float(ctx.evaluator.correct(c, 0, m0).mean()) for c in fit0])
    y_old = np.array([sur.acc_exact - float(ctx.evaluator.correct(c, 0, m0).mean()) for c in old])
    t_measure = time.perf_counter() - t0
    k = n - skip   # evaluation images from the search split; the rest are the hold-out split's
    mn, mu = Measured.of(exact, h_near), Measured.of(exact, h_uni)
    y_near, y_uni = mn.loss, mu.loss
    out = {"budget": str(budget), "model": ctx.info["model"], "images": int(exact.size), "search_images": k,
           "holdout_images": int(exact.size - k), "surrogate_images": sur.n_images, "skip": skip,
           "budget_loss": s.budget_loss, "layers": len(ctx.space.searchable), "setup_s": t_setup,
           "measure_s": t_measure, "near_loss": y_near.tolist(), "near_se": mn.se.tolist(),
           "uniform_loss": y_uni.tolist(), "uniform_se": mu.se.tolist(), "setup_info": ctx.info["predictor"],
           "reliability": {"near": reliability(mn.halves[half:]), "uniform": mu.reliability()},
           "reliability_search_only": {
               "near": reliability(Measured.of(exact[:k], h_near[half:, :k]).halves),
               "uniform": Measured.of(exact[:k], h_uni[:, :k]).reliability()},
           "emulate_s_per_image": float(np.median(t_uni)) / exact.size, "trial_images": s_images(budget, n),
           "kinds": [c.kind for c in ctx.predictor.candidates]}
    # the search's own candidates (dse.search.context.gate_candidates)
    variants = {m: _propagated(ctx, m, s.seed) for m in dict.fromkeys(ns)}
    cands = variants[ns[0]]
    out["propagated_images"] = ns[0]
    # each candidate alone in the search's gate, then the gate over all of them: the same points in the same order
    focus = ctx.predictor.focus
    setup, s_near = list(zip(fit0, y_fit0)), list(zip(near, y_near))
    s_uni = s_near + list(zip(uni, y_uni))
    out["focus"] = focus
    for cand in cands:
        r0, rn = _rows(cand, fit0), _rows(cand, near)
        _, t_pred = _timed_rows(cand, uni)   # after the others: mostly warm per-choice state, as in a search
        out[cand.kind] = {"predict_s": float(np.median(t_pred)),
                          "near": _scores(gate_stream([cand], setup, s_near, half, focus)[0], y_near[half:]),
                          "uniform": _scores(gate_stream([cand], setup, s_uni, n_near, focus)[0], y_uni),
                          "setup_only_near": _scores(_fit_predict(cand, r0, y_fit0, rn[half:]), y_near[half:])}
    COMPUTED.clear()
    p_near, k_near, a_near = gate_stream(cands, setup, s_near, half, focus)
    p_uni, k_uni, a_uni = gate_stream(cands, setup, s_uni, n_near, focus)
    out["gate_computed"] = {"rows": dict(COMPUTED), "points": 2 * len(setup) + len(s_near) + len(s_uni)}
    out["gate"] = {"near": {**_scores(p_near, y_near[half:]), "kept": k_near, "active": a_near},
                   "uniform": {**_scores(p_uni, y_uni), "kept": k_uni, "active": a_uni}}
    # before: old fit set, the raw surrogate loss alone (the soft feature zeroed)
    raw = lambda cfgs: [np.array([sur.raw_loss(c), 0.0, 0.0]) for c in cfgs]  # noqa: E731
    before = surrogate_candidate(sur)
    out["before"] = {"near": _scores(_fit_predict(before, raw(old), y_old, raw(near[half:])), y_near[half:]),
                     "uniform": _scores(_fit_predict(before, raw(old), y_old, raw(uni)), y_uni)}
    out["points"] = {"setup": {"loss": y_fit0.tolist(), **_feature_lists(cands, fit0)},
                     "near": {"loss": y_near.tolist(), "se": mn.se.tolist(), **_feature_lists(cands, near)},
                     "uniform": {"loss": y_uni.tolist(), "se": mu.se.tolist(), **_feature_lists(cands, uni)},
                     "halves": {"near": mn.halves.tolist(), "uniform": mu.halves.tolist()}}
    if VECTORS:
        out["vectors"] = _vectors(cands, fit0 + near + uni)
    m = LossModel.fit(np.stack(_rows(cands[1], fit0) + _rows(cands[1], near)), np.r_[y_fit0, y_near])
    out["surrogate_model"] = {"c": m.c, "w": list(m.w)}
    out["variants"] = {str(m): _variant(variants[m], fit0, near, uni, setup, s_near, s_uni, n_near, y_near, y_uni,
                                        focus) for m in dict.fromkeys(ns[1:]) if m != ns[0]}
    for m in dict.fromkeys(logit_images):
        t0 = time.perf_counter()
        wcands, wide = _wide(ctx, m)
        for c in fit0 + near + uni:
            wide.logits(c)
        t_deltas = (time.perf_counter() - t0) / max(wide.measured, 1)
        v = _variant(wcands, fit0, near, uni, setup, s_near, s_uni, n_near, y_near, y_uni, focus,
                     timed="logit surrogate")
        v["delta_s"], v["choices"] = t_deltas, len(seeds.candidates(ctx.space, ctx.energy))
        for cand in [c for c in wcands if c.kind in ("logit surrogate", "propagated - logit + wide logit")]:
            v[cand.kind] = {"near": _scores(gate_stream([cand], setup, s_near, half, focus)[0], y_near[half:]),
                            "uniform": _scores(gate_stream([cand], setup, s_uni, n_near, focus)[0], y_uni)}
        out["variants"][f"logit {m}"] = v
    return out


def _variant(cands, fit0, near, uni, setup, s_near, s_uni, n_near, y_near, y_uni, focus,
             timed: str = "propagated surrogate") -> dict:
    """The search's gate over ``cands`` (another propagated or logit surrogate size) on the same streams as the main
    run, and the ``timed`` candidate's time per prediction (measured as in the main run)."""
    prop = next(c for c in cands if c.kind == timed)
    _rows(prop, fit0), _rows(prop, near)
    _, t_pred = _timed_rows(prop, uni)
    half = half_of(len(near))
    COMPUTED.clear()
    p_near, k_near, a_near = gate_stream(cands, setup, s_near, half, focus)
    p_uni, k_uni, a_uni = gate_stream(cands, setup, s_uni, n_near, focus)
    return {"predict_s": float(np.median(t_pred)), "gate_computed": dict(COMPUTED),
            "near": {**_scores(p_near, y_near[half:]), "kept": k_near, "active": a_near},
            "uniform": {**_scores(p_uni, y_uni), "kept": k_uni, "active": a_uni}}


VECTORS = False


def _vectors(cands, cfgs) -> dict:
    """Per configuration: its key and, per surrogate, which of its images it gets right (a 0/1 string)."""
    from dse.predict import margins

    out = {"keys": [[[n, lc.multiplier, bool(lc.cv)] for n, lc in c.items() if lc.multiplier != "exact"]
                    for c in cfgs]}
    for cand in cands:
        sur = getattr(cand.features, "__self__", None)
        if sur is None or not hasattr(sur, "logits"):
            continue
        rows = []
        for c in cfgs:
            ok = margins(np.asarray(sur.logits(c), np.float64), sur.labels) > 0
            rows.append("".join("1" if v else "0" for v in ok))
        out[cand.kind] = {"rows": rows, "exact": "".join("1" if v else "0" for v in margins(
            np.asarray(sur.logits({}), np.float64), sur.labels) > 0)}
    return out


def s_images(budget: Path, n: int) -> int:
    """Images of a full-fidelity trial of the budget: its ``[data] images`` cap (else ``n``)."""
    from dse.budget import load_budget

    return int(load_budget(budget).data.images or n)


def half_of(n_near: int) -> int:
    """Near-budget points before this index only feed the refit; the rest are scored."""
    return n_near // 2


def _fmt(d: dict, ceil: float) -> str:
    rel = d["spearman"] / ceil if ceil > 0 else float("nan")
    return f"{d['spearman']:.3f} ({rel:.2f} of ceiling) / {100 * d['mae']:.2f} pp (n {d['n']})"


def _kept(g: dict) -> str:
    """The candidates the gate kept over a set's predictions, and on how many it was on."""
    from collections import Counter

    kept = ", ".join(f"{k} {v}" for k, v in Counter(str(k) for k in g["kept"]).most_common())
    return f"{kept}; on for {sum(g['active'])}"


def table(r: dict) -> str:
    se_n, se_u = np.asarray(r["near_se"]), np.asarray(r["uniform_se"])
    yn, yu = np.asarray(r["near_loss"]), np.asarray(r["uniform_loss"])
    rel, rel_s = r["reliability"], r["reliability_search_only"]
    ceil = {k: ceiling(v) for k, v in rel.items()}
    head = (f"`{Path(r['budget']).name}` ({Path(r['model']).name}, {r['layers']} searchable layers, budget "
            f"{100 * r['budget_loss']:.1f} pp): losses on {r['images']} images no predictor saw ({r['search_images']} "
            f"search-split images past the surrogates' first {r['skip']}, {r['holdout_images']} hold-out); "
            f"logit surrogate on {r['surrogate_images']}, propagated surrogate on {r['propagated_images']}; "
            f"near-budget losses {100 * yn.min():.2f}..{100 * yn.max():.2f} pp (paired SE median "
            f"{100 * np.median(se_n):.2f} pp), uniform {100 * yu.min():.1f}..{100 * yu.max():.1f} pp (SE median "
            f"{100 * np.median(se_u):.2f} pp); set-up {r['setup_s']:.0f} s, measuring {r['measure_s']:.0f} s")
    lines = [head, "", "| predictor | near budget, as trials arrive: Spearman (of ceiling) / MAE | uniform random: "
             "Spearman (of ceiling) / MAE |", "|---|---|---|",
             f"| split-half reliability of the measured losses, search images only ({r['search_images']}) | "
             f"{rel_s['near']:.3f} | {rel_s['uniform']:.3f} |",
             f"| split-half reliability, all {r['images']} evaluation images | {rel['near']:.3f} | "
             f"{rel['uniform']:.3f} |",
             f"| ceiling: Spearman of the true losses against the measured ones, sqrt(reliability) | "
             f"{ceil['near']:.3f} | {ceil['uniform']:.3f} |",
             f"| floor: mean error of the true losses against the measured ones, mean SE x sqrt(2/pi) | "
             f"{100 * error_floor(se_n[half_of(len(se_n)):]):.2f} pp | {100 * error_floor(se_u):.2f} pp |",
             f"| before: surrogate, raw loss, old fit set | {_fmt(r['before']['near'], ceil['near'])} | "
             f"{_fmt(r['before']['uniform'], ceil['uniform'])} |"]
    for kind in r["kinds"]:
        lines.append(f"| {kind} alone in the gate, as trials arrive | {_fmt(r[kind]['near'], ceil['near'])} | "
                     f"{_fmt(r[kind]['uniform'], ceil['uniform'])} |")
        lines.append(f"| {kind}, set-up fit only | {_fmt(r[kind]['setup_only_near'], ceil['near'])} | - |")
    g = r["gate"]
    lines.append(f"| **the search's gate** (the candidate it keeps, refitted on the same points) | "
                 f"{_fmt(g['near'], ceil['near'])} | {_fmt(g['uniform'], ceil['uniform'])} |")
    lines.append(f"| gate: kept candidate; predictions with the gate on | {_kept(g['near'])} | {_kept(g['uniform'])} |")
    for m, v in r.get("variants", {}).items():
        what = (f"logit surrogate on {m.split()[1]} images ({1e3 * v['predict_s']:.1f} ms per prediction, "
                f"{v['delta_s']:.2f} s per single-layer change, {v['choices']} in the space)"
                if m.startswith("logit") else
                f"propagated surrogate on {m} images ({1e3 * v['predict_s']:.0f} ms per prediction)")
        for kind in ("logit surrogate", "propagated - logit + wide logit"):
            if kind in v:
                lines.append(f"| {kind} ({m}) alone in the gate | {_fmt(v[kind]['near'], ceil['near'])} | "
                             f"{_fmt(v[kind]['uniform'], ceil['uniform'])} |")
        lines.append(f"| the search's gate, {what} | {_fmt(v['near'], ceil['near'])} | "
                     f"{_fmt(v['uniform'], ceil['uniform'])} |")
        lines.append(f"| gate ({m} images): kept candidate; predictions with the gate on | {_kept(v['near'])} | "
                     f"{_kept(v['uniform'])} |")
    gc = r["gate_computed"]
    costly = ", ".join(f"{k} {n}" for k, n in gc["rows"].items())
    lines += ["", f"Network runs of the gate's costly candidate (its features of a point not at hand) over both "
              f"streams: {costly} of {gc['points']} points."]
    m = r["surrogate_model"]
    trial = r["emulate_s_per_image"] * r["trial_images"]
    lines += ["", f"Time per prediction (median over the uniform configurations, first prediction of each; one run, "
              f"side by side) against an emulated full-fidelity trial ({r['trial_images']} images, "
              f"{1e3 * trial:.0f} ms: the median measuring time per image x images):", "",
              "| predictor | ms per prediction | emulated trial / prediction |", "|---|---|---|"]
    lines += [f"| {k} | {1e3 * r[k]['predict_s']:.2f} | {trial / max(r[k]['predict_s'], 1e-9):.0f}x |"
              for k in r["kinds"]]
    lines.append("")
    lines.append(f"Logit surrogate loss model on the set-up and near-budget points: {m['w'][0]:.3g} r / (1 + "
                 f"{m['c']:.3g} r) + {m['w'][1]:.3g} soft + {m['w'][2]:.3g} rms + {m['w'][3]:.3g} gauss.")
    return "\n".join(lines)


def write_results(budget: str, cmd: str, text: str, variant: str = "") -> None:
    old = RESULTS.read_text()
    sec = re.search(r"^## Predictor\n.*?(?=^## )", old, re.S | re.M)
    if not sec:
        raise SystemExit("RESULTS.md has no '## Predictor' section")
    marker = f"<!-- bench_predict {Path(budget).name}{variant} -->"
    block = f"{marker}\n{cmd}\n\n{text.rstrip()}\n{marker} end\n"
    body = sec.group(0)
    pat = re.compile(re.escape(marker) + r"\n.*?" + re.escape(marker) + r" end\n", re.S)
    body = pat.sub(lambda _: block, body) if pat.search(body) else body.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(old[:sec.start()] + body + old[sec.end():])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("budget", type=Path)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--near", type=int, default=40)
    ap.add_argument("--uniform", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--propagated-images", type=int, nargs="+", default=[],
                    help="images of the propagated surrogate (default: the search's, as the logit surrogate's); the "
                         "first is the main table's, the others' gates are compared on the same points")
    ap.add_argument("--logit-images", type=int, nargs="+", default=[],
                    help="the search's gate with the logit surrogate on this many images, on the same points")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--json", type=Path, help="also write every point (features, measured losses) to this file")
    ap.add_argument("--vectors", action="store_true", help="with --json: also each surrogate's per-image correctness")
    ap.add_argument("--search-seeds", type=int, nargs="+", default=[],
                    help="instead of the other sets: the configurations searches of the budget with these sampler "
                         "seeds propose (the budget's settings, the gate predicting every proposal, never skipping)")
    a = ap.parse_args()
    global VECTORS
    VECTORS = a.vectors
    if a.search_seeds:
        r = run_search_stream(a.budget, a.images, tuple(a.search_seeds))
        print(stream_table(r))
        if a.json:
            import json

            a.json.write_text(json.dumps(r, indent=1, default=float))
        return 0
    r = run(a.budget, a.images, a.near, a.uniform, a.seed, tuple(a.propagated_images), tuple(a.logit_images))
    t = table(r)
    print(t)
    if a.json:
        import json

        a.json.write_text(json.dumps(r, indent=1, default=float))
    if a.write_results:
        extra = f" --propagated-images {' '.join(map(str, a.propagated_images))}" if a.propagated_images else ""
        write_results(str(a.budget), f"`python benchmarks/bench_predict.py {a.budget} --images {a.images} --near "
                      f"{a.near} --uniform {a.uniform} --seed {a.seed}{extra}`", t, extra)
        print(f"updated {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
