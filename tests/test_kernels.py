"""Fast kernel paths (exact / lowrank / LUT at every ISA level, float) against the slow numpy references, bit-exact."""
import contextlib
import itertools
import os
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import kernels as K
from dse._kernels import isa_levels, vnni_levels
from dse.arith.multipliers import EXACT, Multiplier, get_multiplier, pattern_values
from dse.errors import DseError
from tests.mac_helpers import vnni_env

ISAS = isa_levels()
SETTINGS = settings(deadline=None, max_examples=60)


def table_mult(name, fn):
    """A Multiplier whose table is fn(a_values int64[256,1], w_values int64[1,256]) -> int[256,256]."""
    return Multiplier(name=name, family="test", _builder=lambda a_s, w_s: np.asarray(
        fn(pattern_values(a_s)[:, None], pattern_values(w_s)[None, :]), dtype=np.int32))


def random_mult(seed, lo, hi):
    return Multiplier(name=f"rand{seed}", family="test",
                      _builder=lambda a_s, w_s: np.random.default_rng(seed + 7 * a_s).integers(lo, hi, (256, 256)))


def classed_table(small: np.ndarray) -> np.ndarray:
    """A 256x256 table whose rows repeat in 37 activation classes (pattern % 37) and whose columns repeat in 50 weight
    classes ((7 * pattern) % 50): the rows kernel builds 48- and 64-row tables for it (padded class counts)."""
    p = np.arange(256)
    return small[p % 37][:, (7 * p) % 50]


def classed_mult(seed, lo, hi):
    return Multiplier(name=f"classed{seed}", family="test", _builder=lambda a_s, w_s: classed_table(
        np.random.default_rng(seed + 7 * a_s).integers(lo, hi, (37, 50))))


# Structured separable tables (low rank) and full-range random tables (high rank).
PERF = table_mult("perf_j1k2", lambda a, w: a * (w & ~np.int64(0b110)))  # perforation-like a * (w & mask)
RANK1 = table_mult("rank1", lambda a, w: a * w + (a % 7 - 3) * (w // 3 + 1))  # exact + rank-1 f(a) g(w)
TRUNC = table_mult("trunc", lambda a, w: (a * w) // 16 * 16)  # floor-truncated product (full rank in general)
SEP = table_mult("sep", lambda a, w: (a | 1) * (w & ~np.int64(3)))  # rank 1, activation factor not the value (DRUM-like)
# rank 1 with an activation factor beyond 8 bits, nonzero at the padding pattern 0
SEP16 = table_mult("sep16", lambda a, w: (3 * a + 5) * (w | 1))
MULTS = {
    "exact": EXACT, "perf": PERF, "rank1": RANK1, "trunc": TRUNC, "sep": SEP, "sep16": SEP16,
    "rand17": random_mult(1, -2 ** 16, 2 ** 16),  # 3 byte planes
    "rand_i16": random_mult(2, -32768, 32768),  # near-int16 extremes, 2 planes
    "rand_u8": random_mult(3, 0, 256),  # 1 plane
    "rand_i32": random_mult(4, -2 ** 31, 2 ** 31),  # 4 planes, int32 extremes
    "rand_u16": random_mult(5, 0, 2 ** 16),  # spans just below 2^16: the widest table of the rows kernel
    "classed": classed_mult(6, -2 ** 15, 2 ** 15),  # duplicate rows and columns: the rows kernel's class tables
}
PATHS = ["auto", "lowrank", "rows", "split", "lut"]
# the rows kernel's tests also on a table of span 31 (the 8-bit sums of tiny entries: AVX2 32-row and AVX-512 64-row
# tiles), besides the tables above and the library's
ROWS_MULTS = {**MULTS, "tiny": random_mult(11, -9, 23)}
# the depthwise kernel's table lookups also on the log multipliers of the library (full rank, < 2^15 per product)
DW_MULTS = {**MULTS, "mitch_w6": get_multiplier("mitch_w6"), "mitchell": get_multiplier("mitchell")}


def acts(rng, shape, signed):
    return rng.integers(-128, 128, shape) if signed else rng.integers(0, 256, shape)


@pytest.fixture(autouse=True)
def _no_env_isa(monkeypatch):
    monkeypatch.delenv("DSE_KERNEL_ISA", raising=False)


@SETTINGS
@given(M=st.integers(1, 300), Kd=st.integers(1, 600), N=st.integers(1, 9), signed=st.booleans(),
       mname=st.sampled_from(sorted(MULTS)), seed=st.integers(0, 2 ** 32 - 1))
def test_gemm_all_paths_and_isas_match_reference(M, Kd, N, signed, mname, seed):
    rng = np.random.default_rng(seed)
    mult = MULTS[mname]
    a = acts(rng, (M, Kd), signed)
    w = rng.integers(-128, 128, (N, Kd))
    ref = K.reference_gemm_int(a, w, mult, signed)
    for path in PATHS + (["exact"] if mname == "exact" else []):
        for isa in ISAS:
            got = K.gemm_int(a, w, mult, signed, path=path, isa=isa)
            assert got.dtype == np.int64 and got.shape == (M, N)
            assert np.array_equal(got, ref), (path, isa)


conv_shapes = st.fixed_dictionaries({
    "B": st.integers(1, 3), "G": st.integers(1, 3), "cg": st.integers(1, 4), "og": st.integers(1, 3),
    "H": st.integers(1, 11), "W": st.integers(1, 11), "kh": st.integers(1, 3), "kw": st.integers(1, 3),
    "stride": st.tuples(st.integers(1, 2), st.integers(1, 2)), "dil": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "pads": st.tuples(*[st.integers(0, 2)] * 4), "depthwise": st.booleans(), "extreme": st.booleans()})


def fitted_plane(H: int, W: int, k, dil, pads) -> tuple[int, int]:
    """H x W grown to hold at least one dilated kernel window ``k`` after the padding (top, left, bottom, right)."""
    (kh, kw), (dh, dw) = k, dil
    return max(H, dh * (kh - 1) + 1 - pads[0] - pads[2]), max(W, dw * (kw - 1) + 1 - pads[1] - pads[3])


def range_ends(x: np.ndarray, w: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Operands at the range ends: activations -128/127 (signed) or 0/255 (unsigned), weights -128/127."""
    return np.where(x % 2 == 0, *((-128, 127) if signed else (0, 255))), np.where(w % 2 == 0, -128, 127)


def depthwise_operands(rng, B: int, C: int, og: int, H: int, W: int, k, dil, pads, signed: bool, extreme: bool):
    """Activations [B, C, H', W'] (the plane fitted to the kernel) and int8 weights [C * og, 1, kh, kw] of a depthwise
    conv with channel multiplier og; ``extreme``: at the range ends."""
    x = acts(rng, (B, C) + fitted_plane(H, W, k, dil, pads), signed)
    w = rng.integers(-128, 128, (C * og, 1) + tuple(k))
    return range_ends(x, w, signed) if extreme else (x, w)


def int_conv_operands(rng, s: dict, signed: bool):
    """Activations, int8 weights and group count of a ``conv_shapes`` example; depthwise: one input channel per group
    (direct kernel), og = channel multiplier; the plane is grown to hold at least one dilated kernel window."""
    G, cg, og = s["G"], s["cg"], s["og"]
    if s["depthwise"]:
        cg, G = 1, G + 1
    kh, kw = s["kh"], s["kw"]
    x = acts(rng, (s["B"], G * cg) + fitted_plane(s["H"], s["W"], (kh, kw), s["dil"], s["pads"]), signed)
    w = rng.integers(-128, 128, (G * og, cg, kh, kw))
    return x, w, G


@SETTINGS
@given(s=conv_shapes, signed=st.booleans(), mname=st.sampled_from(sorted(MULTS)), seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_all_paths_and_isas_match_reference(s, signed, mname, seed):
    rng = np.random.default_rng(seed)
    x, w, G = int_conv_operands(rng, s, signed)
    if s["extreme"]:
        x, w = range_ends(x, w, signed)
    mult = MULTS[mname]
    args = (s["stride"], s["pads"], s["dil"], G)
    ref = K.reference_conv2d_int(x, w, mult, signed, *args)
    for path in PATHS + (["exact"] if mname == "exact" else []):
        for isa in ISAS:
            got = K.conv2d_int(x, w, mult, signed, *args, path=path, isa=isa)
            assert np.array_equal(got, ref), (path, isa)


@SETTINGS
@given(s=conv_shapes, signed=st.booleans(), mname=st.sampled_from(sorted(MULTS)), seed=st.integers(0, 2 ** 32 - 1),
       act=st.sampled_from([None, "relu", "clip"]), slice_bytes=st.sampled_from([8, 200, 1 << 21]),
       quant=st.sampled_from([None, False, True]))
def test_conv2d_scaled_every_path_matches_reference(s, signed, mname, seed, act, slice_bytes, quant):
    """The layer output straight from the kernels (depthwise: scaled per finished plane; GEMM paths: image slices of
    at most slice_bytes of sums, down to one image) is the numpy formula on the reference sums, then the Relu/Clip;
    with a fused quantization (``quant``: the next layer's input signedness) the quantizer's values of that float32
    output, without the float32 tensor."""
    from dse.quant import reference_quantize_act

    rng = np.random.default_rng(seed)
    x, w, G = int_conv_operands(rng, s, signed)
    lo, hi = sorted(rng.normal(0, 50, 2))
    n_out = w.shape[0]
    sc = K.Scaling(float(rng.uniform(1e-3, 1)), rng.uniform(1e-3, 1, n_out).astype(np.float32),
                   rng.normal(0, 100, n_out).astype(np.float32),
                   None if act is None else K.OutputAct(act, float(np.float32(lo)), float(np.float32(hi))))
    mult = MULTS[mname]
    args = (s["stride"], s["pads"], s["dil"], G)
    acc = K.reference_conv2d_int(x, w, mult, signed, *args).astype(np.float64)
    ref = ((acc * sc.a_scale) * sc.w_scale.astype(np.float64)[None, :, None, None]).astype(np.float32) + \
        sc.bias[None, :, None, None]
    ref = ref if sc.act is None else sc.act.apply(ref)
    if quant is not None:  # a scale that spreads the outputs over the 8-bit range, with ties and clamps
        q_scale = float(np.float32(max(float(np.abs(ref).max()), 1.0) / rng.choice([64, 127, 300])))
        sc = K.Scaling(sc.a_scale, sc.w_scale, sc.bias, sc.act, K.OutputQuant(q_scale, quant))
        ref = reference_quantize_act(ref, q_scale, quant)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "_SCALED_SLICE_BYTES", slice_bytes)
        mp.setattr(K, "_FUSED_SLICE_BYTES", slice_bytes)
        mp.setattr(K, "_SCALED_SLICE_MIN_POS", 1)
        for path in PATHS + (["exact"] if mname == "exact" else []):
            for isa in ISAS:
                got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path=path, isa=isa)
                assert got.dtype == ref.dtype and got.shape == ref.shape and \
                    np.array_equal(got.view(np.uint8), ref.view(np.uint8)), (path, isa)


@settings(deadline=None, max_examples=40)
@given(s=conv_shapes, signed=st.booleans(), mname=st.sampled_from(["mitch_w6", "classed", "trunc", "rand_u16"]),
       by_act=st.booleans(), act=st.sampled_from([None, "relu", "clip"]), quant=st.sampled_from([None, False, True]),
       threads=st.sampled_from([1, 2]), channels_last=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_scaled_rows_kernel_scales_its_tiles(s, signed, mname, by_act, act, quant, threads, channels_last,
                                                    seed):
    """conv2d_scaled on the rows path: the rows kernel writes the layer output itself (no int64 sums, no scaling
    pass), in either orientation (forced by the cost ratio), with activation classes mapped before im2col, on slices
    of images, groups, every ISA level, 1 and 2 threads: the numpy formula on the reference sums; ``channels_last``
    asked: a float32 output with weights selecting in [B, Ho, Wo, Cout] memory (a view), the other calls as
    before."""
    rng = np.random.default_rng(seed)
    x, w, G = int_conv_operands(rng, {**s, "depthwise": False}, signed)
    mult = MULTS[mname] if mname in MULTS else get_multiplier(mname)
    args = (s["stride"], s["pads"], s["dil"], G)
    acc = K.reference_conv2d_int(x, w, mult, signed, *args)
    B, N = acc.shape[:2]
    sc, ref = random_scaling(rng, acc.transpose(1, 0, 2, 3).reshape(N, -1), act, quant)
    ref = np.ascontiguousarray(ref.reshape((N, B) + acc.shape[2:]).transpose(1, 0, 2, 3))

    def no_pass(*a, **k):
        raise AssertionError("the rows path ran a separate scaling pass")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "scale_accumulators", no_pass)
        mp.setattr(K, "_ROWS_ACT_COST", 1e-3 if by_act else 1e3)
        mp.setattr(K, "_FUSED_SLICE_BYTES", int(rng.choice([8, 1 << 22])))
        mp.setattr(K, "_SCALED_SLICE_MIN_POS", 1)
        for isa in ISAS:
            with K.using_threads(threads):
                got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path="rows", isa=isa,
                                      channels_last=channels_last)
            assert got.dtype == ref.dtype and \
                np.array_equal(np.ascontiguousarray(got).view(np.uint8), ref.view(np.uint8)), isa
            if got.shape[1] > 1 and got.shape[2] * got.shape[3] > 1:  # channels-last: channel stride 1
                assert (got.strides[1] == got.itemsize) == (channels_last and quant is None and not by_act), isa


# the rows kernel's full tables: the library's Mitch-w (activation classes) and bench_e2e's imported LUT (the signed
# product with its 3 low bits cleared)
FULL_TABLES = {"mitch_w6": get_multiplier("mitch_w6"),
               "lut_trunc3": table_mult("lut_trunc3", lambda a, w: a * w - ((a * w) & 7))}


@settings(deadline=None, max_examples=30)
@given(Kd=st.sampled_from([1, 16, 96, 576, 4608, 70000]), signed=st.booleans(),
       mname=st.sampled_from(sorted(MULTS) + sorted(FULL_TABLES)))
def test_auto_skips_the_activation_range_only_where_the_choice_ignores_it(Kd, signed, mname):
    """path="auto" leaves out the pass over the operand for its largest |value| (range_matters_for) only for tables
    whose auto choice is the same at every largest |value| (their lowrank term counts above AUTO_MAX_RANK at every
    level): the choice with each possible maximum equals the choice without one, at every ISA level; the imported
    LUT's stand-in and random full tables skip it, separable tables do not."""
    mult = MULTS[mname] if mname in MULTS else FULL_TABLES[mname]
    prep = K._prepare(mult, signed)
    if prep.range_matters_for("auto"):
        assert mname not in ("lut_trunc3", "rand_i16", "rand_u16", "mitch_w6")
        return
    assert mname not in ("exact", "perf", "sep", "sep16")
    for isa in ISAS:
        blind = K.select_path(mult, signed, Kd, "auto", isa)
        for amax in range(129 if signed else 256):
            assert K.select_path(mult, signed, Kd, "auto", isa, max_abs_a=amax) == blind, (isa, amax)


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 5), H=st.integers(1, 40), W=st.integers(1, 40), cin=st.integers(1, 600),
       cout=st.integers(1, 70), k=st.sampled_from([1, 1, 3]), stride=st.integers(1, 2), pad=st.integers(0, 1),
       groups=st.sampled_from([1, 1, 2, "depthwise"]), signed=st.booleans(), mname=st.sampled_from(sorted(FULL_TABLES)),
       out=st.sampled_from(["float32", "quant", "add", "add_quant"]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_scaled_full_tables_every_output(B, H, W, cin, cout, k, stride, pad, groups, signed, mname, out,
                                                threads, seed):
    """conv2d_scaled with a full 256x256 table on the auto and rows paths (the rows kernel's scaled tiles, its sums
    moved into the output runs 8 x 8 at a time at avx2; the split path or the direct depthwise kernel where auto
    takes them), 1x1 and k x k, stride, padding, groups and depthwise, planes 1..40, depths 1..600: the
    reference conv's sums (a direct table gather) scaled by the scaling pass, at every ISA level, 1 and 2 threads,
    float32, quantized, fused-Add and fused-Add-quantized outputs."""
    rng = np.random.default_rng(seed)
    if k > 1:
        cin = min(cin, 64)
    G = cin if groups == "depthwise" else groups
    cin, cout = -(-cin // G) * G, -(-cout // G) * G
    pads = (pad,) * 4 if k > 1 else (0,) * 4
    x = acts(rng, (B, cin, H + (k - 1 if not pad else 0), W + (k - 1 if not pad else 0)), signed)
    w = rng.integers(-128, 128, (cout, cin // G, k, k))
    mult = FULL_TABLES[mname]
    args = ((stride, stride), pads, (1, 1), G)
    acc = K.reference_conv2d_int(x, w, mult, signed, *args)
    N = acc.shape[1]
    sc, _ = random_scaling(rng, acc.transpose(1, 0, 2, 3).reshape(N, -1), None, None)
    q_scale = float(np.float32(max(float(np.abs(K.scale_accumulators(acc, sc, isa="scalar")).max()), 1.0) / 100))
    if out in ("quant", "add_quant"):
        sc = K.Scaling(sc.a_scale, sc.w_scale, sc.bias, sc.act, K.OutputQuant(q_scale, bool(rng.integers(2))))
    if out.startswith("add"):
        add = rng.normal(0, 30, acc.shape).astype(np.float32)
        sc = K.Scaling(sc.a_scale, sc.w_scale, sc.bias, sc.act, sc.quant, add=add)
    ref = K.scale_accumulators(acc, sc, isa="scalar")
    refs = ref if isinstance(ref, tuple) else (ref,)
    for path in ("auto", "rows"):
        for isa in ISAS:
            with K.using_threads(threads):
                got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path=path, isa=isa)
            gots = got if isinstance(got, tuple) else (got,)
            assert len(gots) == len(refs), (path, isa)
            for g, r in zip(gots, refs):
                assert (g is None) == (r is None), (path, isa)
                assert g is None or (g.dtype == r.dtype and np.array_equal(g.view(np.uint8), r.view(np.uint8))), \
                    (path, isa)


@SETTINGS
@given(s=conv_shapes, B=st.integers(2, 6), signed=st.booleans(), mname=st.sampled_from(sorted(MULTS)),
       seed=st.integers(0, 2 ** 32 - 1), slice_bytes=st.sampled_from([8, 300, 5000]), quant=st.booleans())
def test_conv2d_scaled_image_slices_equal_one_call(s, B, signed, mname, seed, slice_bytes, quant):
    """A large batch cut into image slices (the GEMM operand or int64 sums of a few images per call, down to one image)
    gives the bytes of one call over the whole batch, at 1 and 2 threads: the slices change the call's shape only."""
    rng = np.random.default_rng(seed)
    x, w, G = int_conv_operands(rng, {**s, "B": B}, signed)
    n_out = w.shape[0]
    sc = K.Scaling(float(rng.uniform(1e-3, 1)), rng.uniform(1e-3, 1, n_out).astype(np.float32),
                   rng.normal(0, 100, n_out).astype(np.float32), K.OutputAct("relu"),
                   K.OutputQuant(float(np.float32(rng.uniform(1, 500))), signed) if quant else None)
    args = (x, w, MULTS[mname], signed, sc, s["stride"], s["pads"], s["dil"], G)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "_SCALED_SLICE_BYTES", 1 << 40)
        mp.setattr(K, "_FUSED_SLICE_BYTES", 1 << 40)
        whole = K.conv2d_scaled(*args)
        mp.setattr(K, "_SCALED_SLICE_BYTES", slice_bytes)
        mp.setattr(K, "_FUSED_SLICE_BYTES", slice_bytes)
        mp.setattr(K, "_SCALED_SLICE_MIN_POS", 1)
        for threads in (1, 2):
            with K.using_threads(threads):
                got = K.conv2d_scaled(*args)
            assert got.dtype == whole.dtype and np.array_equal(got.view(np.uint8), whole.view(np.uint8)), threads


@pytest.mark.parametrize("isa", ISAS)
def test_env_var_forces_isa_and_edge_tiles(monkeypatch, isa):
    """DSE_KERNEL_ISA caps the dispatch; M straddling the 64/256-wide tiles, K > 256 (16-bit flush) and K odd."""
    from dse import _kernels
    monkeypatch.setenv("DSE_KERNEL_ISA", isa)
    assert _kernels.isa() == isa
    rng = np.random.default_rng(0)
    for M, Kd in [(255, 513), (257, 257), (64, 1), (320, 700)]:
        a = rng.integers(0, 256, (M, Kd))
        w = rng.integers(-128, 128, (3, Kd))
        for mult in (MULTS["rand_i16"], MULTS["rand_i32"]):
            assert np.array_equal(K.gemm_int(a, w, mult, False, path="lut"), K.reference_gemm_int(a, w, mult, False))


def test_extreme_patterns_worst_case_accumulation():
    """All operands at the table's extreme entry: the largest possible |sum| per plane and per 16-bit chunk."""
    mult = MULTS["rand_i32"]
    lut = mult.table(False, True).astype(np.int64)
    for target in (lut.argmax(), lut.argmin()):
        ia, iw = np.unravel_index(target, lut.shape)
        a = np.full((130, 600), ia)
        w = np.full((2, 600), iw if iw < 128 else iw - 256)
        for isa in ISAS:
            got = K.gemm_int(a, w, mult, False, path="lut", isa=isa)
            assert (got == 600 * lut[ia, iw]).all()


@pytest.mark.parametrize("W", [4, 5, 8, 12, 16, 32])
@pytest.mark.parametrize("mname", ["exact", "sep", "sep16", "rand_i16", "mitch_w6"])
def test_depthwise_scaled_planes(W, mname):
    """The direct depthwise kernel's fused scaling on MobileNetV2-like planes (each plane's rows moved together and
    scaled in one run), stride 1 and 2, float32 and quantized outputs, every ISA level."""
    from dse.quant import reference_quantize_act

    rng = np.random.default_rng(W)
    mult = DW_MULTS[mname]
    x = acts(rng, (2, 5, W, W), False)
    w = rng.integers(-128, 128, (5, 1, 3, 3))
    for stride in (1, 2):
        args = ((stride, stride), (1, 1, 1, 1), (1, 1), 5)
        acc = K.reference_conv2d_int(x, w, mult, False, *args).astype(np.float64)
        sc = K.Scaling(0.01, rng.uniform(1e-3, 1, 5).astype(np.float32), rng.normal(0, 100, 5).astype(np.float32),
                       K.OutputAct("clip", 0.0, 600.0))
        ref = sc.act.apply(((acc * sc.a_scale) * sc.w_scale.astype(np.float64)[None, :, None, None]).astype(
            np.float32) + sc.bias[None, :, None, None])
        qs = K.Scaling(sc.a_scale, sc.w_scale, sc.bias, sc.act, K.OutputQuant(float(np.float32(600 / 255)), False))
        for isa in ISAS:
            assert np.array_equal(K.conv2d_scaled(x, w, mult, False, sc, *args, isa=isa), ref), (stride, isa)
            assert np.array_equal(K.conv2d_scaled(x, w, mult, False, qs, *args, isa=isa),
                                  reference_quantize_act(ref, qs.quant.scale, False)), (stride, isa)


@pytest.mark.parametrize("hw,stride,groups", [((8, 8), 1, 1), ((8, 4), 1, 2), ((16, 16), 2, 1), ((5, 5), 1, 1)])
@pytest.mark.parametrize("mname", ["exact", "perf", "sep"])
def test_conv1x1_scaled_reads_the_batch_per_image(monkeypatch, hw, stride, groups, mname):
    """A batch of 1x1 conv inputs is the integer GEMM's operand image by image (no transposing copy) when the
    positions per image fill whole SIMD panels (else the copied operand): same bits as the reference either way."""
    used = []
    monkeypatch.setattr(K._kernels, "int_gemm", lambda AT, *a, f=K._kernels.int_gemm, **k: used.append(AT.ndim) or
                        f(AT, *a, **k))
    rng = np.random.default_rng(len(used))
    x = acts(rng, (3, 4 * groups) + hw, False)
    w = rng.integers(-128, 128, (3 * groups, 4, 1, 1))
    args = ((stride, stride), (0, 0, 0, 0), (1, 1), groups)
    sc = K.Scaling(0.01, rng.uniform(1e-3, 1, 3 * groups).astype(np.float32),
                   rng.normal(0, 10, 3 * groups).astype(np.float32))
    acc = K.reference_conv2d_int(x, w, MULTS[mname], False, *args).astype(np.float64)
    ref = ((acc * sc.a_scale) * sc.w_scale.astype(np.float64)[None, :, None, None]).astype(np.float32) + \
        sc.bias[None, :, None, None]
    for isa in ISAS:
        used.clear()
        assert np.array_equal(K.conv2d_scaled(x, w, MULTS[mname], False, sc, *args, isa=isa), ref), isa
        P = (hw[0] // stride) * (hw[1] // stride)
        assert used == [2 if P % 32 else 3] * groups, used


@pytest.mark.parametrize("signed", [False, True])
def test_conv2d_scaled_int32_tiles_at_their_limit(monkeypatch, signed):
    """conv2d_scaled scales the integer GEMM's int32 tiles only while one int32 segment holds the whole reduction:
    the deepest such 1x1 conv at the extreme operands (|sum| just under 2^31) and one channel more (int64 sums,
    scaled by slices) both give float32(sum) exactly."""
    from dse import _kernels

    S = 128 * 128 if signed else 255 * 128
    K_max = max(k for k in range(2 ** 31 // S - 300, 2 ** 31 // S + 2) if _kernels.int_gemm_fits32(k, 1, S))
    assert K_max * S < 2 ** 31 <= (K_max + 300) * S and not _kernels.int_gemm_fits32(K_max + 1, 1, S)
    scaled = []  # per call that ran (not None: e.g. a broadcast conv kernel call it does not take)

    def spy(*a, f=_kernels.int_gemm, **k):
        r = f(*a, **k)
        if r is not None:
            scaled.append(len(a) > 9)
        return r
    monkeypatch.setattr(_kernels, "int_gemm", spy)
    sc = K.Scaling(1.0, np.ones(2, np.float32), np.zeros(2, np.float32))
    for Kd in (K_max, K_max + 1):
        x = np.full((1, Kd, 1, 2), -128 if signed else 255)
        w = np.full((2, Kd, 1, 1), -128)
        w[1, 1] = 127
        exact = np.array([-128 * int(x.flat[0]) * Kd, -128 * int(x.flat[0]) * (Kd - 1) + 127 * int(x.flat[0])])
        for isa in ISAS:
            scaled.clear()
            got = K.conv2d_scaled(x, w, EXACT, signed, sc, isa=isa)
            assert scaled == [Kd == K_max]
            assert np.array_equal(got[0, :, 0, 0], exact.astype(np.float32)), (Kd, isa)


def assert_rows_gemm_everywhere(AT: np.ndarray, Wp: np.ndarray, prep, ref: np.ndarray) -> None:
    """The rows kernel gives ``ref`` in both orientations, at every ISA level, on 1 and 2 threads."""
    for by_act in (False, True):
        for isa in ISAS:
            for threads in (1, 2):
                with K.using_threads(threads):
                    got = K._rows_gemm(AT, Wp, prep, isa, by_act=by_act)
                assert np.array_equal(got, ref), (by_act, isa, threads)


def random_scaling(rng, acc: np.ndarray, act, quant) -> tuple:
    """(Scaling, its reference output) for int64 sums acc [N, M] (channels first): the numpy formula in float64
    products and a float32 add, the Relu/Clip, and with ``quant`` (the next layer's signedness) the quantizer's values
    of that float32 output at a scale that spreads them over the 8-bit range, with ties and clamps."""
    from dse.quant import reference_quantize_act

    N = acc.shape[0]
    lo, hi = sorted(rng.normal(0, 50, 2))
    sc = K.Scaling(float(rng.uniform(1e-3, 1)) / max(1.0, float(np.abs(acc).max(initial=1)) / 1e4),
                   rng.uniform(1e-3, 1, N).astype(np.float32), rng.normal(0, 100, N).astype(np.float32),
                   None if act is None else K.OutputAct(act, float(np.float32(lo)), float(np.float32(hi))))
    ref = ((acc.astype(np.float64) * sc.a_scale) * sc.w_scale.astype(np.float64)[:, None]).astype(np.float32) + \
        sc.bias[:, None]
    ref = ref if sc.act is None else sc.act.apply(ref)
    if quant is None:
        return sc, np.ascontiguousarray(ref)
    q_scale = float(np.float32(max(float(np.abs(ref).max()), 1.0) / rng.choice([64, 127, 300])))
    return K.Scaling(sc.a_scale, sc.w_scale, sc.bias, sc.act, K.OutputQuant(q_scale, quant)), \
        np.ascontiguousarray(reference_quantize_act(ref, q_scale, quant))


def assert_rows_scaled_everywhere(AT: np.ndarray, Wp: np.ndarray, prep, sc, ref: np.ndarray) -> None:
    """The rows kernel scaling its own tiles gives ``ref`` (same dtype and bits) in both orientations, at every ISA
    level, on 1 and 2 threads."""
    for by_act in (False, True):
        for isa in ISAS:
            for threads in (1, 2):
                with K.using_threads(threads):
                    got = K._rows_gemm(AT, Wp, prep, isa, by_act=by_act, scaling=sc)
                assert got.dtype == ref.dtype and np.array_equal(got.view(np.uint8), ref.view(np.uint8)), \
                    (by_act, isa, threads)


def rows_case(rng, mult, M, Kd, N, signed):
    """Random activations [M, Kd] and weights [N, Kd]: the reference sums [N, M] and the rows kernel's operands
    (AT uint8 [Kd, M], Wp uint8 [N, Kd])."""
    a = acts(rng, (M, Kd), signed)
    w = rng.integers(-128, 128, (N, Kd))
    acc = K.reference_gemm_int(a, w, mult, signed).T
    return acc, np.ascontiguousarray(K._u8(a).T), np.ascontiguousarray(K._u8(w))


@SETTINGS
@given(M=st.integers(1, 2200), Kd=st.integers(1, 40), N=st.integers(1, 70), signed=st.booleans(),
       mname=st.sampled_from(["exact", "trunc", "rand_i16", "rand_u8", "rand_u16", "classed", "mitch_w6", "offset",
                              "tiny"]),
       act=st.sampled_from([None, "relu", "clip"]), quant=st.sampled_from([None, False, True]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_rows_kernel_scales_its_tiles(M, Kd, N, signed, mname, act, quant, seed):
    """The rows kernel writing the layer output (float32, or the next layer's uint8/int8 input) from each finished
    tile of sums is the numpy formula on the reference sums, both orientations, every ISA level, 1 and 2 threads;
    "offset" (entries 2^24 + 0..2^16) makes K * the largest entry pass 2^31 at K >= 128, where the kernel keeps its
    sums in int64 (DSE_SUM_SMALL), else in int32."""
    rng = np.random.default_rng(seed)
    if mname == "offset":
        mult = random_mult(9, 2 ** 24, 2 ** 24 + 2 ** 16)
        Kd = Kd * 5
    else:
        mult = ROWS_MULTS[mname] if mname in ROWS_MULTS else get_multiplier(mname)
    acc, AT, Wp = rows_case(rng, mult, M, Kd, N, signed)
    sc, ref = random_scaling(rng, acc, act, quant)
    assert_rows_scaled_everywhere(AT, Wp, K._prepare(mult, signed), sc, ref)


@SETTINGS
@given(M=st.integers(1, K._ROWS_MB + 150), Kd=st.sampled_from([1, 3, 7, 8, 9, 16, 33, 64, 255, 256, 257, 300]),
       N=st.integers(1, 140), left=st.integers(0, 9), right=st.integers(0, 9), signed=st.booleans(),
       mname=st.sampled_from(["exact", "trunc", "rand_i16", "rand_u8", "rand_u16", "classed", "mitch_w6", "offset",
                              "tiny"]),
       act=st.sampled_from([None, "relu", "clip"]), quant=st.sampled_from([None, False, True]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_rows_kernel_scales_channels_last(M, Kd, N, left, right, signed, mname, act, quant, seed):
    """The rows kernel writing a scaled output channels-last ([M, ldb] with P = 1: one position's N channels at
    columns left..left+N-1 of its row, as a conv group's channels in [B, Ho, Wo, Cout]), weights selecting: each
    position's channels scaled in one run with their own scales and biases (dse_scale_cols), from sums gathered by
    position (8 selectors per step at avx2, from the 16-bit accumulators where one window is the whole reduction;
    several windows past K = 255 / 256; "offset": int64 sums), tiles of 16/32/64 selectors with partial ones, two
    blocks of positions: the numpy formula on the reference sums, the columns outside left..left+N-1 untouched, every
    ISA level, 1 and 2 threads; activations selecting into that layout too."""
    rng = np.random.default_rng(seed)
    if mname == "offset":
        mult = random_mult(9, 2 ** 24, 2 ** 24 + 2 ** 16)
    else:
        mult = ROWS_MULTS[mname] if mname in ROWS_MULTS else get_multiplier(mname)
    acc, AT, Wp = rows_case(rng, mult, M, Kd, N, signed)
    sc, ref = random_scaling(rng, acc, act, quant)
    prep = K._prepare(mult, signed)
    ldb = left + N + right
    for by_act in (False, True):
        for isa in ISAS:
            for threads in (1, 2):
                buf = np.full(M * ldb, 0xA5, np.uint8).view(np.uint8) if ref.dtype != np.float32 else \
                    np.full(M * ldb, np.nan, np.float32)
                with K.using_threads(threads):
                    K._rows_gemm(AT, Wp, prep, isa, by_act=by_act, into=K._Dest(buf, left, 1, ldb), scaling=sc)
                got = buf.reshape(M, ldb)
                want = np.ascontiguousarray(ref.T).view(np.uint8 if ref.dtype != np.float32 else np.float32)
                assert np.array_equal(got[:, left:left + N].view(np.uint8), want.view(np.uint8)), \
                    (by_act, isa, threads)
                rest = np.concatenate([got[:, :left], got[:, left + N:]], axis=1).view(np.uint8)
                fill = np.full(1, 0xA5 if ref.dtype != np.float32 else np.nan,
                               np.uint8 if ref.dtype != np.float32 else np.float32).view(np.uint8)
                assert np.array_equal(rest, np.resize(fill, rest.shape)), (by_act, isa, threads)


@SETTINGS
@given(M=st.integers(1, K._ROWS_MB + 150), Kd=st.integers(1, 40), N=st.integers(1, 70), signed=st.booleans(),
       mname=st.sampled_from(["exact", "trunc", "rand_i16", "rand_u8", "rand_u16", "classed", "mitch_w6", "tiny"]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_rows_kernel_both_orientations(M, Kd, N, signed, mname, seed):
    """The row-table kernel with weights selecting the tables and with activations selecting them, on tiles that
    straddle the 32-row tiles and the blocks of _ROWS_MB positions, at every ISA level and on 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    mult = ROWS_MULTS[mname] if mname in ROWS_MULTS else get_multiplier(mname)
    ref, AT, Wp = rows_case(rng, mult, M, Kd, N, signed)
    prep = K._prepare(mult, signed)
    if mname == "classed":  # both orientations index class tables
        assert (prep.rows.by_weight.rows, prep.rows.by_act.rows) == (48, 64)
    assert_rows_gemm_everywhere(AT, Wp, prep, ref)


@settings(deadline=None, max_examples=25)
@given(M=st.integers(1, 2 * K._ROWS_MB + 200), Kd=st.integers(1, 12), N=st.integers(1, 40), signed=st.booleans(),
       mname=st.sampled_from(["trunc", "rand_u16", "classed", "mitch_w6"]), seed=st.integers(0, 2 ** 32 - 1))
def test_rows_kernel_small_activations_partial_tables(M, Kd, N, signed, mname, seed):
    """Activations whose largest pattern differs per k-step and per block of _ROWS_MB positions (mostly small values, as
    after a Relu, with a few large ones in some blocks): the rows kernel builds each block's table only up to the
    16-row block of the largest index it reads at that k-step; the result is the reference's, both orientations,
    every ISA level, 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    mult = MULTS[mname] if mname in MULTS else get_multiplier(mname)
    top = rng.choice([1, 15, 16, 17, 40, 100, 127], Kd)  # per k-step cap
    a = (rng.random((M, Kd)) * (top + 1)).astype(np.int64)
    hot = rng.random((M, Kd)) < 0.001  # rare large patterns in some blocks
    a = np.where(hot, rng.integers(-128, 128, (M, Kd)) if signed else rng.integers(0, 256, (M, Kd)), a)
    w = rng.integers(-128, 128, (N, Kd))
    ref = K.reference_gemm_int(a, w, mult, signed).T
    AT, Wp = np.ascontiguousarray(K._u8(a).T), np.ascontiguousarray(K._u8(w))
    prep = K._prepare(mult, signed)
    assert_rows_gemm_everywhere(AT, Wp, prep, ref)


@settings(deadline=None, max_examples=40)
@given(M=st.integers(1, 700), Kd=st.sampled_from([1, 3, 4, 5, 7, 8, 9, 12, 13, 24, 255, 256, 257, 263, 300]),
       N=st.sampled_from([1, 7, 8, 15, 16, 17, 24, 31, 32, 33, 40, 48, 49, 63, 64, 65, 80, 81, 96, 112, 127, 128,
                          144, 161, 200]), signed=st.booleans(),
       mname=st.sampled_from(["rand_u8", "mitch_w6", "rand_u16", "classed", "trunc", "tiny"]),
       scaled=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_rows_kernel_partial_tiles(M, Kd, N, signed, mname, scaled, seed):
    """Selector tiles with fewer valid rows than their width (N not a multiple of 64 at the avx512 level and at avx2
    on tables of <= 128 rows: "classed", "mitch_w6", "tiny"; of 32 otherwise), the last tile of a call with 64-row
    tiles taking the 32-row kernel when it holds <= 32 valid rows and the
    half-width adds when <= 16 (16 selectors: byte, pair and full 16-bit sums), and the output written in blocks of
    64 positions: the result (int64 sums, or the scaled output) is the reference's, both orientations, every ISA
    level, 1 and 2 threads, on reduction lengths around the 16-bit window (256), the portable adds' 4-step chunks
    and the AVX2 and AVX-512 adds' 8-step chunks (a tail of 4 steps and single steps)."""
    rng = np.random.default_rng(seed)
    mult = ROWS_MULTS[mname] if mname in ROWS_MULTS else get_multiplier(mname)
    acc, AT, Wp = rows_case(rng, mult, M, Kd, N, signed)
    prep = K._prepare(mult, signed)
    if scaled:
        sc, ref = random_scaling(rng, acc, "relu", bool(rng.integers(2)) if rng.integers(2) else None)
        assert_rows_scaled_everywhere(AT, Wp, prep, sc, ref)
    else:
        assert_rows_gemm_everywhere(AT, Wp, prep, acc)


@settings(deadline=None, max_examples=50)
@given(M=st.integers(1, 300), q=st.sampled_from([0, 1, 2, 3, 31]), r=st.integers(0, 7),
       N=st.sampled_from([1, 8, 16, 17, 24, 32, 33, 48, 64, 65, 72, 96, 130]), signed=st.booleans(),
       mname=st.sampled_from(["mitch_w6", "classed", "tiny", "rand_u8", "rand_u16", "rand_i16"]),
       scaled=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_rows_kernel_chunk_tails_and_wide_tiles(M, q, r, N, signed, mname, scaled, seed):
    """Reductions K = 8 q + r: the AVX2 adds run a last chunk of r < 8 k-steps as one pass (pair sums, and with pair
    sums a single last step when r is odd; byte and plain 16-bit sums); and tiles of 64 selectors at the avx2 level
    (tables of <= 128 rows: "mitch_w6", "classed", "tiny") whose scaled output's transposing gather reads the window
    sums from the 16-bit accumulators themselves (no int32 copy), the last tile taking the 32- or 16-row kernel: the
    result (int64 sums, or the scaled output) is the reference's, both orientations, every ISA level, 1 and 2
    threads."""
    rng = np.random.default_rng(seed)
    mult = ROWS_MULTS[mname] if mname in ROWS_MULTS else get_multiplier(mname)
    acc, AT, Wp = rows_case(rng, mult, M, max(1, 8 * q + r), N, signed)
    prep = K._prepare(mult, signed)
    if scaled:
        sc, ref = random_scaling(rng, acc, rng.choice([None, "relu", "clip"]),
                                 bool(rng.integers(2)) if rng.integers(2) else None)
        assert_rows_scaled_everywhere(AT, Wp, prep, sc, ref)
    else:
        assert_rows_gemm_everywhere(AT, Wp, prep, acc)


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 2), C=st.integers(1, 4), og=st.integers(1, 3), H=st.integers(1, 40), W=st.integers(1, 40),
       k=st.tuples(st.integers(1, 5), st.integers(1, 5)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dil=st.tuples(st.integers(1, 3), st.integers(1, 3)), pads=st.tuples(*[st.integers(0, 3)] * 4),
       signed=st.booleans(), extreme=st.booleans(), mname=st.sampled_from(sorted(DW_MULTS)),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_direct_kernel(B, C, og, H, W, k, stride, dil, pads, signed, extreme, mname, seed):
    """The direct depthwise kernel (phase planes, 16/8-wide AVX2 blocks and scalar tails, int32 sums or int64 when a
    table is too wide for them) on planes up to 40x40, strides and dilations up to 3, channel multiplier og."""
    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, k, dil, pads, signed, extreme)
    mult = DW_MULTS[mname]
    args = (stride, pads, dil, C)
    ref = K.reference_conv2d_int(x, w, mult, signed, *args)
    geo = K._conv_args(x, w, signed, stride, pads, dil, C, "test")[2]
    if C > 1:  # products of the rank-1 factors instead of table lookups, unless path="lut" asks for them
        full = "rowsum" if K._rowsum_fits(K._prepare(mult, signed), *k, geo, B) else "lut"
        assert K._depthwise_mode(mult, signed, w.shape, C, "auto", geo, B) == \
            {"exact": "values", "perf": "values", "sep": "bytes", "sep16": "factor"}.get(mname, full)
        assert K._depthwise_mode(mult, signed, w.shape, C, "lut", geo, B) == "lut"
    for path in ["auto", "lut"] + (["exact"] if mname == "exact" else []):
        assert K._depthwise_mode(mult, signed, w.shape, C, path, geo, B) is not None or C == 1
        for isa in ISAS:
            got = K.conv2d_int(x, w, mult, signed, *args, path=path, isa=isa)
            assert np.array_equal(got, ref), (path, isa)


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 3), C=st.integers(2, 4), og=st.integers(1, 3), H=st.integers(1, 40), W=st.integers(1, 40),
       k=st.tuples(st.integers(1, 5), st.integers(1, 5)), stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)), pads=st.tuples(*[st.integers(0, 3)] * 4),
       signed=st.booleans(), extreme=st.booleans(), mname=st.sampled_from(["exact", "perf", "sep", "sep16"]),
       act=st.sampled_from([None, "relu", "clip"]), quant=st.booleans(), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_products_scaled(B, C, og, H, W, k, stride, dil, pads, signed, extreme, mname, act, quant, threads,
                                   seed):
    """The depthwise kernel's product modes ("values", "bytes": the input read through the activation factor's byte
    table, "factor") with the fused scaling (float32 or quantized output, no activation, Relu or Clip) on planes up to
    40x40, strides 1-2, dilations, padding, channel multipliers, batch 1-3, 1 and 2 threads, every ISA level (at
    avx512: 16-lane products, the byte table applied with VBMI permutes, the 16-lane scaling pass), against the
    numpy reference."""
    from dse.quant import reference_quantize_act

    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, k, dil, pads, signed, extreme)
    mult = DW_MULTS[mname]
    args = (stride, pads, dil, C)
    geo = K._conv_args(x, w, signed, stride, pads, dil, C, "test")[2]
    assert K._depthwise_mode(mult, signed, w.shape, C, "auto", geo, B) == \
        {"exact": "values", "perf": "values", "sep": "bytes", "sep16": "factor"}[mname]
    ref = K.reference_conv2d_int(x, w, mult, signed, *args).astype(np.float64)
    qs = float(np.float32(rng.uniform(0.5, 5)))
    # Clip bounds: wide, Relu6, or at the quantization's rounding ties (the avx512 quantized passes fold the Clip
    # into the quantization's clamp: its bounds are the bounds' patterns)
    lo, hi = [(-50.0, 600.0), (0.0, 6.0), (-2.5 * qs, 3.5 * qs), (10.5 * qs, 40.5 * qs)][rng.integers(4)]
    oa = {None: None, "relu": K.OutputAct("relu"), "clip": K.OutputAct("clip", lo, hi)}[act]
    sc = K.Scaling(0.01, rng.uniform(1e-3, 1, C * og).astype(np.float32),
                   rng.normal(0, 100, C * og).astype(np.float32), oa, K.OutputQuant(qs, signed) if quant else None)
    y = ((ref * sc.a_scale) * sc.w_scale.astype(np.float64)[None, :, None, None]).astype(np.float32) + \
        sc.bias[None, :, None, None]
    y = y if oa is None else oa.apply(y)
    y = reference_quantize_act(y, sc.quant.scale, signed) if quant else y
    with K.using_threads(threads):
        for isa in ISAS:
            assert np.array_equal(K.conv2d_scaled(x, w, mult, signed, sc, *args, isa=isa), y), isa


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 4), C=st.integers(1, 6), H=st.sampled_from([1, 3, 4, 7, 8, 16, 23]), k=st.sampled_from([1, 3, 5]),
       stride=st.integers(1, 2), signed=st.booleans(), out_signed=st.booleans(),
       mname=st.sampled_from(["exact", "exact", "perf", "sep", "mitch_w6"]), consts=st.sampled_from(["pow2", "real"]),
       act=st.sampled_from([None, "relu", "clip6", "clip_narrow"]), vnni=st.booleans(),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_quantized_near_rounding_ties(B, C, H, k, stride, signed, out_signed, mname, consts, act, vnni,
                                                threads, seed):
    """The depthwise kernel's quantized outputs with constants whose quotients land on half-integers (powers of two:
    sa sw / qs = 2^-e, biases of half steps: ties to even, decided by the exact operations where the avx512 level's
    single-precision patterns cannot certify them) and layer-like ones, the Clip folded (Relu6, a narrowed clamp),
    signed and unsigned patterns, the VNNI quads scaled in registers and the 16-lane scaling pass, every ISA level, 1
    and 2 threads, against the numpy formula."""
    from dse.quant import reference_quantize_act

    rng = np.random.default_rng(seed)
    pads = (k // 2,) * 4
    x, w = depthwise_operands(rng, B, C, 1, H, H, (k, k), (1, 1), pads, signed, False)
    mult = DW_MULTS[mname]
    args = ((stride, stride), pads, (1, 1), C)
    ref = K.reference_conv2d_int(x, w, mult, signed, *args).astype(np.float64)
    qs = float(np.float32(2.0 ** -rng.integers(0, 6) if consts == "pow2" else rng.choice([0.0123, 0.023, 0.1])))
    if consts == "pow2":
        sa = float(2.0 ** -rng.integers(0, 4))
        sw = (2.0 ** -rng.integers(2, 12, C) * qs / sa).astype(np.float32)
        bias = (rng.integers(-60, 60, C) * qs / 2).astype(np.float32)
    else:
        sa = float(rng.uniform(1e-3, 0.1))
        sw = (np.exp(rng.uniform(np.log(1e-5), np.log(0.25), C)) * qs / sa).astype(np.float32)
        bias = (rng.normal(0, 5, C) * qs).astype(np.float32)
    oa = {None: None, "relu": K.OutputAct("relu"), "clip6": K.OutputAct("clip", 0.0, 6.0),
          "clip_narrow": K.OutputAct("clip", 0.5 * qs, 60.5 * qs)}[act]
    sc = K.Scaling(sa, sw, bias, oa, K.OutputQuant(qs, out_signed))
    y = ((ref * sa) * sw.astype(np.float64)[None, :, None, None]).astype(np.float32) + bias[None, :, None, None]
    y = reference_quantize_act(y if oa is None else oa.apply(y), sc.quant.scale, out_signed)
    with K.using_threads(threads), vnni_env(vnni):
        for isa in ISAS:
            assert np.array_equal(K.conv2d_scaled(x, w, mult, signed, sc, *args, isa=isa), y), isa


# rank 1 with the activation's value as its factor ("values") and weight factors 3 w beyond a signed byte
GW16 = table_mult("gw16", lambda a, w: a * (3 * w))


@contextlib.contextmanager
def dw_blocks(block: int, vnni: bool):
    """The depthwise kernel's image blocks (K._DW_BLOCK_POS positions) and DSE_KERNEL_VNNI set for the block."""
    before = K._DW_BLOCK_POS
    K._DW_BLOCK_POS = block
    try:
        with vnni_env(vnni):
            yield
    finally:
        K._DW_BLOCK_POS = before


def dw_scaled_reference(rng, ref: np.ndarray, out: str, act, q_signed: bool):
    """(Scaling, its output by the numpy formula) of a depthwise conv's int64 sums ``ref`` [B, N, Ho, Wo] for the
    output ``out`` ("int64": (None, None); "float32"; "quant": patterns, signed with ``q_signed``) with the activation
    ``act`` (None, "relu", "clip"), random constants."""
    from dse.quant import reference_quantize_act

    if out == "int64":
        return None, None
    N = ref.shape[1]
    qs = float(np.float32(rng.uniform(0.5, 5)))
    # Clip bounds: wide, Relu6, or at the quantization's rounding ties (the quantized passes' certified single
    # precision fold the Clip into the quantization's clamp: its bounds are the bounds' patterns)
    lo, hi = [(-50.0, 600.0), (0.0, 6.0), (-2.5 * qs, 3.5 * qs), (10.5 * qs, 40.5 * qs)][rng.integers(4)]
    sc = K.Scaling(0.01, rng.uniform(1e-3, 1, N).astype(np.float32), rng.normal(0, 100, N).astype(np.float32),
                   act and K.OutputAct(act, lo if act == "clip" else -np.inf, hi if act == "clip" else np.inf),
                   K.OutputQuant(qs, q_signed) if out == "quant" else None)
    y = ((ref.astype(np.float64) * sc.a_scale) * sc.w_scale.astype(np.float64)[None, :, None, None]).astype(
        np.float32) + sc.bias[None, :, None, None]
    y = y if act is None else sc.act.apply(y)
    return sc, reference_quantize_act(y, sc.quant.scale, q_signed) if out == "quant" else y


def assert_dw_every_isa(x, w, mult, signed: bool, geo, mode: str, sc, ref: np.ndarray, y, threads: int, block: int):
    """K._dw_conv in ``mode`` gives the reference (int64 sums ``ref``, or ``y`` through the Scaling ``sc``) at every
    ISA level, on ``threads`` threads and image blocks of ``block`` positions."""
    with K.using_threads(threads), dw_blocks(block, False):
        for isa in ISAS:
            got = K._dw_conv(x, w, mult, signed, geo, mode, isa, sc)
            assert np.array_equal(got if sc is None else got.view(sc.dtype), ref if sc is None else y), isa


@settings(deadline=None, max_examples=80)
@given(B=st.integers(1, 6), C=st.integers(1, 3), og=st.integers(1, 3), H=st.integers(1, 20), W=st.integers(1, 20),
       k=st.tuples(st.integers(1, 5), st.integers(1, 5)), stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)), pads=st.tuples(*[st.integers(0, 3)] * 4),
       signed=st.booleans(), extreme=st.booleans(),
       mname=st.sampled_from(["exact", "perf", "gw16", "sep", "sep16", "mitch_w6", "rand_u8", "rand_i32", "trunc"]),
       block=st.sampled_from([1, 30, 150, 4096]), out=st.sampled_from(["int64", "float32", "quant"]),
       act=st.sampled_from([None, "relu", "clip"]), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_image_blocks(B, C, og, H, W, k, stride, dil, pads, signed, extreme, mname, block, out, act,
                                threads, seed):
    """The depthwise kernel over blocks of images (one image per block, a few, a last block with fewer, all of them)
    in every mode ("values" with weight factors that fit a byte or do not, "bytes", "factor", "rowsum", "lut" with
    int32 or int64 sums), int64 sums or scaled (float32 or quantized output, no activation, Relu or Clip), at every
    ISA level, with and without VNNI (avx512: the quads of taps, only the outputs computed, no moves, scaled in
    registers), 1 and 2 threads, odd plane sizes, against the numpy reference."""
    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, k, dil, pads, signed, extreme)
    mult = {**DW_MULTS, "gw16": GW16}[mname]
    geo = K._conv_args(x, w, signed, stride, pads, dil, C, "test")[2]
    mode = K._depthwise_mode(mult, signed, w.shape, max(C, 2), "auto", geo, B)
    if mode == "lut" and K._rowsum_fits(K._prepare(mult, signed), *k, geo, 10 ** 9):
        mode = "rowsum"
    assert mode == {"exact": "values", "perf": "values", "gw16": "values", "sep": "bytes", "sep16": "factor"}.get(
        mname, mode)
    ref = K.reference_conv2d_int(x, w, mult, signed, stride, pads, dil, C)
    sc, y = dw_scaled_reference(rng, ref, out, act, signed)
    with K.using_threads(threads):
        for isa in ISAS:
            for vnni in [False] + ([True] if isa in vnni_levels() else []):
                with dw_blocks(block, vnni):
                    got = K._dw_conv(x, w, mult, signed, geo, mode, isa, sc)
                assert np.array_equal(got if sc is None else got.view(sc.dtype), ref if sc is None else y), \
                    (isa, vnni, mode)


# planes of every width, biased to the small ones (output rows of 1, 2 or 4 columns, several per AVX2 step)
DW_WIDTHS = st.one_of(st.integers(1, 10), st.integers(1, 40))


@settings(deadline=None, max_examples=80)
@given(B=st.integers(1, 5), C=st.integers(1, 4), og=st.integers(1, 3), H=DW_WIDTHS, W=DW_WIDTHS,
       k=st.one_of(st.tuples(st.integers(1, 7), st.integers(1, 7)), st.just((3, 3)), st.just((17, 16))),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 3)] * 4), signed=st.booleans(), q_signed=st.booleans(), extreme=st.booleans(),
       mname=st.sampled_from(["exact", "perf", "gw16"]), block=st.sampled_from([1, 100, 4096]),
       out=st.sampled_from(["int64", "float32", "quant", "quant"]), act=st.sampled_from([None, "relu", "clip"]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_values_rows(B, C, og, H, W, k, stride, dil, pads, signed, q_signed, extreme, mname, block, out, act,
                               threads, seed):
    """The "values" products at the AVX2 level (taps in pairs on vpmaddwd, row by row into sums in the output's order,
    rows of 1, 2 or 4 columns gathered several per step, blocks of images of any plane size in image-major order, the
    quantized output's certified single-precision patterns): kernels up to 7x7 and one of 272 taps (beyond the pair
    kernel: the generic one), odd tap counts, weight factors beyond a byte, planes 1-40, strides 1-3, dilation,
    padding, channel multipliers, 1-5 images, int64 sums, float32 or signed/unsigned patterns with Relu/Clip, every
    ISA level, 1 and 2 threads, against the numpy reference."""
    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, k, dil, pads, signed, extreme)
    mult = {**DW_MULTS, "gw16": GW16}[mname]
    geo = K._conv_args(x, w, signed, stride, pads, dil, C, "test")[2]
    assert K._depthwise_mode(mult, signed, w.shape, max(C, 2), "auto", geo, B) == "values"
    ref = K.reference_conv2d_int(x, w, mult, signed, stride, pads, dil, C)
    sc, y = dw_scaled_reference(rng, ref, out, act, q_signed)
    assert_dw_every_isa(x, w, mult, signed, geo, "values", sc, ref, y, threads, block)


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 5), C=st.integers(1, 9), P=st.one_of(st.integers(1, 150), st.sampled_from([64, 96, 160, 1024])),
       seed=st.integers(0, 2 ** 32 - 1))
def test_images_T_and_translate_with_a_table(B, C, P, seed):
    """The 1x1 operand's transposing copy with a byte table (images_T) and the plain byte table pass (translate) at
    every ISA level (avx512: VBMI permutes over 64-byte steps, avx2: vpshufb over 32-byte steps, then the tail),
    against numpy."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (B, C, P)).astype(np.uint8)
    table = rng.integers(0, 256, 256).astype(np.uint8)
    for isa in ISAS:
        assert np.array_equal(K._kernels.images_T(x, None, isa), x.transpose(1, 0, 2).reshape(C, B * P)), isa
        assert np.array_equal(K._kernels.images_T(x, table, isa), table[x].transpose(1, 0, 2).reshape(C, B * P)), isa
        assert np.array_equal(K._kernels.translate(x.reshape(-1), table, isa), table[x.reshape(-1)]), isa


# full-rank tables whose columns span < 2^16 (two byte planes): the ones the "rowsum" depthwise kernel takes
ROWSUM_MULTS = ["mitch_w6", "mitchell", "trunc", "rand_i16", "rand_u8", "rand_u16", "classed", "rank1"]


@settings(deadline=None, max_examples=100)
@given(B=st.integers(1, 5), C=st.integers(1, 4), og=st.integers(1, 3), H=DW_WIDTHS, W=DW_WIDTHS,
       k=st.one_of(st.tuples(st.integers(1, 5), st.integers(1, 3)), st.just((3, 3)), st.just((5, 5)),
                   st.tuples(st.integers(1, 7), st.integers(4, 11))),
       stride=st.one_of(st.tuples(st.integers(1, 3), st.integers(1, 3)), st.just((1, 1))),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)), pads=st.tuples(*[st.integers(0, 3)] * 4),
       signed=st.booleans(), extreme=st.booleans(), mname=st.sampled_from(ROWSUM_MULTS),
       block=st.sampled_from([1, 100, 4096]), out=st.sampled_from(["int64", "float32", "quant"]),
       act=st.sampled_from([None, "relu", "clip"]), q_signed=st.booleans(), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_rowsum_kernel(B, C, og, H, W, k, stride, dil, pads, signed, extreme, mname, block, out, act,
                                 q_signed, threads, seed):
    """The "rowsum" depthwise kernel (one lookup per group of taps in packed 21-bit columns, the groups of the stride's
    phase planes and of three column offsets in them, e.g. two per row of a 5x5 kernel, or for 3x3 at stride 1 the
    transposed "cols" packing; channel-major order with the packed columns reused across images; blocks of images of
    any plane size, folded into the output's order) at every ISA level and thread count, as int64 sums and scaled
    (float32 or quantized, no activation, Relu or Clip), planes 1-40, 1-5 images, kernels up to 7x11, on the log
    multipliers and random (imported) tables, whatever the batch size (the dispatch takes it from
    positions whose lookups saved pay for the tables on, _DW_ROWSUM_BUILD); the kernels of more than 32 groups are
    refused by the compiled kernel too."""
    rng = np.random.default_rng(seed)
    (kh, kw), dw = k, dil[1]
    x, w = depthwise_operands(rng, B, C, og, H, W, k, dil, pads, signed, extreme)
    mult = DW_MULTS[mname]
    geo = K._conv_args(x, w, signed, stride, pads, dil, C, "test")[2]
    ng = K._rowsum_groups(kh, kw, stride[1], dw)
    fits = K._rowsum_fits(K._prepare(mult, signed), kh, kw, geo, 10 ** 9)
    assert fits == (ng <= 32 and ng < kh * kw)  # every table here spans < 2^16; no lookup saved: plain lookups
    if ng > 32:
        with pytest.raises(ValueError, match="rowsum"):
            K._dw_conv(x, w, mult, signed, geo, "rowsum", None)
        return
    ref = K.reference_conv2d_int(x, w, mult, signed, stride, pads, dil, C)
    sc, y = dw_scaled_reference(rng, ref, out, act, q_signed)
    assert_dw_every_isa(x, w, mult, signed, geo, "rowsum", sc, ref, y, threads, block)
    if B * geo.out_hw[0] * geo.out_hw[1] * (kh * kw - ng) >= K._DW_ROWSUM_BUILD * 256 * ng and C > 1:
        assert K._depthwise_mode(mult, signed, w.shape, C, "auto", geo, B) == "rowsum"


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 5), C=st.integers(1, 3), og=st.integers(1, 2), H=DW_WIDTHS, W=DW_WIDTHS,
       stride=st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2)]), dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       pads=st.tuples(*[st.integers(0, 3)] * 4), signed=st.booleans(), extreme=st.booleans(),
       mname=st.sampled_from(ROWSUM_MULTS), block=st.sampled_from([1, 100, 4096]),
       out=st.sampled_from(["int64", "float32", "quant"]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_rowsum_5x5(B, C, og, H, W, stride, dil, pads, signed, extreme, mname, block, out, threads, seed):
    """MobileNetV3's 5x5 depthwise convs on the rowsum kernel: at stride 1 (column dilation 1) the transposed "cols"
    packing of five columns (dse_dw_cols5_sums: rows 0-2 and 3-4 in two packed sums, each byte indexed once) where
    the plane's positions allow it, else two row groups per kernel row (column offsets 0-2 and 3-4), also at stride 2;
    planes 1-40 with padding, row dilation, blocks of images, int64 sums and scaled outputs, every ISA level, 1 and 2
    threads, against the reference."""
    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, (5, 5), dil, pads, signed, extreme)
    mult = DW_MULTS[mname]
    geo = K._conv_args(x, w, signed, stride, pads, dil, C, "test")[2]
    ref = K.reference_conv2d_int(x, w, mult, signed, stride, pads, dil, C)
    sc, y = dw_scaled_reference(rng, ref, out, None, False)
    assert_dw_every_isa(x, w, mult, signed, geo, "rowsum", sc, ref, y, threads, block)


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 5), C=st.integers(1, 3), og=st.integers(1, 2), H=DW_WIDTHS, W=DW_WIDTHS,
       dil=st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 1), (1, 2)]), pads=st.tuples(*[st.integers(0, 3)] * 4),
       signed=st.booleans(), extreme=st.booleans(), mname=st.sampled_from(ROWSUM_MULTS),
       block=st.sampled_from([1, 100, 4096]), out=st.sampled_from(["int64", "float32", "quant"]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_rowsum_3x3_stride2(B, C, og, H, W, dil, pads, signed, extreme, mname, block, out, threads, seed):
    """MobileNetV2's 3x3 stride-2 depthwise convs on the rowsum kernel: at dilation 1 the stride-2 packing
    (dse_dw_s2_sums: kernel rows 0 and 2 in two fields of the even phase planes' tables, row 1 in the third, columns
    0 and 2 from one byte index) where its extra row of positions allows it, else the generic groups (dilated);
    planes 1-40 with padding (odd and even sizes: phase planes of unequal sizes), blocks of images, int64 sums and
    scaled outputs, every ISA level, 1 and 2 threads, against the reference."""
    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, (3, 3), dil, pads, signed, extreme)
    x[x == 0] = 1  # a byte read from the padding instead of the plane (or the reverse) changes the sums
    mult = DW_MULTS[mname]
    geo = K._conv_args(x, w, signed, (2, 2), pads, dil, C, "test")[2]
    ref = K.reference_conv2d_int(x, w, mult, signed, (2, 2), pads, dil, C)
    sc, y = dw_scaled_reference(rng, ref, out, None, False)
    assert_dw_every_isa(x, w, mult, signed, geo, "rowsum", sc, ref, y, threads, block)


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 5), C=st.integers(1, 3), og=st.integers(1, 2), H=DW_WIDTHS, W=DW_WIDTHS,
       dil=st.sampled_from([(1, 1), (1, 1), (1, 1), (2, 1), (1, 2)]), pads=st.tuples(*[st.integers(0, 3)] * 4),
       signed=st.booleans(), extreme=st.booleans(), mname=st.sampled_from(ROWSUM_MULTS),
       block=st.sampled_from([1, 100, 4096]), out=st.sampled_from(["int64", "float32", "quant"]),
       act=st.sampled_from([None, "relu", "clip"]), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_rowsum_5x5_stride2(B, C, og, H, W, dil, pads, signed, extreme, mname, block, out, act, threads,
                                      seed):
    """EfficientNet's and MobileNetV3's 5x5 stride-2 depthwise convs on the rowsum kernel: at dilation 1 the 5x5
    stride-2 packing (dse_dw_s25_sums: kernel row i in field i / 2 of its phase plane's tables, one per column offset,
    each byte of the four phase planes indexed once) where its two extra rows of positions allow it, else the generic
    groups (dilated); planes 1-40 with padding (odd and even sizes: phase planes of unequal sizes), blocks of images,
    channel multipliers, int64 sums and scaled outputs, every ISA level, 1 and 2 threads, against the reference."""
    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, (5, 5), dil, pads, signed, extreme)
    x[x == 0] = 1  # a byte read from the padding instead of the plane (or the reverse) changes the sums
    mult = DW_MULTS[mname]
    geo = K._conv_args(x, w, signed, (2, 2), pads, dil, C, "test")[2]
    ref = K.reference_conv2d_int(x, w, mult, signed, (2, 2), pads, dil, C)
    sc, y = dw_scaled_reference(rng, ref, out, act, signed)
    assert_dw_every_isa(x, w, mult, signed, geo, "rowsum", sc, ref, y, threads, block)


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 2), C=st.integers(1, 3), og=st.integers(1, 2), H=st.integers(1, 40), W=st.integers(1, 40),
       geo=st.sampled_from([((3, 1), (1, 1)), ((3, 2), (1, 1)), ((3, 3), (1, 1)), ((3, 3), (1, 2)),
                            ((1, 3), (1, 3)), ((1, 3), (2, 3))]),
       dil=st.tuples(st.integers(1, 3), st.just(1)), pads=st.tuples(*[st.integers(0, 2)] * 4), signed=st.booleans(),
       extreme=st.booleans(), mname=st.sampled_from(ROWSUM_MULTS), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_rowsum_three_groups(B, C, og, H, W, geo, dil, pads, signed, extreme, mname, threads, seed):
    """The rowsum kernel's unrolled body for three groups of taps whose runs start equally far apart (three kernel
    rows at row stride 1, any row dilation; one row of three taps at column stride 3: its three phase planes), on
    planes up to 40x40 with padding, against the reference at every ISA level and thread count."""
    (k, stride) = geo
    rng = np.random.default_rng(seed)
    x, w = depthwise_operands(rng, B, C, og, H, W, k, dil, pads, signed, extreme)
    mult = DW_MULTS[mname]
    g = K._conv_args(x, w, signed, stride, pads, dil, C, "test")[2]
    ref = K.reference_conv2d_int(x, w, mult, signed, stride, pads, dil, C)
    with K.using_threads(threads):
        for isa in ISAS:
            assert np.array_equal(K._dw_conv(x, w, mult, signed, g, "rowsum", isa), ref), isa


@pytest.mark.parametrize("k,dil", [((3, 3), (1, 1)), ((3, 3), (2, 1)), ((5, 2), (1, 2)), ((2, 3), (3, 1)),
                                   ((5, 5), (1, 1)), ((5, 5), (2, 1))])
def test_depthwise_rowsum_tight_planes_every_padding(k, dil):
    """The rowsum kernel's tight planes at stride 1 below the AVX-512 level (dse_dw_tight: rows of max(Wo, pl + W,
    WQ0 - pl) bytes whose right padding is read in the next row's left padding, the images' planes overlapping by
    min(top, bottom) padding rows, the sums of overlapping images computed once; "cols" also on 4x4 planes) with
    paddings 0, 1 and 3 on each side, on planes 1x1 to 9x9 and 4x4, 5 images in one block and in blocks of one, nonzero
    activations (a read in a data byte instead of the padding changes the sum), against the reference at every ISA
    level."""
    rng = np.random.default_rng(sum(k) * 7 + dil[0])
    mult = DW_MULTS["mitch_w6"]
    for pads in itertools.product((0, 1, 3), repeat=4):
        H, W = (4, 4) if rng.integers(2) else tuple(rng.integers(1, 10, 2))
        x, w = depthwise_operands(rng, 5, 2, 1, H, W, k, dil, pads, False, False)
        x[x == 0] = 1
        geo = K._conv_args(x, w, False, (1, 1), pads, dil, 2, "test")[2]
        ref = K.reference_conv2d_int(x, w, mult, False, (1, 1), pads, dil, 2)
        for block in (1, 4096):
            with dw_blocks(block, False):
                for isa in ISAS:
                    assert np.array_equal(K._dw_conv(x, w, mult, False, geo, "rowsum", isa), ref), (pads, H, W, isa)


@pytest.mark.parametrize("pl", [0, 1, 2, 3])
def test_depthwise_stride2_phase_split_every_width(pl):
    """The 16-byte split of a row into the two column phases of stride 2 (SSE2), at every width around its vector
    steps and the row end, odd and even left padding."""
    rng = np.random.default_rng(pl)
    mult = DW_MULTS["mitch_w6"]
    for W in range(1, 50):
        x = acts(rng, (1, 2, 3, W), False)
        w = rng.integers(-128, 128, (2, 1, 3, 3))
        args = ((2, 2), (1, pl, 1, 3 - pl % 2), (1, 1), 2)
        ref = K.reference_conv2d_int(x, w, mult, False, *args)
        for path in ("auto", "lut"):
            assert np.array_equal(K.conv2d_int(x, w, mult, False, *args, path=path), ref), (W, path)


def test_depthwise_rowsum_groups():
    """The rowsum kernel's groups of taps: per kernel row one per column phase of the stride and three column offsets
    in its phase plane (MobileNetV3's 5x5 at stride 1 and 2: two per row)."""
    for (kh, kw, sw, dw), n in (((3, 3, 1, 1), 3), ((3, 3, 2, 1), 6), ((5, 5, 1, 1), 10), ((5, 5, 2, 1), 10),
                                ((7, 7, 1, 1), 21), ((7, 7, 2, 1), 21), ((3, 3, 1, 2), 6), ((1, 33, 1, 1), 11),
                                ((2, 3, 3, 1), 6), ((4, 25, 1, 1), 36)):
        assert K._rowsum_groups(kh, kw, sw, dw) == n, (kh, kw, sw, dw)


def test_depthwise_rowsum_rejects_kernels_beyond_its_fields():
    """The compiled kernel refuses the geometries whose taps do not fit three fields of at most 32 groups."""
    x = np.zeros((1, 2, 12, 12), np.uint8)
    lutT = np.zeros((256, 256), np.int32)
    z = np.zeros(256, np.int16)
    for wshape, stride, dil in (((2, 4, 25), (1, 1), (1, 1)), ((2, 3, 33), (1, 1), (1, 3)),
                                ((2, 33, 2), (1, 2), (1, 1))):
        wp = np.zeros(wshape, np.uint8)
        with pytest.raises(ValueError, match="rowsum"):
            K._kernels.dw_conv(x, wp, "rowsum", lutT, z, z, 0, stride, (8, 8), dil, (4, 4), False)


_PLANE_SIDE = st.one_of(st.integers(1, 12), st.integers(13, 70), st.integers(120, 140))


@settings(deadline=None, max_examples=80)
@given(B=st.integers(1, 3), C=st.integers(1, 4), k=st.tuples(st.integers(1, 9), st.integers(1, 17)),
       out=st.tuples(st.integers(1, 12), st.integers(1, 12)), rest=st.tuples(st.integers(0, 16), st.integers(0, 16)),
       threads=st.sampled_from([1, 2]), isa=st.sampled_from(ISAS), seed=st.integers(0, 2 ** 32 - 1))
def test_compiled_im2col_of_patches(B, C, k, out, rest, threads, isa, seed):
    """Patches (stride = kernel, no padding, a ViT's patch embedding; one byte transpose per input row: 8 x 8 blocks
    and their edges) are im2col_T byte for byte at every ISA level, 1 and 2 threads, with rows and columns left over
    past the last whole patch."""
    from dse import _kernels

    (kh, kw), (Ho, Wo) = k, out
    x = np.random.default_rng(seed).integers(0, 256, (B, C, Ho * kh + rest[0] % kh, Wo * kw + rest[1] % kw))
    x = x.astype(np.uint8)
    ref, ho, wo = K.im2col_T(x, kh, kw, k, (0, 0, 0, 0), (1, 1))
    assert (ho, wo) == out
    got = _kernels.im2col(x, kh, kw, k, (0, 0), (1, 1), out, threads, isa)
    assert got.shape == ref.shape and np.array_equal(got, ref)


@settings(deadline=None, max_examples=150)
@given(B=st.integers(1, 3), C=st.integers(1, 4), H=_PLANE_SIDE, W=_PLANE_SIDE,
       k=st.tuples(st.integers(1, 7), st.integers(1, 7)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dil=st.tuples(st.integers(1, 3), st.integers(1, 3)), pads=st.tuples(*[st.integers(0, 5)] * 4),
       threads=st.sampled_from([1, 2]), isa=st.sampled_from(ISAS), seed=st.integers(0, 2 ** 32 - 1))
def test_compiled_im2col_matches_numpy(B, C, H, W, k, stride, dil, pads, threads, isa, seed):
    """The compiled im2col of uint8 patterns (the GEMM operand of every non-1x1 integer conv) is im2col_T byte for
    byte at every ISA level: strides, dilations, paddings wider than the kernel or the plane, rows and columns wholly
    in the padding; output rows of <= 16 columns (the plane path below avx512: the padded plane split into column
    phases per channel and image); planes up to 140 wide (the avx512 level's chunks of several output rows, of one
    row, of column
    segments of a row wider than its 128-byte windows, and the plain code where the tables would be too large)."""
    from dse import _kernels

    kh, kw = k
    x = np.random.default_rng(seed).integers(1, 256, (B, C) + fitted_plane(H, W, k, dil, pads)).astype(np.uint8)
    ref, Ho, Wo = K.im2col_T(x, kh, kw, stride, pads, dil)
    got = _kernels.im2col(x, kh, kw, stride, pads[:2], dil, (Ho, Wo), threads, isa)
    assert got.shape == ref.shape and np.array_equal(got, ref)
    assert np.array_equal(K.gemm_operand_T(x, kh, kw, stride, pads, dil)[0], ref)
    table = np.random.default_rng(seed + 1).integers(0, 256, 256).astype(np.uint8)
    table[0] = 0  # the padding's pattern keeps its 0 (the rows kernel's class of pattern 0)
    assert np.array_equal(K.gemm_operand_T(x, kh, kw, stride, pads, dil, table)[0], table[ref])


@settings(deadline=None, max_examples=30)
@given(B=st.integers(1, 3), G=st.integers(1, 3), cg=st.integers(1, 5), og=st.integers(1, 4), H=st.integers(1, 9),
       W=st.integers(1, 9), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), signed=st.booleans(),
       mname=st.sampled_from(["exact", "perf", "rand_i16", "rand17"]), seed=st.integers(0, 2 ** 32 - 1))
def test_conv1x1_without_im2col(B, G, cg, og, H, W, stride, signed, mname, seed):
    """1x1 convs without padding read the (strided) input as the GEMM operand: same bits as the reference."""
    rng = np.random.default_rng(seed)
    mult = MULTS[mname]
    x = acts(rng, (B, G * cg, H, W), signed)
    w = rng.integers(-128, 128, (G * og, cg, 1, 1))
    AT, Ho, Wo = K.gemm_operand_T(x, 1, 1, stride, (0, 0, 0, 0), (1, 1))
    ref_T = K.im2col_T(x, 1, 1, stride, (0, 0, 0, 0), (1, 1))[0]
    assert np.array_equal(AT, ref_T)
    xq, table = K._u8(x), rng.integers(0, 256, 256).astype(np.uint8)  # patterns read through a class table
    table[0] = 0
    assert np.array_equal(K.gemm_operand_T(xq, 1, 1, stride, (0, 0, 0, 0), (1, 1), table)[0], table[K._u8(ref_T)])
    ref = K.reference_conv2d_int(x, w, mult, signed, stride, (0, 0, 0, 0), (1, 1), G)
    for path in PATHS + (["exact"] if mname == "exact" else []):
        for isa in ISAS:
            assert np.array_equal(K.conv2d_int(x, w, mult, signed, stride, (0, 0, 0, 0), (1, 1), G, path=path,
                                               isa=isa), ref), (path, isa)


def test_row_tables_of_truncating_multipliers_have_activation_classes():
    """Mitch-w6 truncates its operands: 80 distinct table columns over the 256 unsigned activation patterns. The rows
    kernel builds 80-row tables, pattern 0 (the padding) is class 0, the class tables hold the whole table, and a conv
    on that path maps its input to classes before im2col (bit-exact against the reference, padded and strided)."""
    mult = get_multiplier("mitch_w6")
    lut = mult.table(False, True).astype(np.int64)
    t = K._prepare(mult, False).rows.by_weight
    assert t.rows == 80 and t.cls[0] == 0 and t.cls.max() == 79
    assert np.array_equal(t.D[:, t.cls].astype(np.int64) + t.off[:, None], lut.T)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (2, 8, 9, 9))
    w = rng.integers(-128, 128, (40, 8, 3, 3))
    assert K._conv_row_classes(K._u8(x), mult, False, 72, 40, 2 * 81, "auto", None) is t
    assert K._conv_row_classes(K._u8(x), mult, False, 72, 40, 2 * 81, "lut", None) is None
    for stride, pads in (((1, 1), (1, 1, 1, 1)), ((2, 1), (2, 0, 1, 2))):
        ref = K.reference_conv2d_int(x, w, mult, False, stride, pads)
        for isa in ISAS:
            assert np.array_equal(K.conv2d_int(x, w, mult, False, stride, pads, path="rows", isa=isa), ref), isa


def test_rows_kernel_rejects_indices_beyond_its_classes():
    t = K._prepare(get_multiplier("mitch_w6"), False).rows.by_weight
    I = np.full((3, 5), 80, np.uint8)
    with pytest.raises(ValueError, match="must be < 80"):
        K._kernels.rows_gemm(I, np.zeros((2, 3), np.uint8), t.D, t.off)


def test_rows_kernel_scaled_call_rejects_add_and_wrong_outputs():
    """A scaled rows call writes the layer output: it cannot add to a buffer, needs K >= 1 and an output of the
    scaling's dtype."""
    t = K._prepare(get_multiplier("mitch_w6"), False).rows.by_weight
    I, S = np.zeros((3, 4), np.uint8), np.zeros((2, 3), np.uint8)
    sc = (1.0, np.ones(2, np.float32), np.zeros(2, np.float32), "none", -np.inf, np.inf, None)
    y, _ = K._kernels.rows_gemm(I, S, t.D, t.off, scaling=sc)
    assert y.dtype == np.float32 and y.shape == (2, 4) and not y.any()
    for kw in ({"out": np.zeros(8, np.float32), "add": True}, {"out": np.zeros(8, np.int64)}):
        with pytest.raises(ValueError):
            K._kernels.rows_gemm(I, S, t.D, t.off, scaling=sc, **kw)
    with pytest.raises(ValueError, match="K >= 1"):
        K._kernels.rows_gemm(I[:0], S[:, :0], t.D, t.off, scaling=sc)


def test_rows_kernel_int32_window_worst_case():
    """K > 32768 k-steps at the table's widest entry (span 2^16 - 1): the int32 windows are flushed into int64."""
    mult = MULTS["rand_u16"]
    lut = mult.table(False, True).astype(np.int64)
    ia, iw = np.unravel_index(lut.argmax(), lut.shape)
    Kd = 33000
    a = np.full((3, Kd), ia)
    w = np.full((2, Kd), iw if iw < 128 else iw - 256)
    w[1, ::5] = 0
    ref = K.reference_gemm_int(a, w, mult, False)
    for isa in ISAS:
        assert np.array_equal(K.gemm_int(a, w, mult, False, path="rows", isa=isa), ref)
    # scaled in the kernel: the int64 sums gathered over the flushes of the int32 windows
    sc, ref_y = random_scaling(np.random.default_rng(0), ref.T, "relu", None)
    assert_rows_scaled_everywhere(np.ascontiguousarray(K._u8(a).T), np.ascontiguousarray(K._u8(w)),
                                  K._prepare(mult, False), sc, ref_y)


@pytest.mark.parametrize("top", [1, 7, 31])
def test_rows_kernel_tiny_16bit_windows(top):
    """Entries < 32 at the AVX-512 level: 64-row tiles whose 8-step chunks sum bytes in a register and widen them into
    16-bit sums over windows of 65535 // top k-steps (a multiple of 8; 32768 for top = 1), flushed into int32 sums and,
    past 32768 k-steps, into int64: operands that pick the largest entry on (nearly) every k-step, K just past one
    and two windows and past 32768, N around the 64-row tile (the AVX-512 level's and the AVX2 8-bit sums' 64-selector
    tiles, the last tile on the 32-row AVX2 tiny kernel), every ISA level, 1 and 2 threads."""
    lut = np.zeros((256, 256), dtype=np.int64)
    lut[200, :] = top
    lut[:, 0] = 0
    mult = Multiplier(name=f"tiny_top{top}", family="test", _builder=lambda a_s, w_s: lut.copy())
    w16 = 32768 if top == 1 else 65535 // top // 8 * 8
    rng = np.random.default_rng(top)
    for Kd in sorted({w16 + 3, 2 * w16 + 9, 32768 + 11} if top == 1 else {w16 - 1, w16 + 3, 2 * w16 + 9}):
        for N in (65, 97):
            a = np.where(rng.random((3, Kd)) < 0.99, 200, rng.integers(0, 256, (3, Kd)))
            w = np.where(rng.random((N, Kd)) < 0.99, 5, rng.integers(-128, 128, (N, Kd)))
            ref = K.reference_gemm_int(a, w, mult, False).T
            prep = K._prepare(mult, False)
            assert int(prep.rows.by_weight.D.max()) == top
            AT, Wp = np.ascontiguousarray(K._u8(a).T), np.ascontiguousarray(K._u8(w))
            for isa in ISAS:
                for threads in (1, 2):
                    with K.using_threads(threads):
                        assert np.array_equal(K._rows_gemm(AT, Wp, prep, isa, by_act=False), ref), (Kd, N, isa)


@settings(deadline=None, max_examples=30)
@given(Kd=st.sampled_from([255, 256, 257, 511, 512, 513, 770]), M=st.integers(1, 80), N=st.integers(1, 80),
       by_act=st.booleans(), classed=st.booleans(),
       width=st.sampled_from(["tiny1", "tiny7", "tiny31", "byte", "pair", "full"]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_rows_kernel_16bit_windows_extreme_entries(Kd, M, N, by_act, classed, width, seed):
    """The AVX2 adds sum entries in 16-bit lanes over windows of 256 k-steps (low bytes and high bytes apart): a
    table whose entries (minus a constant) take the byte extremes (0, 255, 256, 0xFF00, 0xFFFF) and operands that
    pick them on every k-step, on reduction lengths around the window boundaries, both orientations, every ISA
    level; ``classed``: the table has repeated rows and columns, so both orientations read class tables; ``width``:
    "tiny<t>" entries 0..t < 32, the AVX2 8-bit sums over windows of 255 // t k-steps rounded down to their 8-step
    chunks (248 for t = 1, 32 for 7, 8 for 31) whose byte sums reach 255; "byte" entries 0..255 only (span 255), the
    AVX2 adds without high-byte sums, whose 16-bit window sums reach 255 * 256; "pair" entries below 2^15 (up to
    0x7FFF), the adds that sum two k-steps' rows before taking their high bytes; "full" up to
    0xFFFF. M, N up to 80: the AVX-512 level's 64-row tiles (8-step chunks) for the pair and full widths too, and
    with ``classed`` (tables of <= 128 rows) the AVX2 level's 64-selector tiles of every width."""
    rng = np.random.default_rng(seed)
    ext = {"tiny1": [0, 1], "tiny7": [0, 1, 6, 7], "tiny31": [0, 1, 30, 31], "byte": [0, 1, 254, 255],
           "pair": [0, 255, 256, 0x7F00, 0x7FFF],
           "full": [0, 255, 256, 0xFF00, 0xFFFF]}[width]
    top = max(ext)
    if classed:
        small = rng.choice(ext, (37, 50))
        small[0, 0], small[1, 1] = top, 0
        lut = classed_table(small)
    else:
        lut = rng.choice(ext, (256, 256))
    lut = int(rng.integers(-2 ** 20, 2 ** 20)) + lut
    mult = Multiplier(name=f"extreme{seed}", family="test", _builder=lambda a_s, w_s: lut.copy())
    hot = np.argwhere(lut - lut.min() == top)
    ia, iw = hot[rng.integers(len(hot))]
    a = np.where(rng.random((M, Kd)) < 0.7, ia, rng.integers(0, 256, (M, Kd)))
    w = np.where(rng.random((N, Kd)) < 0.7, iw, rng.integers(0, 256, (N, Kd)))
    w = np.where(w >= 128, w - 256, w)
    ref = K.reference_gemm_int(a, w, mult, False).T
    AT, Wp = np.ascontiguousarray(K._u8(a).T), np.ascontiguousarray(K._u8(w))
    prep = K._prepare(mult, False)
    for isa in ISAS:
        assert np.array_equal(K._rows_gemm(AT, Wp, prep, isa, by_act=by_act), ref), isa


def near_exact_lut(a_signed, w_signed):
    """The signed product with its 3 low bits cleared (benchmarks/bench_e2e.py's imported LUT): full rank, error
    E = -((a * w) & 7) with 8 distinct rows and columns."""
    a = pattern_values(True)[:, None]
    t = a * pattern_values(True)[None, :]
    return (t - (t & 7)).astype(np.int32)


def unsigned_near_exact_lut(a_signed, w_signed):
    """The product of the declared operand values with its 3 low bits cleared (the activation's value unsigned for
    unsigned activations)."""
    a = pattern_values(a_signed)[:, None]
    t = a * pattern_values(True)[None, :]
    return (t - (t & 7)).astype(np.int32)


def test_split_path_exact_plus_error_row_tables():
    """path="split": the exact integer GEMM + the rows kernel on the error table, added in place. The near-exact table's
    error has 8 classes per orientation (16-row tables) and spans 7 (the 8-bit sums of tiny entries) against the
    product of the patterns read as int8, which the split takes for unsigned activations too (against their unsigned
    value the error is off by 256 w on the patterns >= 128: span 2^15); a table of the unsigned product keeps the
    unsigned reference. auto takes split where the full table's 256-row builds dominate (few positions) or, with K
    long enough to amortize its output pass, where the error's 8-bit sums beat the full table's 16-bit ones, and rows
    on short reductions; path="rows" and path="split" force each; bit-exact gemm and conv (padded, strided, grouped)
    at every ISA level."""
    mult = Multiplier(name="near_exact", family="test", _builder=near_exact_lut)
    umult = Multiplier(name="near_exact_u", family="test", _builder=unsigned_near_exact_lut)
    uprep = K._prepare(umult, False)
    assert not uprep.err_signed and int(uprep.err_rows.by_weight.D.max()) <= 7
    for signed in (False, True):
        prep = K._prepare(mult, signed)
        e = prep.err_rows.by_weight
        assert e.rows == 16 and prep.rows.by_weight.rows == 256
        assert int(e.D.max()) <= 7 and prep.err_signed
        assert K._table_plan(prep, 196, 512, "auto", 4608)[0] == "split"
        assert K._table_plan(prep, 50000, 64, "auto", 27)[0] == "rows"
        for isa in ISAS:  # the exact GEMM under the split is priced by whether a VNNI kernel runs at the level
            vnni = isa in vnni_levels() and K._kernels.vnni_enabled()
            assert K._table_plan(prep, 4096, 256, "auto", 2304, isa)[0] == ("split" if vnni else "rows"), isa
        assert K._table_plan(prep, 50000, 64, "split")[0] == "split"
        assert K._table_plan(prep, 196, 512, "rows")[0] == "rows"
        assert K.select_path(mult, signed, 576, "split") == "split"
        rng = np.random.default_rng(3)
        x = acts(rng, (2, 6, 9, 8), signed)
        w = rng.integers(-128, 128, (10, 3, 3, 3))
        ref = K.reference_conv2d_int(x, w, mult, signed, (2, 1), (1, 0, 2, 1), (1, 1), 2)
        a = acts(rng, (70, 300), signed)
        wg = rng.integers(-128, 128, (33, 300))
        gref = K.reference_gemm_int(a, wg, mult, signed)
        uref = K.reference_conv2d_int(x, w, umult, signed, (2, 1), (1, 0, 2, 1), (1, 1), 2)
        ugref = K.reference_gemm_int(a, wg, umult, signed)
        for path in ("split", "rows", "auto"):
            for isa in ISAS:
                got = K.conv2d_int(x, w, mult, signed, (2, 1), (1, 0, 2, 1), (1, 1), 2, path=path, isa=isa)
                assert np.array_equal(got, ref), (signed, path, isa)
                assert np.array_equal(K.gemm_int(a, wg, mult, signed, path=path, isa=isa), gref), (signed, path, isa)
                got = K.conv2d_int(x, w, umult, signed, (2, 1), (1, 0, 2, 1), (1, 1), 2, path=path, isa=isa)
                assert np.array_equal(got, uref), (signed, path, isa)
                assert np.array_equal(K.gemm_int(a, wg, umult, signed, path=path, isa=isa), ugref), (signed, path, isa)


def tiny_error_lut(a_signed, w_signed):
    """The product of the declared values plus an error of entries 0..31 in 5 x 7 classes (the error table's byte
    rows at their largest entry)."""
    p = np.arange(256)
    err = np.random.default_rng(17).integers(0, 32, (5, 7))
    err[0], err[1] = 0, 31  # every weight's error spans 31
    return (pattern_values(a_signed)[:, None] * pattern_values(True)[None, :] + err[p % 5][:, p % 7]).astype(np.int32)


# the split path's tables: error entries < 32 (byte rows: 7, 15, 31) and larger (16-bit rows, 16 and 256 rows)
SPLIT_MULTS = {"near_exact": Multiplier(name="near_exact", family="test", _builder=near_exact_lut),
               "near_exact_u": Multiplier(name="near_exact_u", family="test", _builder=unsigned_near_exact_lut),
               "tiny31": Multiplier(name="tiny31", family="test", _builder=tiny_error_lut),
               "trunc": TRUNC, "rank1": RANK1, "rand_u8": MULTS["rand_u8"]}


def split_scaled_reference(x, w, mult, signed, args, rng, act, quant):
    """(Scaling, reference output) of conv2d_scaled: random_scaling on the reference sums, NCHW."""
    acc = K.reference_conv2d_int(x, w, mult, signed, *args)
    B, N = acc.shape[:2]
    sc, ref = random_scaling(rng, acc.transpose(1, 0, 2, 3).reshape(N, -1), act, quant)
    return sc, np.ascontiguousarray(ref.reshape((N, B) + acc.shape[2:]).transpose(1, 0, 2, 3))


def no_int64_pass(*a, **k):
    raise AssertionError("the split path ran an int64 pass (integer GEMM to int64 sums, or a scaling pass)")


@settings(deadline=None, max_examples=40)
@given(s=conv_shapes, signed=st.booleans(), mname=st.sampled_from(sorted(SPLIT_MULTS)), by_act=st.booleans(),
       act=st.sampled_from([None, "relu", "clip"]), quant=st.sampled_from([None, False, True]),
       threads=st.sampled_from([1, 2]), slice_bytes=st.sampled_from([8, 1 << 21]), seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_scaled_split_adds_the_error_sums_in_the_int32_tiles(s, signed, mname, by_act, act, quant, threads,
                                                                     slice_bytes, seed):
    """conv2d_scaled on the split path: the rows kernel's error sums added to the integer GEMM's int32 tiles before
    they are scaled (no int64 sums of the exact product, no scaling pass), path forced and auto, error tables in
    either orientation, groups, 1x1 / strided / padded / dilated, image slices down to one image, every ISA level
    with and without VNNI, 1 and 2 threads: the numpy formula on the reference sums."""
    rng = np.random.default_rng(seed)
    x, w, G = int_conv_operands(rng, {**s, "depthwise": False}, signed)
    if s["extreme"]:
        x, w = range_ends(x, w, signed)
    mult = SPLIT_MULTS[mname]
    args = (s["stride"], s["pads"], s["dil"], G)
    sc, ref = split_scaled_reference(x, w, mult, signed, args, rng, act, quant)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "scale_accumulators", no_int64_pass)
        mp.setattr(K, "_int_gemm", no_int64_pass)
        mp.setattr(K, "_ROWS_ACT_COST", 1e-3 if by_act else 1e3)
        mp.setattr(K, "_SCALED_SLICE_BYTES", slice_bytes)
        mp.setattr(K, "_SCALED_SLICE_MIN_POS", 1)
        for vnni in (True, False):
            for isa in ISAS:
                with vnni_env(vnni), K.using_threads(threads):
                    got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path="split", isa=isa)
                assert got.dtype == ref.dtype and np.array_equal(got.view(np.uint8), ref.view(np.uint8)), (isa, vnni)
        mp.setattr(K, "_SPLIT_OUT_COST", {})  # auto: split wherever its tables are cheaper
        with K.using_threads(threads):
            got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path="auto")
        assert np.array_equal(got.view(np.uint8), ref.view(np.uint8))


@pytest.mark.parametrize("mname,windows", [("near_exact", 1), ("near_exact", 2), ("tiny31", 1), ("tiny31", 2)])
@pytest.mark.parametrize("signed,by_act", [(False, False), (True, True), (False, True), (True, False)])
def test_conv2d_scaled_split_long_reductions(mname, windows, signed, by_act, monkeypatch):
    """The split path with K just past one and two 16-bit windows of the byte-row error sums (65535 // largest entry
    k-steps: 9362 for the near-exact table's 7, 2114 for 31), the error table's largest entry on ~90 % of the
    k-steps, 65 and more selectors (weights or positions: the 64-row byte tiles and the tail), every ISA level with
    and without VNNI, 1 and 2 threads."""
    mult = SPLIT_MULTS[mname]
    prep = K._prepare(mult, signed)
    e = prep.err_rows.by_weight
    err = prep.lut - np.multiply.outer(K._W_VALS if prep.err_signed else prep.a_vals, K._W_VALS)
    err = err - err.min(axis=0)  # the weight-selected offset tables' entries
    top = int(err.max())
    assert int(e.D.max()) == top
    Kd = windows * (65535 // top) + 9
    rng = np.random.default_rng(windows + 2 * signed)
    C = -(-Kd // 9)
    hot = np.argwhere(err == top)
    ia, iw = hot[rng.integers(len(hot))]
    xs, ws = ((2, C, 6, 6), (5, C, 3, 3)) if by_act else ((2, C, 3, 3), (70, C, 3, 3))  # 72 / 70 selectors
    x = np.where(rng.random(xs) < 0.9, pattern_values(signed)[ia], acts(rng, xs, signed))
    w = np.where(rng.random(ws) < 0.9, pattern_values(True)[iw], rng.integers(-128, 128, ws))
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    sc, ref = split_scaled_reference(x, w, mult, signed, args, rng, None, None)
    assert K._split_fits32(prep, C * 9)
    monkeypatch.setattr(K, "_ROWS_ACT_COST", 1e-3 if by_act else 1e3)
    for vnni in (True, False):
        for isa in ISAS:
            for threads in (1, 2):
                with vnni_env(vnni), K.using_threads(threads):
                    got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path="split", isa=isa)
                assert np.array_equal(got.view(np.uint8), ref.view(np.uint8)), (isa, vnni, threads)


def test_split_falls_back_without_error_tables():
    """A table whose error spans 2^16 or more per weight has no error row tables: path="split" takes rows (or lut)."""
    assert K.select_path(MULTS["rand_u16"], False, 576, "split") == "rows"
    assert K.select_path(MULTS["rand_i32"], False, 576, "split") == "lut"


def test_auto_path_selection():
    assert K.select_path(EXACT, False, 576) == "exact"
    assert K.select_path(PERF, False, 576, "lowrank") == "lowrank"
    assert K.select_path(MULTS["rand17"], False, 576, "lowrank") == "lut"  # full rank -> fallback
    assert K.select_path(PERF, True, 576, "auto", isa="avx2") == "lowrank"
    assert K.select_path(MULTS["rand17"], True, 576, "auto", isa="avx2") == "lut"  # spans 2^17: no row tables
    assert K.select_path(MULTS["rand17"], True, 576, "rows") == "lut"
    assert K.select_path(MULTS["rand_i16"], True, 576, "auto", isa="avx2") == "rows"
    assert K.select_path(MULTS["rand_i16"], True, 576, "auto", isa="scalar") == "rows"
    if "avx512" in ISAS:  # rows and lowrank are the faster kernels on AVX-512 machines too
        assert K.select_path(MULTS["rand_i16"], True, 576, "auto", isa="avx512") == "rows"
        assert K.select_path(PERF, True, 576, "auto", isa="avx512") == "lowrank"
    with pytest.raises(DseError, match="exact"):
        K.select_path(PERF, False, 10, "exact")
    with pytest.raises(DseError, match="unknown kernel path 'fast'"):
        K.gemm_int(np.zeros((2, 3), int), np.zeros((2, 3), int), EXACT, False, path="fast")


@pytest.fixture
def fresh_plans():
    """Per-shape integer plans and lowrank term counts decided under the module's bounds: cleared around tests that
    patch the bounds (a depthwise example with the same table and K decides them first otherwise)."""
    def clear():
        for per in K._CACHE.values():
            for prep in per.values():
                prep.int_plans.clear()
                prep.lowrank_terms.clear()
    clear()
    yield
    clear()


def test_int_plan_cache_follows_K():
    """The integer plan is cached per (multiplier, signedness, K, path, isa): a call with another K of the same
    multiplier must not reuse the plan decided for the first K (here K * S >= 2^53 rules the kernel out)."""
    plan = K._prepare(RANK1, True).int16
    assert plan is not None
    big = K._F64_EXACT // plan.S + 1
    for path in ("auto", "lowrank"):
        assert K._int_plan(RANK1, True, 70, path, "scalar") is plan
        assert K._int_plan(RANK1, True, big, path, "scalar") is None
        assert K._int_plan(RANK1, True, 70, path, "scalar") is plan
    assert K._int_plan(RANK1, True, 70, "rows", "scalar") is None and K._int_plan(RANK1, True, 70, "lut", None) is None
    with pytest.raises(DseError, match="exact"):  # a cached plan must not hide the path check
        K._int_plan(RANK1, True, 70, "exact", "scalar")
    rng = np.random.default_rng(5)
    a, w = rng.integers(-128, 128, (9, 70)), rng.integers(-128, 128, (4, 70))
    for path in ("auto", "lowrank", "rows", "lut"):
        assert np.array_equal(K.gemm_int(a, w, RANK1, True, path=path, isa="scalar"),
                              K.reference_gemm_int(a, w, RANK1, True))


@pytest.mark.usefixtures("fresh_plans")
def test_lowrank_bound_falls_back_to_lut(monkeypatch):
    monkeypatch.setattr(K, "_BOUND_LIMIT", 0.0)  # no float bound can pass
    monkeypatch.setattr(K, "_F64_EXACT", 0)  # and no integer-factor plan -> the LUT path must be used
    assert K.select_path(PERF, False, 9, "lowrank") == "lut"
    rng = np.random.default_rng(3)
    a, w = rng.integers(0, 256, (10, 9)), rng.integers(-128, 128, (4, 9))
    assert np.array_equal(K.gemm_int(a, w, PERF, False, path="lowrank"), K.reference_gemm_int(a, w, PERF, False))


@pytest.mark.usefixtures("fresh_plans")
def test_integer_plan_falls_back_to_float_factors(monkeypatch):
    """When K * S < 2^53 cannot be shown, lowrank uses the float64 error-table factors (rounding bound < 0.25)."""
    prep = K._prepare(RANK1, True)
    assert prep.intf is not None and not K._int_plan_ok(prep.intf, 10 ** 12, 10 ** 5)  # 10^17 >= 2^53
    monkeypatch.setattr(K, "_F64_EXACT", 1)
    called = []
    monkeypatch.setattr(K, "_lowrank_float_gemm", lambda *a, f=K._lowrank_float_gemm: called.append(1) or f(*a))
    rng = np.random.default_rng(4)
    a, w = rng.integers(-128, 128, (50, 70)), rng.integers(-128, 128, (3, 70))
    assert K.select_path(RANK1, True, 70, "lowrank") == "lowrank"
    assert np.array_equal(K.gemm_int(a, w, RANK1, True, path="lowrank"), K.reference_gemm_int(a, w, RANK1, True))
    assert called


def test_separable_tables_use_one_integer_term():
    """Perforation, truncation, DRUM, Ax-BxP: the whole table is F(a) G(w) -> one float32 GEMM, auto picks it
    where the LUT kernel is slow."""
    for name in ("perf_j1_k2", "trunc_op2", "drum4", "axbxp_k2_w2_a2_dynamic", "exact"):
        for signed in (False, True):
            fac = K._prepare(get_multiplier(name), signed).intf
            assert fac.rank == 1 and np.array_equal(fac.F @ fac.G.T, K._prepare(get_multiplier(name), signed).lut)
    assert K.select_path(get_multiplier("drum4"), False, 576, "auto", isa="avx2") == "lowrank"


@pytest.mark.parametrize("Kd", [514, 515, 2000, 2100, 3000])
def test_float32_chunk_boundaries_worst_case(Kd):
    """Every operand at the pattern maximising |F||G|: partial sums reach kc * S (just below 2^24 per float32 chunk;
    K = 3000 needs six chunks). Perforation unsigned: S = 255 * 128 = 32640, kc = 514."""
    for a_val, w_val in ((255, -128), (255, 127), (254, -127)):
        a = np.full((7, Kd), a_val)
        w = np.full((2, Kd), w_val)
        w[1, ::3] = -w_val if w_val != -128 else 127
        for mult in (PERF, EXACT):
            assert np.array_equal(K.gemm_int(a, w, mult, False, path="lowrank" if mult is PERF else "exact"),
                                  K.reference_gemm_int(a, w, mult, False))


@SETTINGS
@given(M=st.integers(1, 80), Kd=st.integers(1, 300), N=st.integers(1, 6), t=st.integers(1, 4),
       mag=st.integers(0, 22), seed=st.integers(0, 2 ** 32 - 1))
def test_factor_gemm_chunking_is_exact(M, Kd, N, t, mag, seed):
    """_factor_gemm (the one home of exact BLAS GEMMs) against int64 numpy, with factor magnitudes up to 2^22 so the
    float32 chunks get short (many chunks) or the float64 pass is taken."""
    rng = np.random.default_rng(seed)
    F = rng.integers(-2 ** mag, 2 ** mag + 1, (256, t))
    G = rng.integers(-8, 9, (256, t))
    AT = rng.integers(0, 256, (Kd, M)).astype(np.uint8)
    Wp = rng.integers(0, 256, (N, Kd)).astype(np.uint8)
    S = K._term_bound(F, G, np.arange(256), K._used_patterns(Wp))
    got = K._factor_gemm(AT, Wp, F, G, S, np.arange(256))
    ref = np.einsum("nkt,kmt->nm", G[Wp], F[AT])
    assert np.array_equal(got, ref)


@pytest.fixture
def threads():
    with K.using_threads(None):
        yield K.set_threads


@pytest.mark.parametrize("mname", ["exact", "perf", "rand_i32", "rand_u8"])
def test_threads_give_identical_results(threads, mname):
    """Every path and ISA level gives the same bits on 1 and on 2 threads, on a regular and a depthwise conv."""
    rng = np.random.default_rng(5)
    mult = MULTS[mname]
    x = rng.integers(-128, 128, (3, 12, 9, 13))
    convs = [(rng.integers(-128, 128, (7, 12, 3, 3)), 1), (rng.integers(-128, 128, (24, 1, 3, 3)), 12)]
    for w, groups in convs:
        ref = K.reference_conv2d_int(x, w, mult, True, (2, 1), (1, 1, 0, 2), (1, 1), groups)
        for path in PATHS + (["exact"] if mname == "exact" else []):
            for isa in ISAS:
                got = [K.conv2d_int(x, w, mult, True, (2, 1), (1, 1, 0, 2), (1, 1), groups, path=path, isa=isa)
                       for _ in (threads(1), threads(2))]
                assert np.array_equal(got[0], ref) and np.array_equal(got[1], ref), (path, isa, groups)


def test_map_split_keeps_order_and_runs_kernels_on_one_thread(threads):
    threads(2)
    seen = K.map_split(lambda i: (i, K.get_threads()), list(range(5)))
    assert seen == [(i, 1) for i in range(5)] and K.get_threads() == 2
    threads(1)
    assert K.map_split(lambda i: (i, K.get_threads()), [7, 8]) == [(7, 1), (8, 1)]


def test_set_threads_validates_and_defaults_to_all_cores(threads):
    import os
    assert threads(None) == len(os.sched_getaffinity(0)) == K.get_threads()
    assert threads(1) == 1
    for bad in (0, -2, 1.5, True):
        with pytest.raises(DseError, match="threads"):
            threads(bad)


def test_bad_input_raises_one_line_dse_error():
    x = np.zeros((1, 4, 5, 5), int)
    w = np.zeros((2, 4, 3, 3), int)
    with pytest.raises(DseError, match="groups=3"):
        K.conv2d_int(x, w, EXACT, False, groups=3)
    with pytest.raises(DseError, match="uint8"):
        K.conv2d_int(x - 1, w, EXACT, False)
    with pytest.raises(DseError, match="int8"):
        K.gemm_int(np.zeros((2, 3), int), np.full((2, 3), 200), EXACT, False)
    with pytest.raises(DseError, match="equal K"):
        K.gemm_int(np.zeros((2, 3), int), np.zeros((2, 4), int), EXACT, False)
    with pytest.raises(DseError, match="larger than the padded input"):
        K.conv2d_int(np.zeros((1, 4, 2, 2), int), w, EXACT, False)


# ----------------------------------------------------------------------------------------------------- float path
def _bf16_round(x):
    try:
        from dse.arith.floatmul import bf16_round
        return bf16_round(x)
    except ImportError:  # local fallback: round to nearest even on the upper 16 bits of the float32 pattern
        b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
        return b.astype(np.uint32).view(np.float32)


BF16 = SimpleNamespace(name="bf16", domain="float",
                       float_product=lambda x, y: (_bf16_round(x) * _bf16_round(y)).astype(np.float32))
# a deliberately inexact product so that the order of accumulation matters
SLOPPY = SimpleNamespace(name="sloppy", domain="float",
                         float_product=lambda x, y: (np.float32(1.0009765) * x * y).astype(np.float32))


@SETTINGS
@given(M=st.integers(1, 40), Kd=st.integers(1, 200), N=st.integers(1, 7), seed=st.integers(0, 2 ** 32 - 1),
       mname=st.sampled_from(["bf16", "sloppy"]))
def test_gemm_float_bit_exact(M, Kd, N, seed, mname):
    mult = BF16 if mname == "bf16" else SLOPPY
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((M, Kd)) * 10.0 ** rng.integers(-3, 4, (M, Kd))).astype(np.float32)
    w = rng.standard_normal((N, Kd)).astype(np.float32)
    got = K.gemm_float(a, w, mult)
    ref = K.reference_gemm_float(a, w, mult)
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_float_accumulation_is_sequential():
    """1e8 + 1 + ... (ascending k) in FP32 loses every 1; a pairwise sum would not."""
    mult = SimpleNamespace(name="id", domain="float", float_product=lambda x, y: (x * y).astype(np.float32))
    a = np.array([[1e8] + [1.0] * 15], dtype=np.float32)
    w = np.ones((1, 16), dtype=np.float32)
    assert K.gemm_float(a, w, mult)[0, 0] == np.float32(1e8)


@settings(deadline=None, max_examples=10)
@given(s=conv_shapes, seed=st.integers(0, 2 ** 32 - 1))
def test_conv2d_float_matches_reference(s, seed):
    rng = np.random.default_rng(seed)
    G, cg, og = s["G"], (1 if s["depthwise"] else s["cg"]), (1 if s["depthwise"] else s["og"])
    kh, kw = s["kh"], s["kw"]
    x = rng.standard_normal((s["B"], G * cg) + fitted_plane(s["H"], s["W"], (kh, kw), s["dil"], s["pads"])) \
        .astype(np.float32)
    w = rng.standard_normal((G * og, cg, kh, kw)).astype(np.float32)
    args = (s["stride"], s["pads"], s["dil"], G)
    got = K.conv2d_float(x, w, SLOPPY, *args)
    assert np.array_equal(got.view(np.uint32), K.reference_conv2d_float(x, w, SLOPPY, *args).view(np.uint32))


def test_float_path_rejects_int_multiplier():
    with pytest.raises(DseError, match="8-bit integer multiplier"):
        K.gemm_float(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), EXACT)



_MALLOC_SCRIPT = """
import ctypes, numpy as np, dse.kernels
class Info(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
info = ctypes.CDLL(None).mallinfo2
info.restype = Info
a = np.empty(48 << 20, np.uint8)  # above glibc's largest dynamic mmap threshold (32 MiB)
a.fill(1)
mapped = info().hblkhd
del a
print(mapped >> 20, info().arena >> 20)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc malloc thresholds")
def test_freed_layer_outputs_stay_in_the_heap():
    """dse.kernels has malloc keep blocks of up to 64 MiB in the heap and not unmap them when freed, so a streamed
    batch's next layer outputs reuse pages instead of faulting in fresh zeroed ones (DSE_KEEP_FREED_MEMORY=0 keeps
    glibc's default, which maps a 48 MiB block on its own and unmaps it when freed)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    got = {}
    for keep in ("1", "0"):
        r = subprocess.run([sys.executable, "-c", _MALLOC_SCRIPT], env=dict(env, DSE_KEEP_FREED_MEMORY=keep),
                           capture_output=True, text=True, check=True)
        got[keep] = tuple(map(int, r.stdout.split()))  # MiB mapped on their own while alive, MiB of heap after free
    assert got["0"][0] >= 48 and got["0"][1] < 48  # the default, so the test can see the difference
    assert got["1"][0] == 0 and got["1"][1] >= 48
    from dse.quant import STREAM_BUDGET  # the heap keeps what one streamed batch may take (kernels may not import quant)
    assert K._HEAP_KEEP_BYTES == STREAM_BUDGET
