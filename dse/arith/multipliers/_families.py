"""The built-in families: one :class:`Family` row each (name pattern, parameter check, table builder, description);
relative power from :func:`dse.arith.power.power_model`. ``builtin(name)`` resolves a name against the table."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from dse.arith.multipliers import _cores as C
from dse.arith.multipliers._base import EXACT, Multiplier
from dse.arith.multipliers._signed import ones_complement, sign_magnitude
from dse.arith.power import GATE_MODEL_SOURCE, power_model, power_source
from dse.errors import DseError

_SM = "sign-magnitude signed operands"
_N = r"(0|[1-9][0-9]*)"


def bad_name(name: str, why: str) -> DseError:
    return DseError(f"multiplier '{name}': {why}; run 'dse multipliers' for the list of names")


@dataclass(frozen=True)
class Family:
    """One multiplier family.

    pattern: full-match regex of its names; ``params(groups)`` turns the regex groups into the family parameters
    (without "signed_scheme"); ``valid(p)`` is the parameter range, ``rule`` says it in words for the error message;
    ``describe(p)`` the one-line description. Int families give ``core(p) -> f(a, b)`` (unsigned magnitudes) and the
    signed ``scheme``; float families give ``float_fn(p) -> f(x, y)``.
    """

    name: str
    pattern: str
    params: Callable[[tuple], dict]
    describe: Callable[[dict], str]
    valid: Callable[[dict], bool] = lambda p: True
    rule: str = ""
    core: Callable[[dict], Callable] | None = None
    scheme: str = "sign_magnitude"
    float_fn: Callable[[dict], Callable] | None = None

    def make(self, name: str, groups: tuple) -> Multiplier:
        p = self.params(groups)
        if not self.valid(p):
            raise bad_name(name, self.rule)
        if self.float_fn is not None:
            p = {**p, "power_reference": "fp32", "signed_scheme": "ieee", "power_source": GATE_MODEL_SOURCE}
            return Multiplier(name=name, family=self.name, domain="float", rel_power=power_model(self.name, p),
                              params=p, description=self.describe(p), _float_fn=self.float_fn(p))
        p = {**p, "signed_scheme": self.scheme, "power_source": power_source(self.name)}
        wrap = ones_complement if self.scheme == "ones_complement" else sign_magnitude
        return Multiplier(name=name, family=self.name, rel_power=power_model(self.name, p), params=p,
                          description=self.describe(p), _builder=wrap(self.core(p)))


def _one(key: str):
    return lambda g: {key: int(g[0])}


def _bf16(p):
    from dse.arith.floatmul import bf16_product

    return bf16_product


def _fp32_mitch_w(p):
    from dse.arith.floatmul import fp32_mitch_w

    w = p["w"]
    return lambda x, y: fp32_mitch_w(x, y, w)


FAMILIES = (
    Family("mitchell", r"mitchell", lambda g: {},
           lambda p: f"Mitchell log multiplier (full fraction, floor); {_SM}",
           core=lambda p: C.mitchell_core),
    Family("mitch_w", rf"mitch_w{_N}", _one("w"),
           lambda p: f"Mitch-w{p['w']} log multiplier, {p['w'] - 2} fraction bits + unbias bit; one's-complement "
                     "signed operands",
           valid=lambda p: 3 <= p["w"] <= 8, rule="Mitch-w needs w in 3..8",
           core=lambda p: lambda a, b: C.mitch_w_core(a, b, p["w"]), scheme="ones_complement"),
    Family("drum", rf"drum{_N}", _one("k"),
           lambda p: f"DRUM-{p['k']}: {p['k']}-bit leading segments, LSB forced to 1; {_SM}",
           valid=lambda p: 2 <= p["k"] <= 8, rule="DRUM needs k in 2..8",
           core=lambda p: lambda a, b: C.drum_core(a, b, p["k"])),
    Family("perforation", rf"perf_j{_N}_k{_N}", lambda g: {"j": int(g[0]), "k": int(g[1])},
           lambda p: f"weight partial-product rows {p['j']}..{p['j'] + p['k'] - 1} omitted; {_SM}",
           valid=lambda p: p["k"] >= 1 and p["j"] + p["k"] <= 8, rule="perforation needs k >= 1 and j + k <= 8",
           core=lambda p: lambda a, b: C.perf_core(a, b, p["j"], p["k"])),
    Family("trunc_op", rf"trunc_op{_N}", _one("t"),
           lambda p: f"{p['t']} LSBs of both operand magnitudes zeroed; {_SM}",
           valid=lambda p: 1 <= p["t"] <= 7, rule="operand truncation needs t in 1..7",
           core=lambda p: lambda a, b: C.trunc_op_core(a, b, p["t"])),
    Family("trunc_col", rf"trunc_col{_N}", _one("c"),
           lambda p: f"partial-product columns 0..{p['c'] - 1} dropped; {_SM}",
           valid=lambda p: 1 <= p["c"] <= 15, rule="column truncation needs c in 1..15",
           core=lambda p: lambda a, b: C.trunc_col_core(a, b, p["c"])),
    Family("axbxp", rf"axbxp_k{_N}_w{_N}_a{_N}_(static|dynamic)",
           lambda g: {"K": int(g[0]), "Lw": int(g[1]), "La": int(g[2]), "mode": g[3]},
           lambda p: f"Ax-BxP {p['mode']}: {p['Lw']} weight x {p['La']} activation {p['K']}-bit blocks; {_SM}",
           valid=lambda p: p["K"] in (2, 4) and 1 <= p["Lw"] <= 8 // p["K"] and 1 <= p["La"] <= 8 // p["K"],
           rule="Ax-BxP needs K in {2, 4} and 1 <= Lw, La <= 8/K",
           core=lambda p: lambda a, b: C.axbxp_core(a, b, p["K"], p["Lw"], p["La"], p["mode"])),
    Family("bf16", r"bf16", lambda g: {}, lambda p: "bfloat16 operands (RNE), exact product in FP32",
           float_fn=_bf16),
    Family("fp32_mitch_w", rf"fp32_mitch_w{_N}", _one("w"),
           lambda p: f"FP32, Mitch-w{p['w']} on the significands, exponents exact, FTZ",
           valid=lambda p: 3 <= p["w"] <= 24, rule="FP32 Mitch-w needs w in 3..24", float_fn=_fp32_mitch_w),
)
_RULES = [(re.compile(f.pattern), f) for f in FAMILIES]


@lru_cache(maxsize=None)
def builtin(name: str) -> Multiplier:
    """The built-in multiplier of this name; unknown or out-of-range names -> DseError."""
    if name == "exact":
        return EXACT
    for rx, fam in _RULES:
        m = rx.fullmatch(name)
        if m:
            return fam.make(name, m.groups())
    raise DseError(f"unknown multiplier '{name}'; run 'dse multipliers' for the list of names")


def axbxp_name(K: int, Lw: int, La: int, mode: str) -> str:
    """The Ax-BxP multiplier name ``axbxp_k{K}_w{Lw}_a{La}_{mode}`` (the grammar's one composer)."""
    return f"axbxp_k{int(K)}_w{int(Lw)}_a{int(La)}_{mode}"


def list_multipliers() -> list[str]:
    """Canonical built-in names (the rows of ``dse multipliers``)."""
    names = ["exact", "mitchell"] + [f"mitch_w{w}" for w in range(3, 9)] + [f"drum{k}" for k in range(3, 9)]
    names += [f"perf_j{j}_k{k}" for j in range(3) for k in range(1, 4)]
    names += [f"trunc_op{t}" for t in range(1, 4)] + [f"trunc_col{c}" for c in (4, 6, 8)]
    names += [axbxp_name(2, lw, la, m) for m in ("static", "dynamic") for lw, la in ((2, 2), (2, 3), (3, 3))]
    names += [axbxp_name(4, 1, 1, m) for m in ("static", "dynamic")]
    names += ["bf16"] + [f"fp32_mitch_w{w}" for w in (4, 6, 8)]
    return names
