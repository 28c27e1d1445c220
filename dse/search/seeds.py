"""Seed configurations enqueued before the sampler takes over: all exact, uniform, sensitivity knapsack.

The knapsack treats per-layer accuracy losses as additive (first-order) and picks at most one (multiplier, cv) choice
per layer maximising the energy saving with total loss <= capacity: a multiple-choice 0/1 knapsack solved exactly by
dynamic programming over losses discretised to ``capacity / resolution`` (rounded up, so the discretised solution never
exceeds the capacity). Several capacities (fractions of the budget) hedge against non-additive interactions.
"""
from __future__ import annotations

import math
from typing import Callable

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


def layer_items(space: SearchSpace, sensitivity: Callable[[str, LayerConfig], float],
                energy: Callable[[dict], dict]) -> dict[str, list[tuple[LayerConfig, float, float]]]:
    """Per searchable layer: ``[(choice, loss, saving)]`` with loss = single-layer accuracy drop (fraction) and
    saving = relative system energy of all exact minus that of the single-layer configuration."""
    base = float(energy(all_exact(space))["system"])
    items = {}
    for n in space.searchable:
        c = space.choices[n]
        lst = []
        for m in c.multipliers:
            for cv in c.cv:
                if m == "exact":
                    continue
                lc = LayerConfig(m, cv)
                cfg = all_exact(space)
                cfg[n] = lc
                saving = base - float(energy(cfg)["system"])
                if saving > 0:
                    lst.append((lc, float(sensitivity(n, lc)), saving))
        items[n] = lst
    return items


def knapsack(items: dict[str, list[tuple[LayerConfig, float, float]]], capacity: float,
             resolution: int = 200) -> dict[str, LayerConfig]:
    """Multiple-choice knapsack: at most one item per layer, sum of losses <= capacity, maximise summed saving."""
    if capacity <= 0:
        cap_units, unit = 0, 1.0
    else:
        cap_units, unit = resolution, capacity / resolution
    best = [0.0] * (cap_units + 1)          # best[w]: max saving with discretised loss <= w
    choice_hist = []
    for n, lst in items.items():
        new = list(best)
        pick = [None] * (cap_units + 1)
        for i, (lc, loss, saving) in enumerate(lst):
            w = max(0, math.ceil(loss / unit - 1e-9)) if capacity > 0 else (0 if loss <= 0 else cap_units + 1)
            if w > cap_units:
                continue
            for cap in range(w, cap_units + 1):
                v = best[cap - w] + saving
                if v > new[cap] + 1e-15:
                    new[cap], pick[cap] = v, (i, w)
        choice_hist.append((n, lst, pick))
        best = new
    out, cap = {}, cap_units
    for n, lst, pick in reversed(choice_hist):
        p = pick[cap]
        if p is not None:
            i, w = p
            out[n] = lst[i][0]
            cap -= w
    return out


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
