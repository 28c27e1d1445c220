"""The compiled ops between MAC layers (cy/glue.h) against slow numpy references, bit for bit, and whole networks run
through them against the numpy path they replaced."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import _kernels
from dse.model import nn

ISAS = _kernels.isa_levels()
SPECIALS = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0], np.float32)


def window_max(x: np.ndarray, kernel, stride, pads, dilation, ceil: bool) -> np.ndarray:
    """Obviously right: the materialised windows (padded with -inf), reduced by np.maximum(acc, tap) over the taps in
    row-major order from -inf -- the order fixes which of +0/-0 and which NaN payload a window gives."""
    cols, _, _ = nn.windows(x, kernel, stride, pads, dilation, -np.inf, ceil)
    taps = [cols[:, :, i, j] for i in range(kernel[0]) for j in range(kernel[1])]
    return functools.reduce(np.maximum, taps, np.full(taps[0].shape, -np.inf, x.dtype))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple(draw(st.integers(0, kk - 1)) for kk in k + k)  # ONNX: pads smaller than the kernel
    H, W = draw(st.integers(1, 12)), draw(st.integers(1, 80))   # W reaches several SIMD steps of strides 1 and 2
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 70)), H, W)
    return dict(shape=shape, kernel=k, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pads=pads,
                dilation=dil, ceil=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)),
                specials=draw(st.sampled_from([0.0, 0.05, 0.5])))


def _input(shape, seed, specials):
    """Random float32 with a share of NaNs (two payloads), infinities and signed zeros, and many ties."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(np.float32) * np.float32(0.5)
    pick = rng.random(shape) < specials
    x[pick] = rng.choice(SPECIALS, size=int(pick.sum()))
    payload = rng.random(shape) < specials / 4
    x[payload] = np.uint32(0x7FC00001).view(np.float32)
    return x


@settings(deadline=None, max_examples=150)
@given(case=pool_cases(), isa=st.sampled_from(ISAS), threads=st.sampled_from([1, 2]))
def test_max_pool_is_the_running_maximum_over_the_windows(case, isa, threads):
    """Every ISA level and thread count gives the bits of np.maximum over the materialised windows (ties of signed
    zeros, NaN payloads, infinities, 1x1 planes, asymmetric pads, dilations, ceil mode), and of the numpy path."""
    x = _input(case["shape"], case["seed"], case["specials"])
    args = (case["kernel"], case["stride"], case["pads"], case["dilation"], case["ceil"])
    try:
        hw = nn.out_hw(x.shape[2:], *args)
    except Exception:
        return
    got, level = _kernels.max_pool(x, *args[:4], hw, isa, threads)
    assert level == isa and got.shape == x.shape[:2] + hw and got.dtype == np.float32
    want = window_max(x, *args)
    np.testing.assert_array_equal(_bits(got), _bits(want))
    np.testing.assert_array_equal(_bits(nn.reference_max_pool(x, *args)), _bits(want))


def test_max_pool_dispatch_and_other_dtypes(monkeypatch):
    """nn.pool takes the compiled loop for float32 (any layout) and numpy for other dtypes; DSE_KERNEL_ISA caps the
    level; a window past the padded input is a DseError naming the fix."""
    from dse.errors import DseError

    x = np.random.default_rng(0).standard_normal((2, 3, 17, 33)).astype(np.float32)
    a = {"kernel": (3, 3), "stride": (2, 2), "pads": (1, 1, 1, 1), "ceil_mode": 1}
    want = window_max(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True)
    np.testing.assert_array_equal(nn.pool(x, a, "max"), want)
    np.testing.assert_array_equal(nn.pool(np.asfortranarray(x), a, "max"), want)
    got64 = nn.pool(x.astype(np.float64), a, "max")
    assert got64.dtype == np.float64 and np.array_equal(got64, want)
    monkeypatch.setenv("DSE_KERNEL_ISA", "scalar")
    assert _kernels.max_pool(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (9, 17))[1] == "scalar"
    with pytest.raises(DseError, match="larger than the padded input"):
        nn.pool(x[:, :, :2], {"kernel": (4, 4), "stride": (1, 1), "pads": (0, 0, 0, 0)}, "max")
    with pytest.raises(ValueError, match="must be >= 1"):
        _kernels.max_pool(x, (3, 0), (2, 2), (1, 1, 1, 1), (1, 1), (9, 17))


def _numpy_pool(monkeypatch):
    """Run nn's max pooling on the numpy path it replaced (the float executor's other compiled ops stay)."""
    monkeypatch.setattr(nn, "max_pool", nn.reference_max_pool)


@pytest.mark.parametrize("threads", [1, 2])
def test_bundled_lenet5_logits_are_those_of_the_numpy_pool(bundled_qmodel, monkeypatch, threads):
    """LeNet-5 (two 2x2 max pools): emulator (exact and mitch_w6) and float executor give the same logit bits with
    the compiled pool as with the numpy one."""
    from dse.data import load_dataset
    from dse.emulate import Emulator
    from dse.kernels import using_threads
    from dse.layer_config import LayerConfig
    from dse.model.float_exec import run_float

    g, qm = bundled_qmodel("lenet5")
    x = load_dataset("fashion-mnist:holdout").images()[:40]
    emu = Emulator(qm)
    cfgs = [None, {l.name: LayerConfig("mitch_w6") for l in qm.layers}]
    with using_threads(threads):
        new = [emu.run(x, c) for c in cfgs] + [run_float(g, x)]
        with monkeypatch.context() as m:
            _numpy_pool(m)
            old = [emu.run(x, c) for c in cfgs] + [run_float(g, x)]
    for a, b in zip(new, old):
        np.testing.assert_array_equal(_bits(a), _bits(b))


def test_resnet18_stem_pool_logits_are_those_of_the_numpy_pool(tmp_path, monkeypatch):
    """bench_e2e's ResNet-18 with the ImageNet stem (7x7/2 conv, 3x3/2 max pool, pads 1) at 64x64: calibration and
    emulated logits are bit-identical with the compiled pool and the numpy one."""
    import onnx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_e2e

    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    p = tmp_path / "r18.onnx"
    onnx.save(bench_e2e.resnet18(64, classes=10), str(p))
    g = load_onnx(p)
    assert any(n.op == "maxpool" for n in g.nodes)
    x, calib = bench_e2e.images(3, 64, seed=11), bench_e2e.images(4, 64, seed=3)
    cfg = {n.name: LayerConfig("drum6") for n in g.mac_nodes}

    def run():
        qm = calibrate(g, calib)
        emu = Emulator(qm)
        return [np.array([l.a_scale for l in qm.layers], np.float64), emu.run(x), emu.run(x, cfg)]
    new = run()
    with monkeypatch.context() as m:
        _numpy_pool(m)
        old = run()
    for a, b in zip(new, old):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@settings(deadline=None, max_examples=120)
@given(n=st.integers(0, 300), act=st.sampled_from(["none", "relu", "clip"]), signed=st.booleans(),
       quant=st.booleans(), isa=st.sampled_from(ISAS), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1), specials=st.sampled_from([0.0, 0.1, 0.5]))
def test_add_act_is_numpy_add_then_the_ir_activation(n, act, signed, quant, isa, threads, seed, specials):
    """act(a + b) and its quantized patterns in one pass give the bits of numpy's add, the IR op Relu/Clip and the
    quantizer's numpy twin (signed zeros, NaNs, infinities, values on the rounding ties), at every ISA level and
    thread count."""
    from dse.kernels import OutputAct
    from dse.quant import reference_quantize_act

    rng = np.random.default_rng(seed)
    scale = np.float32(0.25)
    a, b = (_input((n,), int(s), specials) * np.float32(rng.choice([1, 3])) for s in rng.integers(0, 2 ** 32, 2))
    a += rng.integers(-300, 300, n).astype(np.float32) * np.float32(0.125)  # sums on x.5 multiples of the scale
    o = OutputAct(act, -1.5, 6.0) if act != "none" else None
    want = np.add(a, b) if o is None else o.apply(np.add(a, b))
    y, q = _kernels.add_act(a, b, act, -1.5, 6.0, (float(scale), signed) if quant else None, isa, threads)
    # NaN + NaN: which payload survives is the hardware's operand order, and numpy's own SIMD body and tail differ
    # in it; NaN stays NaN (and quantizes to 0), every other value keeps its bits
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(y), nan)
    np.testing.assert_array_equal(_bits(y)[~nan], _bits(want)[~nan])
    if quant:
        np.testing.assert_array_equal(q.view(np.int8 if signed else np.uint8),
                                      reference_quantize_act(want, scale, signed))
    else:
        assert q is None


@settings(deadline=None, max_examples=150)
@given(lead=st.lists(st.integers(1, 3), max_size=2), R=st.one_of(st.integers(1, 20), st.sampled_from([64, 65])),
       C=st.one_of(st.integers(1, 20), st.sampled_from([64, 65])), first=st.booleans(),
       act=st.sampled_from(["none", "relu", "clip"]), signed=st.booleans(), quant=st.booleans(),
       isa=st.sampled_from(ISAS), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1),
       specials=st.sampled_from([0.0, 0.1, 0.5]))
def test_add_act_reads_a_transposed_operand_in_place(lead, R, C, first, act, signed, quant, isa, threads, seed,
                                                     specials):
    """dse.kernels.add_act of a C-contiguous operand and one whose last two axes are a C-contiguous array's swapped
    (in either slot) reads the latter in its own memory (8 x 8 tile transposes at avx2, edges of any size) and gives
    the bits of the same pass on a contiguous copy and of numpy's add then the IR activation: every value, NaN
    payloads included, except where two NaNs meet (then one of the two, quieted: which one is the compiled operand
    order's, as numpy's own SIMD body and tail differ in it); every ISA level, 1 and 2 threads."""
    from dse.kernels import OutputAct, OutputQuant, add_act

    rng = np.random.default_rng(seed)
    shape = tuple(lead) + (R, C)
    n = int(np.prod(shape))
    a = (_input((n,), int(rng.integers(0, 2 ** 32)), specials) * np.float32(3)).reshape(shape)
    bm = _input((n,), int(rng.integers(0, 2 ** 32)), specials).reshape(tuple(lead) + (C, R))
    pick = rng.random(bm.shape) < specials / 4  # NaNs of random payloads: which one a sum keeps shows
    bm[pick] = (rng.integers(0x7F800001, 0x80000000, int(pick.sum())).astype(np.uint32)).view(np.float32)
    b = np.swapaxes(bm, -1, -2)
    x, z = (b, a) if first else (a, b)
    o = OutputAct(act, -1.5, 6.0) if act != "none" else None
    qt = OutputQuant(0.25, signed) if quant else None
    calls = []
    real = _kernels.add_act

    def spy(*args, **kw):
        calls.append(kw.get("transposed"))
        return real(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_kernels, "add_act", spy)
        mp.setattr("dse.kernels.get_threads", lambda: threads)
        y, q = add_act(x, z, o, qt, isa)
    assert calls == [None if R == 1 or C == 1 else (R, C)]  # a size-1 axis: numpy calls both layouts contiguous
    kind = act
    y0, q0 = real(np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(z).reshape(-1), kind, -1.5, 6.0,
                  (0.25, signed) if quant else None, isa, threads)
    assert y.shape == shape and y.flags.c_contiguous
    want = np.add(x, z) if o is None else o.apply(np.add(x, z))
    met = np.isnan(x) & np.isnan(z)
    for ref in (y0.reshape(shape), want):
        np.testing.assert_array_equal(_bits(y)[~met], _bits(ref)[~met])
    assert np.all((_bits(y)[met] == _bits(x)[met] | 0x400000) | (_bits(y)[met] == _bits(z)[met] | 0x400000))
    if quant:
        np.testing.assert_array_equal(q.view(np.uint8).reshape(-1), q0)
    else:
        assert q is None and q0 is None


def test_emulator_fuses_residual_adds(bundled_qmodel):
    """The bundled ResNet-8's residual Add + Relu pairs run as one pass that also writes the next convs' input."""
    from dse.emulate import Emulator

    g, qm = bundled_qmodel("resnet8")
    emu = Emulator(qm)
    adds = [i for i, n in enumerate(g.nodes) if n.op == "add"]
    assert adds and set(adds) <= set(emu._plan["acts"]) and set(adds[:-1]) <= set(emu._plan["adds"])


@pytest.mark.parametrize("threads", [1, 2])
def test_resnet8_logits_are_those_of_the_unfused_adds(bundled_qmodel, monkeypatch, threads):
    """Bundled ResNet-8 (residual Add + Relu): logits with the fused Add passes (in the producing conv's scaling pass,
    or on their own) equal those of the IR ops (numpy add, relu, then the consumers' own quantization), bit for bit, for an exact, a separable, a full-table and a mixed
    configuration with a float-domain layer, and through the prefix cache."""
    from dse.data import load_dataset
    from dse.emulate import Emulator
    from dse.kernels import using_threads
    from dse.layer_config import LayerConfig
    from dse.prefix_cache import PrefixCache

    g, qm = bundled_qmodel("resnet8")
    x = load_dataset("fashion-mnist:holdout").images()[:24]
    names = [l.name for l in qm.layers]
    cfgs = [None, {n: LayerConfig("drum6") for n in names}, {n: LayerConfig("mitch_w6") for n in names},
            {n: LayerConfig(m) for n, m in zip(names, ["exact", "bf16", "mitch_w6", "perf_j1_k2"] * 9)}]
    new, old = Emulator(qm), Emulator(qm)
    monkeypatch.setitem(old._plan, "acts", {i: a for i, a in old._plan["acts"].items() if g.nodes[i].is_mac})
    monkeypatch.setitem(old._plan, "adds", {})
    monkeypatch.setitem(old._plan, "residuals", {})
    cache = PrefixCache(1 << 28)
    with using_threads(threads):
        for c in cfgs:
            want = old.run(x, c)
            np.testing.assert_array_equal(_bits(new.run(x, c)), _bits(want))
            for _ in range(2):
                np.testing.assert_array_equal(_bits(new.run(x, c, cache=cache, tag="h")), _bits(want))


# ------------------------------------------------------------------------------------------ float glue in place
def _old_sigmoid(x):
    return (1 / (1 + np.exp(-x))).astype(x.dtype)


def _old_hardsigmoid(x, alpha, beta):
    return np.clip(x * x.dtype.type(alpha) + x.dtype.type(beta), 0, 1).astype(x.dtype)


def _same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(u), np.ascontiguousarray(want).view(u))


@st.composite
def float_arrays(draw, dtypes=(np.float32, np.float64, np.float16)):
    """Arrays of 0 to 3 axes (0-d included) of normal values, large magnitudes and the specials (NaN with both
    signs, infinities, signed zeros)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = tuple(draw(st.lists(st.integers(0, 40), max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = np.asarray(rng.standard_normal(shape) * draw(st.sampled_from([1.0, 8.0, 100.0])), dtype=dtype).reshape(shape)
    flat = x.reshape(-1)
    k = draw(st.integers(0, flat.size))
    flat[rng.permutation(flat.size)[:k]] = rng.choice(SPECIALS, k).astype(dtype)
    return x


@settings(max_examples=300, deadline=None)
@given(x=float_arrays(), alpha=st.sampled_from([0.2, 1 / 6, 0.5]), beta=st.sampled_from([0.5, 0.0, -1.0]))
def test_in_place_activations_give_the_old_bits(x, alpha, beta):
    """Sigmoid, HardSigmoid, HardSwish run in place on one new buffer: bit for bit the expressions they replaced
    (NaN payloads, infinities and signed zeros included), every float dtype, 0-d arrays by the old expressions."""
    from dse.model.ops import UNARY

    with np.errstate(all="ignore"):
        _same_bits(UNARY["sigmoid"](x, {}), _old_sigmoid(x))
        _same_bits(UNARY["hardsigmoid"](x, {"alpha": alpha, "beta": beta}), _old_hardsigmoid(x, alpha, beta))
        _same_bits(UNARY["hardswish"](x, {}), x * _old_hardsigmoid(x, 1 / 6, 0.5))


def _same_bits_where_one_nan(got, want, a, b):
    """float32 ``got`` equals ``want`` bit for bit, except where both operands ``a`` and ``b`` of an elementwise op
    are NaN: there it is one of the two (quieted). numpy's own loops pick either (the first operand's NaN in place and
    in its scalar loop, the second one in its SIMD loop on a new array: float32 x * s for a 100003-long x, numpy 2.4)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float32), np.asarray(b, np.float32))
    both = np.isnan(a) & np.isnan(b)
    _same_bits(np.where(both, 0, got), np.where(both, 0, want))
    g, qa, qb = (np.ascontiguousarray(v).view(np.uint32)[both] for v in (got, a, b))
    assert np.all((g == qa | 0x400000) | (g == qb | 0x400000))


@settings(max_examples=200, deadline=None)
@given(x=float_arrays((np.float32,)), y=float_arrays((np.float32,)), op=st.sampled_from(["add", "sub", "mul", "div"]),
       into=st.sampled_from([0, 1]))
def test_binary_into_gives_the_new_array_bits(x, y, op, into):
    """A float32 Add/Sub/Mul/Div written into one of its operands equals the op's new array, bit for bit (where
    two NaNs meet, one of them, as numpy's loops give), when that operand has the result's shape; else nothing is
    written."""
    from dse.model.graph import Node
    from dse.model.ops import IR_OPS, binary_into

    node = Node(name="n", op=op, inputs=["a", "b"], outputs=["y"])
    xs = [x, y]
    try:
        shape = np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        return
    want = IR_OPS[op](node, [x.copy(), y.copy()])
    target = xs[into]
    got = binary_into(node, xs, target)
    if target.shape != shape:
        assert got is None
        return
    assert got is target
    _same_bits_where_one_nan(got, want, x, y)


def _values_at_offset(x, n, offset):
    """n float32 values from x (repeated, times 4) in an array starting ``offset`` floats past a 64-byte boundary."""
    vals = np.resize(x, n) if x.size else np.zeros(n, np.float32)
    vals = vals * np.float32(4.0)
    buf = np.empty(n + 16 + 16, np.float32)
    start = (-buf.ctypes.data // 4) % 16 + offset
    xs = buf[start:start + n]
    xs[...] = vals
    return xs


@settings(max_examples=150, deadline=None)
@given(x=float_arrays((np.float32,)), n=st.sampled_from([0, 1, 31, 33, 2047, 2048, 2049, 4096 + 37, 20000]),
       offset=st.integers(0, 15), times_x=st.sampled_from([0, 1, 2]))
def test_compiled_sigmoid_gives_numpy_bits(x, n, offset, times_x):
    """The compiled Sigmoid, SiLU, HardSigmoid and HardSwish (numpy's own loops, chunk by chunk) and their numpy
    twins against the numpy expressions, bit for bit (the SiLU product of two NaNs one of them), lengths around the
    chunk size, inputs at every 4-byte offset from a 64-byte boundary, NaN of both signs, infinities, signed zeros,
    values past the exp overflow (|x| > 88.7)."""
    from dse.model import nn

    xs = _values_at_offset(x, n, offset)
    with np.errstate(all="ignore"):
        s = (1 / (1 + np.exp(-xs))).astype(np.float32)
        got = nn.sigmoid(xs, times_x)
        ref = nn.reference_sigmoid(xs, times_x)
        for alpha, beta in ((1 / 6, 0.5), (0.2, 0.5)):
            want = _old_hardsigmoid(xs, alpha, beta)
            if times_x == 1:
                want = xs * want
            for f in (nn.hardsigmoid, nn.reference_hardsigmoid):
                _same_bits(f(xs, alpha, beta, times_x == 1), want)
    for y in (got, ref):
        if times_x == 0:
            _same_bits(y, s)
        else:
            a, b = (xs, s) if times_x == 1 else (s, xs)
            _same_bits_where_one_nan(y, a * b, a, b)


@settings(max_examples=150, deadline=None)
@given(x=float_arrays((np.float32,)), n=st.sampled_from([0, 1, 31, 33, 2047, 2048, 2049, 4096 + 37, 20000]),
       offset=st.integers(0, 15), times_x=st.sampled_from([0, 1, 2]), signed=st.booleans(),
       scale=st.sampled_from([0.02, 0.1, 1.0, 1e-3, 37.5]), keep=st.booleans(), isa=st.sampled_from(ISAS))
def test_compiled_sigmoid_quantized_gives_the_two_passes_bits(x, n, offset, times_x, signed, scale, keep, isa):
    """The compiled Sigmoid / SiLU and HardSigmoid / HardSwish with their result quantized chunk by chunk (the next
    layers' input, the float32 result kept or not) give the patterns of quantizing the float32 result in a pass of its
    own, at every ISA level, and the same float32 result where it is kept; nn.sigmoid_quantized and
    nn.hardsigmoid_quantized likewise, with and without the compiled pass; lengths around the chunk size, every
    4-byte offset, NaN, infinities, signed zeros, clamped values."""
    from dse.kernels import OutputQuant

    xs = _values_at_offset(x, n, offset)
    with np.errstate(all="ignore"):
        want_y = nn.sigmoid(xs, times_x)
    qs = np.float32(scale)
    want = _kernels.quantize(want_y, qs, signed)
    out = np.empty(n, np.float32) if keep else None
    q = np.full(n, 7, np.uint8)
    _kernels.float_sigmoid(xs, out, times_x, q, qs, signed, isa)
    np.testing.assert_array_equal(q, want)
    if keep:
        _same_bits(np.where(np.isnan(want_y), 0, out), np.where(np.isnan(want_y), 0, want_y))
    dtype = np.int8 if signed else np.uint8
    got = nn.sigmoid_quantized(xs.reshape(1, -1) if n else xs, times_x, OutputQuant(scale, signed))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.reshape(-1), want.view(dtype))
    with pytest.MonkeyPatch.context() as mp, np.errstate(all="ignore"):
        mp.setattr(_kernels, "numpy_loops_found", lambda: False)
        np.testing.assert_array_equal(nn.sigmoid_quantized(xs, times_x, OutputQuant(scale, signed)),
                                      want.view(dtype))
    # HardSigmoid / HardSwish likewise
    alpha, hs = (1 / 6, True) if times_x else (0.2, False)
    want_y = nn.hardsigmoid(xs, alpha, 0.5, hs)
    want = _kernels.quantize(want_y, qs, signed)
    q[...] = 7
    _kernels.float_hardsigmoid(xs, out, float(np.float32(alpha)), 0.5, int(hs), q, qs, signed, isa)
    np.testing.assert_array_equal(q, want)
    if keep:
        _same_bits(np.where(np.isnan(want_y), 0, out), np.where(np.isnan(want_y), 0, want_y))
    np.testing.assert_array_equal(nn.hardsigmoid_quantized(xs, alpha, 0.5, hs, OutputQuant(scale, signed)),
                                  want.view(dtype))
    with pytest.MonkeyPatch.context() as mp, np.errstate(all="ignore"):
        mp.setattr(_kernels, "numpy_loops_found", lambda: False)
        np.testing.assert_array_equal(nn.hardsigmoid_quantized(xs, alpha, 0.5, hs, OutputQuant(scale, signed)),
                                      want.view(dtype))


def _sigmoid_both_ways(x, times_x):
    """float_sigmoid of x at the avx2 level (its own values where sigmoid_own_used) and at the scalar level (numpy's
    loops)."""
    own, loops = np.empty_like(x), np.empty_like(x)
    _kernels.float_sigmoid(x, own, times_x, isa="avx2")
    _kernels.float_sigmoid(x, loops, times_x, isa="scalar")
    return own, loops


needs_own_sigmoid = pytest.mark.skipif("avx2" not in ISAS, reason="no avx2 level")


def _numpy_exp_is_avx2() -> bool:
    """Whether this numpy's float32 exp runs its AVX2 / FMA3 loop (simd_exp_FLOAT at that width): the CPU has AVX2
    and FMA3 and no AVX-512F, whose own loop numpy would dispatch instead."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return bool(features.get("AVX2") and features.get("FMA3") and not features.get("AVX512F"))


@needs_own_sigmoid
@pytest.mark.skipif(not _numpy_exp_is_avx2(), reason="numpy dispatches another float32 exp on this CPU: the first-use "
                    "check decides whether the registers' exp is used")
def test_own_sigmoid_in_use():
    """Where numpy's float32 exp is its AVX2 loop (the one dse_sigmoid_chunk_avx2 follows), the first-use check finds
    the same bits and the compiled Sigmoid / SiLU computes its values in registers. Elsewhere (e.g. numpy's AVX-512F
    exp) the check decides, and the bits tests below run only where it turned the registers' path on."""
    assert _kernels.numpy_loops_found() and _kernels.sigmoid_own_used()


own_sigmoid_on = pytest.mark.skipif("avx2" not in ISAS or not _kernels.sigmoid_own_used(),
                                    reason="the Sigmoid / SiLU values are numpy's loops' here (first-use check)")


@own_sigmoid_on
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), times_x=st.sampled_from([0, 1, 2]), n=st.integers(1, 9000),
       nan_at=st.one_of(st.none(), st.integers(0, 8999)))
def test_own_sigmoid_gives_the_loops_bits(seed, times_x, n, nan_at):
    """The Sigmoid / SiLU values computed in registers (dse_sigmoid_chunk_avx2: numpy's float32 exp followed, then
    the IEEE add, divide and product) against numpy's loops on random float32 bit patterns and on every float32
    within 2^11 patterns of exp's edges (its inputs -x at 0, the quadrant -125 boundary, 87.3 where its results turn
    subnormal, the saturation bounds 88.72 and -103.97), both signs, lengths that end mid-vector; a NaN in a chunk
    (that chunk by the loops): the same bits."""
    assert _kernels.sigmoid_own_used()
    rng = np.random.default_rng(seed)
    edges = [int(np.array(e, np.float32).view(np.uint32)) for e in (0.0, 86.6, 87.3, 88.72283935546875,
                                                                      103.97208404541015625)]
    b = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    e = np.uint32(edges[rng.integers(len(edges))])
    near = (e.astype(np.int64) + rng.integers(-2048, 2048, n)).clip(0).astype(np.uint32)
    b = np.where(rng.random(n) < 0.5, near | (b & np.uint32(0x80000000)), b)
    x = b.view(np.float32)
    x = np.where(np.isnan(x), np.float32(1.5), x)
    if nan_at is not None and nan_at < n:
        x[nan_at] = np.nan
    with np.errstate(all="ignore"):
        own, loops = _sigmoid_both_ways(np.ascontiguousarray(x), times_x)
    _same_bits(own, loops)


def _hardsigmoid_both_ways(x, alpha, beta, times_x):
    """float_hardsigmoid of x at the avx2 level (its own values where hardsigmoid_own_used) and at the scalar level
    (numpy's loops)."""
    own, loops = np.empty_like(x), np.empty_like(x)
    _kernels.float_hardsigmoid(x, own, alpha, beta, times_x, isa="avx2")
    _kernels.float_hardsigmoid(x, loops, alpha, beta, times_x, isa="scalar")
    return own, loops


@needs_own_sigmoid
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), times_x=st.sampled_from([0, 1]), n=st.integers(1, 9000),
       ab=st.sampled_from([(1 / 6, 0.5), (0.2, 0.5), (0.25, 0.0), (-0.5, -0.0), (3.0, -1.0)]),
       nan_at=st.one_of(st.none(), st.integers(0, 8999)))
def test_own_hardsigmoid_gives_the_loops_bits(seed, times_x, n, ab, nan_at):
    """HardSigmoid / HardSwish computed in registers (dse_hardsigmoid_chunk_avx2) against numpy's loops of multiply,
    add and clip: random float32 bit patterns, values within 2^11 patterns of the clamp's ends (signed zeros at the
    lower one with a zero beta), infinities, lengths that end mid-vector, a NaN in a chunk (that chunk by the loops):
    the same bits; and they are in use at the avx2 level."""
    assert _kernels.hardsigmoid_own_used()
    rng = np.random.default_rng(seed)
    alpha, beta = (float(np.float32(v)) for v in ab)
    b = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    ends = np.array([-beta / alpha, (1 - beta) / alpha, 0.0, np.inf], np.float32).view(np.uint32)
    near = (ends[rng.integers(len(ends), size=n)].astype(np.int64) + rng.integers(-2048, 2048, n)).clip(0)
    b = np.where(rng.random(n) < 0.5, near.astype(np.uint32), b)
    x = b.view(np.float32)
    x = np.where(np.isnan(x), np.float32(-1.5), x)
    if nan_at is not None and nan_at < n:
        x[nan_at] = np.nan
    with np.errstate(all="ignore"):
        own, loops = _hardsigmoid_both_ways(np.ascontiguousarray(x), alpha, beta, times_x)
    _same_bits(own, loops)


@pytest.mark.slow
@own_sigmoid_on
def test_own_sigmoid_on_every_float32():
    """Every float32 bit pattern (2^32, in blocks of 2^24) through the Sigmoid and both SiLU products computed in
    registers against numpy's loops: the same bits. About four minutes of CPU time."""
    assert _kernels.sigmoid_own_used()
    for s in range(0, 1 << 32, 1 << 24):
        x = np.arange(s, s + (1 << 24), dtype=np.uint64).astype(np.uint32).view(np.float32)
        for times_x in (0, 1, 2):
            with np.errstate(all="ignore"):
                own, loops = _sigmoid_both_ways(x, times_x)
            _same_bits(own, loops)


def test_compiled_sigmoid_quantized_argument_checks():
    x = np.zeros(10, np.float32)
    for out, q, t in ((None, None, 1), (np.empty(9, np.float32), None, 1), (None, np.empty(11, np.uint8), 1),
                      (np.empty(10, np.float32), None, 3)):
        with pytest.raises(ValueError):
            _kernels.float_sigmoid(x, out, t, q)
        with pytest.raises(ValueError):
            _kernels.float_hardsigmoid(x, out, 0.2, 0.5, min(t, 2), q)


@settings(max_examples=100, deadline=None)
@given(x=float_arrays((np.float32,)), shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9),
                                                      st.integers(1, 9)),
       signed=st.booleans(), scale=st.sampled_from([0.02, 0.1, 1.0, 1e-3, 37.5]), isa=st.sampled_from(ISAS),
       threads=st.sampled_from([1, 2]))
def test_per_channel_mul_quantized_gives_the_two_passes_bits(x, shape, signed, scale, isa, threads):
    """A float32 tensor [B, C, H, W] times a per-channel [B, C, 1, 1] one, quantized in the same pass
    (dse.kernels.mul_quantized): the patterns of quantizing numpy's product in a pass of its own, at every ISA level,
    1 and 2 threads; NaN of both signs, infinities, signed zeros and products past the clamp or float32's range."""
    from dse.kernels import OutputQuant, mul_quantized, using_threads

    xs = (np.resize(x, int(np.prod(shape))) if x.size else np.zeros(int(np.prod(shape)), np.float32)).reshape(shape)
    rng = np.random.default_rng(int(np.prod(shape)))
    s = (rng.standard_normal(shape[:2] + (1, 1)) * 3).astype(np.float32)
    s.reshape(-1)[rng.permutation(s.size)[:s.size // 3]] = rng.choice(SPECIALS, s.size // 3)
    s.reshape(-1)[:1] = np.float32(3e38)
    for a, b in ((xs, s), (s, xs)):
        with np.errstate(all="ignore"):
            want = _kernels.quantize((a * b).reshape(-1), np.float32(scale), signed)
        with using_threads(threads):
            got = mul_quantized(xs, s, OutputQuant(scale, signed), isa)
        assert got.dtype == (np.int8 if signed else np.uint8) and got.shape == shape
        np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want)
    with pytest.raises(ValueError):
        mul_quantized(xs, s[:, :, :, :0], OutputQuant(scale, signed))


def test_compiled_glue_falls_back_where_numpy_keeps_its_loops_elsewhere(monkeypatch):
    """The compiled Sigmoid/HardSigmoid run numpy's float32 loops from its ufuncs' loop tables. This numpy has them
    there (else the tests above would compare the numpy twins with themselves); where a numpy does not,
    numpy_loops_found() is False and Sigmoid, SiLU, HardSigmoid and HardSwish take their numpy twins, with the same
    bits and no call into the compiled loops."""
    from dse.model import nn

    assert _kernels.numpy_loops_found()
    x = np.linspace(-100, 100, 5001, dtype=np.float32)
    want = {t: nn.sigmoid(x, t) for t in (0, 1, 2)}
    want_h = {t: nn.hardsigmoid(x, 0.2, 0.5, t) for t in (False, True)}

    def no_call(*a, **k):
        raise AssertionError("the compiled glue ran without numpy's loops")
    monkeypatch.setattr(_kernels, "numpy_loops_found", lambda: False)
    monkeypatch.setattr(_kernels, "float_sigmoid", no_call)
    monkeypatch.setattr(_kernels, "float_hardsigmoid", no_call)
    for t in (0, 1, 2):
        _same_bits(nn.sigmoid(x, t), want[t])
    for t in (False, True):
        _same_bits(nn.hardsigmoid(x, 0.2, 0.5, t), want_h[t])


@settings(max_examples=100, deadline=None)
@given(x=float_arrays((np.float32, np.float64)), keep=st.booleans(), axes=st.sampled_from([(2, 3), (3, 2), (-1, -2)]),
       big=st.booleans())
def test_reduce_mean_over_planes_gives_numpy_bits(x, keep, axes, big):
    """ReduceMean over the two spatial axes of a 4-D float32 tensor takes the compiled pool (GlobalAveragePool's):
    np.mean's bits, NaN at the same places (which NaN's sign wins where a plane holds several is the hardware's,
    as test_small_planes' pool test says); other dtypes and planes past MAX_REDUCED_ROW by numpy, bit for bit."""
    from dse.model.graph import Node
    from dse.model.ops import IR_OPS

    x = np.resize(x, (2, 3, 100, 90) if big else (2, 3, 5, 7)) if x.size else np.ones((2, 3, 4, 4), x.dtype)
    node = Node(name="n", op="reducemean", inputs=["x"], outputs=["y"], attrs={"axes": list(axes), "keepdims": int(keep)})
    with np.errstate(all="ignore"):
        got, want = IR_OPS["reducemean"](node, [x]), np.mean(x, axis=tuple(a % 4 for a in axes), keepdims=keep)
    nan = np.isnan(want)
    assert got.shape == want.shape and got.dtype == want.dtype and np.array_equal(np.isnan(got), nan)
    _same_bits(np.where(nan, 0, got), np.where(nan, 0, want))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sigmoid", "silu", "hardswish", "hardsigmoid"])
def test_compiled_glue_on_every_float32(kind):
    """Every float32 bit pattern (2^32, in blocks of 2^24) through the compiled Sigmoid / SiLU / HardSwish /
    HardSigmoid against the numpy expressions they replace: the same bits (SiLU: one of the two NaNs where x is NaN,
    as numpy's own multiply gives either). About a minute each on one core."""
    out = np.empty(1 << 24, np.float32)
    for s in range(0, 1 << 32, 1 << 24):
        x = np.arange(s, s + (1 << 24), dtype=np.uint64).astype(np.uint32).view(np.float32)
        with np.errstate(all="ignore"):
            if kind in ("sigmoid", "silu"):
                want = (1 / (1 + np.exp(-x))).astype(np.float32)
                _kernels.float_sigmoid(x, out, int(kind == "silu"))
                if kind == "silu":
                    _same_bits_where_one_nan(out, x * want, x, want)
                    continue
            else:
                alpha = 1 / 6 if kind == "hardswish" else 0.2
                want = np.clip(x * np.float32(alpha) + np.float32(0.5), 0, 1).astype(np.float32)
                if kind == "hardswish":
                    want = x * want
                _kernels.float_hardsigmoid(x, out, float(np.float32(alpha)), 0.5, int(kind == "hardswish"))
        _same_bits(out, want)


def _old_gelu_chain(x, cdiv, cadd, cmul, order):
    """The five GELU nodes as new arrays (the IR ops' numpy expressions, before the emulator's in-place products)."""
    from scipy.special import erf

    c = [np.float32(v) for v in (cdiv, cadd, cmul)]
    e = erf(x / c[0]).astype(np.float32)
    a = c[1] + e if order & 1 else e + c[1]
    p = a * x if order & 2 else x * a
    return p, a, (c[2] * p if order & 4 else p * c[2])


@settings(max_examples=150, deadline=None)
@given(x=float_arrays((np.float32,)), n=st.sampled_from([0, 1, 31, 33, 2047, 2048, 2049, 4096 + 37, 20000]),
       offset=st.integers(0, 15), order=st.integers(0, 7),
       consts=st.sampled_from([(1.4142135, 1.0, 0.5), (2.0, -1.0, 3.0), (0.7, 0.0, -0.5)]))
def test_compiled_gelu_chain_gives_numpy_bits(x, n, offset, order, consts):
    """The compiled GELU chain (numpy's and scipy's own loops, chunk by chunk) and its numpy twin against the five
    nodes as new arrays, bit for bit (where x and erf's chain are both NaN, one of the two NaNs), every operand
    order, lengths around the chunk size, inputs at every 4-byte offset from a 64-byte boundary, the specials; the
    compiled erf passes at every ISA level."""
    xs = _values_at_offset(x, n, offset)
    with np.errstate(all="ignore"):
        p, a, want = _old_gelu_chain(xs, *consts, order)
        from scipy.special import erf

        _same_bits(nn.erf(xs), erf(xs))
        o = np.empty_like(xs)
        _kernels.float_erf(xs, o, True)
        _same_bits(o, erf(xs))
        for isa in ISAS:
            _kernels.float_erf(xs, o, isa=isa)
            _same_bits(o, erf(xs))
        for f in (nn.gelu_chain, nn.reference_gelu_chain, "loop", *ISAS):
            if f == "loop" or f in ISAS:
                got = np.empty_like(xs)
                _kernels.float_gelu(xs, got, *consts, order, f == "loop", isa=None if f == "loop" else f)
            else:
                got = f(xs, *consts, order)
            both = np.isnan(xs) & np.isnan(a)
            # where the product met two NaNs, the result is the chosen NaN times the constant
            _same_bits(np.where(both, 0, got), np.where(both, 0, want))
            for pick in (xs, a):
                alt = pick * np.float32(consts[2])
                ok = np.ascontiguousarray(got).view(np.uint32) == np.ascontiguousarray(alt).view(np.uint32)
                both &= ~ok
            assert not both.any()


@settings(max_examples=80, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), data=st.data(), order=st.integers(0, 7),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_gelu_and_erf_on_views_in_memory_order(shape, data, order, threads, seed):
    """nn.gelu_chain and nn.erf of a view (axes permuted, sliced with steps of either sign, broadcast) give the bits of
    the contiguous copy's result, of the view's shape; a permuted dense view is read in its memory order and its
    output laid out in the same axis order (no copy: the consumer's transpose back is contiguous)."""
    from dse.kernels import using_threads

    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(shape) * 3).astype(np.float32)
    base.reshape(-1)[:3] = [np.nan, -0.0, np.inf][:base.size]
    perm = data.draw(st.permutations(range(len(shape))))
    v = base.transpose(perm)
    kind = data.draw(st.sampled_from(["dense", "step", "reversed", "broadcast"]))
    if kind == "step":
        v = v[(slice(None, None, 2),) + (slice(None),) * (v.ndim - 1)]
    elif kind == "reversed":
        v = v[..., ::-1]
    elif kind == "broadcast":
        v = np.broadcast_to(v[..., :1], v.shape[:-1] + (3,))
    c = np.ascontiguousarray(v)
    with using_threads(threads), np.errstate(all="ignore"):
        for f, args in ((nn.gelu_chain, (1.4142135, 1.0, 0.5, order)), (nn.erf, ())):
            got, want = f(v, *args), f(c, *args)
            assert got.shape == v.shape and got.dtype == np.float32
            _same_bits(np.ascontiguousarray(got), want)
            if kind == "dense":
                assert got.transpose(np.argsort(perm)).flags.c_contiguous


@pytest.mark.slow
def test_compiled_gelu_chain_on_every_float32():
    """Every float32 bit pattern (2^32, in blocks of 2^24) through the compiled erf and GELU chain with the exported
    constants (sqrt 2, 1, 0.5) against scipy's erf and the five nodes as new arrays: the same bits (one of the two
    NaNs where x is NaN); erf of |x| <= 1 and of 1 < |x| by the compiled code. About ten minutes on one core."""
    from scipy.special import erf

    assert _kernels.erf_near_used() and _kernels.erf_far_used()
    out = np.empty(1 << 24, np.float32)
    c = (float(np.float32(np.sqrt(2))), 1.0, 0.5)
    for s in range(0, 1 << 32, 1 << 24):
        x = np.arange(s, s + (1 << 24), dtype=np.uint64).astype(np.uint32).view(np.float32)
        _kernels.float_erf(x, out)
        _same_bits(out, erf(x))
        with np.errstate(all="ignore"):
            p, a, want = _old_gelu_chain(x, *c, 0)
            _kernels.float_gelu(x, out, *c, 0)
        both = np.isnan(x) & np.isnan(a)
        _same_bits(np.where(both, 0, out), np.where(both, 0, want))
        assert np.isnan(out[both]).all()


def test_compiled_erf_on_every_16th_float32_up_to_4():
    """The compiled erf (cephes' rational function for |x| <= 1, its erfc on numpy's float64 exp for 1 < |x| < 8, 1
    beyond) against scipy's float32 erf on every 16th float32 of [-4, 4] (13.6M values, both signs): the same bits
    at every ISA level (the rational function on 8 double lanes at avx512); and both compiled parts are in use."""
    from scipy.special import erf

    assert _kernels.erf_near_used() and _kernels.erf_far_used()
    b = np.arange(0, 0x40800001, 16, dtype=np.uint32)
    x = np.concatenate([b, b | np.uint32(0x80000000)]).view(np.float32)
    want = erf(x)
    out = np.empty_like(x)
    for isa in ISAS:
        _kernels.float_erf(x, out, isa=isa)
        _same_bits(out, want)


def test_erf_and_gelu_fall_back_without_scipys_loop(monkeypatch):
    """Where scipy's float32 erf loop is not found, nn.erf and nn.gelu_chain take scipy's ufunc and the numpy twin:
    the same bits."""
    from scipy.special import erf

    x = np.linspace(-5, 5, 3001, dtype=np.float32)
    want_e, want_g = nn.erf(x), nn.gelu_chain(x, 1.4142135, 1.0, 0.5)
    monkeypatch.setattr(_kernels, "erf_loop_found", lambda: False)
    monkeypatch.setattr(_kernels, "float_erf", None)
    monkeypatch.setattr(_kernels, "float_gelu", None)
    _same_bits(nn.erf(x), want_e)
    _same_bits(nn.erf(x), erf(x))
    _same_bits(nn.gelu_chain(x, 1.4142135, 1.0, 0.5), want_g)


def _rows_at_offset(shape, offset, rng, scale, specials, payloads):
    """A C-contiguous float32 array of ``shape`` starting ``offset`` floats past a 64-byte boundary: normal values
    times ``scale``, a share ``specials`` of NaN (both signs), infinities, signed zeros, the largest and smallest
    magnitudes, and a share ``payloads`` of NaNs with random payloads (which NaN a reduction returns shows)."""
    n = int(np.prod(shape))
    buf = np.empty(n + 32, np.float32)
    start = (-buf.ctypes.data // 4) % 16 + offset
    x = buf[start:start + n].reshape(shape)
    x[...] = rng.standard_normal(shape) * scale
    extreme = np.array([3.4e38, -3.4e38, 1e-45, -1e-45, 1.2e-38, 88.7, -104.0], np.float32)
    pick = rng.random(shape) < specials
    x[pick] = rng.choice(np.concatenate([SPECIALS, extreme]), int(pick.sum()))
    pick = rng.random(shape) < payloads
    bits = rng.integers(0x7F800001, 0x80000000, int(pick.sum()), dtype=np.int64).astype(np.uint32)
    x[pick] = (bits | (rng.integers(0, 2, bits.size).astype(np.uint32) << np.uint32(31))).view(np.float32)
    return x


@st.composite
def row_cases(draw):
    """Leading axes (0 to 2 of 1-5) and a row length of 1..300 (across numpy's pairwise blocks of 8 and 128) or one
    of the long ones up to MAX_REDUCED_ROW."""
    lead = tuple(draw(st.lists(st.integers(1, 5), max_size=2)))
    n = draw(st.one_of(st.integers(1, 300), st.sampled_from([1023, 1024, 1025, 2049, 4100, nn.MAX_REDUCED_ROW])))
    return dict(shape=lead + (n,), offset=draw(st.integers(0, 15)), seed=draw(st.integers(0, 2 ** 32 - 1)),
                scale=draw(st.sampled_from([0.01, 1.0, 8.0, 100.0, 1e30])),
                specials=draw(st.sampled_from([0.0, 0.01, 0.2])), payloads=draw(st.sampled_from([0.0, 0.01, 0.1])))


@settings(max_examples=200, deadline=None)
@given(case=row_cases(), threads=st.sampled_from([1, 2]), isa=st.sampled_from(ISAS))
def test_compiled_softmax_gives_numpy_bits(case, threads, isa):
    """The compiled Softmax over the last axis (numpy's own max, exp and add loops called as its reductions and
    ufuncs call them) against the numpy expression it replaced, bit for bit: NaN rows (several payloads: which NaN
    numpy's maximum returns is the one every other value of the row gets), infinities (inf - inf), overflowing and
    underflowing exps, signed zeros, rows of 1 value, rows at every 4-byte offset from a 64-byte boundary, 1 and 2
    threads, its own passes at every ISA level (numpy's loops dispatch themselves)."""
    from dse.model.graph import Node
    from dse.model.ops import IR_OPS

    x = _rows_at_offset(case["shape"], case["offset"], np.random.default_rng(case["seed"]), case["scale"],
                        case["specials"], case["payloads"])
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        want = e / e.sum(axis=-1, keepdims=True)
        got = np.empty_like(x)
        _kernels.float_softmax(x.reshape(-1, x.shape[-1]), got.reshape(-1, x.shape[-1]), threads, isa=isa)
        _same_bits(got, want)
        _same_bits(nn.softmax(x, -1), want)
        _same_bits(nn.softmax(x, x.ndim - 1), want)
        _same_bits(IR_OPS["softmax"](Node(name="s", op="softmax", inputs=["x"], outputs=["y"], attrs={"axis": -1}),
                                     [x]), want)


@settings(max_examples=120, deadline=None)
@given(case=row_cases(), threads=st.sampled_from([1, 2]),
       c=st.sampled_from([0.25, 0.125, -1.5, 3.0, 1e-30, 1e30, -0.0, np.inf, 0.1767767]), isa=st.sampled_from(ISAS))
def test_compiled_softmax_of_a_product_gives_numpy_bits(case, threads, c, isa):
    """The compiled Softmax of x times a float32 constant (the Mul before it in the same pass) against numpy's
    product then the numpy expression, bit for bit, on the cases of test_compiled_softmax_gives_numpy_bits (every
    ISA level); a NaN constant is refused."""
    x = _rows_at_offset(case["shape"], case["offset"], np.random.default_rng(case["seed"]), case["scale"],
                        case["specials"], case["payloads"])
    with np.errstate(all="ignore"):
        y = x * np.float32(c)
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        want = e / e.sum(axis=-1, keepdims=True)
        got = np.empty_like(x)
        _kernels.float_softmax(x.reshape(-1, x.shape[-1]), got.reshape(-1, x.shape[-1]), threads,
                               scale=float(np.float32(c)), isa=isa)
        _same_bits(got, want)
        _same_bits(nn.softmax(x, -1, scale=float(np.float32(c))), want)
        _same_bits(nn.softmax(x.astype(np.float64), -1, scale=float(np.float32(c))).astype(np.float32),
                   nn.reference_softmax(x.astype(np.float64) * np.float32(c), -1).astype(np.float32))
    with pytest.raises(ValueError, match="NaN"):
        _kernels.float_softmax(x.reshape(-1, x.shape[-1]), got.reshape(-1, x.shape[-1]), scale=float("nan"))


def test_softmax_falls_back_to_numpy(monkeypatch):
    """Other axes, non-contiguous rows, float64, no rows and LogSoftmax by numpy (the same bits; rows of no value
    raise numpy's error); without numpy's loops no call into the compiled pass."""
    from dse.model.graph import Node
    from dse.model.ops import IR_OPS

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 7)).astype(np.float32) * 4
    calls = []
    real = _kernels.float_softmax
    monkeypatch.setattr(_kernels, "float_softmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    for v, ax in ((x, 1), (x, 0), (x.transpose(0, 2, 1), -1), (x.astype(np.float64), -1), (x[:0], -1)):
        with np.errstate(all="ignore"):
            _same_bits(nn.softmax(v, ax), nn.reference_softmax(v, ax))
    with pytest.raises(ValueError, match="zero-size"):
        nn.softmax(x[:, :, :0], -1)
    assert not calls
    nn.softmax(x, -1)
    assert calls == [1]
    node = Node(name="s", op="logsoftmax", inputs=["x"], outputs=["y"], attrs={"axis": -1})
    _same_bits(IR_OPS["logsoftmax"](node, [x]), x - x.max(-1, keepdims=True) -
               np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)))
    monkeypatch.setattr(_kernels, "numpy_loops_found", lambda: False)
    _same_bits(nn.softmax(x, -1), nn.reference_softmax(x, -1))
    assert calls == [1]


def _vit_like(tmp_path, T=17, D=32, H=4, blocks=2):
    """A small ViT at opset 17: blocks of LayerNorm + multi-head attention (Softmax over 17 tokens) and LayerNorm +
    GELU MLP, the cls/mean token head."""
    from tests.onnx_graphs import G, attention, mlp_block, token_head

    g = G(17)
    x = "x"
    for _ in range(blocks):
        x = mlp_block(g, attention(g, x, T, D, H), D)
    return g.save(tmp_path, token_head(g, x, D), [T, D])


def _check_vit_logits(tmp_path, monkeypatch, threads, name, reference):
    """The small ViT's calibration scales, emulated logits (exact and mitch_w6) and float executor logits with
    dse.model.ops' ``name`` (the compiled pass) and with ``reference`` in its place: the same bits."""
    from dse.emulate import Emulator
    from dse.kernels import using_threads
    from dse.layer_config import LayerConfig
    from dse.model import ops
    from dse.model.float_exec import run_float
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    g = load_onnx(_vit_like(tmp_path))
    assert sum(n.op == "softmax" for n in g.nodes) == 2 and sum(n.op == "layernorm" for n in g.nodes) == 4
    rng = np.random.default_rng(4)
    calib, x = (rng.standard_normal((k, 17, 32)).astype(np.float32) * 2 for k in (8, 6))

    def run():
        qm = calibrate(g, calib)
        emu = Emulator(qm)
        cfg = {l.name: LayerConfig("mitch_w6") for l in qm.layers}
        with using_threads(threads):
            return [np.array([l.a_scale for l in qm.layers], np.float32), emu.run(x), emu.run(x, cfg),
                    run_float(g, x)]
    new = run()
    with monkeypatch.context() as m:
        m.setattr(ops, name, reference)
        old = run()
    for a, b in zip(new, old):
        _same_bits(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_vit_residual_adds_read_the_conv_output_in_place(tmp_path, monkeypatch, threads):
    """The small ViT's residual Adds (one operand a token MatMul's 1x1 conv output read channels-last) run by
    add_act on that operand's own memory, and the emulated logits (exact and mitch_w6) are those of the numpy Adds
    they replace, bit for bit."""
    import dse.kernels as K
    from dse.emulate import Emulator
    from dse.kernels import using_threads
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    g = load_onnx(_vit_like(tmp_path))
    rng = np.random.default_rng(5)
    calib, x = (rng.standard_normal((k, 17, 32)).astype(np.float32) * 2 for k in (8, 6))
    qm = calibrate(g, calib)
    cfg = {l.name: LayerConfig("mitch_w6") for l in qm.layers}
    calls = []
    real = _kernels.add_act

    def spy(*args, **kw):
        calls.append(kw.get("transposed"))
        return real(*args, **kw)

    def run():
        with using_threads(threads):
            return [Emulator(qm).run(x), Emulator(qm).run(x, cfg)]
    with monkeypatch.context() as m:
        m.setattr(_kernels, "add_act", spy)
        m.setattr(Emulator, "_channels_last", lambda self, out, shape: False)  # the convs' outputs channels-first
        new = run()
    assert sum(t is not None for t in calls) >= 2 * 4  # 2 blocks x 2 residual Adds, per configuration
    with monkeypatch.context() as m:
        m.setattr(K, "transposed_operand", lambda a, b: None)
        old = run()
    for a, b in zip(new, old):
        _same_bits(a, b)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mult", ["mitch_w6", "lut_trunc3"])
def test_vit_token_convs_read_by_residual_adds_write_channels_last(tmp_path, monkeypatch, threads, mult):
    """The small ViT's proj and fc2 convs (a residual Add reads each through the importer's from_image reshape and
    to_channels_last transpose) write their outputs channels-last on the rows kernel, so the Adds read two
    contiguous operands; the qkv conv (sliced into heads) and fc1 (read by the GELU) keep channels-first; the
    emulated logits are those of the channels-first outputs, bit for bit (mitch_w6 and a full 256-row table: 64-
    and 32-selector tiles). At the avx2 level, where both convs take the rows kernel for both tables (at avx512 the
    truncated table's fc2 takes the split path, which writes channels-first whatever is asked)."""
    import dse.kernels as K
    from dse.emulate import Emulator
    from dse.kernels import using_threads
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    if "avx2" not in K._kernels.isa_levels():
        pytest.skip("the rows kernel's channels-last output is checked at the avx2 level")
    monkeypatch.setenv("DSE_KERNEL_ISA", "avx2")
    if mult == "lut_trunc3":
        v = np.arange(256)
        v = np.where(v >= 128, v - 256, v).astype(np.int64)
        t = np.multiply.outer(v, v)
        np.save(tmp_path / "t.npy", t - (t & 7))
        mult = f"lut:{tmp_path / 't.npy'}?signed=any"
    g = load_onnx(_vit_like(tmp_path))
    rng = np.random.default_rng(6)
    calib, x = (rng.standard_normal((k, 17, 32)).astype(np.float32) * 2 for k in (8, 300))
    qm = calibrate(g, calib)
    cfg = {l.name: LayerConfig(mult) for l in qm.layers}
    calls = []
    real = K.conv2d_scaled

    def spy(*args, **kw):
        y = real(*args, **kw)
        calls.append((args[1].shape, bool(kw.get("channels_last")), y.shape[1] > 1 and y.strides[1] == y.itemsize))
        return y

    def run():
        with using_threads(threads):
            return Emulator(qm).run(x, cfg)
    with monkeypatch.context() as m:
        m.setattr(K, "conv2d_scaled", spy)
        new = run()
    asked = [c for c in calls if c[1]]
    assert sorted({c[0] for c in asked}) == [(32, 32, 1, 1), (32, 64, 1, 1)]  # proj, fc2 (not qkv, fc1)
    assert len(asked) >= 8 and len(asked) % 4 == 0  # 2 blocks x 2 convs per batch (>= 2 batches)
    assert all(c[2] for c in asked)  # the rows kernel wrote them channels-last
    with monkeypatch.context() as m:
        m.setattr(Emulator, "_channels_last", lambda self, out, shape: False)
        old = run()
    _same_bits(new, old)


@pytest.mark.parametrize("threads", [1, 2])
def test_vit_logits_are_those_of_the_numpy_softmax(tmp_path, monkeypatch, threads):
    """The small ViT (two attention blocks, Softmax over 17 tokens): calibration, emulated logits (exact and
    mitch_w6) and the float executor's logits are bit-identical with the compiled Softmax and with the numpy
    expression."""
    _check_vit_logits(tmp_path, monkeypatch, threads, "softmax", nn.reference_softmax)


@settings(max_examples=200, deadline=None)
@given(case=row_cases(), threads=st.sampled_from([1, 2]), has_bias=st.booleans(), eps=st.sampled_from([1e-5, 1e-6, 0.0]),
       weight_specials=st.sampled_from([0.0, 0.1]), isa=st.sampled_from(ISAS))
def test_compiled_layernorm_gives_numpy_bits(case, threads, has_bias, eps, weight_specials, isa):
    """The compiled LayerNorm over the last axis (numpy's own add loop for its sums) against the numpy expression it
    replaced, bit for bit: NaN rows with several payloads (the mean's NaN is what every other value of the row
    gets), infinities, extremes (sums that overflow), signed zeros, rows of 1 value, rows at every 4-byte offset from
    a 64-byte boundary, specials in scale and bias (where a NaN of theirs meets a NaN value, the result is one of
    the NaNs, as numpy's loops pick either), 1 and 2 threads, its own passes at every ISA level (numpy's loops
    dispatch themselves)."""
    from dse.model.graph import Node
    from dse.model.ops import IR_OPS

    rng = np.random.default_rng(case["seed"])
    x = _rows_at_offset(case["shape"], case["offset"], rng, case["scale"], case["specials"], case["payloads"])
    n = x.shape[-1]
    scale, bias = (_rows_at_offset((n,), 0, rng, 1.0, weight_specials, weight_specials / 2) for _ in range(2))
    bias = bias if has_bias else None
    with np.errstate(all="ignore"):
        mu = x.mean(axis=-1, keepdims=True, dtype=np.float32)
        d = x - mu
        var = (d * d).mean(axis=-1, keepdims=True, dtype=np.float32)
        y = d / np.sqrt(var + np.float32(eps))
        want = y * scale
        if has_bias:
            want = want + bias
        got = np.empty_like(x)
        _kernels.float_layernorm(x.reshape(-1, n), scale, bias, float(np.float32(eps)), got.reshape(-1, n), threads,
                                 isa=isa)
        node = Node(name="l", op="layernorm", inputs=["x"], outputs=["y"], attrs={"axis": -1, "epsilon": eps})
        for g in (got, nn.layernorm(x, scale, bias, -1, eps),
                  IR_OPS["layernorm"](node, [x, scale] + ([bias] if has_bias else []))):
            # where a NaN of scale or bias met a NaN: one of the NaNs that met (quieted; y * scale's own when made
            # there, as 0 * inf)
            met = np.isnan(y) & np.isnan(scale) | np.isnan(y * scale) & np.isnan(bias if has_bias else np.float32(0))
            _same_bits(np.where(met, 0, g), np.where(met, 0, want))
            cand = [np.ascontiguousarray(np.broadcast_to(v, x.shape)).view(np.uint32)[met] | 0x400000
                    for v in [y, scale, y * scale] + ([bias] if has_bias else [])]
            gm = _bits(g)[met]
            assert np.all(np.any([gm == c for c in cand], axis=0))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 400), n=st.integers(1, 80), seed=st.integers(0, 2 ** 32 - 1),
       specials=st.sampled_from([0.0, 0.01]), threads=st.sampled_from([1, 2]))
def test_compiled_softmax_and_layernorm_levels_agree_on_many_rows(rows, n, seed, specials, threads):
    """The passes' own loops on blocks of rows (several blocks per thread, the last one short) give the bits of the
    portable build at every ISA level, with and without the Softmax's scale and the LayerNorm's bias, NaN/inf/signed
    zero values included; the LayerNorm's against numpy's expression too."""
    rng = np.random.default_rng(seed)
    x = _rows_at_offset((rows, n), seed % 16, rng, 4.0, specials, specials)
    scale, bias = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    with np.errstate(all="ignore"):
        mu = x.mean(axis=-1, keepdims=True, dtype=np.float32)
        d = x - mu
        want_ln = d / np.sqrt((d * d).mean(axis=-1, keepdims=True, dtype=np.float32) + np.float32(1e-5)) * scale + bias
        for sc in (None, 0.25):
            ref = np.empty_like(x)
            _kernels.float_softmax(x, ref, 1, scale=sc, isa="scalar")
            for isa in ISAS:
                got = np.empty_like(x)
                _kernels.float_softmax(x, got, threads, scale=sc, isa=isa)
                _same_bits(got, ref)
        for b in (None, bias):
            ref = np.empty_like(x)
            _kernels.float_layernorm(x, scale, b, 1e-5, ref, 1, isa="scalar")
            if b is not None:
                _same_bits(ref, want_ln)
            for isa in ISAS:
                got = np.empty_like(x)
                _kernels.float_layernorm(x, scale, b, 1e-5, got, threads, isa=isa)
                _same_bits(got, ref)


def test_layernorm_falls_back_to_numpy(monkeypatch):
    """Normalisation over more than the last axis, non-contiguous rows, float64, scale or bias of another shape or
    dtype, no rows: numpy (the same bits); without numpy's loops no call into the compiled pass."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 7)).astype(np.float32) * 4
    s, b = rng.standard_normal(7).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    calls = []
    real = _kernels.float_layernorm
    monkeypatch.setattr(_kernels, "float_layernorm", lambda *a: calls.append(1) or real(*a))
    s2 = rng.standard_normal((5, 7)).astype(np.float32)
    for v, sc, bi, ax in ((x, s2, None, 1), (x.transpose(0, 2, 1)[:, :, :7].copy().transpose(0, 2, 1), s, b, -1),
                          (x[:, :, ::2], s[:4], b[:4], -1), (x.astype(np.float64), s, b, -1),
                          (x, s.astype(np.float64), b, -1), (x, s[None], b, -1), (x, s, b[None], -1), (x[:0], s, b, -1)):
        _same_bits(nn.layernorm(v, sc, bi, ax, 1e-5), nn.reference_layernorm(v, sc, bi, ax, 1e-5))
    assert not calls
    _same_bits(nn.layernorm(x, s, b, 2, 1e-5), nn.reference_layernorm(x, s, b, -1, 1e-5))
    assert calls == [1]
    monkeypatch.setattr(_kernels, "numpy_loops_found", lambda: False)
    _same_bits(nn.layernorm(x, s, None, -1, 1e-5), nn.reference_layernorm(x, s, None, -1, 1e-5))
    assert calls == [1]


@pytest.mark.parametrize("threads", [1, 2])
def test_vit_logits_are_those_of_the_numpy_layernorm(tmp_path, monkeypatch, threads):
    """The small ViT (four LayerNorms over 32 channels): calibration, emulated logits (exact and mitch_w6) and the
    float executor's logits are bit-identical with the compiled LayerNorm and with the numpy expression."""
    _check_vit_logits(tmp_path, monkeypatch, threads, "layernorm", nn.reference_layernorm)
