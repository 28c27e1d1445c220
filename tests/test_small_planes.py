"""MobileNetV2's shapes on the exact FxP8 path: the 1x1 convs' VNNI operand of signed activations (the offset 128 by
one xor in the packing, its correction subtracted from the int32 tiles 16 lanes at a time), the depthwise kernel's
whole small planes (one load and byte permutes per image, strides 1 and 2), and the compiled GlobalAveragePool,
against numpy at every ISA level, with and without VNNI, on 1 and 2 threads."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import kernels as K
from dse.arith.multipliers import EXACT
from dse.quant import reference_quantize_act
from tests.mac_helpers import vnni_env
from tests.test_kernels import ISAS
from tests.test_residual_add import assert_same, fused_reference

VNNI = K._kernels.vnni_levels()


def scaled_reference(acc: np.ndarray, sc: K.Scaling):
    """The FxP8 output stage in numpy: float32((acc * sa) * sw[c]) + bias[c], then (with add) the Add's sum, the
    Relu/Clip, and the quantization."""
    sh = (1, -1) + (1,) * (acc.ndim - 2)
    y = ((acc.astype(np.float64) * sc.a_scale) * sc.w_scale.astype(np.float64).reshape(sh)).astype(np.float32)
    y = y + sc.bias.reshape(sh)
    if sc.add is not None:
        return fused_reference(y, sc.add, sc.act, sc.quant)
    y = y if sc.act is None else sc.act.apply(y)
    if sc.quant is None:
        return y
    with np.errstate(invalid="ignore"):
        return reference_quantize_act(y, sc.quant.scale, sc.quant.signed)


def _scaling(rng, N: int, shape, act: str | None, out: str, signed_out: bool) -> K.Scaling:
    qs = float(np.float32(rng.uniform(0.02, 0.5)))
    lo, hi = [(-5.0, 6.0), (0.0, 6.0), (-2.5 * qs, 3.5 * qs)][rng.integers(3)]
    a = None if act is None else K.OutputAct(act, lo if act == "clip" else -np.inf, hi if act == "clip" else np.inf)
    quant = K.OutputQuant(qs, signed_out) if out in ("quant", "add+quant") else None
    add = rng.normal(0, 3, shape).astype(np.float32) if out.startswith("add") else None
    return K.Scaling(float(np.float32(rng.uniform(1e-3, 0.05))), rng.uniform(1e-3, 0.05, N).astype(np.float32),
                     rng.normal(0, 1, N).astype(np.float32), a, quant, add)


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 9), C=st.integers(1, 40), N=st.integers(1, 20),
       hw=st.sampled_from([(4, 4), (4, 8), (8, 8), (8, 12), (16, 16), (3, 5), (1, 1), (5, 16)]),
       signed=st.booleans(), act=st.sampled_from([None, "relu", "clip"]),
       out=st.sampled_from(["float", "quant", "add", "add+quant"]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_pointwise_conv_small_planes(B, C, N, hw, signed, act, out, threads, seed):
    """conv2d_scaled of a 1x1 exact conv (planes whose positions the kernel reads image by image, with panels within
    one image or across two, or from the transposed copy), signed and unsigned activations (signed: the offset 128
    by xor, and its correction subtracted from the int32 tiles), every output mode, against numpy."""
    rng = np.random.default_rng(seed)
    H, W = hw
    x = rng.integers(-128, 128, (B, C, H, W)) if signed else rng.integers(0, 256, (B, C, H, W))
    w = rng.integers(-128, 128, (N, C, 1, 1))
    ref = K.reference_conv2d_int(x, w, EXACT, signed)
    sc = _scaling(rng, N, ref.shape, act, out, bool(rng.integers(2)))
    want = scaled_reference(ref, sc)
    for isa in ISAS:
        for vnni in [False] + ([True] if isa in VNNI else []):
            with vnni_env(vnni), K.using_threads(threads):
                got = K.conv2d_scaled(x, w, EXACT, signed, sc, isa=isa)
            assert_same(got, want, (isa, vnni))


def _check_depthwise(B, C, H, W, k, stride, pads, signed, act, out, threads, seed):
    """A depthwise conv2d_scaled of random bytes against numpy, at every ISA level, with and without VNNI."""
    rng = np.random.default_rng(seed)
    kh, kw = k
    H, W = max(H, kh - pads[0] - pads[2]), max(W, kw - pads[1] - pads[3])
    x = rng.integers(-128, 128, (B, C, H, W)) if signed else rng.integers(0, 256, (B, C, H, W))
    w = rng.integers(-128, 128, (C, 1, kh, kw))
    ref = K.reference_conv2d_int(x, w, EXACT, signed, stride, pads, (1, 1), C)
    sc = _scaling(rng, C, ref.shape, act, out, bool(rng.integers(2)))
    want = scaled_reference(ref, sc)
    for isa in ISAS:
        for vnni in [False] + ([True] if isa in VNNI else []):
            with vnni_env(vnni), K.using_threads(threads):
                got = K.conv2d_scaled(x, w, EXACT, signed, sc, stride, pads, groups=C, isa=isa)
            assert_same(got, want, (isa, vnni))


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 12), C=st.integers(1, 5), H=st.integers(1, 9), W=st.integers(1, 9),
       k=st.sampled_from([(3, 3), (1, 1), (5, 5), (3, 1), (2, 3)]),
       stride=st.sampled_from([(1, 1), (2, 2), (1, 2), (2, 1)]), pads=st.tuples(*[st.integers(0, 2)] * 4),
       signed=st.booleans(), act=st.sampled_from([None, "relu", "clip"]),
       out=st.sampled_from(["float", "quant", "add", "add+quant"]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_small_planes(B, C, H, W, k, stride, pads, signed, act, out, threads, seed):
    """The depthwise kernel on planes of <= 64 input bytes in blocks of images (each plane into its phase planes by
    byte permutes at the avx512 level, padding included; a store's tail lands in the next image's plane or the
    padding after the last), every stride up to 2, padding 0-2, kernels that do and do not fit the planes, every
    output mode, against numpy at every ISA level with and without VNNI."""
    _check_depthwise(B, C, H, W, k, stride, pads, signed, act, out, threads, seed)


@settings(deadline=None, max_examples=50)
@given(B=st.integers(1, 20), C=st.sampled_from([2, 3, 4, 6, 8, 12, 16, 32, 40]), H=st.integers(1, 8),
       W=st.integers(1, 8), k=st.sampled_from([(3, 3), (1, 1), (3, 1), (2, 3)]),
       stride=st.sampled_from([(1, 1), (2, 2), (1, 2), (2, 1)]), pads=st.tuples(*[st.integers(0, 2)] * 4),
       block=st.sampled_from([16, 100, 300, 4096]), signed=st.booleans(), act=st.sampled_from([None, "relu", "clip"]),
       out=st.sampled_from(["float", "quant", "add", "add+quant"]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_small_plane_channel_groups(B, C, H, W, k, stride, pads, block, signed, act, out, threads, seed):
    """Planes of <= 64 input bytes with VNNI quads: adjacent channels' planes of each image come from one to four
    64-byte loads into their own phase buffers and the channels run in turn per block of images (groups of 2-16
    channels, C not a multiple of the group, blocks of 1 to all images with a short last one), against numpy at every
    ISA level with and without VNNI, 1 and 2 threads."""
    saved, K._DW_BLOCK_POS = K._DW_BLOCK_POS, block
    try:
        _check_depthwise(B, C, min(H, 64 // W), W, k, stride, pads, signed, act, out, threads, seed)
    finally:
        K._DW_BLOCK_POS = saved


@settings(deadline=None, max_examples=60)
@given(B=st.integers(0, 3), C=st.integers(0, 4), H=st.integers(1, 40), W=st.integers(1, 40),
       scale=st.integers(-6, 6), specials=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_global_avg_pool_matches_numpy(B, C, H, W, scale, specials, seed):
    """The compiled GlobalAveragePool gives numpy's float32 mean bit for bit: values over 12 decades with both signs
    (the sums depend on the order of the additions), signed zeros, infinities and NaN (NaN at the same places),
    planes of 1 to 1600 values (the pairwise order's sequential, 8-sum and halving cases), and the op as the emulator
    runs it."""
    from dse.model import nn
    from dse.model.ops import IR_OPS

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((B, C, H, W)) * 10.0 ** rng.integers(scale - 6, scale + 7, (B, C, H, W)))
    x = x.astype(np.float32)
    if specials and x.size:
        flat = x.reshape(-1)
        idx = rng.integers(0, flat.size, max(1, flat.size // 16))
        flat[idx] = rng.choice(np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32), idx.size)
    want = x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
    for got in (K._kernels.global_avg_pool(x), nn.global_avg_pool(x), IR_OPS["gap"](None, [x])):
        assert got.shape == want.shape and got.dtype == np.float32
        nan = np.isnan(want)  # NaN where numpy has one (which NaN's sign and payload wins is the hardware's)
        assert np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan].view(np.uint32),
                                                                       want[~nan].view(np.uint32))


@settings(deadline=None, max_examples=50)
@given(B=st.integers(1, 4), C=st.integers(1, 3), H=st.integers(1, 6), W=st.integers(14, 70),
       k=st.sampled_from([(3, 3), (1, 1), (5, 5), (3, 1), (1, 4)]), stride=st.sampled_from([(2, 2), (1, 2)]),
       pads=st.tuples(*[st.integers(0, 3)] * 4), signed=st.booleans(), act=st.sampled_from([None, "relu", "clip"]),
       out=st.sampled_from(["float", "quant", "add+quant"]), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_depthwise_stride2_rows(B, C, H, W, k, stride, pads, signed, act, out, threads, seed):
    """The depthwise kernel's column-stride-2 split of rows of 16 to 32 bytes (one 32-byte load and one byte permute
    per row at the avx512 level, each phase's half stored as 16 bytes with the bytes past it cleared), rows around
    those widths and past them, against numpy at every ISA level."""
    _check_depthwise(B, C, H, W, k, stride, pads, signed, act, out, threads, seed)


@settings(deadline=None, max_examples=50)
@given(B=st.integers(1, 5), G=st.sampled_from([1, 1, 2, 3]), cg=st.integers(1, 200), og=st.integers(1, 14),
       hw=st.one_of(st.tuples(st.integers(1, 40), st.integers(1, 40)),
                    st.sampled_from([(4, 8), (8, 8), (2, 16), (16, 16), (32, 32), (40, 40), (4, 4), (4, 12)])),
       stride=st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2)]),
       pads=st.sampled_from([(0, 0, 0, 0), (0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 2, 0)]), signed=st.booleans(),
       act=st.sampled_from([None, "relu", "clip"]), out=st.sampled_from(["int64", "float", "quant", "add", "add+quant"]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_pointwise_conv_shapes_every_output(B, G, cg, og, hw, stride, pads, signed, act, out, threads, seed):
    """1x1 exact convs of random shapes (1-5 images, planes 1..40 on a side, depths 1..600, groups, strides,
    padding; planes of whole 16-position panels, several images to a block of positions) in every output mode (int64 sums, float32, the next layer's patterns (the avx2 level's certified
    single-precision patterns where the CPU has FMA), a fused Add with and without patterns, Relu/Clip) against numpy
    at every ISA level, with and without VNNI, 1 and 2 threads: the int16 kernel's activation packing (panels stepped
    image by image) and the output steps."""
    rng = np.random.default_rng(seed)
    H, W = hw
    cg = max(1, min(cg, 300_000 // (B * H * W * G)))  # the numpy reference's time: shallower convs on large planes
    C, N = cg * G, og * G
    x = rng.integers(-128, 128, (B, C, H, W)) if signed else rng.integers(0, 256, (B, C, H, W))
    w = rng.integers(-128, 128, (N, cg, 1, 1))
    args = (stride, pads, (1, 1), G)
    ref = K.reference_conv2d_int(x, w, EXACT, signed, *args)
    sc = None if out == "int64" else _scaling(rng, N, ref.shape, act, out, bool(rng.integers(2)))
    want = ref if sc is None else scaled_reference(ref, sc)
    for isa in ISAS:
        for vnni in [False] + ([True] if isa in VNNI else []):
            with vnni_env(vnni), K.using_threads(threads):
                got = K.conv2d_int(x, w, EXACT, signed, *args, isa=isa) if sc is None else \
                    K.conv2d_scaled(x, w, EXACT, signed, sc, *args, isa=isa)
            assert_same(got, want, (isa, vnni))
