"""dse.quant: FxP8 rounding/clipping, per-channel weights, calibration statistics, accuracy vs float."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

from dse import kernels
from dse.arith.multipliers import get_multiplier
from dse.errors import DseError
from dse.model.onnx_import import load_onnx
from dse.quant import (MacLayer, calibrate, dequantize, exact_acc, quantize_act, quantize_weights,
                       reference_dequantize, reference_quantize_act)
from dse.model.graph import Node

RNG = np.random.default_rng(5)


@pytest.fixture
def small_model(tmp_path, onnx_builder):
    """conv(3x3, stride 2, asym pads, signed input) -> relu -> grouped conv -> relu -> flatten -> gemm."""
    groups = 2
    W1 = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.4
    W2 = RNG.standard_normal((4, 4 // groups, 2, 2)).astype(np.float32) * 0.4
    Wf = RNG.standard_normal((5, 4 * 4 * 3)).astype(np.float32) * 0.3
    inits = {"W1": W1, "W2": W2, "Wf": Wf, "b1": RNG.standard_normal(4).astype(np.float32),
             "bf": RNG.standard_normal(5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], strides=[2, 2], pads=[1, 0, 2, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2"], ["c2"], pads=[1, 1, 0, 0], group=groups, name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], transB=1, name="fc")]
    return load_onnx(onnx_builder(tmp_path, nodes, inits, [2, 6, 7], name="small.onnx"))


def test_quantize_act_round_half_even_and_clip():
    s = 0.25
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 100.0, -100.0, 0.37], np.float32) * s
    assert quantize_act(x, s, True).tolist() == [0, 2, 2, 0, -2, -2, 100, -100, 0]
    assert quantize_act(np.array([1e9, -1e9, 254.5, 253.5], np.float32), 1.0, False).tolist() == [255, 0, 254, 254]
    assert quantize_act(np.array([1e9, -1e9], np.float32), 1.0, True).tolist() == [127, -128]
    assert quantize_act(x, s, True).dtype == np.int8 and quantize_act(x, s, False).dtype == np.uint8


def test_quantize_weights_per_channel():
    W = RNG.standard_normal((6, 3, 2, 2)).astype(np.float32)
    W[2] = 0.0
    q, s = quantize_weights(W)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (6,)
    amax = np.abs(W.reshape(6, -1)).max(1)
    nz = amax > 0
    assert np.array_equal(s[nz], (amax[nz] / np.float32(127)).astype(np.float32))
    assert np.all(np.abs(q.reshape(6, -1)).max(1)[nz] == 127) and np.all(q[2] == 0)
    err = np.abs(q * s[:, None, None, None] - W).reshape(6, -1).max(1)
    assert np.all(err <= s / 2 * (1 + 1e-5))


def test_calibrate_geometry_scales_hist_and_acc_std(small_model):
    g = small_model
    x = RNG.standard_normal((9, 2, 6, 7)).astype(np.float32)
    qm = calibrate(g, x, batch_size=4)
    conv1, conv2, fc = qm.layers
    assert [l.name for l in qm.layers] == ["conv1", "conv2", "fc"]
    # geometry
    assert conv1.in_shape == (2, 6, 7) and conv1.out_shape == (4, 4, 3) and conv1.pads == (1, 0, 2, 1)
    assert (conv1.M, conv1.K, conv1.N, conv1.stride, conv1.kernel) == (12, 18, 4, (2, 2), (3, 3))
    assert (conv2.groups, conv2.K, conv2.M, conv2.out_shape) == (2, 8, 12, (4, 4, 3))
    assert (fc.op, fc.M, fc.K, fc.N, fc.in_shape, fc.out_shape) == ("gemm", 1, 48, 5, (48,), (5,))
    # activation scales: signed input (max|x| / 127), unsigned after ReLU (max / 255)
    assert conv1.a_signed and conv1.a_scale == float(np.float32(np.abs(x).max() / 127))
    from dse.model.float_exec import run_float_all
    env = run_float_all(g, x)
    assert not conv2.a_signed and conv2.a_scale == float(np.float32(env["r1"].max() / 255))
    assert qm.act_quant["r1"] == (conv2.a_scale, False)
    # act_hist: operand patterns incl. padding zeros, vs the kernels' im2col reference
    for l, t in ((conv1, "x"), (conv2, "r1")):
        q = quantize_act(env[t], l.a_scale, l.a_signed)
        cols, _, _ = kernels.im2col_T(q, *l.kernel, l.stride, l.pads, l.dilation)
        exp = np.bincount((cols.astype(np.int64) & 0xFF).ravel(), minlength=256)
        assert np.array_equal(l.act_hist, exp)
        assert l.act_hist.sum() == len(x) * l.M * l.K * l.groups
    # acc_std from exact accumulators (reference kernel, exact multiplier)
    q = quantize_act(env["r1"], conv2.a_scale, False)
    acc = kernels.reference_conv2d_int(q, conv2.w_q, get_multiplier("exact"), False, conv2.stride, conv2.pads,
                                       conv2.dilation, conv2.groups)
    assert np.array_equal(exact_acc(q, conv2), acc)
    assert np.allclose(conv2.acc_std_ch, acc.transpose(1, 0, 2, 3).reshape(4, -1).std(axis=1), rtol=1e-9)
    assert np.isclose(conv2.acc_std, acc.std(), rtol=1e-9)


def test_dequantize_formula(small_model):
    qm = calibrate(small_model, RNG.standard_normal((3, 2, 6, 7)).astype(np.float32))
    l = qm.layers[2]
    acc = RNG.integers(-10 ** 6, 10 ** 6, (3, 5))
    exp = ((acc.astype(np.float64) * l.a_scale) * l.w_scale.astype(np.float64)).astype(np.float32) + l.bias
    assert np.array_equal(dequantize(acc, l), exp)


def test_percentile_clips_outliers(small_model):
    g = small_model
    x = RNG.standard_normal((20, 2, 6, 7)).astype(np.float32)
    x[0, 0, 0, 0] = 50.0
    a = calibrate(g, x, method="max").layers[0].a_scale
    b = calibrate(g, x, method="percentile", percentile=99.0).layers[0].a_scale
    assert a == pytest.approx(50 / 127, rel=1e-6) and b < a / 5
    with pytest.raises(DseError, match="calibration method 'mse' is unknown"):
        calibrate(g, x, method="mse")
    with pytest.raises(DseError, match="input images have shape"):
        calibrate(g, x[:, :1])


@pytest.mark.parametrize("name", ["lenet5", "resnet8"])
def test_fxp8_within_half_point_of_float(name, bundled_qmodel):
    """The default calibration keeps FxP8 exact top-1 within 0.5 pp of float on the search split."""
    from dse.data import load_dataset
    from dse.emulate import Emulator
    from dse.model.float_exec import run_float

    g, qm = bundled_qmodel(name)
    s = load_dataset("fashion-mnist:search")
    f = float((run_float(g, s.images()).argmax(1) == s.y).mean())
    q = Emulator(qm).accuracy(s.images(), s.y)
    assert f > 0.88 and abs(q - f) <= 0.005


def _same_qmodel(a, b):
    assert a.act_quant == b.act_quant
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.act_hist, lb.act_hist) and la.a_scale == lb.a_scale
        assert np.allclose(la.acc_std_ch, lb.acc_std_ch, rtol=1e-12) and la.acc_std == pytest.approx(lb.acc_std)


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_calibrate_streams_batches_of_any_size(small_model, method):
    """An array, a list of uneven batches and batch_size=1 all give the same QuantModel; a one-shot iterator is
    refused (calibration reads the data more than once)."""
    g = small_model
    x = RNG.standard_normal((11, 2, 6, 7)).astype(np.float32)
    ref = calibrate(g, x, method=method, percentile=97.0)
    _same_qmodel(calibrate(g, [x[:3], x[3:4], x[4:]], method=method, percentile=97.0), ref)
    _same_qmodel(calibrate(g, x, method=method, percentile=97.0, batch_size=1), ref)
    with pytest.raises(DseError, match="re-iterable"):
        calibrate(g, iter([x]))
    with pytest.raises(DseError, match="empty"):
        calibrate(g, [])


@pytest.mark.parametrize("p", [50.0, 97.0, 99.99, 100.0])
def test_percentile_from_tail_equals_numpy(small_model, p):
    from dse.model.float_exec import run_float_all

    g = small_model
    x = (RNG.standard_normal((13, 2, 6, 7)) * RNG.uniform(0.1, 10, (13, 1, 1, 1))).astype(np.float32)
    qm = calibrate(g, [x[:5], x[5:]], method="percentile", percentile=p)
    env = run_float_all(g, x)
    for l in qm.layers:
        v = np.abs(env[l.input]).astype(np.float64)
        amax = np.percentile(v, p)
        assert l.a_scale == (pytest.approx(amax / (127 if l.a_signed else 255), rel=1e-6) if amax > 0 else 1.0)


def test_calibration_batch_is_memory_bounded():
    """A 224x224 ResNet-style stem gets a batch far below the requested 250 images."""
    from dse.quant import STREAM_BUDGET, stream_batch_size
    from types import SimpleNamespace

    node = SimpleNamespace(op="conv", inputs=["x"], output="c", params={"W": np.zeros((64, 3, 7, 7), np.float32)})
    g = SimpleNamespace(input_shape=(3, 224, 224), shapes={"x": (3, 224, 224), "c": (64, 112, 112)},
                        mac_nodes=[node])
    b = stream_batch_size(g, 250)
    assert 1 <= b < 250 and b * 16 * 64 * 112 * 112 <= STREAM_BUDGET
    assert stream_batch_size(g, 2) == 2


# ------------------------------------------------------------------------------- fused passes vs their numpy twins


@settings(deadline=None, max_examples=60)
@given(n=st.integers(0, 300), signed=st.booleans(), seed=st.integers(0, 2 ** 32 - 1), mag=st.integers(-3, 3),
       threads=st.sampled_from([1, 2]))
def test_fused_quantize_matches_numpy(n, signed, seed, mag, threads):
    """Half-way ties (round half to even), values far outside the range, -0.0, inf; 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    scale = np.float32(10.0 ** mag * rng.uniform(0.5, 2))
    x = (rng.standard_normal(n) * 200 * scale).astype(np.float32)
    x[::5] = (rng.integers(-300, 300, x[::5].shape) + 0.5) * scale  # ties after division (where exact)
    if n > 3:
        x[:4] = [np.inf, -np.inf, -0.0, 1e30]
    with kernels.using_threads(threads):
        got = quantize_act(x.reshape(1, -1), float(scale), signed)
    ref = reference_quantize_act(x.reshape(1, -1), float(scale), signed)
    assert got.dtype == ref.dtype and np.array_equal(got, ref)


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 3), N=st.integers(1, 7), S=st.integers(0, 40), seed=st.integers(0, 2 ** 32 - 1),
       big=st.booleans(), threads=st.sampled_from([1, 2]))
def test_fused_dequantize_matches_numpy(B, N, S, seed, big, threads):
    rng = np.random.default_rng(seed)
    hi = 2 ** 40 if big else 2 ** 20
    acc = rng.integers(-hi, hi, (B, N, S, 1))
    layer = MacLayer(name="l", op="conv", in_shape=(1,), out_shape=(N, S, 1), N=N,
                     w_scale=rng.uniform(1e-4, 1e-1, N).astype(np.float32),
                     bias=rng.standard_normal(N).astype(np.float32), a_scale=float(np.float32(rng.uniform(1e-3, 1))))
    with kernels.using_threads(threads):
        got = dequantize(acc, layer)
    ref = reference_dequantize(acc, layer)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), ref.view(np.uint32))


@settings(deadline=None, max_examples=60)
@given(B=st.integers(1, 3), N=st.integers(1, 5), S=st.integers(0, 37), seed=st.integers(0, 2 ** 32 - 1),
       mag=st.sampled_from([2 ** 12, 2 ** 40, 2 ** 51 - 1, 2 ** 63 - 1]), act=st.sampled_from(["none", "relu", "clip"]),
       isa=st.sampled_from(kernels._kernels.isa_levels()), threads=st.sampled_from([1, 2]),
       quant=st.sampled_from([None, False, True]))
def test_fused_dequantize_activation_every_isa_matches_numpy(B, N, S, seed, mag, act, isa, threads, quant):
    """The SIMD scaling pass with the layer's Relu/Clip fused in gives the bits of the numpy formula followed by the
    IR op: any int64 accumulator (the int64 -> double conversion rounds like the C cast), zero and -0 crossings,
    runs that are no multiple of 8, 1 and 2 threads, every ISA level; with the next layer's quantization fused in
    (``quant``: its signedness), the values of quantizing that float32 output on its own. With a bound on |acc|
    below 2^51 (``bound=mag``, up to 2^51 - 1 itself) the pass converts the sums its faster way, the same bits."""
    from dse.kernels import OutputQuant
    from dse.kernels import OutputAct, scale_accumulators
    from dse.model.ops import IR_OPS

    rng = np.random.default_rng(seed)
    acc = rng.integers(-mag, mag, (B, N, S), dtype=np.int64, endpoint=True)
    acc[:, :, ::3] = rng.integers(-8, 8, acc[:, :, ::3].shape)
    layer = MacLayer(name="l", op="conv", in_shape=(1,), out_shape=(N, S, 1), N=N,
                     w_scale=rng.uniform(1e-4, 1e-1, N).astype(np.float32),
                     bias=rng.standard_normal(N).astype(np.float32), a_scale=float(np.float32(rng.uniform(1e-3, 1))))
    layer.bias[0] = -0.0
    lo, hi = sorted(rng.uniform(-2, 2, 2).astype(np.float32))
    fused = {"none": None, "relu": OutputAct("relu"), "clip": OutputAct("clip", float(lo), float(hi))}[act]
    ref = reference_dequantize(acc.reshape(B, N, S, 1), layer)
    if act != "none":  # the IR op itself, as the unfused emulator runs it
        node = Node(name="a", op=act, inputs=["x"], outputs=["y"], attrs={"min": lo, "max": hi})
        ref = IR_OPS[act](node, [ref])
    oq = None
    if quant is not None:  # a scale spreading the smaller outputs over the 8-bit range (the rest clamps)
        oq = OutputQuant(float(np.float32(max(float(np.median(np.abs(ref))) if ref.size else 1.0, 1e-3) / 50)), quant)
        ref = reference_quantize_act(ref, oq.scale, quant)
    with kernels.using_threads(threads):
        for bound in (None, mag):
            got = scale_accumulators(acc.reshape(B, N, S, 1), layer.scaling(fused, oq), isa, bound=bound)
            assert got.dtype == ref.dtype and np.array_equal(got.view(np.uint8), ref.view(np.uint8)), bound


@pytest.mark.parametrize("isa", kernels._kernels.isa_levels())
def test_quantize_every_isa_level_matches_numpy(isa):
    """The AVX2 quantizer (8 values per step) and the scalar one give numpy's bits: ties, clamps, -0.0, infinities,
    NaN (pattern 0), a length that is no multiple of 8 and crosses the 2^16-value thread chunks, 1 and 2 threads."""
    rng = np.random.default_rng(7)
    scale = np.float32(0.037)
    x = (rng.standard_normal(3 * 2 ** 16 + 13) * 200 * scale).astype(np.float32)
    x[::7] = (rng.integers(-300, 300, x[::7].shape) + 0.5) * scale
    x[:6] = [np.inf, -np.inf, -0.0, 1e30, -1e30, np.nan]
    for signed in (False, True):
        ref = reference_quantize_act(np.nan_to_num(x, nan=0.0), float(scale), signed).view(np.uint8)
        for threads in (1, 2):
            assert np.array_equal(kernels._kernels.quantize(x, scale, signed, threads, isa), ref), (signed, threads)


@st.composite
def _strided_views(draw):
    """A float32 view of any strides: axes of 0-300 values permuted, sliced with steps of either sign, broadcast
    axes (stride 0), axes of one value; values with ties, clamps, infinities, NaN, -0.0."""
    nd = draw(st.integers(1, 5))
    shape = [draw(st.sampled_from([0, 1, 2, 3, 5, 15, 16, 17, 33, 65, 70, 257, 300])) if draw(st.booleans())
             else draw(st.integers(1, 9)) for _ in range(nd)]
    if int(np.prod(shape)) > 2 ** 18:
        shape = [min(d, 9) for d in shape]
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    steps = [draw(st.sampled_from([1, 1, 2, 3, -1, -2])) for _ in range(nd)]
    full = [max(1, d * abs(k)) for d, k in zip(shape, steps)]
    x = (rng.standard_normal(full) * 300 * 0.037).astype(np.float32)
    flat = x.reshape(-1)
    flat[::7] = (rng.integers(-300, 300, flat[::7].shape) + 0.5) * np.float32(0.037)
    flat[:6][:len(flat[:6])] = [np.inf, -np.inf, -0.0, 1e30, -1e30, np.nan][:len(flat[:6])]
    v = x[tuple(slice(None, None, k) for k in steps)][tuple(slice(0, d) for d in shape)]
    v = v.transpose(draw(st.permutations(range(nd))))
    if draw(st.booleans()):  # a broadcast axis in front or inside
        at = draw(st.integers(0, nd))
        v = np.broadcast_to(np.expand_dims(v, at), v.shape[:at] + (draw(st.sampled_from([1, 3, 17])),) + v.shape[at:])
    return v


@pytest.mark.parametrize("isa", kernels._kernels.isa_levels())
@settings(max_examples=120, deadline=None)
@given(v=_strided_views(), scale=st.sampled_from([0.037, 1.0, 1e-30, 3e-39, 1e30, 7.5]), signed=st.booleans(),
       threads=st.sampled_from([1, 2]))
def test_quantize_strided_matches_numpy_on_the_contiguous_copy(isa, v, scale, signed, threads):
    """quantize_strided (slices, transposes, broadcasts read in place: merged axes, runs along the unit-stride axis,
    16-run tiles where that is not the output's last axis, 256-value chunks, 1 and 2 threads) gives the bits of the
    quantizer on the contiguous copy at every ISA level; quantize_patterns takes it for such views."""
    c = np.ascontiguousarray(v)
    ref = reference_quantize_act(np.nan_to_num(c, nan=0.0), float(np.float32(scale)), signed).view(np.uint8)
    got = kernels._kernels.quantize_strided(v, np.float32(scale), signed, threads, isa)
    assert got.shape == v.shape and got.flags.c_contiguous and np.array_equal(got, ref)
    with kernels.using_threads(threads):
        assert np.array_equal(kernels.quantize_patterns(v, scale, signed), ref)


class _StopAt:
    """Checkpoints.stop that says stop before the ``k``-th batch it is asked about (counting every pass)."""

    def __init__(self, k):
        self.k, self.asked = k, 0

    def __call__(self):
        self.asked += 1
        return self.asked > self.k


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_stopped_and_resumed_calibration_is_bit_identical(small_model, method):
    """A calibration stopped before any batch of any pass (its progress saved), then resumed from that progress, ends
    with exactly the bits of one never stopped; stopped twice (resumed, stopped again, resumed) too."""
    from dse.quant import CalibrationStopped, Checkpoints

    g = small_model
    x = (RNG.standard_normal((10, 2, 6, 7)) * RNG.uniform(0.1, 4, (10, 1, 1, 1))).astype(np.float32)
    kw = dict(method=method, percentile=97.0, batch_size=3)
    ref = calibrate(g, x, **kw).state()
    n_batches = (2 if method == "max" else 3) * 4
    for k in range(n_batches + 1):
        saved = []
        stop = Checkpoints(_StopAt(k), saved.append)
        if k < n_batches:
            with pytest.raises(CalibrationStopped) as exc:
                calibrate(g, x, checkpoints=stop, **kw)
            assert saved == [exc.value.progress] and exc.value.progress.meta["batches"] == 4
            progress = saved[-1]
            if k + 2 <= n_batches:  # stopped once more on the way
                with pytest.raises(CalibrationStopped):
                    calibrate(g, x, checkpoints=Checkpoints(_StopAt(1), saved.append, progress), **kw)
                progress = saved[-1]
            done = calibrate(g, x, checkpoints=Checkpoints(lambda: False, saved.append, progress), **kw).state()
        else:
            done = calibrate(g, x, checkpoints=stop, **kw).state()
        assert done.meta == ref.meta and done.arrays.keys() == ref.arrays.keys()
        for name, a in ref.arrays.items():
            assert a.dtype == done.arrays[name].dtype and a.tobytes() == done.arrays[name].tobytes(), (k, name)


def test_resumed_calibration_reads_no_batch_it_had_done(small_model):
    """A data set's batches (dse.data.ImageBatches: BatchesFrom) are read from the batch a resumed pass continues
    at, not from the start."""
    from dse.quant import CalibrationStopped, Checkpoints

    g = small_model
    x = RNG.standard_normal((12, 2, 6, 7)).astype(np.float32)

    class Batches:
        def __init__(self):
            self.read = []

        def __len__(self):
            return 4

        def __iter__(self):
            return self.from_batch(0)

        def from_batch(self, k):
            for i in range(k, 4):
                self.read.append(i)
                yield x[3 * i:3 * i + 3]

    src, saved = Batches(), []
    with pytest.raises(CalibrationStopped):
        calibrate(g, src, checkpoints=Checkpoints(_StopAt(6), saved.append))  # range pass, then 2 operand batches
    src.read.clear()
    qm = calibrate(g, src, checkpoints=Checkpoints(lambda: False, saved.append, saved[-1]))
    assert src.read == [2, 3]
    _same_qmodel(qm, calibrate(g, x, batch_size=3))


def test_calibration_progress_is_saved_between_batches_and_resumes_from_any_of_them(small_model):
    """With ``every_s = 0`` the progress is saved after every batch (what a killed run leaves behind); resuming from
    any of those saves ends with the bits of the uninterrupted calibration."""
    from dse.quant import Checkpoints

    g = small_model
    x = RNG.standard_normal((7, 2, 6, 7)).astype(np.float32)
    saved = []
    ref = calibrate(g, x, batch_size=2, checkpoints=Checkpoints(lambda: False, saved.append, every_s=0.0)).state()
    assert [p.meta["next"] for p in saved] == [1, 2, 3, 4] * 2 and saved[3].meta["pass"] == "range"
    for p in saved:
        got = calibrate(g, x, batch_size=2, checkpoints=Checkpoints(lambda: False, lambda q: None, p)).state()
        assert got.meta == ref.meta
        assert all(got.arrays[k].tobytes() == a.tobytes() for k, a in ref.arrays.items())


def test_progress_of_another_calibration_is_not_resumed(small_model):
    """Progress saved by a calibration of other images (another number of batches) or another method is ignored:
    the calibration starts afresh and gives the uninterrupted bits."""
    from dse.quant import CalibrationStopped, Checkpoints

    g = small_model
    x = RNG.standard_normal((9, 2, 6, 7)).astype(np.float32)
    ref = calibrate(g, x, batch_size=3).state()
    for other_x, method in ((x[:6], "max"), (x, "percentile")):
        saved = []
        with pytest.raises(CalibrationStopped):
            calibrate(g, other_x, method=method, batch_size=3, checkpoints=Checkpoints(_StopAt(2), saved.append))
        got = calibrate(g, x, batch_size=3, checkpoints=Checkpoints(lambda: False, lambda p: None, saved[-1])).state()
        assert got.meta == ref.meta and all(got.arrays[k].tobytes() == a.tobytes() for k, a in ref.arrays.items())


def _operand_histogram_ref(q, layer):
    """The obvious reference: pad with zeros, then count every kernel tap's strided window."""
    B, C, H, W = q.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = layer.kernel, layer.stride, layer.dilation, layer.pads
    Ho, Wo = layer.out_shape[1], layer.out_shape[2]
    xp = np.zeros((B, C, H + pt + pb, W + pl + pr), dtype=np.uint8)
    xp[:, :, pt:pt + H, pl:pl + W] = q.view(np.uint8)
    hist = np.zeros(256, np.int64)
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
            hist += np.bincount(tap.ravel(), minlength=256)
    return hist


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_operand_histogram_matches_padded_taps(data):
    """The grouped-by-tap-count histogram equals counting every tap window of the zero-padded input (kernels 1-7,
    strides, dilations, asymmetric pads incl. pads wider than the kernel reaches, groups, signed and unsigned)."""
    from dse.quant import operand_histogram
    d = data.draw
    B, C, H, W = d(st.integers(1, 3)), d(st.integers(1, 4)), d(st.integers(1, 12)), d(st.integers(1, 12))
    kh, kw = d(st.integers(1, 7)), d(st.integers(1, 7))
    sh, sw, dh, dw = (d(st.integers(1, 3)) for _ in range(4))
    pads = tuple(d(st.integers(0, 4)) for _ in range(4))
    Ho = (H + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    if Ho < 1 or Wo < 1:
        return
    groups = d(st.sampled_from([g for g in (1, 2, 4) if C % g == 0]))
    lo, hi = d(st.sampled_from([(0, 256), (-128, 128), (0, 3)]))
    rng = np.random.default_rng(d(st.integers(0, 2 ** 31)))
    q = rng.integers(lo, hi, size=(B, C, H, W)).astype(np.uint8 if lo == 0 else np.int8)
    layer = MacLayer(name="l", op="conv", in_shape=(C, H, W), out_shape=(2, Ho, Wo), kernel=(kh, kw),
                     stride=(sh, sw), pads=pads, dilation=(dh, dw), groups=groups, M=Ho * Wo,
                     K=C // groups * kh * kw, N=2)
    got = operand_histogram(q, layer)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, _operand_histogram_ref(q, layer))
    assert int(got.sum()) == B * C * kh * kw * Ho * Wo


@pytest.mark.parametrize("net", ["resnet18", "mobilenetv2"])
def test_calibrate_unchanged_by_grouped_histogram(net, monkeypatch, tmp_path):
    """Everything calibrate stores (scales, weights, histograms, means, accumulator moments) is bit-identical to a
    calibration counting the histograms tap by tap, on a ResNet-style and a MobileNet-style network."""
    import sys
    from pathlib import Path
    import onnx
    from dse import quant
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_e2e
    model = bench_e2e.resnet18(32, classes=10) if net == "resnet18" else bench_e2e.mobilenetv2(32)
    onnx.save(model, str(tmp_path / "m.onnx"))
    g = load_onnx(tmp_path / "m.onnx")
    x = bench_e2e.images(6, 32, seed=2)
    fast = calibrate(g, x, batch_size=4)
    monkeypatch.setattr(quant, "operand_histogram",
                        lambda q, l: (np.bincount(q.view(np.uint8).ravel(), minlength=256).astype(np.int64)
                                      if l.op in ("gemm", "matmul") else _operand_histogram_ref(q, l)))
    ref = calibrate(g, x, batch_size=4)
    assert fast.act_quant == ref.act_quant
    for a, b in zip(fast.layers, ref.layers, strict=True):
        for f in a.__dataclass_fields__:
            va, vb = getattr(a, f), getattr(b, f)
            if isinstance(va, np.ndarray):
                assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), (a.name, f)
            else:
                assert va == vb, (a.name, f)


def test_float_baselines_stream_in_memory_bounded_batches(monkeypatch):
    """The float32 baselines (search set-up, ``dse evaluate``) run the requested 256 images in the emulator's
    memory-bounded streaming batches, not as one batch (ResNet-18 at 224 took 1.1 GiB more that way), with the same
    count of right images."""
    import dse.model.float_exec as float_exec
    import dse.quant as quant
    from dse.data import load_dataset
    from dse.emulate import float_hits
    from dse.model.onnx_import import load_onnx, resolve_model

    graph = load_onnx(resolve_model("lenet5"))
    ds = load_dataset("fashion-mnist:search").head(50)
    x, y = ds.images(), ds.y
    whole = int((float_exec.run_float(graph, x, 256).argmax(axis=1) == y).sum())
    per_image = quant.STREAM_BUDGET // quant.stream_batch_size(graph)
    monkeypatch.setattr(quant, "STREAM_BUDGET", per_image * 7)
    seen, run_all = [], float_exec.run_float_all
    monkeypatch.setattr(float_exec, "run_float_all", lambda g, xb, keep=None: seen.append(len(xb)) or run_all(g, xb, keep))
    assert float_hits(graph, x, y, 256) == whole
    assert seen == [7] * 7 + [1]
