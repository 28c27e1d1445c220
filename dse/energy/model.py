"""The built-in analytic energy/latency model: mapping -> per-action counts -> energy-per-action table.

``EnergyModel(constants, array).network(layers, config)`` maps every MAC layer onto the weight-stationary array
(``dse.energy.mapping``), plans which tensors go through DRAM, counts the actions per image
(``dse.energy.counts``) and prices them with the table built once from the sourced constants (``dse.energy.table``).
Bias add, requantisation, pooling and activations are not modelled (identical in every configuration).
``EnergyModel.relative`` divides by the all-exact FxP8 configuration on the same array and constants.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dse.energy.arch import ArrayConfig
from dse.energy.constants import resolve_constants
from dse.energy.counts import count_actions
from dse.energy.formats import operand_format
from dse.energy.mapping import Residency, map_layer, plan_residency
from dse.energy.table import COMPONENTS, MULTIPLIER_COMPONENTS, EnergyTable, components
from dse.errors import DseError
from dse.layer_config import check_layers


@dataclass
class LayerEnergy:
    """Energy of one MAC layer per image: ``components`` in pJ, operation/bit ``counts``, mapping and cycles."""

    name: str
    multiplier: str
    cv: bool
    components: dict
    counts: dict
    tiles: int
    cycles: int
    utilisation: float
    spatial_utilisation: float

    @property
    def total(self) -> float:
        return float(sum(self.components.values()))

    @property
    def multiplier_energy(self) -> float:
        return float(sum(self.components[k] for k in MULTIPLIER_COMPONENTS))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total"] = self.total
        d["multiplier_energy"] = self.multiplier_energy
        return d


@dataclass
class NetworkEnergy:
    """Per-image energy of a network: per-layer list, totals (pJ), per-component totals, latency."""

    layers: list
    components: dict
    total: float
    multiplier_energy: float
    cycles: int
    latency_s: float
    frequency_mhz: float
    constants: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"total_pj": self.total, "multiplier_pj": self.multiplier_energy, "components": dict(self.components),
                "cycles": self.cycles, "latency_s": self.latency_s, "frequency_mhz": self.frequency_mhz,
                "layers": [l.to_dict() for l in self.layers],
                "constants": {k: asdict(c) for k, c in self.constants.items()}}


def _cfg(cfg) -> tuple[str, bool]:
    """(multiplier name, cv) of a LayerConfig; None = exact."""
    return ("exact", False) if cfg is None else (str(cfg.multiplier), bool(cfg.cv))


def _layer_key(layer) -> tuple:
    return (layer.name, int(layer.M), int(layer.K), int(layer.N), int(layer.groups), tuple(layer.in_shape))


class EnergyModel:
    """``EnergyModel(constants=None, array=ArrayConfig())``; ``constants``: overrides (see ``resolve_constants``)."""

    def __init__(self, constants: dict | None = None, array: ArrayConfig | None = None):
        self.constants = resolve_constants(constants)
        self.array = array if array is not None else ArrayConfig()
        if not isinstance(self.array, ArrayConfig):
            raise DseError(f"EnergyModel: array must be an ArrayConfig, got {type(self.array).__name__}")
        self.table = EnergyTable(self.constants, self.array)
        self._cache: dict = {}
        self._plans: dict = {}
        self._exact_cache: dict = {}

    def layer(self, layer, cfg=None, residency: Residency | None = None) -> LayerEnergy:
        """Energy, cycles and utilisation of one MAC layer per image under ``cfg`` (LayerConfig; None = exact).

        ``residency`` None: the layer as a one-layer network (input from and output to DRAM)."""
        mname, cv = _cfg(cfg)
        if residency is None:
            residency = plan_residency([layer], [operand_format(mname, self.array)], self.array)[0]
        key = (_layer_key(layer), mname, cv, residency)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._layer(layer, mname, cv, residency)
        return hit

    def _layer(self, layer, mname: str, cv: bool, residency: Residency) -> LayerEnergy:
        fmt = operand_format(mname, self.array)
        mp = map_layer(layer, self.array, cv)
        counts = count_actions(layer, mp, fmt, residency, self.array, cv)
        return LayerEnergy(name=layer.name, multiplier=mname, cv=cv,
                           components=components(counts, self.table.actions(fmt)), counts=counts, tiles=mp.tiles,
                           cycles=mp.cycles, utilisation=mp.utilisation, spatial_utilisation=mp.spatial_utilisation)

    def network(self, layers, config: dict | None = None) -> NetworkEnergy:
        """Per-image energy of all MAC ``layers`` (topological order) under ``config`` (``{name: LayerConfig}``,
        missing = exact)."""
        config = config or {}
        check_layers(config, [l.name for l in layers], "configuration")
        cfgs = [config.get(l.name) for l in layers]
        fmts = tuple(operand_format(_cfg(c)[0], self.array) for c in cfgs)
        key = (tuple(_layer_key(l) for l in layers), fmts)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = plan_residency(layers, list(fmts), self.array)
        per = [self.layer(l, c, r) for l, c, r in zip(layers, cfgs, plan)]
        comp = {k: float(sum(le.components[k] for le in per)) for k in COMPONENTS}
        cycles = int(sum(le.cycles for le in per))
        return NetworkEnergy(layers=per, components=comp, total=float(sum(comp.values())),
                             multiplier_energy=float(sum(comp[k] for k in MULTIPLIER_COMPONENTS)), cycles=cycles,
                             latency_s=cycles / (self.array.frequency_mhz * 1e6), frequency_mhz=self.array.frequency_mhz,
                             constants=self.constants)

    def relative(self, layers, config: dict | None = None) -> dict:
        """``{system, multiplier, latency}`` of ``config`` relative to all-exact FxP8 on the same array."""
        key = tuple(_layer_key(l) for l in layers)
        ex = self._exact_cache.get(key)
        if ex is None:
            ex = self._exact_cache[key] = self.network(layers, {})
        net = self.network(layers, config)
        return {"system": net.total / ex.total, "multiplier": net.multiplier_energy / ex.multiplier_energy,
                "latency": net.cycles / ex.cycles}
