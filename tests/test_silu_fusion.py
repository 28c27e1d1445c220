"""A SiLU pair (Sigmoid + Mul) fused into the producing conv's output step (dse.kernels.OutputAct "silu", the integer
GEMM's dse_ig_flush_silu, dse.emulate's _fused_conv_silus): the kernels against the numpy formula and numpy's own
Sigmoid and quantizer, and the unfused kernels, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import kernels as K
from dse.model.nn import reference_sigmoid, sigmoid, sigmoid_quantized
from dse.quant import reference_quantize_act
from tests.mac_helpers import conv_kernel_env, vnni_env
from tests.test_kernels import ISAS, MULTS, PATHS, conv_shapes, int_conv_operands, range_ends

pytestmark = pytest.mark.skipif(not K._kernels.numpy_loops_found(), reason="numpy's loops not found: no fused SiLU")


@pytest.fixture(autouse=True)
def _no_env_isa(monkeypatch):
    monkeypatch.delenv("DSE_KERNEL_ISA", raising=False)


def silu_boundaries(qs: float, ks: np.ndarray) -> np.ndarray:
    """float32 y with silu(y) = (k + 1/2) qs (the quantizer's rounding boundaries), for k in ks, on the SiLU's
    increasing branch (y > -1.28): bisection in float64."""
    lo, hi = np.full(ks.shape, -1.2784645), np.full(ks.shape, 1e4)
    target = (ks + 0.5) * qs
    for _ in range(200):
        mid = (lo + hi) / 2
        up = mid / (1 + np.exp(-mid)) > target
        hi, lo = np.where(up, mid, hi), np.where(up, lo, mid)
    return hi.astype(np.float32)


def operands(rng, s, signed, wide, mname):
    """Activations, weights and groups of a ``conv_shapes`` example; ``wide``: 24-80 output channels per group, 8-40
    input channels and planes up to 24 x 24, so that the tiles span several SiLU chunks and the broadcast kernel's
    64-channel tiles, and start at any position of an image."""
    x, w, G = int_conv_operands(rng, s, signed)
    if wide and not s["depthwise"]:
        og, cg = int(rng.integers(24, 81)), int(rng.integers(8, 41))
        hw = tuple(int(v) for v in rng.integers(x.shape[2:], 25))  # planes up to 24 x 24: tiles start mid-image
        x = rng.integers(*((-128, 128) if signed else (0, 256)), (x.shape[0], G * cg) + hw)
        w = rng.integers(-128, 128, (G * og, cg) + w.shape[2:])
    if s["extreme"]:
        x, w = range_ends(x, w, signed)
    return x, w, G


def constants(rng, acc, mode, quant, signed_q):
    """(a_scale, w_scale, bias, OutputQuant or None) of a scaled conv with sums acc [B, N, Ho, Wo]. ``mode``
    "plain": layer-like; "near": each channel's bias at a rounding boundary of the quantized SiLU (or a random
    point of the SiLU where the output is float32) and its sums spread over a few hundred ulps around it; "huge":
    scales that overflow float32 (+-inf, whose SiLU is inf or NaN)."""
    n = acc.shape[1]
    big = float(np.abs(acc).max(initial=1)) or 1.0
    a_scale = float(rng.uniform(1e-3, 1))
    qs = float(np.float32(rng.uniform(0.005, 0.1)))
    oquant = None if quant is None else K.OutputQuant(qs, quant)
    if mode == "huge":
        w_scale = np.float32(3e38) * rng.uniform(0.5, 1, n).astype(np.float32)
        return 1e10, w_scale, rng.normal(0, 1, n).astype(np.float32), oquant
    if mode == "near":
        ks = rng.integers(0, 127 if signed_q else 255, n)
        bias = silu_boundaries(qs, ks) if quant is not None else rng.normal(0, 4, n).astype(np.float32)
        ulp = np.spacing(np.abs(bias)).astype(np.float64)
        w_scale = (rng.uniform(1, 300, n) * ulp / (big * a_scale)).astype(np.float32)
        return a_scale, w_scale, bias, oquant
    w_scale = (rng.uniform(0.5, 8, n) / (big * a_scale)).astype(np.float32)
    return a_scale, w_scale, rng.normal(0, 3, n).astype(np.float32), oquant


def assert_same(got, want, msg):
    assert got.dtype == want.dtype and got.shape == want.shape and \
        np.array_equal(got.view(np.uint8), want.view(np.uint8)), msg


@settings(deadline=None, max_examples=40)
@given(s=conv_shapes, wide=st.booleans(), signed=st.booleans(), mname=st.sampled_from(sorted(MULTS)),
       times_x=st.sampled_from([1, 2]), quant=st.sampled_from([None, False, True]),
       mode=st.sampled_from(["plain", "near", "near", "huge"]), seed=st.integers(0, 2 ** 32 - 1),
       threads=st.sampled_from([1, 2]))
def test_conv2d_scaled_silu_matches_unfused(s, wide, signed, mname, times_x, quant, mode, seed, threads):
    """conv2d_scaled with a SiLU output step (every path, every ISA level, VNNI on and off, both conv operands of the
    integer GEMM, 1 and 2 threads) gives the bits of the conv's float32 output (the numpy formula on the reference
    sums), then numpy's Sigmoid (reference_sigmoid) and quantizer; also those of the unfused kernels (conv2d_scaled,
    then dse.model.nn's compiled SiLU). Every path computes it in its output step (no float32 conv output and no
    pass after it), except a depthwise conv's quantized output."""
    rng = np.random.default_rng(seed)
    x, w, G = operands(rng, s, signed, wide, mname)
    mult = MULTS[mname]
    args = (s["stride"], s["pads"], s["dil"], G)
    acc = K.reference_conv2d_int(x, w, mult, signed, *args).astype(np.float64)
    a_scale, w_scale, bias, oquant = constants(rng, acc, mode, quant, bool(quant))
    with np.errstate(over="ignore", invalid="ignore"):
        y = ((acc * a_scale) * w_scale.astype(np.float64)[None, :, None, None]).astype(np.float32) + \
            bias[None, :, None, None]
        want = reference_sigmoid(y, times_x)
        if oquant is not None:
            want = reference_quantize_act(want, oquant.scale, oquant.signed)
    act = K.OutputAct("silu", times_x=times_x)
    sc, plain = K.Scaling(a_scale, w_scale, bias, act, oquant), K.Scaling(a_scale, w_scale, bias)
    finished = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K.Scaling, "finish", lambda self, v, f=K.Scaling.finish: finished.append(1) or f(self, v))
        for vnni in (True, False):
            with vnni_env(vnni), K.using_threads(threads):
                for ck in ("im2col", "bcast"):
                    with conv_kernel_env(ck):
                        for path in PATHS + (["exact"] if mname == "exact" else []):
                            for isa in ISAS:
                                finished.clear()
                                got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path=path, isa=isa)
                                assert_same(got, want, (path, isa, vnni, ck))
                                if not (w.shape[1] == 1 and G > 1) or oquant is None:  # not depthwise-shaped
                                    assert not finished, "the kernel's output step computes the SiLU"
                y = K.conv2d_scaled(x, w, mult, signed, plain, *args)
                unfused = sigmoid(y, times_x) if oquant is None else sigmoid_quantized(y, times_x, oquant)
                assert_same(unfused, want, "unfused")


@settings(deadline=None, max_examples=20)
@given(B=st.integers(1, 3), N=st.integers(1, 9), S=st.sampled_from([1, 7, 16, 33, 70, 2047, 5000]),
       times_x=st.sampled_from([1, 2]),
       quant=st.sampled_from([None, False, True]), seed=st.integers(0, 2 ** 32 - 1))
def test_scale_accumulators_silu(B, N, S, times_x, quant, seed):
    """The int64 scaling pass with a SiLU (dse_scale_runs_silu: runs shorter and longer than a chunk), every ISA
    level, into a new and a given output: the numpy formula's bits, then numpy's Sigmoid and quantizer."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2 ** 20, 2 ** 20, (B, N, S))
    a_scale, w_scale, bias, oquant = constants(rng, acc, "plain", quant, bool(quant))
    y = ((acc.astype(np.float64) * a_scale) * w_scale.astype(np.float64)[None, :, None]).astype(np.float32) + \
        bias[None, :, None]
    want = reference_sigmoid(y, times_x)
    if oquant is not None:
        want = reference_quantize_act(want, oquant.scale, oquant.signed)
    sc = K.Scaling(a_scale, w_scale, bias, K.OutputAct("silu", times_x=times_x), oquant)
    for isa in ISAS:
        assert_same(K.scale_accumulators(acc, sc, isa), want, isa)
        out = np.empty(acc.shape, sc.empty((1,))[0].dtype)
        assert_same(K.scale_accumulators(acc, sc, isa, out=out), want, isa)


def test_silu_output_step_checks():
    """A SiLU act takes times_x 1 or 2 and no fused add; the kernels' scaling refuses it with a Relu/Clip kind."""
    with pytest.raises(ValueError):
        K.OutputAct("silu")
    with pytest.raises(ValueError):
        K.OutputAct("relu", times_x=1)
    one = np.ones(1, np.float32)
    with pytest.raises(ValueError):
        K.Scaling(1.0, one, one, K.OutputAct("silu", times_x=1), None, np.zeros((1, 1, 1, 1), np.float32))
    plan = K._exact_plan(False)
    args = (np.zeros((4, 8), np.uint8), np.zeros((1, 4), np.uint8), plan.fa, plan.a_mode, plan.gw, plan.S,
            np.empty((1, 1, 8), np.float32))
    good = K.Scaling(1.0, one, one, K.OutputAct("silu", times_x=1)).args()
    K._kernels.int_gemm(*args, scaling=good)
    for bad in (good[:3] + ("relu",) + good[4:], good[:8] + (3,)):
        with pytest.raises(ValueError, match="SiLU"):
            K._kernels.int_gemm(*args, scaling=bad)
