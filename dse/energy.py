"""Analytic energy/latency model of a weight-stationary PE array (owner of the energy model in design.md).

Mapping. Each MAC layer is a per-image GEMM ``M x K x N`` (``MacLayer``: ``M`` output positions, ``K`` MACs per
output = reduction length per group, ``N`` output channels, ``groups`` g, ``N_g = N / g``). The reduction dimension
goes onto the ``rows``, the output channels onto the ``cols`` of the array: ``tiles = g * ceil(K/rows) *
ceil(N_g/cols)``; a tile keeps its weights stationary and streams the ``M`` input rows through, so it takes ``M +
rows + cols`` cycles (pipeline fill/drain; ``+1`` with the control-variate column). Weight loading is double-buffered
(hidden behind the previous tile). ``utilisation = MACs / (cycles * rows * cols)``.

Counts per image (``w``, ``a``, ``o``, ``p`` = stored bits of a weight, an input activation, an output, a psum):

* multiplier: one multiply per MAC, ``E = mult8 * (w/8) * (a/8) * rel_power`` (bilinear in the operand widths).
  Ax-BxP ``axbxp_k{K}_w{Lw}_a{La}_{mode}``: ``Lw*La`` exact ``KxK`` block products per MAC (``mult8 * (K/8)^2``
  each), combined by ``Lw*La - 1`` adds of ``2K`` bits (``shift_add``; ripple adders, energy linear in width:
  ``add32 * 2K/32``; the kept blocks are consecutive, so their relative shifts are wiring). Dynamic mode adds one
  16-bit barrel shift per MAC (by the block indices) and one leading-block detection per input activation (``block_detect``, one 8-bit add ``add8`` each; weight indices are computed
  offline); stored operands carry the index bits ``ceil(log2(8/K - L + 1))``. Static stores ``Lw*K`` / ``La*K`` bits
  per weight / activation.
  Float multipliers (domain "float"): ``fp32_mult`` (or ``fp16_mult`` when ``params["power_reference"] == "fp16"``)
  times ``rel_power``, FP32 accumulation adds, 32-bit operands, psums and outputs.
* accumulate: one 32-bit add per MAC.
* registers: per MAC the weight register read (``w``), the input pipeline register (``a``) and the psum pipeline
  register (``p``); plus one weight register write per weight (each weight is loaded into one PE once per image).
* glb (SRAM, ``sram * sqrt(glb_kib / 8)`` per bit): reads: weights once per tile (``K*N*w``), inputs re-read per column
  tile (``g * ceil(N_g/cols) * M * K * a``), psums read per row tile after the first (``(ceil(K/rows)-1) * M*N * p``),
  outputs drained to DRAM (``M*N*o``); writes: weights and inputs filled from DRAM, psums written per row tile but the
  last, outputs (``M*N*o``).
* dram: weights once per image batch (``K*N*w / batch``), the layer input (``prod(in_shape) * a``) and output
  (``M*N*o``) once. Outputs are stored at ``out_bits`` (the consumer's block format is not known per layer).
* leakage: ``(rows*cols*pe_leak + glb_kib*glb_leak) * cycles / f`` (+ ``rows*pe_leak`` for the cv column).
* cv (control-variate column, when ``cv`` is on): ``g*M*K`` 32-bit adds of ``X = sum_i a_i`` in a dedicated extra
  column, each with an input and a psum register, its psums through the GLB like the others, ``X`` written once per
  (group, position) and read once per column tile, and per output one correction multiply (``cv_coef_bits x p``
  bilinear) and one 32-bit add.

Bias add, requantisation, pooling and activations are not modelled (identical in every configuration).
``EnergyModel.relative`` divides by the all-exact FxP8 configuration on the same array and constants.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache

from dse.errors import DseError


@dataclass(frozen=True)
class Constant:
    """One energy/power constant: value, unit and where it comes from."""

    value: float
    unit: str
    source: str


HOROWITZ = "Horowitz, ISSCC 2014, 45 nm 0.9 V"
DEFAULT_CONSTANTS: dict[str, Constant] = {
    "mult8": Constant(0.2, "pJ", f"{HOROWITZ}: 8-bit integer multiply"),
    "add8": Constant(0.03, "pJ", f"{HOROWITZ}: 8-bit integer add (also the cost model of one 8-bit leading-block "
                                 "detector + index encoder, an assumption)"),
    "add32": Constant(0.1, "pJ", f"{HOROWITZ}: 32-bit integer add"),
    "fp16_mult": Constant(1.1, "pJ", f"{HOROWITZ}: 16-bit FP multiply"),
    "fp32_mult": Constant(3.7, "pJ", f"{HOROWITZ}: 32-bit FP multiply"),
    "fp32_add": Constant(0.9, "pJ", f"{HOROWITZ}: 32-bit FP add"),
    "sram": Constant(0.156, "pJ/bit", f"{HOROWITZ}: 8 KiB SRAM, 10 pJ per 64-bit access; scaled by sqrt(size/8 KiB)"),
    "dram": Constant(20.0, "pJ/bit", f"{HOROWITZ}: DRAM 1.3-2.6 nJ per 64-bit access (low end)"),
    "reg_bit": Constant(0.009, "pJ/bit", "Aladdin (Shao et al., ISCA 2014), 40 nm register, per bit access"),
    "shift16": Constant(0.0533, "pJ", "assumption: one 16-bit barrel shift ~ one 16-bit add, linear interpolation "
                                      "of the Horowitz 8/32-bit adds (0.03 + 8 * 0.07/24)"),
    "pe_leak": Constant(0.037, "mW", "assumption: 10 % of an 8-bit MAC PE's dynamic power at full activity and "
                                     "500 MHz ((0.2 + 0.1 + 48 * 0.009) pJ * 500 MHz = 0.37 mW), typical 45 nm "
                                     "leakage share"),
    "glb_leak": Constant(0.02, "mW/KiB", "assumption: 45 nm high-performance SRAM leakage, order of CACTI-P figures "
                                        "(tens of uW per KiB)"),
}

COMPONENTS = ("multiplier", "shift_add", "block_detect", "accumulate", "registers", "glb", "dram", "leakage", "cv")
MULTIPLIER_COMPONENTS = ("multiplier", "shift_add", "block_detect")  # the multiplier unit ("multiplier" in relative)


def resolve_constants(overrides: dict | None = None, where: str = "energy") -> dict[str, Constant]:
    """Defaults updated by ``overrides``: ``{key: number | Constant | {"value": x, "source": "...", "unit": u}}``.

    Unknown key, non-numeric or negative value, or a different unit -> DseError naming ``<where>.<key>``.
    """
    out = dict(DEFAULT_CONSTANTS)
    for key, v in (overrides or {}).items():
        if key not in DEFAULT_CONSTANTS:
            raise DseError(f"unknown key '{where}.{key}'; known energy constants: {', '.join(DEFAULT_CONSTANTS)}")
        base = DEFAULT_CONSTANTS[key]
        source = "user override"
        if isinstance(v, Constant):
            v, unit, source = v.value, v.unit, v.source
        elif isinstance(v, dict):
            extra = set(v) - {"value", "unit", "source"}
            if extra or "value" not in v:
                raise DseError(f"key '{where}.{key}' must be a number or a table with 'value' (and optional 'unit', "
                               f"'source'), got keys {sorted(v)}")
            unit, source = v.get("unit", base.unit), str(v.get("source", source))
            v = v["value"]
        else:
            unit = base.unit
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise DseError(f"key '{where}.{key}' must be a non-negative number in {base.unit}, got {v!r}")
        if unit != base.unit:
            raise DseError(f"key '{where}.{key}' is in {base.unit}, got unit {unit!r}; convert the value")
        out[key] = Constant(float(v), base.unit, source)
    return out


# Field -> (lower bound, upper bound or None) for validation; all fields are positive.
ARRAY_LIMITS = {"rows": (1, 4096), "cols": (1, 4096), "frequency_mhz": (1e-3, None), "glb_kib": (1e-3, None),
                "weight_bits": (1, 32), "act_bits": (1, 32), "out_bits": (1, 32), "psum_bits": (1, 64),
                "batch": (1, None), "cv_coef_bits": (1, 32)}


@dataclass(frozen=True)
class ArrayConfig:
    """The accelerator: PE array shape, clock, global buffer size and per-tensor bit widths.

    ``frequency_mhz`` default 500 MHz: assumption for a 45 nm systolic array (Eyeriss runs 100-250 MHz in 65 nm,
    TPU v1 700 MHz in 28 nm). ``glb_kib`` 64 KiB: assumption (Eyeriss 108 KiB). ``batch``: images per weight fetch from
    DRAM. ``cv_coef_bits``: width of the per-filter control-variate coefficient alpha_f.
    """

    rows: int = 16
    cols: int = 16
    frequency_mhz: float = 500.0
    glb_kib: float = 64.0
    weight_bits: int = 8
    act_bits: int = 8
    out_bits: int = 8
    psum_bits: int = 32
    batch: int = 1
    cv_coef_bits: int = 8

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            lo, hi = ARRAY_LIMITS[f.name]
            want_int = f.type in (int, "int")
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and (not want_int or float(v).is_integer())
            if not ok or not math.isfinite(v) or v < lo or (hi is not None and v > hi):
                kind = "an integer" if want_int else "a number"
                rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
                raise DseError(f"key 'accelerator.{f.name}' must be {kind} {rng}, got {v!r}")


@dataclass(frozen=True)
class _MulSpec:
    """What the energy model needs to know about a multiplier (resolved once per name)."""

    kind: str            # "int", "axbxp" or "float"
    rel_power: float = 1.0
    K: int = 8
    Lw: int = 1
    La: int = 1
    dynamic: bool = False
    fp_ref: str = "fp32"


@lru_cache(maxsize=None)
def _mul_spec(name: str) -> _MulSpec:
    """Resolve a multiplier name (``get_multiplier``: unknown name -> DseError) to what the energy model needs."""
    if name == "exact":
        return _MulSpec("int", 1.0)
    from dse.arith.multipliers import get_multiplier

    mult = get_multiplier(name)
    if mult.family == "axbxp":  # structural model from the block parameters (rel_power not used)
        p = mult.params
        return _MulSpec("axbxp", 1.0, int(p["K"]), int(p["Lw"]), int(p["La"]), p["mode"] == "dynamic")
    rp = float(mult.rel_power)
    if not math.isfinite(rp) or rp < 0:
        raise DseError(f"multiplier '{name}' has unknown relative power ({rp}); give it, e.g. '{name}?power=0.5' "
                       f"for imported tables")
    if mult.domain == "float":
        return _MulSpec("float", rp, fp_ref=str(mult.params.get("power_reference", "fp32")))
    return _MulSpec("int", rp)


def _index_bits(K: int, L: int) -> int:
    """Block-index bits of a dynamic Ax-BxP operand: the kept window of L consecutive blocks starts at 0..n-L."""
    n = -(-8 // K)
    return math.ceil(math.log2(n - L + 1)) if n - L + 1 > 1 else 0


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


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


class EnergyModel:
    """``EnergyModel(constants=None, array=ArrayConfig())``; ``constants``: overrides (see ``resolve_constants``)."""

    def __init__(self, constants: dict | None = None, array: ArrayConfig | None = None):
        self.constants = resolve_constants(constants)
        self.array = array if array is not None else ArrayConfig()
        if not isinstance(self.array, ArrayConfig):
            raise DseError(f"EnergyModel: array must be an ArrayConfig, got {type(self.array).__name__}")
        c = self.constants
        self._sram_bit = c["sram"].value * math.sqrt(self.array.glb_kib / 8.0)
        self._cache: dict = {}
        self._exact_cache: dict = {}

    # ------------------------------------------------------------------------------------------------------------
    def layer(self, layer, cfg=None) -> LayerEnergy:
        """Energy, cycles and utilisation of one MAC layer per image under ``cfg`` (LayerConfig; None = exact)."""
        mname = str(getattr(cfg, "multiplier", "exact")) if cfg is not None else "exact"
        cv = bool(getattr(cfg, "cv", False)) if cfg is not None else False
        key = (layer.name, int(layer.M), int(layer.K), int(layer.N), int(layer.groups), tuple(layer.in_shape), mname, cv)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._layer(layer, mname, cv)
        return hit

    def _layer(self, layer, mname: str, cv: bool) -> LayerEnergy:
        A, c = self.array, self.constants
        M, K, N, g = int(layer.M), int(layer.K), int(layer.N), int(layer.groups)
        if min(M, K, N, g) < 1 or N % g:
            raise DseError(f"layer '{layer.name}': GEMM M={M} K={K} N={N} groups={g} is not a valid mapping "
                           f"(all >= 1, N divisible by groups); re-import the model")
        spec = _mul_spec(mname)
        Ng = N // g
        rt, ct = -(-K // A.rows), -(-Ng // A.cols)
        tiles = g * rt * ct
        fill = A.rows + A.cols + (1 if cv else 0)
        cycles = tiles * (M + fill)
        macs = M * K * N
        in_elems = _prod(layer.in_shape) if layer.in_shape else M * K * g
        outs = M * N

        pb = A.psum_bits
        if spec.kind == "float":
            wb = ab = ob = 32
            mul_e = c["fp16_mult" if spec.fp_ref == "fp16" else "fp32_mult"].value * spec.rel_power
            acc_e = c["fp32_add"].value
        elif spec.kind == "axbxp":
            wb = spec.Lw * spec.K + (_index_bits(spec.K, spec.Lw) if spec.dynamic else 0)
            ab = spec.La * spec.K + (_index_bits(spec.K, spec.La) if spec.dynamic else 0)
            ob = A.out_bits
            mul_e = spec.Lw * spec.La * c["mult8"].value * (spec.K / 8.0) ** 2
            acc_e = c["add32"].value
        else:
            wb, ab, ob = A.weight_bits, A.act_bits, A.out_bits
            mul_e = c["mult8"].value * (wb / 8.0) * (ab / 8.0) * spec.rel_power
            acc_e = c["add32"].value

        n_shift_add = n_shift = n_detect = 0
        if spec.kind == "axbxp":
            n_shift_add = macs * (spec.Lw * spec.La - 1)
            if spec.dynamic:
                n_shift, n_detect = macs, in_elems

        w_elems = K * N
        glb_read = {"weights": w_elems * wb, "inputs": g * ct * M * K * ab, "psums": (rt - 1) * outs * pb,
                    "outputs": outs * ob}
        glb_write = {"weights": w_elems * wb / A.batch, "inputs": in_elems * ab, "psums": (rt - 1) * outs * pb,
                     "outputs": outs * ob}
        dram_bits = w_elems * wb / A.batch + in_elems * ab + outs * ob
        reg_bits = macs * (wb + ab + pb) + w_elems * wb

        counts = {"macs": macs, "mults": macs, "block_products": macs * spec.Lw * spec.La if spec.kind == "axbxp" else 0,
                  "shift_adds": n_shift_add, "shifts": n_shift, "block_detects": n_detect, "adds": macs,
                  "reg_bits": reg_bits, "glb_read_bits": sum(glb_read.values()),
                  "glb_write_bits": sum(glb_write.values()), "dram_bits": dram_bits,
                  "weight_bits": wb, "act_bits": ab, "out_bits": ob}
        leak_mw = A.rows * A.cols * c["pe_leak"].value + A.glb_kib * c["glb_leak"].value
        comp = {
            "multiplier": macs * mul_e,
            "shift_add": n_shift_add * c["add32"].value * (2 * spec.K) / 32.0 + n_shift * c["shift16"].value,
            "block_detect": n_detect * c["add8"].value,
            "accumulate": macs * acc_e,
            "registers": reg_bits * c["reg_bit"].value,
            "glb": (counts["glb_read_bits"] + counts["glb_write_bits"]) * self._sram_bit,
            "dram": dram_bits * c["dram"].value,
            "leakage": leak_mw * cycles / A.frequency_mhz * 1e3,  # mW * us = nJ = 1e3 pJ
            "cv": 0.0,
        }
        if cv:
            cv_adds = g * M * K
            cv_reg = cv_adds * (ab + pb)
            cv_glb_r = g * (rt - 1) * M * pb + g * ct * M * pb
            cv_glb_w = g * (rt - 1) * M * pb + g * M * pb
            if spec.kind == "float":
                corr_mul, corr_add, add_e = c["fp32_mult"].value, c["fp32_add"].value, c["fp32_add"].value
            else:
                corr_mul = c["mult8"].value * (A.cv_coef_bits / 8.0) * (pb / 8.0)
                corr_add = add_e = c["add32"].value
            counts.update(cv_adds=cv_adds, cv_reg_bits=cv_reg, cv_glb_read_bits=cv_glb_r, cv_glb_write_bits=cv_glb_w,
                          cv_corrections=outs)
            comp["cv"] = (cv_adds * add_e + cv_reg * c["reg_bit"].value + (cv_glb_r + cv_glb_w) * self._sram_bit
                          + outs * (corr_mul + corr_add)
                          + A.rows * c["pe_leak"].value * cycles / A.frequency_mhz * 1e3)
        else:
            counts.update(cv_adds=0, cv_reg_bits=0, cv_glb_read_bits=0, cv_glb_write_bits=0, cv_corrections=0)
        comp = {k: float(v) for k, v in comp.items()}
        return LayerEnergy(name=layer.name, multiplier=mname, cv=cv, components=comp, counts=counts, tiles=tiles,
                           cycles=cycles, utilisation=macs / (cycles * A.rows * A.cols),
                           spatial_utilisation=(K * Ng) / (rt * A.rows * ct * A.cols))

    # ------------------------------------------------------------------------------------------------------------
    def network(self, layers, config: dict | None = None) -> NetworkEnergy:
        """Per-image energy of all MAC ``layers`` under ``config`` (``{name: LayerConfig}``, missing = exact)."""
        config = config or {}
        names = {l.name for l in layers}
        for name in config:
            if name not in names:
                raise DseError(f"configuration names layer '{name}', which is not a MAC layer of the model; "
                               f"known: {', '.join(l.name for l in layers)}")
        per = [self.layer(l, config.get(l.name)) for l in layers]
        comp = {k: float(sum(le.components[k] for le in per)) for k in COMPONENTS}
        cycles = int(sum(le.cycles for le in per))
        return NetworkEnergy(layers=per, components=comp, total=float(sum(comp.values())),
                             multiplier_energy=float(sum(comp[k] for k in MULTIPLIER_COMPONENTS)), cycles=cycles,
                             latency_s=cycles / (self.array.frequency_mhz * 1e6), frequency_mhz=self.array.frequency_mhz,
                             constants=self.constants)

    def relative(self, layers, config: dict | None = None) -> dict:
        """``{system, multiplier, latency}`` of ``config`` relative to all-exact FxP8 on the same array."""
        key = tuple((l.name, l.M, l.K, l.N, l.groups, tuple(l.in_shape)) for l in layers)
        ex = self._exact_cache.get(key)
        if ex is None:
            ex = self._exact_cache[key] = self.network(layers, {})
        net = self.network(layers, config)
        return {"system": net.total / ex.total, "multiplier": net.multiplier_energy / ex.multiplier_energy,
                "latency": net.cycles / ex.cycles}
