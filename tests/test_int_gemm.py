"""The integer GEMM kernel (cy/int_gemm.h, dse._kernels.int_gemm) against int64 numpy, bit-exact: every ISA level this
CPU runs (the AVX-512 micro-kernel only where the CPU has it), edge tiles in M and N, odd depths, t > 1 factor terms,
the int32 accumulation segments (short ones forced by a large term bound S, and the real one crossed by a long K at
the extreme operands), output strides, and the paths "exact"/"lowrank" of dse.kernels that run on it."""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import _kernels
from dse import kernels as K
from dse.arith.multipliers import EXACT, get_multiplier

ISAS = _kernels.isa_levels()
W_VALS = K._W_VALS.astype(np.int16)[:, None].copy()


def values(mode: str, fa: np.ndarray, AT: np.ndarray) -> np.ndarray:
    """A'[k, m, j]: the operand values the kernel multiplies (numpy twin of its packing)."""
    if mode == "u8":
        return AT.astype(np.int64)[:, :, None]
    if mode == "s8":
        return AT.view(np.int8).astype(np.int64)[:, :, None]
    return fa.astype(np.int64)[AT]


@settings(deadline=None, max_examples=80)
@given(M=st.integers(1, 300), Kd=st.integers(1, 300), N=st.integers(1, 20), t=st.integers(1, 3),
       mode=st.sampled_from(["table", "u8", "s8"]), short=st.booleans(), img_div=st.integers(1, 4),
       seed=st.integers(0, 2 ** 32 - 1))
def test_int_gemm_matches_numpy(M, Kd, N, t, mode, short, img_div, seed):
    rng = np.random.default_rng(seed)
    if mode != "table":
        t = 1
    lim = rng.choice([127, 2 ** 15 - 1])  # 2^15 - 1: |term| up to ~2^30, one pair sum just below 2^31
    fa = rng.integers(-lim, lim + 1, (256, t)).astype(np.int16)
    gw = rng.integers(-lim, lim + 1, (256, t)).astype(np.int16)
    fa[0], gw[0] = -lim, -lim  # extremes always present
    if mode != "table":
        gw = W_VALS
    AT = rng.integers(0, 256, (Kd, M)).astype(np.uint8)
    AT[0, 0] = 0
    Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
    a = values(mode, fa, AT)
    S = int((np.abs(a).max(axis=(0, 1)) * np.abs(gw.astype(np.int64)).max(axis=0)).max()) or 1
    if short:  # the largest legal bound: int32 segments of two terms, flushed to int64 after every pair
        S = 2 ** 30 - 1
    ref = np.einsum("kmj,nkj->nm", a, gw.astype(np.int64)[Wp])
    img = next(d for d in range(min(img_div, M), 0, -1) if M % d == 0)
    for isa in ISAS:
        out = np.full((M // img, N, img), 7, np.int64)
        assert _kernels.int_gemm(AT, Wp, fa, mode, gw, S, out, isa) == isa
        assert np.array_equal(out.transpose(1, 0, 2).reshape(N, M), ref), isa
        # strided output: a channel slice of a wider tensor, the rest untouched
        wide = np.full((M // img, N + 3, img), -1, np.int64)
        _kernels.int_gemm(AT, Wp, fa, mode, gw, S, wide[:, 2:N + 2], isa)
        assert np.array_equal(wide[:, 2:N + 2].transpose(1, 0, 2).reshape(N, M), ref), isa
        assert (wide[:, :2] == -1).all() and (wide[:, N + 2:] == -1).all()
        # the operand image by image: [B', K, img'] with an image stride (panels straddling two images when img'
        # is not a multiple of the SIMD panel), here a K-row slice of a wider batch tensor
        per = np.full((M // img, Kd + 2, img), 9, np.uint8)
        per[:, 1:Kd + 1] = AT.reshape(Kd, M // img, img).transpose(1, 0, 2)
        out3 = np.full((M // img, N, img), 7, np.int64)
        _kernels.int_gemm(per[:, 1:Kd + 1], Wp, fa, mode, gw, S, out3, isa)
        assert np.array_equal(out3, out), isa


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 4), img=st.integers(1, 70), Kd=st.integers(1, 200), N=st.integers(1, 14),
       mode=st.sampled_from(["table", "u8", "s8"]), per_image=st.booleans(), quant=st.sampled_from([None, False, True]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_int_gemm_scaled_tiles_match_the_scaling_pass(B, img, Kd, N, mode, per_image, quant, seed):
    """With a scaling the kernel writes dequantize's output (float32, or the next layer's patterns) of the int32
    tiles straight into a strided [B, N, img] output, operand per image or [K, M], the same bits as the int64 sums
    scaled by dequantize."""
    rng = np.random.default_rng(seed)
    M = B * img
    fa = rng.integers(-300, 300, (256, 1)).astype(np.int16)
    gw = W_VALS if mode != "table" else rng.integers(-300, 300, (256, 1)).astype(np.int16)
    AT = rng.integers(0, 256, (Kd, M)).astype(np.uint8)
    Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
    S = int(np.abs(values(mode, fa, AT)).max() * np.abs(gw.astype(np.int64)).max()) or 1
    acc = np.empty((B, N, img), np.int64)
    _kernels.int_gemm(AT, Wp, fa, mode, gw, S, acc)
    sc = (float(rng.uniform(1e-3, 1)), rng.uniform(1e-4, 1e-2, N).astype(np.float32),
          rng.normal(0, 1, N).astype(np.float32), "clip", -2.0, 5.0, None if quant is None else (0.03, quant))
    ref = _kernels.dequantize(acc, *sc[:3], 1, *sc[3:])
    operand = AT.reshape(Kd, B, img).transpose(1, 0, 2) if per_image else AT
    for isa in ISAS:
        wide = np.zeros((B, N + 2, img), ref.dtype)
        _kernels.int_gemm(operand, Wp, fa, mode, gw, S, wide[:, 1:N + 1], isa, 1, sc)
        assert np.array_equal(wide[:, 1:N + 1], ref) and not wide[:, 0].any() and not wide[:, N + 1].any(), isa


@pytest.mark.parametrize("a_val,w_val,signed", [(255, -128, False), (255, 127, False), (-128, -128, True),
                                                (-128, 127, True)])
def test_exact_path_crosses_the_int32_segment(a_val, w_val, signed):
    """Long K at the extreme operands: the sums leave int32, so the int32 segments (65792 terms for S = 255 * 128,
    131072 for S = 128 * 128) must be flushed into int64 -- on every ISA level, through gemm_int's exact path."""
    Kd = 140_000 if signed else 70_000
    a = np.full((17, Kd), a_val)
    w = np.full((7, Kd), w_val)
    w[3, ::2] = 0
    ref = (a[:1].astype(np.int64) * w.astype(np.int64)).sum(axis=1)[None, :].repeat(17, axis=0)
    assert abs(ref).max() >= 2 ** 31
    for isa in ISAS:
        assert np.array_equal(K.gemm_int(a, w, EXACT, signed, path="exact", isa=isa), ref), isa


def test_exact_and_separable_tables_run_on_the_int_kernel(monkeypatch):
    """path "exact" and "lowrank" of the separable families (one int16 factor term) use dse._kernels.int_gemm
    (perforation's F(a) = a in the exact product's packing mode); factors beyond int16 have no int16 plan."""
    used = []
    monkeypatch.setattr(K._kernels, "int_gemm", lambda *a, f=K._kernels.int_gemm: used.append(a[3]) or f(*a))
    rng = np.random.default_rng(0)
    for name in ("exact", "drum6", "perf_j1_k2", "axbxp_k2_w2_a2_dynamic", "trunc_op4"):
        for signed in (False, True):
            mult = EXACT if name == "exact" else get_multiplier(name)
            a = rng.integers(-128, 128, (40, 75)) if signed else rng.integers(0, 256, (40, 75))
            w = rng.integers(-128, 128, (9, 75))
            path = "exact" if name == "exact" else "lowrank"
            used.clear()
            assert np.array_equal(K.gemm_int(a, w, mult, signed, path=path), K.reference_gemm_int(a, w, mult, signed))
            identity = name in ("exact", "perf_j1_k2")  # F(a) = a: packed like the exact product
            assert used == [("s8" if signed else "u8") if identity else "table"], (name, signed)
    fac = K._prepare(get_multiplier("axbxp_k2_w2_a2_static"), False).intf
    assert K._int16_plan(SimpleNamespace(a_vals=np.arange(256), is_exact=False, intf=fac)) is not None  # G <= 2048
    wide = SimpleNamespace(a_vals=np.arange(256), is_exact=False, intf=K.IntFactors(fac.F, fac.G * 16))  # G 2^15
    assert K._int16_plan(wide) is None
