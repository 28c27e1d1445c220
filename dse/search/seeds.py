"""Seed configurations enqueued before the sampler takes over: all exact, uniform, sensitivity knapsack.

The knapsack treats per-layer accuracy losses as additive (first-order) and picks at most one (multiplier, cv) choice
per layer maximising the energy saving with total loss <= capacity: a multiple-choice 0/1 knapsack solved exactly as a
mixed-integer linear program (scipy.optimize.milp; the same program as a HAWQ-V3-style sensitivity integer program).
Several capacities (fractions of the budget) hedge against non-additive interactions.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from dse.layer_config import LayerConfig
from dse.search.space import SearchSpace


def all_exact(space: SearchSpace) -> dict[str, LayerConfig]:
    return {n: LayerConfig() for n in space.layers}


def uniform(space: SearchSpace, max_seeds: int = 12) -> list[dict[str, LayerConfig]]:
    """Each non-exact multiplier on every searchable layer that offers it (cv off; cv on too where allowed)."""
    seeds = []
    for m in space.multipliers:
        if m == "exact":
            continue
        for cv in (False, True):
            cfg = all_exact(space)
            used = False
            for n in space.searchable:
                c = space.choices[n]
                if m in c.multipliers:
                    cfg[n] = LayerConfig(m, cv if cv in c.cv else c.cv[0])
                    used = used or (cfg[n].cv == cv)
            if used and cfg not in seeds:
                seeds.append(cfg)
    return seeds[:max_seeds]


def candidates(space: SearchSpace, energy: Callable[[dict], dict]) -> list[tuple[str, LayerConfig, float]]:
    """Single-layer choices worth a sensitivity, layer by layer: ``(layer, choice, saving)`` with saving = relative
    system energy of all exact minus that of the configuration changing only that layer (> 0)."""
    base = float(energy(all_exact(space))["system"])
    out = []
    for n in space.searchable:
        c = space.choices[n]
        for m in c.multipliers:
            for cv in c.cv:
                if m == "exact":
                    continue
                lc = LayerConfig(m, cv)
                cfg = all_exact(space)
                cfg[n] = lc
                saving = base - float(energy(cfg)["system"])
                if saving > 0:
                    out.append((n, lc, saving))
    return out


def layer_items(space: SearchSpace, sensitivity: Callable[[str, LayerConfig], float | None],
                energy: Callable[[dict], dict]) -> dict[str, list[tuple[LayerConfig, float, float]]]:
    """Per searchable layer: ``[(choice, loss, saving)]`` with loss = single-layer accuracy drop (fraction) from
    ``sensitivity`` (None: not known, the choice is left out) and saving as in :func:`candidates`. Asked layer by
    layer, so consecutive perturbations share the exact prefix (dse.prefix_cache)."""
    items: dict[str, list] = {n: [] for n in space.searchable}
    for n, lc, saving in candidates(space, energy):
        loss = sensitivity(n, lc)
        if loss is not None:
            items[n].append((lc, float(loss), saving))
    return items


def knapsack(items: dict[str, list[tuple[LayerConfig, float, float]]], capacity: float) -> dict[str, LayerConfig]:
    """Multiple-choice knapsack: at most one item per layer, sum of losses <= capacity, maximise summed saving
    (binary variables per (layer, item), solved by scipy.optimize.milp)."""
    flat = [(n, i, loss, saving) for n, lst in items.items() for i, (_, loss, saving) in enumerate(lst)]
    if not flat:
        return {}
    names = list(items)
    loss = np.array([f[2] for f in flat])
    one_per_layer = np.array([[1.0 if f[0] == n else 0.0 for f in flat] for n in names])
    cons = [LinearConstraint(loss[None, :], -np.inf, capacity), LinearConstraint(one_per_layer, 0, 1)]
    res = milp(c=-np.array([f[3] for f in flat]), constraints=cons, integrality=np.ones(len(flat)),
               bounds=Bounds(0, 1))
    if res.x is None:  # infeasible only when even the empty choice breaks the capacity (negative capacity)
        return {}
    return {n: items[n][i][0] for (n, i, _, _), x in zip(flat, res.x) if x > 0.5}


def knapsack_seeds(space: SearchSpace, items, budget_loss: float, fractions=(0.5, 1.0, 1.5)) -> list[dict]:
    """Knapsack configurations at ``fractions`` of the loss budget (deduplicated, non-empty)."""
    seeds = []
    for f in fractions:
        chosen = knapsack(items, f * budget_loss)
        if not chosen:
            continue
        cfg = all_exact(space)
        cfg.update(chosen)
        if cfg not in seeds:
            seeds.append(cfg)
    return seeds
