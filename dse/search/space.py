"""The static Optuna search space: per searchable MAC layer a multiplier choice and a control-variate switch.

Parameter names are ``"<layer>.mult"`` (categorical over a static, sorted list of multiplier names, always including
``"exact"``) and ``"<layer>.cv"`` (categorical over the allowed bools). Choice lists never change between trials or
processes, as Optuna requires. Pinned layers (first/last when ``pin_first_last``) are not searched and stay exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from dse.errors import DseError
from dse.layer_config import LayerConfig, check_layers


@dataclass(frozen=True)
class LayerChoices:
    """Static choice lists of one searchable layer."""

    multipliers: tuple[str, ...]
    cv: tuple[bool, ...]


@dataclass
class SearchSpace:
    """``layers``: all MAC layer names in execution order; ``choices``: the searchable ones (others stay exact)."""

    layers: list[str]
    choices: dict[str, LayerChoices] = field(default_factory=dict)

    @classmethod
    def build(cls, layers: list[str], multipliers: list[str], cv: list[bool] = (False,), pin_first_last: bool = True,
              overrides: dict | None = None, where: str = "search space") -> "SearchSpace":
        """Build the space. ``overrides``: ``{layer: {"multipliers": [...], "cv": [...], "pin": bool}}`` (the budget's
        ``[space.layers.<layer>]`` tables).

        Unknown override layer names raise DseError prefixed ``where``, naming the budget key and the known names.
        """
        layers = list(layers)
        if not layers:
            raise DseError("search space: the model has no MAC layers (Conv/Gemm/MatMul) to search")
        overrides = dict(overrides or {})
        check_layers(overrides, layers, where, key="space.layers")
        pinned = {layers[0], layers[-1]} if pin_first_last else set()
        choices: dict[str, LayerChoices] = {}
        for name in layers:
            ov = overrides.get(name, {}) or {}
            if ov.get("pin", name in pinned):
                continue
            mults = sorted(set(ov.get("multipliers", multipliers)) | {"exact"})
            cvs = tuple(sorted({bool(c) for c in ov.get("cv", cv)}))
            if not cvs:
                raise DseError(f"search space: layer '{name}' has an empty cv choice list; use [false] or [false, true]")
            if len(mults) == 1 and cvs == (False,):
                continue  # nothing to search on this layer
            choices[name] = LayerChoices(tuple(mults), cvs)
        if not choices:
            raise DseError("search space: no searchable layer left (all pinned or only 'exact'); "
                           "add multipliers to [space] or set pin_first_last = false")
        return cls(layers, choices)

    @property
    def searchable(self) -> list[str]:
        return [n for n in self.layers if n in self.choices]

    @property
    def param_names(self) -> list[str]:
        out = []
        for n in self.searchable:
            out += [f"{n}.mult", f"{n}.cv"]
        return out

    @property
    def multipliers(self) -> list[str]:
        """All multiplier names used anywhere in the space (sorted)."""
        return sorted({m for c in self.choices.values() for m in c.multipliers})

    def suggest(self, trial) -> dict[str, LayerConfig]:
        """Sample a configuration from an Optuna trial (every parameter is always suggested: static space)."""
        params = {}
        for n in self.searchable:
            c = self.choices[n]
            params[f"{n}.mult"] = trial.suggest_categorical(f"{n}.mult", list(c.multipliers))
            params[f"{n}.cv"] = trial.suggest_categorical(f"{n}.cv", list(c.cv))
        return self.config_from_params(params)

    def config_from_params(self, params: dict) -> dict[str, LayerConfig]:
        """Configuration of all layers from trial params. ``exact`` with cv is normalised to plain exact (the
        correction of an error-free multiplier is zero), so it never costs the extra accumulation column."""
        cfg = {}
        for n in self.layers:
            m = params.get(f"{n}.mult", "exact")
            cv = bool(params.get(f"{n}.cv", False)) and m != "exact"
            cfg[n] = LayerConfig(m, cv)
        return cfg

    def params_from_config(self, config: dict) -> dict:
        """Trial params (for ``enqueue_trial``) of a configuration; raises DseError if it lies outside the space."""
        params = {}
        for n in self.searchable:
            lc = config.get(n, LayerConfig())
            c = self.choices[n]
            if lc.multiplier not in c.multipliers:
                raise DseError(f"configuration: layer '{n}' multiplier '{lc.multiplier}' is not in the search space")
            cv = bool(lc.cv) if bool(lc.cv) in c.cv else c.cv[0]
            params[f"{n}.mult"] = lc.multiplier
            params[f"{n}.cv"] = cv
        for n, lc in config.items():
            if n not in self.choices and lc.multiplier != "exact":
                raise DseError(f"configuration: layer '{n}' is pinned or unknown but uses '{lc.multiplier}'")
        return params
