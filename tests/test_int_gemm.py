"""The integer GEMM kernel (cy/int_gemm.h, dse._kernels.int_gemm) against int64 numpy, bit-exact: every ISA level this
CPU runs (the AVX-512 micro-kernel only where the CPU has it), edge tiles in M and N, odd depths, t > 1 factor terms,
the int32 accumulation segments (short ones forced by a large term bound S, and the real one crossed by a long K at
the extreme operands), output strides, and the paths "exact"/"lowrank" of dse.kernels that run on it; the VNNI
micro-kernel (byte operands, vpdpbusd) at the levels where this CPU has it, next to the int16 kernel of that level."""
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dse import _kernels
from dse import kernels as K
from dse.arith.multipliers import EXACT, get_multiplier
from tests.mac_helpers import conv_kernel_env, vnni_env

ISAS = _kernels.isa_levels()
# (level, VNNI allowed): the int16 kernel at every level, the byte-quad kernels (VNNI, or vpmaddubsw at avx2 without it)
KERNELS = [(isa, False) for isa in ISAS] + [(isa, True) for isa in _kernels.quad_levels()]
W_VALS = K._W_VALS.astype(np.int16)[:, None].copy()
UB_KMIN = 128  # cy/int_gemm.h DSE_IG_UB_KMIN: the avx2 byte pairs (no AVX-VNNI) take calls of this depth on


def quads_run(isa: str, Kd: int) -> bool:
    """Whether a call of Kd depth rows whose operands fit bytes runs on the byte quads at level isa."""
    return isa in _kernels.vnni_levels() or (isa == "avx2" and isa in _kernels.quad_levels() and Kd >= UB_KMIN)


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
    for isa, vnni in KERNELS:
        out = np.full((M // img, N, img), 7, np.int64)
        assert _kernels.int_gemm(AT, Wp, fa, mode, gw, S, out, isa, vnni=vnni).split("+")[0] == isa
        assert np.array_equal(out.transpose(1, 0, 2).reshape(N, M), ref), isa
        # strided output: a channel slice of a wider tensor, the rest untouched
        wide = np.full((M // img, N + 3, img), -1, np.int64)
        _kernels.int_gemm(AT, Wp, fa, mode, gw, S, wide[:, 2:N + 2], isa, vnni=vnni)
        assert np.array_equal(wide[:, 2:N + 2].transpose(1, 0, 2).reshape(N, M), ref), isa
        assert (wide[:, :2] == -1).all() and (wide[:, N + 2:] == -1).all()
        # the operand image by image: [B', K, img'] with an image stride (panels straddling two images when img'
        # is not a multiple of the SIMD panel), here a K-row slice of a wider batch tensor
        per = np.full((M // img, Kd + 2, img), 9, np.uint8)
        per[:, 1:Kd + 1] = AT.reshape(Kd, M // img, img).transpose(1, 0, 2)
        out3 = np.full((M // img, N, img), 7, np.int64)
        _kernels.int_gemm(per[:, 1:Kd + 1], Wp, fa, mode, gw, S, out3, isa, vnni=vnni)
        assert np.array_equal(out3, out), isa


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 4), img=st.integers(1, 70), Kd=st.integers(1, 200), N=st.integers(1, 14),
       mode=st.sampled_from(["table", "u8", "s8"]), per_image=st.booleans(), quant=st.sampled_from([None, False, True]),
       fa_range=st.sampled_from([(-300, 300), (0, 256), (-128, 128)]), seed=st.integers(0, 2 ** 32 - 1))
def test_int_gemm_scaled_tiles_match_the_scaling_pass(B, img, Kd, N, mode, per_image, quant, fa_range, seed):
    """With a scaling the kernel writes dequantize's output (float32, or the next layer's patterns) of the int32
    tiles straight into a strided [B, N, img] output, operand per image or [K, M], the same bits as the int64 sums
    scaled by dequantize (on the VNNI kernel also with the activation offset's correction in the int32 tile)."""
    rng = np.random.default_rng(seed)
    M = B * img
    fa = rng.integers(*fa_range, (256, 1)).astype(np.int16)
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
    for isa, vnni in KERNELS:
        wide = np.zeros((B, N + 2, img), ref.dtype)
        _kernels.int_gemm(operand, Wp, fa, mode, gw, S, wide[:, 1:N + 1], isa, 1, sc, vnni)
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
    for isa, vnni in KERNELS:  # VNNI: 65792-term segments (S8 = 255 * 128, signed activations offset by 128)
        with vnni_env(vnni):
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


def vnni_takes(fa: np.ndarray, mode: str, gw: np.ndarray, Wp: np.ndarray) -> bool:
    """numpy twin of the VNNI kernel's choice (cy/int_gemm.h, dse_ig_plan8) for a call with t = 1: activation values
    in [0, 255] or [-128, 127] (the latter offset by 128) with weight values in [-128, 127], or activation values in
    [-128, 127] with weight values in [0, 255] (ports swapped); weight values over the whole table, else over the
    patterns Wp uses."""
    a = values(mode, fa, np.arange(256, dtype=np.uint8)[None, :]).ravel()
    w = gw[:, 0].astype(np.int64)

    def s8(v):
        return -128 <= v.min() and v.max() <= 127

    def u8(v):
        return 0 <= v.min() and v.max() <= 255
    if not (s8(w) or u8(w)):
        w = w[np.unique(Wp)]
    return bool(s8(w) and (u8(a) or s8(a)) or u8(w) and s8(a))


RANGES = [(0, 256), (-128, 128), (0, 16), (-8, 8), (-129, 128), (0, 257), (-300, 300)]


@settings(deadline=None, max_examples=120)
@given(M=st.integers(1, 300), Kd=st.integers(1, 140), N=st.integers(1, 20),
       mode=st.sampled_from(["table", "u8", "s8"]), a_range=st.sampled_from(RANGES), w_range=st.sampled_from(RANGES),
       outlier=st.booleans(), img_div=st.integers(1, 4), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_vnni_kernel_port_choice_and_exactness(M, Kd, N, mode, a_range, w_range, outlier, img_div, threads, seed):
    """Byte operands on every port assignment of the VNNI kernel (unsigned activations, signed ones offset by 128,
    weights on the unsigned port) and operands it must leave to the int16 kernel, incl. a weight table with one
    out-of-range pattern that the call does not use (then it takes the call) or uses (then it must not); depths not a
    multiple of 4, operands per image, 1 and 2 threads: int64 numpy, and the kernel that ran is the one predicted."""
    rng = np.random.default_rng(seed)
    fa = rng.integers(*a_range, (256, 1)).astype(np.int16)
    fa[rng.integers(0, 256)] = a_range[0]
    fa[rng.integers(0, 256)] = a_range[1] - 1
    gw = rng.integers(*w_range, (256, 1)).astype(np.int16)
    if mode != "table":
        gw = W_VALS.copy() if w_range[0] < 0 else rng.integers(0, 256, (256, 1)).astype(np.int16)
    gw[rng.integers(0, 256)] = min(w_range[0], gw.min())
    gw[rng.integers(0, 256)] = max(w_range[1] - 1, gw.max())
    Wp = rng.integers(0, 255, (N, Kd)).astype(np.uint8)  # pattern 255 unused ...
    gw[255] = -132  # ... outside both byte ranges (DRUM's G(-128)), or used once
    if outlier:
        Wp[rng.integers(0, N), rng.integers(0, Kd)] = 255
    AT = rng.integers(0, 256, (Kd, M)).astype(np.uint8)
    a = values(mode, fa, AT)
    S = int((np.abs(a).max() * np.abs(gw.astype(np.int64)).max())) or 1
    ref = np.einsum("kmj,nkj->nm", a, gw.astype(np.int64)[Wp])
    img = next(d for d in range(min(img_div, M), 0, -1) if M % d == 0)
    operand = AT.reshape(Kd, M // img, img).transpose(1, 0, 2)
    expect = vnni_takes(fa, mode, gw, Wp)
    for isa, vnni in KERNELS:
        out = np.full((M // img, N, img), 7, np.int64)
        used = _kernels.int_gemm(operand, Wp, fa, mode, gw, S, out, isa, threads, vnni=vnni)
        assert used == isa + ("+vnni" if vnni and expect and quads_run(isa, Kd) else ""), (isa, vnni, expect)
        assert np.array_equal(out.transpose(1, 0, 2).reshape(N, M), ref), (isa, vnni)


@pytest.mark.skipif("avx2" not in _kernels.quad_levels(), reason="no AVX2")
@settings(deadline=None, max_examples=60)
@given(M=st.integers(1, 200), Kd=st.integers(100, 1200), N=st.integers(1, 20), port=st.sampled_from(["u8", "s8", "swap",
       "table"]), big=st.sampled_from([0.0, 0.01, 0.2, 1.0]), scaled=st.booleans(), img_div=st.integers(1, 4),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_byte_quads_at_avx2_split_weight_pairs(M, Kd, N, port, big, scaled, img_div, threads, seed):
    """The avx2 level's byte-quad kernel (vpmaddubsw without AVX-VNNI: weight pairs over the int16 bound split into
    the packed bytes and residual entries; vpdpbusd with it) on weights mostly small with a share ``big`` of extremes
    (-128, 127, or 255 on the unsigned port: every pair a residual entry at 1.0) at depths from UB_KMIN on (the int16
    kernel below), unsigned activations, signed ones
    (offset 128), the ports swapped (weights 0..255, activations -128..127), a factor table in [0, 255]; depths of
    several blocks (512 rows each) and int32 segments, operands per image, int64 and scaled outputs, 1 and 2 threads:
    int64 numpy."""
    rng = np.random.default_rng(seed)
    mode = "table" if port in ("swap", "table") else port
    fa = W_VALS
    if port == "swap":
        fa = rng.integers(-128, 128, (256, 1)).astype(np.int16)
        fa[:2, 0] = -128, 127
    elif port == "table":
        fa = rng.integers(0, 256, (256, 1)).astype(np.int16)
        fa[:2, 0] = 0, 255
    gw = np.arange(256, dtype=np.int16)[:, None] if port == "swap" else W_VALS  # weight value of each pattern
    if port == "swap":
        w = np.where(rng.random((N, Kd)) < big, 255, rng.integers(0, 40, (N, Kd)))
    else:
        w = np.where(rng.random((N, Kd)) < big, rng.choice([-128, 127], (N, Kd)), rng.integers(-40, 41, (N, Kd)))
    Wp = (w & 255).astype(np.uint8)
    AT = rng.integers(0, 256, (Kd, M)).astype(np.uint8)
    AT[:, rng.integers(0, M)] = 255 if port != "s8" else 127  # the extreme activation everywhere in one position
    a = values(mode, fa, AT)
    S = int(np.abs(a).max() * np.abs(gw.astype(np.int64)[Wp]).max()) or 1
    ref = np.einsum("kmj,nkj->nm", a, gw.astype(np.int64)[Wp])
    img = next(d for d in range(min(img_div, M), 0, -1) if M % d == 0)
    operand = AT.reshape(Kd, M // img, img).transpose(1, 0, 2)
    ref = np.ascontiguousarray(ref.reshape(N, M // img, img).transpose(1, 0, 2))
    sc = None
    if scaled and _kernels.int_gemm_fits32(Kd, 1, S):
        sc = (float(rng.uniform(1e-4, 1e-2)), rng.uniform(1e-3, 1, N).astype(np.float32),
              rng.normal(0, 1, N).astype(np.float32), "none", -np.inf, np.inf, None)
        ref = _kernels.dequantize(ref, *sc[:3], 1, *sc[3:])
    out = np.full(ref.shape, 7, ref.dtype)
    used = _kernels.int_gemm(operand, Wp, fa, mode, gw, S, out, "avx2", threads, sc, True)
    assert used == ("avx2+vnni" if quads_run("avx2", Kd) else "avx2"), used
    assert np.array_equal(out, ref), (port, big)


def test_vnni_environment_default(monkeypatch):
    """DSE_KERNEL_VNNI=0 keeps the int16 kernel where a call does not say; vnni=True/False overrides it."""
    AT = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Wp = np.ones((2, 3), np.uint8)
    for isa in ISAS:
        out = np.empty((1, 2, 4), np.int64)
        has = quads_run(isa, 3)
        monkeypatch.setenv("DSE_KERNEL_VNNI", "0")
        assert _kernels.int_gemm(AT, Wp, W_VALS, "u8", W_VALS, 255 * 128, out, isa) == isa
        assert _kernels.int_gemm(AT, Wp, W_VALS, "u8", W_VALS, 255 * 128, out, isa, vnni=True) == \
            isa + ("+vnni" if has else "")
        monkeypatch.delenv("DSE_KERNEL_VNNI")
        assert _kernels.int_gemm(AT, Wp, W_VALS, "u8", W_VALS, 255 * 128, out, isa) == isa + ("+vnni" if has else "")
        assert _kernels.int_gemm(AT, Wp, W_VALS, "u8", W_VALS, 255 * 128, out, isa, vnni=False) == isa
        assert np.array_equal(out[0], np.tile(AT.astype(np.int64).sum(axis=0), (2, 1)))


SEPARABLE = ["exact", "perf_j1_k2", "drum6", "axbxp_k2_w2_a2_dynamic", "axbxp_k2_w2_a2_static", "trunc_op4"]


@pytest.mark.skipif(not _kernels.quad_levels(), reason="no byte-quad kernel on this CPU")
def test_separable_families_run_on_the_vnni_kernel(monkeypatch):
    """The exact product and the one-term separable tables whose factors fit bytes (truncation and static Ax-BxP
    after moving the divisor 16 of G into F) run on the VNNI kernel, on both activation signednesses; DRUM6's G(-128)
    = -132 does not fit a byte: its calls run there only without that weight pattern, and with signed activations
    (F(-128) = -132) never."""
    seen = []
    monkeypatch.setattr(K._kernels, "int_gemm", lambda *a, f=K._kernels.int_gemm, **k: seen.append(f(*a, **k)))
    monkeypatch.delenv("DSE_KERNEL_VNNI", raising=False)
    rng = np.random.default_rng(1)
    isa = _kernels.quad_levels()[-1]
    for name in SEPARABLE:
        mult = EXACT if name == "exact" else get_multiplier(name)
        for signed in (False, True):
            for w_lo in (-127, -128):
                a = rng.integers(-128, 128, (33, 150)) if signed else rng.integers(0, 256, (33, 150))
                w = rng.integers(w_lo, 128, (5, 150))
                w[0, 0] = w_lo
                seen.clear()
                got = K.gemm_int(a, w, mult, signed, path="exact" if name == "exact" else "lowrank", isa=isa)
                assert np.array_equal(got, K.reference_gemm_int(a, w, mult, signed))
                vnni = not (name == "drum6" and (signed or w_lo == -128))
                assert seen == [isa + ("+vnni" if vnni else "")], (name, signed, w_lo)


conv_cases = st.fixed_dictionaries({
    "B": st.integers(1, 3), "G": st.integers(1, 3), "cg": st.integers(1, 9), "og": st.integers(1, 9),
    "H": st.integers(1, 12), "W": st.integers(1, 12), "k": st.sampled_from([(1, 1), (3, 3), (1, 3), (2, 2)]),
    "stride": st.sampled_from([(1, 1), (2, 2), (1, 2)]), "pads": st.tuples(*[st.integers(0, 2)] * 4),
    "depthwise": st.booleans(), "signed": st.booleans(), "extreme": st.booleans(),
    "mult": st.sampled_from(SEPARABLE), "threads": st.sampled_from([1, 2])})


@settings(deadline=None, max_examples=60)
@given(c=conv_cases, seed=st.integers(0, 2 ** 32 - 1))
def test_convs_on_every_int_gemm_kernel(c, seed):
    """conv2d_int and conv2d_scaled (int32 tiles scaled in the kernel) of the exact product and the separable
    families through the integer GEMM: 1x1 (operand per image) and k x k convs, strides, padding, groups, depthwise
    as per-group GEMMs (path "lowrank"), signed and unsigned activations (range ends too), every kernel (level, VNNI
    or not) on 1 and 2 threads, against the numpy reference."""
    rng = np.random.default_rng(seed)
    G, cg, og = c["G"], c["cg"], c["og"]
    if c["depthwise"]:
        cg, G = 1, G + 1
    kh, kw = c["k"]
    H, W = max(c["H"], kh - c["pads"][0] - c["pads"][2]), max(c["W"], kw - c["pads"][1] - c["pads"][3])
    signed = c["signed"]
    x = rng.integers(-128, 128, (c["B"], G * cg, H, W)) if signed else rng.integers(0, 256, (c["B"], G * cg, H, W))
    w = rng.integers(-128, 128, (G * og, cg, kh, kw))
    if c["extreme"]:
        x = np.where(x % 2 == 0, *((-128, 127) if signed else (0, 255)))
        w = np.where(w % 2 == 0, -128, 127)
    mult = EXACT if c["mult"] == "exact" else get_multiplier(c["mult"])
    args = (c["stride"], c["pads"], (1, 1), G)
    ref = K.reference_conv2d_int(x, w, mult, signed, *args)
    N = G * og
    sc = K.Scaling(0.01, rng.uniform(1e-3, 1e-2, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32),
                   K.OutputAct("relu"))
    yref = K.scale_accumulators(ref, sc)
    paths = ["lowrank", "auto"] + (["exact"] if c["mult"] == "exact" else [])
    for isa, vnni in KERNELS:
        with vnni_env(vnni), K.using_threads(c["threads"]):
            for path in paths:
                assert np.array_equal(K.conv2d_int(x, w, mult, signed, *args, path=path, isa=isa), ref), \
                    (isa, vnni, path)
                assert np.array_equal(K.conv2d_scaled(x, w, mult, signed, sc, *args, path=path, isa=isa), yref), \
                    (isa, vnni, path)


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 4), img=st.integers(1, 70), Kd=st.integers(1, 300), N=st.integers(1, 14),
       mode=st.sampled_from(["u8", "s8"]), operand=st.sampled_from(["matrix", "per_image", "conv"]),
       quant=st.sampled_from([None, False, True]), extreme=st.booleans(), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_int_gemm_scaled_tiles_add_the_addend(B, img, Kd, N, mode, operand, quant, extreme, threads, seed):
    """A scaled call with ``addend`` (int64 [B, N, img], its own strides: a channel slice of a wider buffer) scales
    sums + addend: dequantize's output of the int64 sums plus the addend, on every kernel, operand as a matrix, per
    image or a conv's input (3x3, padded: built in the kernel where it can), 1 and 2 threads; addends up to the
    int32 limit less the largest |sum| (``extreme``), the VNNI offset's correction in the same tile."""
    rng = np.random.default_rng(seed)
    fa, gw = W_VALS, W_VALS
    if operand == "conv":  # x [B, C, 3, img] under a 3x3 kernel, padding 1: img positions per row, 3 rows
        C = max(1, Kd // 9)
        x = rng.integers(0, 256, (B, C, 3, img)).astype(np.uint8)
        AT, Ho, Wo = K.im2col_T(x, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1))
        img, Kd = Ho * Wo, C * 9
    else:
        AT = rng.integers(0, 256, (Kd, B * img)).astype(np.uint8)
    Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
    S = 128 * 255 if mode == "u8" else 128 * 128
    acc = np.empty((B, N, img), np.int64)
    _kernels.int_gemm(np.ascontiguousarray(AT), Wp, fa, mode, gw, S, acc)
    room = 2 ** 31 - 1 - int(np.abs(acc).max())
    lim = room if extreme else 2 ** 12
    wide_add = rng.integers(-lim, lim + 1, (B, N + 3, img + 1))
    if extreme:
        wide_add[0, 1, 0], wide_add[-1, -2, img - 1] = lim, -lim
    addend = wide_add[:, 1:N + 1, :img]
    sc = (float(rng.uniform(1e-9, 1e-6)), rng.uniform(1e-4, 1e-2, N).astype(np.float32),
          rng.normal(0, 1, N).astype(np.float32), "clip", -2.0, 5.0, None if quant is None else (0.03, quant))
    ref = _kernels.dequantize(acc + addend, *sc[:3], 1, *sc[3:])
    for isa, vnni in KERNELS:
        wide = np.zeros((B, N + 2, img), ref.dtype)
        if operand == "conv":
            got = _kernels.int_gemm(None, Wp, fa, mode, gw, S, wide[:, 1:N + 1], isa, threads, sc, vnni,
                                    conv=(x, 0, (3, 3), (1, 1), (1, 1), (1, 1), (Ho, Wo)), addend=addend)
            if got is None:
                continue
        else:
            a = AT.reshape(Kd, B, img).transpose(1, 0, 2) if operand == "per_image" else AT
            _kernels.int_gemm(a, Wp, fa, mode, gw, S, wide[:, 1:N + 1], isa, threads, sc, vnni, addend=addend)
        assert np.array_equal(wide[:, 1:N + 1], ref) and not wide[:, 0].any() and not wide[:, N + 1].any(), isa
    with pytest.raises(ValueError, match="addend needs a scaled call"):
        _kernels.int_gemm(AT, Wp, fa, mode, gw, S, acc, addend=addend)


@settings(deadline=None, max_examples=150)
@given(B=st.integers(1, 3), C=st.integers(1, 80), H=st.sampled_from([1, 3, 7, 12, 16, 33, 70, 130]),
       W=st.sampled_from([1, 4, 7, 12, 16, 33, 70, 130]), k=st.sampled_from([(3, 3), (1, 3), (2, 2), (5, 5), (7, 7)]),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 3)] * 4), groups=st.integers(1, 3), N=st.integers(1, 14),
       mode=st.sampled_from(["u8", "s8", "table"]), w_range=st.sampled_from([(-128, 128), (0, 256)]),
       scaled=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_conv_operand_built_in_the_kernel(B, C, H, W, k, stride, dil, pads, groups, N, mode, w_range, scaled,
                                          threads, seed):
    """int_gemm with ``conv`` (the im2col rows of a task's depth block built from the conv input in cache) gives the
    sums of the im2col operand (int64 numpy), or their scaled output, for channel slices of groups, depths across
    the kernel's depth blocks (K > 512), positions across its 256-position tasks, planes wider than the VBMI
    windows, dilation and padding, on every port assignment; it runs on the VNNI kernel at the avx512 level and on
    the int16 kernel (or byte quads without AVX-VNNI) at the avx2 level for stride-1 convs with W == Wo (panels
    packed from the input), None
    elsewhere (nothing written), on 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    kh, kw = k
    (dh, dw), (sh, sw) = dil, stride
    H, W = max(H, dh * (kh - 1) + 1 - pads[0] - pads[2]), max(W, dw * (kw - 1) + 1 - pads[1] - pads[3])
    cg = max(1, C // groups)
    x = rng.integers(0, 256, (B, cg * groups, H, W)).astype(np.uint8)
    fa = rng.integers(-128, 128, (256, 1)).astype(np.int16) if mode == "table" else W_VALS
    gw = W_VALS if w_range[0] < 0 else rng.integers(0, 256, (256, 1)).astype(np.int16)
    if mode == "u8" and w_range[0] == 0:
        gw = W_VALS
    AT, Ho, Wo = K.im2col_T(x, kh, kw, stride, pads, dil)
    Kd = cg * kh * kw
    S = int(np.abs(values(mode, fa, np.arange(256, dtype=np.uint8)[None])).max() * np.abs(gw.astype(np.int64)).max())
    N = max(N, 1)
    for g in range(groups):
        Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
        ATg = np.ascontiguousarray(AT[g * Kd:(g + 1) * Kd])
        ref = np.einsum("kmj,nkj->nm", values(mode, fa, ATg), gw.astype(np.int64)[Wp])
        ref = ref.reshape(N, B, Ho * Wo).transpose(1, 0, 2)
        sc = None
        if scaled:
            sc = (0.02, rng.uniform(1e-4, 1e-2, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32),
                  "relu", -np.inf, np.inf, (0.05, False))
            ref = _kernels.dequantize(np.ascontiguousarray(ref), *sc[:3], 1, *sc[3:])
        conv = (x, g * cg, (kh, kw), stride, pads[:2], dil, (Ho, Wo))
        takes = vnni_takes(fa, mode, gw, Wp)
        for isa, vnni in KERNELS:
            out = np.zeros((B, N + 1, Ho * Wo), ref.dtype)
            used = _kernels.int_gemm(None, Wp, fa, mode, gw, S, out[:, 1:], isa, threads, sc, vnni, conv=conv)
            runs = isa == "avx512" and vnni and takes and vbmi_im2col_fits(H, W, kh, kw, sh, sw, dw, Ho, Wo)
            # panels from the input at avx2: int16, or byte quads on the byte pairs where the CPU has no AVX-VNNI
            from_input = isa == "avx2" and mode != "table" and int16_conv_panels_fit(Kd, W, kh, kw, (sh, sw), Ho, Wo)
            quads = vnni and takes and "avx2" not in _kernels.vnni_levels()
            int16 = from_input and not (vnni and takes)
            if not runs and not int16 and not (from_input and quads):
                assert used is None and not out.any(), (isa, vnni, used)
                continue
            assert used == ("avx2" if int16 else "avx2+vnni" if from_input else "avx512+vnni")
            event("the int16 panels read the input" if int16 else "the byte quads read the input" if from_input
                  else "the operand built in the kernel")
            assert np.array_equal(out[:, 1:], ref) and not out[:, 0].any(), (isa, g)


def int16_conv_panels_fit(K, W, kh, kw, stride, Ho, Wo) -> bool:
    """numpy twin of the avx2 int16 kernel's test for packing its panels straight from a conv's input (cy/int_gemm.h,
    dse_ig_conv16_fits, with t = 1 and no activation table): >= 128 depth rows K, stride 1, output rows as wide as
    the input rows, planes of >= 16 positions, at most 49 taps."""
    return K >= 128 and tuple(stride) == (1, 1) and W == Wo and Ho * Wo >= 16 and kh * kw <= 49


def vbmi_im2col_fits(H, W, kh, kw, sh, sw, dw, Ho, Wo) -> bool:
    """numpy twin of the VBMI im2col's geometry test inside the integer GEMM (cy/lut_kernel.h, dse_i2c_plan_make,
    whole = 0): chunks of g output rows with g Wo <= 64 whose windows ((g - 1) sh + 1 input rows) hold <= 128
    bytes, else column segments of one row, and at most DSE_I2C_MAXTAB_GEMM chunks x taps."""
    g = 0
    if Wo <= 64:
        g = min(64 // Wo, Ho)
        while g > 1 and ((g - 1) * sh + 1) * W > 128:
            g -= 1
    if g == 1 and W > 128:
        g = 0
    cw = Wo
    if g == 0:
        g, cw = 1, min(64, (128 - 1 - (kw - 1) * dw) // sw + 1)
        if cw < 1:
            return False
    return -(-Ho // g) * -(-Wo // cw) * kh * kw <= 16384


def vnni_swaps(fa: np.ndarray, mode: str, gw: np.ndarray, Wp: np.ndarray) -> bool:
    """Whether the VNNI kernel puts the weights on vpdpbusd's unsigned port (vnni_takes with no signed-weight
    assignment): the broadcast conv kernel does not run those calls."""
    w = gw[:, 0].astype(np.int64)
    if not (-128 <= w.min() and w.max() <= 127 or 0 <= w.min() and w.max() <= 255):
        w = w[np.unique(Wp)]
    return not (-128 <= w.min() and w.max() <= 127) and vnni_takes(fa, mode, gw, Wp)


@settings(deadline=None, max_examples=150)
@given(B=st.integers(1, 3), C=st.sampled_from([1, 2, 3, 4, 5, 8, 13, 16, 31, 64, 67, 80]),
       H=st.sampled_from([1, 2, 3, 5, 7, 12, 16, 20]), W=st.sampled_from([1, 2, 5, 7, 12, 17, 33, 70]),
       k=st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (2, 2)]),
       stride=st.tuples(st.integers(1, 2), st.integers(1, 2)), dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 3)] * 4), N=st.sampled_from([1, 2, 15, 16, 17, 33, 48, 63, 64, 65, 100, 130]),
       mode=st.sampled_from(["u8", "s8", "table"]), w_range=st.sampled_from([(-128, 128), (0, 256)]),
       output=st.sampled_from(["float", "quant", "squant", "add", "add+quant"]),
       act=st.sampled_from(["none", "relu", "clip"]), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_bcast_conv_kernel_matches_numpy(B, C, H, W, k, stride, dil, pads, N, mode, w_range, output, act, threads,
                                         seed):
    """int_gemm with ``conv_kernel="bcast"`` (the broadcast conv kernel: channels-last images, output channels in the
    lanes, int32 tiles transposed into the scaling pass) gives the scaled int64 numpy sums of the im2col operand
    bit for bit in every output mode (float32, unsigned/signed quantized, fused add with and without the quant, each
    Relu/Clip): 1x1 to 7x7 kernels, strides, dilations, asymmetric padding, input channels not a multiple of 4
    (1-3 included), output channels across its 16-lane and 64-channel tiles, unsigned/signed/table activation
    bytes, on 1 and 2 threads; it runs at the avx512 level on the VNNI kernel with the activations on the unsigned
    port, returns None otherwise (nothing written), and agrees with the im2col operand wherever that runs."""
    _check_bcast_conv(B, C, H, W, k, stride, dil, pads, N, mode, w_range, output, act, threads, seed)


@settings(deadline=None, max_examples=25)
@given(B=st.integers(1, 2), C=st.sampled_from([233, 244, 256, 257, 300]), H=st.integers(29, 36),
       W=st.integers(29, 36), N=st.sampled_from([1, 16, 63, 64, 65, 130]), mode=st.sampled_from(["u8", "s8", "table"]),
       output=st.sampled_from(["float", "quant", "squant", "add", "add+quant"]),
       act=st.sampled_from(["none", "relu", "clip"]), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_bcast_wide_1x1_images_match_numpy(B, C, H, W, N, mode, output, act, threads, seed):
    """The broadcast kernel on ResNet-50-like stride-1 1x1 convs whose channels-last image copy reaches its group
    budget (256 KiB: C H W on both sides of it here, so one image per task and blocks of positions ending mid-image):
    the same outputs as the numpy sums in every output mode and activation byte kind, the 64-channel tiles and
    their tails, 1 and 2 threads (positions or channel tiles split). The other bcast tests' images are < 80 KiB."""
    _check_bcast_conv(B, C, H, W, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), N, mode, (-128, 128), output, act,
                      threads, seed)


def _check_bcast_conv(B, C, H, W, k, stride, dil, pads, N, mode, w_range, output, act, threads, seed):
    rng = np.random.default_rng(seed)
    kh, kw = k
    dh, dw = dil
    H, W = max(H, dh * (kh - 1) + 1 - pads[0] - pads[2]), max(W, dw * (kw - 1) + 1 - pads[1] - pads[3])
    x = rng.integers(0, 256, (B, C, H, W)).astype(np.uint8)
    fa = rng.integers(-128, 128, (256, 1)).astype(np.int16) if mode == "table" else W_VALS
    gw = W_VALS if w_range[0] < 0 or mode == "u8" else rng.integers(0, 256, (256, 1)).astype(np.int16)
    AT, Ho, Wo = K.im2col_T(x, kh, kw, stride, pads, dil)
    Kd = C * kh * kw
    S = int(np.abs(values(mode, fa, np.arange(256, dtype=np.uint8)[None])).max() * np.abs(gw.astype(np.int64)).max())
    Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
    acc = np.einsum("kmj,nkj->nm", values(mode, fa, AT), gw.astype(np.int64)[Wp])
    acc = np.ascontiguousarray(acc.reshape(N, B, Ho * Wo).transpose(1, 0, 2))
    quant = {"quant": (0.05, False), "squant": (0.03, True), "add+quant": (0.04, False)}.get(output)
    lo, hi = (-0.5, 0.7) if act == "clip" else (-np.inf, np.inf)
    sw_, bias = rng.uniform(1e-4, 1e-2, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32)
    other = rng.normal(0, 1, acc.shape).astype(np.float32) if output.startswith("add") else None
    ref = np.empty(acc.shape, np.uint8 if quant is not None and other is None else np.float32)
    qref = np.empty(acc.shape, np.uint8) if other is not None and quant is not None else None
    _kernels.dequantize(acc, 0.02, sw_, bias, 1, act, lo, hi, quant, out=ref,
                        add=None if other is None else (other, qref))
    conv = (x, 0, (kh, kw), stride, pads[:2], dil, (Ho, Wo))
    runs = vnni_takes(fa, mode, gw, Wp) and not vnni_swaps(fa, mode, gw, Wp) and "avx512" in _kernels.vnni_levels()
    # the avx2 level's panels packed from the input (int16_conv_panels_fit: int16, or byte quads without AVX-VNNI),
    # where no AVX-VNNI kernel takes it
    int16 = mode != "table" and int16_conv_panels_fit(Kd, W, kh, kw, stride, Ho, Wo) and \
        not (vnni_takes(fa, mode, gw, Wp) and "avx2" in _kernels.vnni_levels())
    for isa in ISAS:
        for ck in ("bcast", "im2col"):
            if other is None:  # one channel more, which must stay 0
                full = np.zeros((B, N + 1, Ho * Wo), ref.dtype)
                out, q, add = full[:, 1:], None, None
            else:
                full = out = np.zeros(acc.shape, np.float32)
                q = None if qref is None else np.zeros(acc.shape, np.uint8)
                add = (other, out, q)
            sc = (0.02, sw_, bias, act, lo, hi, quant, add)
            used = _kernels.int_gemm(None, Wp, fa, mode, gw, S, out, isa, threads, sc, True, conv=conv,
                                     conv_kernel=ck)
            if used is None:
                assert not full.any() and (q is None or not q.any()), (isa, ck)
                assert ck == "im2col" or not (runs and isa == "avx512"), isa
                continue
            quads = vnni_takes(fa, mode, gw, Wp)  # byte quads from the input at avx2 (no AVX-VNNI here when int16)
            assert used == (("avx2+vnni" if quads else "avx2") if isa == "avx2" and ck == "im2col" and int16
                            else "avx512+vnni") and \
                (ck == "im2col" or runs), (isa, ck, used)
            event(f"conv_kernel {ck} ran at {used}")
            assert np.array_equal(out, ref), (isa, ck)
            assert q is None or np.array_equal(q, qref), (isa, ck)
            if other is None:
                assert not full[:, 0].any()


conv_kernel_cases = st.fixed_dictionaries({
    "B": st.integers(1, 3), "C": st.sampled_from([3, 4, 7, 16, 64]), "N": st.sampled_from([1, 5, 64, 70, 130]),
    "H": st.integers(1, 14), "W": st.integers(1, 14), "k": st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7)]),
    "stride": st.sampled_from([(1, 1), (2, 2)]), "pads": st.tuples(*[st.integers(0, 3)] * 4),
    "signed": st.booleans(), "output": st.sampled_from(["float", "quant", "add", "add+quant"]),
    "threads": st.sampled_from([1, 2])})


def _scaled_conv_case(c, seed):
    """A conv_kernel_cases case's operands: activations x, weights w, the numpy reference accumulators ref, a
    Scaling with Relu, the case's quantized output and fused Add, and its reference output yref."""
    rng = np.random.default_rng(seed)
    kh, kw = c["k"]
    B, C, N, pads, signed = c["B"], c["C"], c["N"], c["pads"], c["signed"]
    H, W = max(c["H"], kh - pads[0] - pads[2]), max(c["W"], kw - pads[1] - pads[3])
    x = rng.integers(-128, 128, (B, C, H, W)) if signed else rng.integers(0, 256, (B, C, H, W))
    w = rng.integers(-128, 128, (N, C, kh, kw))
    ref = K.reference_conv2d_int(x, w, EXACT, signed, c["stride"], pads)
    quant = K.OutputQuant(0.05, False) if c["output"] in ("quant", "add+quant") else None
    add = rng.normal(0, 1, ref.shape).astype(np.float32) if c["output"].startswith("add") else None
    sc = K.Scaling(0.001, rng.uniform(1e-3, 1e-2, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32),
                   K.OutputAct("relu"), quant, add)
    return x, w, ref, sc, K.scale_accumulators(ref, sc)


@settings(deadline=None, max_examples=60)
@given(c=conv_kernel_cases, seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_scaled_on_either_conv_kernel(c, seed):
    """conv2d_scaled of the exact product with the integer GEMM's conv operand forced to each kernel
    (DSE_KERNEL_CONV: "im2col", "bcast", "auto") at every ISA level equals scale_accumulators of the numpy
    reference conv, signed and unsigned activations, every output mode of the scaling (float32, quantized, a fused
    Add with and without the quantized copy)."""
    x, w, ref, sc, yref = _scaled_conv_case(c, seed)
    pads, signed, quant, add = c["pads"], c["signed"], sc.quant, sc.add
    for isa in ISAS:
        for ck in ("bcast", "im2col", "auto"):
            with conv_kernel_env(ck), K.using_threads(c["threads"]):
                got = K.conv2d_scaled(x, w, EXACT, signed, sc, c["stride"], pads, isa=isa)
            if add is not None and quant is not None:
                assert np.array_equal(got[0], yref[0]) and np.array_equal(got[1], yref[1]), (isa, ck)
            else:
                assert np.array_equal(got, yref), (isa, ck)


@settings(deadline=None, max_examples=120)
@given(B=st.integers(1, 3), C=st.sampled_from([1, 3, 5, 16, 29, 64]), N=st.sampled_from([1, 5, 7, 64]),
       H=st.sampled_from([1, 3, 4, 5, 7, 14, 17, 28, 56, 112]), W=st.sampled_from([1, 3, 4, 5, 7, 14, 17, 28, 56, 112]),
       k=st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 1), (2, 2)]),
       stride=st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2)]), dil=st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2)]),
       same=st.booleans(), pads=st.tuples(*[st.integers(0, 3)] * 4), groups=st.sampled_from([1, 1, 2]),
       signed=st.booleans(), output=st.sampled_from(["float", "quant", "add", "add+quant"]),
       act=st.sampled_from(["none", "relu"]), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_int16_conv_panels_read_the_input(B, C, N, H, W, k, stride, dil, same, pads, groups, signed, output, act,
                                          threads, seed):
    """conv2d_scaled of the exact product where the avx2 int16 kernel packs its panels straight from the conv input
    (>= 128 depth rows, stride 1, output rows as wide as the input's: "same" padding split at random between the
    sides; planes of >= 16 positions, up to 112 x 112; panels across image boundaries and the last partial panel) equals
    scale_accumulators of the numpy reference conv at every ISA level in every output mode (float32, quantized, a
    fused Add with and without the quantized copy), with Relu or none, signed and unsigned activations, dilation,
    groups, 1 and 2 threads; the geometries it does not take (strides, other padding) run as before."""
    rng = np.random.default_rng(seed)
    kh, kw = k
    (dh, dw) = dil
    if same:  # output rows as wide as the input's at stride 1
        stride = (1, 1)
        ph, pw = dh * (kh - 1), dw * (kw - 1)
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        pads = (top, left, ph - top, pw - left)
    if H * W > 1024:  # large planes: few channels, one image (the numpy reference's time)
        B, C, N = 1, min(C, 16), min(N, 8)
    H, W = max(H, dh * (kh - 1) + 1 - pads[0] - pads[2]), max(W, dw * (kw - 1) + 1 - pads[1] - pads[3])
    C, N = C * groups, N * groups
    x = rng.integers(-128, 128, (B, C, H, W)) if signed else rng.integers(0, 256, (B, C, H, W))
    w = rng.integers(-128, 128, (N, C // groups, kh, kw))
    ref = K.reference_conv2d_int(x, w, EXACT, signed, stride, pads, dil, groups)
    quant = K.OutputQuant(0.05, False) if output in ("quant", "add+quant") else None
    add = rng.normal(0, 1, ref.shape).astype(np.float32) if output.startswith("add") else None
    sc = K.Scaling(0.001, rng.uniform(1e-3, 1e-2, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32),
                   K.OutputAct(act) if act != "none" else None, quant, add)
    yref = K.scale_accumulators(ref, sc)
    Ho, Wo = ref.shape[2:]
    if int16_conv_panels_fit(C // groups * kh * kw, W, kh, kw, stride, Ho, Wo) and (kh * kw > 1 or any(pads)):
        event("the int16 panels read the input")
    for isa in ISAS:
        with vnni_env(False), K.using_threads(threads):
            got = K.conv2d_scaled(x, w, EXACT, signed, sc, stride, pads, dil, groups, isa=isa)
        if add is not None and quant is not None:
            assert np.array_equal(got[0], yref[0]) and np.array_equal(got[1], yref[1]), isa
        else:
            assert np.array_equal(got, yref), isa


@settings(deadline=None, max_examples=25)
@given(c=st.fixed_dictionaries({
    "B": st.integers(1, 3), "C": st.sampled_from([512, 576, 960]), "N": st.sampled_from([64, 65, 160, 320]),
    "H": st.integers(4, 5), "W": st.integers(4, 5), "k": st.just((1, 1)), "stride": st.just((1, 1)),
    "pads": st.just((0, 0, 0, 0)), "signed": st.booleans(),
    "output": st.sampled_from(["float", "quant", "add", "add+quant"]), "threads": st.sampled_from([1, 2])}), seed=st.integers(0, 2 ** 32 - 1))
def test_deep_projections_on_small_planes(c, seed):
    """The stride-1 1x1 convs of >= 512 input channels onto fewer (>= 64) output channels on planes of 16-31
    positions (MobileNetV2 32's 4x4 projections), which "auto" puts on the broadcast kernel where it runs:
    conv2d_scaled equals scale_accumulators of the numpy reference conv at every ISA level, VNNI on and off, 1 and 2
    threads, signed and unsigned activations, every output mode."""
    x, w, ref, sc, yref = _scaled_conv_case(c, seed)
    geo = K._ConvGeometry((1, 1), (0,) * 4, (1, 1), (c["H"], c["W"]))
    for isa in ISAS:
        for vnni in (True, False):
            with vnni_env(vnni), K.using_threads(c["threads"]):
                bc = isa == "avx512" and vnni and "avx512" in _kernels.vnni_levels()
                assert K.conv_kernel(1, 1, c["C"], c["N"], 1, geo, isa) == ("bcast" if bc else "im2col")
                got = K.conv2d_scaled(x, w, EXACT, c["signed"], sc, c["stride"], c["pads"], isa=isa)
            if sc.add is not None and sc.quant is not None:
                assert np.array_equal(got[0], yref[0]) and np.array_equal(got[1], yref[1]), (isa, vnni)
            else:
                assert np.array_equal(got, yref), (isa, vnni)


@settings(deadline=None, max_examples=40)
@given(c=conv_kernel_cases, offset=st.sampled_from([0, 4, 16, 60, "last"]), seed=st.integers(0, 2 ** 32 - 1))
def test_streamed_float_outputs_are_the_stored_ones(c, offset, seed):
    """A float32 output of the integer GEMM's output step (a layer's float32 output, or a fused Add's sum) of at least
    STREAM_MIN_BYTES goes to memory by non-temporal stores where 64-byte aligned: with the threshold at 0 (every
    such output streamed) conv2d_scaled on either conv kernel equals scale_accumulators of the numpy reference at
    every ISA level, VNNI on and off, 1 and 2 threads, and int_gemm into an output that starts ``offset`` bytes past
    a 64-byte boundary ("last": its last channel plane starts on one, so that a tail streamed as a whole vector would
    leave the output) writes the same bits there (aligned vectors streamed, the others stored) and nothing else."""
    x, w, ref, sc, yref = _scaled_conv_case(c, seed)
    kh, kw = c["k"]
    B, N, pads, signed = c["B"], c["N"], c["pads"], c["signed"]
    quant, add = sc.quant, sc.add
    with mock.patch.object(_kernels, "STREAM_MIN_BYTES", 0):
        for isa in ISAS:
            for ck, vnni in (("bcast", True), ("im2col", True), ("im2col", False)):
                with conv_kernel_env(ck), vnni_env(vnni), K.using_threads(c["threads"]):
                    got = K.conv2d_scaled(x, w, EXACT, signed, sc, c["stride"], pads, isa=isa)
                if add is not None and quant is not None:
                    assert np.array_equal(got[0], yref[0]) and np.array_equal(got[1], yref[1]), (isa, ck, vnni)
                else:
                    assert np.array_equal(got, yref), (isa, ck, vnni)
        if quant is not None and add is None or signed:
            return
        # int_gemm itself into an output at ``offset`` bytes from a 64-byte boundary, guarded on both sides
        xq = np.ascontiguousarray(x.astype(np.uint8))
        Ho, Wo = ref.shape[2:]
        conv = (xq, 0, (kh, kw), c["stride"], pads[:2], (1, 1), (Ho, Wo))
        n = ref.size
        raw = np.full(n * 4 + 192, 0x5A, np.uint8)
        last = (n - Ho * Wo) * 4  # the last plane's first byte
        start = -raw.ctypes.data % 64 + 64 + (-last % 64 if offset == "last" else offset)
        out = raw[start:start + 4 * n].view(np.float32).reshape(B, N, Ho * Wo)
        wp = np.ascontiguousarray(w.astype(np.uint8).reshape(N, -1))
        sargs = sc.args(out.reshape(ref.shape), None if quant is None else np.empty(ref.shape, np.uint8))
        with K.using_threads(c["threads"]):
            used = _kernels.int_gemm(None, wp, W_VALS, "u8", W_VALS, 255 * 128, out, "avx512", c["threads"],
                                     sargs, True, conv=conv, conv_kernel="bcast")
        if used is not None:
            event("int_gemm streamed into an offset output")
            want = yref[0] if isinstance(yref, tuple) else yref
            assert np.array_equal(out.reshape(ref.shape), want)
            assert (raw[:start] == 0x5A).all() and (raw[start + 4 * n:] == 0x5A).all()


def _pointwise_conv_case(B, C, N, H, W, signed, output, act, seed):
    """A random 1x1 conv of B x C x H x W operands and N filters with the scaling of ``output`` ("float", "quant",
    "add" or "add+quant") and activation ``act`` (None or an OutputAct name): (x, w, the Add's operand, the output
    quantization, the Scaling, scale_accumulators of the numpy reference conv)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (B, C, H, W)) if signed else rng.integers(0, 256, (B, C, H, W))
    w = rng.integers(-128, 128, (N, C, 1, 1))
    ref = K.reference_conv2d_int(x, w, EXACT, signed)
    quant = K.OutputQuant(0.05, False) if output in ("quant", "add+quant") else None
    add = rng.normal(0, 1, ref.shape).astype(np.float32) if output.startswith("add") else None
    sc = K.Scaling(0.001, rng.uniform(1e-3, 1e-2, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32),
                   None if act is None else K.OutputAct(act), quant, add)
    return x, w, add, quant, sc, K.scale_accumulators(ref, sc)


@settings(deadline=None, max_examples=25)
@given(B=st.integers(1, 3), C=st.sampled_from([128, 131, 256]), N=st.sampled_from([64, 70, 130]),
       H=st.integers(14, 17), W=st.integers(14, 17), signed=st.booleans(),
       output=st.sampled_from(["float", "quant", "add", "add+quant"]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_wide_stride1_1x1_conv_on_auto_kernel(B, C, N, H, W, signed, output, threads, seed):
    """The stride-1 1x1 convs that "auto" hands to the broadcast kernel (>= 128 input and >= 64 output channels on
    planes of >= 14 x 14, ResNet-50's bottleneck convs) equal scale_accumulators of the numpy reference conv at
    every ISA level, 1 and 2 threads, every output mode, with VNNI on and off; at the avx512 level with VNNI the
    kernel that ran is the broadcast one."""
    x, w, add, quant, sc, yref = _pointwise_conv_case(B, C, N, H, W, signed, output, "relu", seed)
    seen, real = [], _kernels.int_gemm

    def spy(*a, **kw):
        seen.append(kw.get("conv_kernel"))
        return real(*a, **kw)
    for isa in ISAS:
        for vnni in (True, False):
            seen.clear()
            with conv_kernel_env("auto"), vnni_env(vnni), K.using_threads(threads), \
                    mock.patch.object(K._kernels, "int_gemm", spy):
                got = K.conv2d_scaled(x, w, EXACT, signed, sc, isa=isa)
            if add is not None and quant is not None:
                assert np.array_equal(got[0], yref[0]) and np.array_equal(got[1], yref[1]), (isa, vnni)
            else:
                assert np.array_equal(got, yref), (isa, vnni)
            if isa == "avx512" and vnni and not signed and "avx512" in _kernels.vnni_levels():
                assert seen[:1] == ["bcast"], seen


@settings(deadline=None, max_examples=30)
@given(B=st.integers(1, 5), C=st.integers(1, 90), N=st.sampled_from([1, 6, 17, 64, 130]),
       hw=st.sampled_from([(4, 8), (8, 8), (8, 12), (16, 16), (16, 20), (24, 24), (7, 7), (13, 11), (28, 28)]),
       signed=st.booleans(), output=st.sampled_from(["float", "quant", "add", "add+quant"]),
       act=st.sampled_from([None, "relu"]), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_shallow_1x1_float_outputs_in_whole_image_blocks(B, C, N, hw, signed, output, act, threads, seed):
    """Stride-1 1x1 convs on the im2col kernel whose depth is one block and whose output step writes float32 values
    (a float32 output, a fused Add's sum) take blocks of whole images at the avx512 level with VNNI
    (dse_ig_block_positions: the least multiple of lcm(image, 64) of at least 256 positions, e.g. ResNet-50's 64 ->
    256 convs at 56 x 56): planes whose blocks hold 1, 2, 4 or more images, several blocks per call or one, depths
    1-90 (across the bound of 64 at 3136 positions), every output mode, 1 and 2 threads, every ISA level, VNNI on and off, equal to scale_accumulators of the numpy
    reference conv."""
    H, W = hw
    x, w, add, quant, sc, yref = _pointwise_conv_case(B, C, N, H, W, signed, output, act, seed)
    for isa in ISAS:
        for vnni in (True, False):
            with conv_kernel_env("im2col"), vnni_env(vnni), K.using_threads(threads):
                got = K.conv2d_scaled(x, w, EXACT, signed, sc, isa=isa)
            if add is not None and quant is not None:
                assert np.array_equal(got[0], yref[0]) and np.array_equal(got[1], yref[1]), (isa, vnni)
            else:
                assert np.array_equal(got, yref), (isa, vnni)


def test_conv_kernel_choice(monkeypatch):
    """conv_kernel: DSE_KERNEL_CONV forces the conv operand (an unknown name is an error); "auto" takes the
    broadcast kernel for ungrouped k x k convs of >= 16 input channels or >= 25 taps, strided 1x1 convs of >= 128
    and stride-1 1x1 convs of >= 128 input and >= 64 output channels on planes of >= 14 x 14 or of >= 512 input onto
    fewer (>= 64) output channels on planes of 16-31 positions, im2col otherwise, and im2col wherever the broadcast kernel cannot run (below avx512, VNNI off); conv2d_scaled hands
    the choice to the kernel, and a 1x1 conv without padding on the broadcast kernel reads its input through it."""
    geo = K._ConvGeometry((1, 1), (1, 1, 1, 1), (1, 1), (8, 8))
    geo2 = K._ConvGeometry((2, 2), (0, 0, 0, 0), (1, 1), (4, 4))
    for isa in ISAS:
        monkeypatch.setenv("DSE_KERNEL_CONV", "auto")
        bc = "bcast" if isa == "avx512" and "avx512" in _kernels.vnni_levels() else "im2col"
        assert K.conv_kernel(3, 3, 64, 64, 1, geo, isa) == bc
        assert K.conv_kernel(7, 7, 3, 64, 1, geo, isa) == bc
        assert K.conv_kernel(3, 3, 3, 64, 1, geo, isa) == "im2col"
        assert K.conv_kernel(3, 3, 64, 64, 2, geo, isa) == "im2col"
        assert K.conv_kernel(1, 1, 64, 128, 1, geo2, isa) == "im2col"
        assert K.conv_kernel(1, 1, 128, 256, 1, geo2, isa) == bc
        assert K.conv_kernel(1, 1, 160, 960, 1, geo, isa) == "im2col"
        p14, p7 = K._ConvGeometry((1, 1), (0,) * 4, (1, 1), (14, 14)), K._ConvGeometry((1, 1), (0,) * 4, (1, 1), (7, 7))
        assert K.conv_kernel(1, 1, 128, 64, 1, p14, isa) == bc  # ResNet-50's stride-1 1x1 convs on >= 14 x 14
        assert K.conv_kernel(1, 1, 64, 256, 1, p14, isa) == "im2col"
        assert K.conv_kernel(1, 1, 128, 32, 1, p14, isa) == "im2col"
        assert K.conv_kernel(1, 1, 512, 2048, 1, p7, isa) == "im2col"
        p4, p1 = K._ConvGeometry((1, 1), (0,) * 4, (1, 1), (4, 4)), K._ConvGeometry((1, 1), (0,) * 4, (1, 1), (1, 1))
        assert K.conv_kernel(1, 1, 960, 160, 1, p4, isa) == bc  # MobileNetV2 32's 4x4 projections
        assert K.conv_kernel(1, 1, 576, 160, 1, p4, isa) == bc
        assert K.conv_kernel(1, 1, 160, 960, 1, p4, isa) == "im2col"  # its expansions and head
        assert K.conv_kernel(1, 1, 320, 1280, 1, p4, isa) == "im2col"
        assert K.conv_kernel(1, 1, 960, 48, 1, p4, isa) == "im2col"
        assert K.conv_kernel(1, 1, 960, 160, 1, p1, isa) == "im2col"  # squeeze-and-excitation 1x1 planes
        assert K.conv_kernel(1, 1, 960, 160, 1, p7, isa) == "im2col"  # planes of >= 32 positions: per-image operand
        monkeypatch.setenv("DSE_KERNEL_CONV", "bcast")
        assert K.conv_kernel(3, 3, 3, 64, 2, geo, isa) == bc
        with vnni_env(False):
            assert K.conv_kernel(3, 3, 3, 64, 2, geo, isa) == "im2col"
        monkeypatch.setenv("DSE_KERNEL_CONV", "im2col")
        assert K.conv_kernel(3, 3, 64, 64, 1, geo, isa) == "im2col"
    monkeypatch.setenv("DSE_KERNEL_CONV", "nope")
    with pytest.raises(K.DseError):
        K.conv_kernel(3, 3, 64, 64, 1, geo)
    if "avx512" not in _kernels.vnni_levels():
        return
    seen = []
    real = _kernels.int_gemm

    def spy(*a, **kw):
        seen.append(kw.get("conv_kernel"))
        return real(*a, **kw)
    monkeypatch.setattr(K._kernels, "int_gemm", spy)
    monkeypatch.setenv("DSE_KERNEL_CONV", "bcast")
    rng = np.random.default_rng(0)
    x, w = rng.integers(0, 256, (2, 8, 6, 6)), rng.integers(-128, 128, (4, 8, 1, 1))
    sc = K.Scaling(0.01, np.ones(4, np.float32), np.zeros(4, np.float32))
    got = K.conv2d_scaled(x, w, EXACT, False, sc, isa="avx512")
    assert seen == ["bcast"]
    assert np.array_equal(got, K.scale_accumulators(K.reference_conv2d_int(x, w, EXACT, False), sc))


@pytest.mark.parametrize("isa,vnni", KERNELS)
def test_conv_groups_on_different_kernels(isa, vnni):
    """A grouped DRUM6 conv whose first group avoids weight -128 (G(-128) = -132 outside the bytes: that group may run
    on the VNNI kernel with its operand built in the kernel) and whose second group uses it (the int16 kernel on the
    sliced operand): every group's output is the reference's."""
    rng = np.random.default_rng(5)
    mult = get_multiplier("drum6")
    x = rng.integers(0, 256, (2, 6, 9, 9))
    w = rng.integers(-127, 128, (8, 3, 3, 3))
    w[4, 0, 0, 0] = -128
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 2)
    ref = K.reference_conv2d_int(x, w, mult, False, *args)
    sc = K.Scaling(0.01, rng.uniform(1e-3, 1e-2, 8).astype(np.float32), rng.normal(0, 1, 8).astype(np.float32),
                   K.OutputAct("relu"))
    with vnni_env(vnni):
        got = K.conv2d_scaled(x, w, mult, False, sc, *args, path="lowrank", isa=isa)
    assert np.array_equal(got, K.scale_accumulators(ref, sc))


def _scaled_reference(acc, sa, sw, bias, act, lo, hi, quant):
    """numpy twin of the scaling pass on int64 sums [B, N, S]: float32((acc * sa) * sw[n]) + bias[n], the Relu/Clip
    (numpy's maximum / clip), then with quant = (qs, signed) the patterns of clip(rint(y / qs)), NaN -> 0."""
    with np.errstate(all="ignore"):
        y = ((acc.astype(np.float64) * sa) * sw.astype(np.float64)[None, :, None]).astype(np.float32)
        y = y + bias[None, :, None]
        if act == "relu":
            y = np.maximum(y, np.float32(0))
        elif act == "clip":
            y = np.clip(y, np.float32(lo), np.float32(hi))
        if quant is None:
            return y
        qlo, qhi = (-128, 127) if quant[1] else (0, 255)
        v = np.rint(y / np.float32(quant[0]))
        v = np.where(np.isnan(v), 0, np.clip(v, qlo, qhi))
    return (v.astype(np.int64) & 0xFF).astype(np.uint8)


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    """Bit for bit, except which NaN a float32 output holds: NaN at the same places. When a NaN product meets a NaN
    bias, IEEE 754 leaves open which operand's NaN the sum carries, and x86 gives the first operand's: the order a
    compiler emits a commutative add in (numpy's loop as well as ours) decides it, not the arithmetic."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if want.dtype != np.float32:
        return np.array_equal(got.view(np.uint8), want.view(np.uint8))
    nan = np.isnan(want)
    return np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def _near(v: float, n: int = 2) -> list:
    """float32 v and its n neighbours either side."""
    with np.errstate(over="ignore"):
        out = [np.float32(v)]
    for _ in range(n):
        out = [np.nextafter(out[0], np.float32(-np.inf))] + out + [np.nextafter(out[-1], np.float32(np.inf))]
    return [float(x) for x in out]


@settings(deadline=None, max_examples=120)
@given(B=st.integers(1, 5), img=st.sampled_from([1, 5, 16, 63, 64, 65, 70, 128, 130, 200, 256]),
       Kd=st.integers(1, 3), N=st.integers(1, 6), mode=st.sampled_from(["table", "u8"]),
       quant=st.sampled_from([None, False, True]), act=st.sampled_from(["none", "relu", "clip"]),
       tie=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_scaled_tiles_adversarial_constants(B, img, Kd, N, mode, quant, act, tie, threads, seed):
    _check_scaled_tiles_adversarial(B, img, Kd, N, mode, quant, act, tie, threads, seed)


@settings(deadline=None, max_examples=60)
@given(B=st.integers(14, 70), Kd=st.integers(1, 3), N=st.integers(1, 6), mode=st.sampled_from(["table", "u8"]),
       quant=st.sampled_from([None, False, True]), act=st.sampled_from(["none", "relu", "clip"]),
       tie=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_scaled_tiles_one_position_images(B, Kd, N, mode, quant, act, tie, threads, seed):
    """The same on 1 x 1 planes of many images (a squeeze-excitation conv's GEMM of images x channels): each
    channel's sums in a tile are up to 70 runs of one position, one image apart in the output."""
    _check_scaled_tiles_adversarial(B, 1, Kd, N, mode, quant, act, tie, threads, seed)


def _check_scaled_tiles_adversarial(B, img, Kd, N, mode, quant, act, tie, threads, seed):
    """The scaling of the int32 tiles (the 64-output quantized loop with its pack, the activation folded into the
    quantization's clamp where that is exact, runs of whole images in one call) against the numpy formula and the
    int64 pass (dequantize): quotients exactly at, and ulps around, half-integers (sums times 1.0 quantized by
    scales near 2), Clip bounds at and around the quantization's rounding boundaries and clamp bounds, crossed bounds
    (lo > hi), bounds whose clamp misses the pattern range, infinite bounds; NaN / inf / -0 / tiny / huge channel
    constants, quantization scales that are tiny (subnormal), huge, negative, zero, infinite or NaN; signed and
    unsigned patterns; every kernel, 1 and 2 threads, strided outputs."""
    rng = np.random.default_rng(seed)
    M = B * img
    if mode == "table":  # sums of a few int16 values: any int32-ish sum, exactly representable
        fa = rng.integers(-40000 // Kd, 40000 // Kd, (256, 1)).astype(np.int16)
        gw = np.ones((256, 1), np.int16)
    else:
        fa, gw = np.zeros((256, 1), np.int16), W_VALS
    AT = rng.integers(0, 256, (Kd, M)).astype(np.uint8)
    Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
    S = int(np.abs(values(mode, fa, AT)).max() * np.abs(gw.astype(np.int64)).max()) or 1
    acc = np.empty((B, N, img), np.int64)
    _kernels.int_gemm(AT, Wp, fa, mode, gw, S, acc)
    qs = float(rng.choice(_near(2.0) + _near(0.5, 1) + [1.0, 0.037, 1e-40, 3e38, -2.0, 0.0, np.inf, np.nan]
                          if tie else [0.0123, 1.0, 2.0, 7.5, 1e-40, -0.5]))
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 1e30, -1.0, 0.5]
    sw = np.where(rng.random(N) < 0.6, 1.0, rng.choice(special, N) if tie else rng.uniform(1e-4, 1e-1, N))
    bias = np.where(rng.random(N) < 0.6, 0.0, rng.choice(special + [0.25, -0.75], N))
    sw, bias = sw.astype(np.float32), bias.astype(np.float32)
    sa = float(rng.choice([1.0, 1.0, 0.5, float(rng.uniform(1e-3, 1)), 1e-300, 1e300]))
    q0 = abs(qs) if np.isfinite(qs) and qs != 0 else 1.0
    edges = [(k + 0.5) * q0 for k in (-129, -128, -3, -1, 0, 1, 3, 126, 127, 254, 255, 300)] + \
        [k * q0 for k in (-128, 0, 5, 127, 255)]
    bound = rng.choice(edges)
    pool = _near(bound, 2) + [-np.inf, np.inf, float(rng.uniform(-300, 300)), -6.0, 0.0, 6.0]
    lo, hi = (float(v) for v in rng.choice(pool, 2))
    if rng.random() < 0.7:
        lo, hi = min(lo, hi), max(lo, hi)
    if rng.random() < 0.25:  # bounds whose quantized range misses the patterns' (all below 0, -128; above 255)
        lo, hi = (float(np.float32(v * q0)) for v in [(-6, -1), (-3, -0.5), (300, 400), (-200, -140)][rng.integers(4)])
    q = None if quant is None else (qs, quant)
    sc = (sa, sw, bias, act, lo, hi, q)
    ref = _scaled_reference(acc, sa, sw, bias, act, lo, hi, q)
    for isa, vnni in KERNELS:
        assert _same_bits(_kernels.dequantize(acc, *sc[:3], 1, *sc[3:6], q, isa), ref), isa
        wide = np.zeros((B, N + 2, img), ref.dtype)
        _kernels.int_gemm(AT, Wp, fa, mode, gw, S, wide[:, 1:N + 1], isa, threads, sc, vnni)
        assert _same_bits(wide[:, 1:N + 1], ref), (isa, vnni)
        assert not wide[:, 0].any() and not wide[:, N + 1].any()


def _table_operands(xs: np.ndarray, N: int):
    """Table-mode operands (t = 1) whose sums are xs[m] in every one of N rows: three depth rows with weights 16384,
    256 and 1 and activations -128..127, x = 16384 f2 + 256 f1 + f0 (|x| <= 2^21)."""
    f2 = np.clip(np.rint(xs / 16384), -128, 127).astype(np.int64)
    r = xs - 16384 * f2
    f1 = np.rint(r / 256).astype(np.int64)
    f0 = r - 256 * f1
    assert np.all(np.abs(f1) <= 127) and np.all(np.abs(f0) <= 128)
    f1, f0 = np.where(f0 == 128, f1 + 1, f1), np.where(f0 == 128, -128, f0)
    fa = (np.arange(256) - 128).astype(np.int16)[:, None].copy()
    gw = np.zeros((256, 1), np.int16)
    gw[:3, 0] = [16384, 256, 1]
    AT = np.stack([f2, f1, f0]).astype(np.int64) + 128
    return AT.astype(np.uint8), np.tile(np.arange(3, dtype=np.uint8), (N, 1)), fa, gw


@settings(deadline=None, max_examples=150)
@given(B=st.integers(1, 3), img=st.sampled_from([1, 5, 16, 17, 63, 64, 65, 100, 256, 300]), N=st.integers(1, 8),
       signed=st.booleans(), act=st.sampled_from(["none", "relu", "clip6", "clip_narrow", "clip_wide"]),
       consts=st.sampled_from(["real", "pow2", "big_bias", "mixed"]), operand=st.sampled_from(["targeted", "s8", "u8"]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_scaled_patterns_single_precision_path(B, img, N, signed, act, consts, operand, threads, seed):
    """The quantized outputs of the int32 tiles at the avx512 level by one FMA per rounding bound in single precision
    (dse_scale_run_qfast: the pattern is accepted where both bounds round alike, else the group takes the exact
    operations) against the numpy formula: layer-like constants (c1 = sa sw / qs up to 1/4, biases of a few steps)
    with sums built to land within a few units of every channel's rounding boundaries (k + 1/2 of a step, the Clip's
    bounds); power-of-two constants whose quotients hit half-integers exactly (ties to even); biases of thousands of
    steps (a wide certified margin, or none); channels with and without the fast constants in one tile (c1 above
    1/4); the VNNI kernel's signed activations (the offset's correction subtracted in registers); narrowed clamps and
    the pattern type's whole range (the saturating packs); every kernel, 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    M = B * img
    qs = float(np.float32(rng.choice([0.0123, 0.023, 1 / 64, 0.5]) if consts != "pow2" else 2.0 ** -rng.integers(0, 7)))
    if consts == "pow2":
        sa = 1.0
        sw = (2.0 ** -rng.integers(2, 12, N)).astype(np.float32) * qs
        bias = (rng.integers(-40, 40, N) * qs / 2).astype(np.float32)
    else:
        sa = float(rng.choice([1.0, rng.uniform(1e-3, 0.1)]))
        c1 = np.exp(rng.uniform(np.log(1e-5), np.log(0.25), N))
        if consts == "mixed":  # some channels beyond the fast path's c1 <= 1/4
            c1 = np.where(rng.random(N) < 0.4, rng.uniform(0.25, 3.0, N), c1)
        sw = (c1 * qs / sa).astype(np.float32)
        bias = (rng.normal(0, 3, N) * qs).astype(np.float32)
        if consts == "big_bias":
            bias = (rng.choice([-1, 1], N) * rng.choice([3e3, 3e4, 5e4], N) * qs).astype(np.float32)
    lo, hi = {"none": (-np.inf, np.inf), "relu": (0.0, np.inf), "clip6": (0.0, 6.0),
              "clip_narrow": ((0.5 + rng.integers(-3, 3)) * qs, (100.5 + rng.integers(-3, 3)) * qs),
              "clip_wide": (-1e3, 1e3)}[act]
    act_name = {"none": "none", "relu": "relu"}.get(act, "clip")
    qlo, qhi = (-128, 127) if signed else (0, 255)
    if operand == "targeted":
        g = sa * sw.astype(np.float64)
        xs = rng.integers(-2 ** 20, 2 ** 20, M)
        for m in range(M):  # near a boundary of channel m % N: a half step, or a Clip bound
            n = m % N
            k = rng.integers(qlo - 3, qhi + 4) + 0.5
            edge = rng.choice([k * qs, lo if np.isfinite(lo) else k * qs, hi if np.isfinite(hi) else k * qs])
            x = np.rint((edge - float(bias[n])) / g[n]) + rng.integers(-2, 3)
            xs[m] = int(np.clip(x, -2 ** 21 + 2 ** 14, 2 ** 21 - 2 ** 14)) if np.isfinite(x) else 0
        AT, Wp, fa, gw = _table_operands(xs, N)
        mode, S = "table", 16384 * 128
    else:
        Kd = int(rng.integers(1, 40))
        mode, fa, gw = operand, np.zeros((256, 1), np.int16), W_VALS
        AT = rng.integers(0, 256, (Kd, M)).astype(np.uint8)
        Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
        S = int(np.abs(values(mode, fa, AT)).max() * np.abs(gw.astype(np.int64)).max()) or 1
    acc = np.empty((B, N, img), np.int64)
    _kernels.int_gemm(AT, Wp, fa, mode, gw, S, acc)
    if operand == "targeted":
        assert np.array_equal(acc.transpose(1, 0, 2).reshape(N, M)[0], xs)
    q = (qs, signed)
    sc = (sa, sw, bias, act_name, float(lo), float(hi), q)
    ref = _scaled_reference(acc, sa, sw, bias, act_name, lo, hi, q)
    for isa, vnni in KERNELS:
        wide = np.zeros((B, N + 2, img), np.uint8)
        _kernels.int_gemm(AT, Wp, fa, mode, gw, S, wide[:, 1:N + 1], isa, threads, sc, vnni)
        assert np.array_equal(wide[:, 1:N + 1], ref), (isa, vnni)
        assert not wide[:, 0].any() and not wide[:, N + 1].any()
