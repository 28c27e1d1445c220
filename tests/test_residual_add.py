"""A runtime Add fused into the producing conv's scaling pass (dse.kernels.Scaling.add, dse.emulate's
_fused_residuals): the kernels against the numpy formula and the unfused passes, and whole networks fused vs unfused,
bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from dse import kernels as K
from dse.emulate import Emulator
from dse.layer_config import LayerConfig
from dse.model.onnx_import import load_onnx
from dse.prefix_cache import PrefixCache
from dse.quant import calibrate, reference_quantize_act
from tests.mac_helpers import vnni_env
from tests.reference import reference_run
from tests.test_kernels import ISAS, MULTS, PATHS, conv_shapes, int_conv_operands

RNG = np.random.default_rng(23)


@pytest.fixture(autouse=True)
def _no_env_isa(monkeypatch):
    monkeypatch.delenv("DSE_KERNEL_ISA", raising=False)


def other_operand(rng, shape, specials: bool) -> np.ndarray:
    """The Add's other float32 operand; ``specials``: with -0, +-inf and NaN among the values."""
    o = rng.normal(0, 60, shape).astype(np.float32)
    if specials and o.size:
        flat = o.reshape(-1)
        idx = rng.integers(0, flat.size, max(1, flat.size // 8))
        flat[idx] = rng.choice(np.array([-0.0, np.inf, -np.inf, np.nan], np.float32), idx.size)
    return o


def fused_reference(y: np.ndarray, other: np.ndarray, act, quant):
    """The unfused numpy steps: the conv's float32 output y, numpy's add, the IR Relu/Clip, the quantizer."""
    s = np.add(y, other)
    s = s if act is None else act.apply(s)
    if quant is None:
        return s
    with np.errstate(invalid="ignore"):  # NaN -> pattern 0
        return s, reference_quantize_act(s, quant.scale, quant.signed)


SENTINEL = np.uint32(0x7FC0DEAD)  # a NaN payload no output step writes


def unstored_sum(want):
    """What a pass with ``keep_sum`` False returns: no sum, the patterns."""
    return None, want[1]


def check_sum_unwritten(outs: list) -> None:
    """After Scaling.empty was patched by :func:`record_outputs`: every float32 output of a pass that did not keep its
    sum still holds the sentinel (nothing wrote it)."""
    for o in outs:
        assert np.all(o.view(np.uint32).reshape(-1) == SENTINEL), "a pass wrote the sum it was told not to store"
    outs.clear()


def record_outputs(monkeypatch) -> list:
    """Scaling.empty patched: each float32 output of a pass with ``keep_sum`` False filled with the sentinel and
    appended to the returned list."""
    outs, real = [], K.Scaling.empty

    def empty(self, shape):
        out, q = real(self, shape)
        if not self.keep_sum:
            out.view(np.uint32)[...] = SENTINEL
            outs.append(out)
        return out, q

    monkeypatch.setattr(K.Scaling, "empty", empty)
    return outs


def assert_same(got, want, msg):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == 2, msg
        for g, w in zip(got, want):
            if w is None:
                assert g is None, msg
                continue
            assert g.dtype == w.dtype and g.shape == w.shape and np.array_equal(g.view(np.uint8), w.view(np.uint8)), msg
    else:
        assert got.dtype == want.dtype and got.shape == want.shape and \
            np.array_equal(got.view(np.uint8), want.view(np.uint8)), msg


@settings(deadline=None, max_examples=40)
@given(s=conv_shapes, signed=st.booleans(), mname=st.sampled_from(sorted(MULTS)), seed=st.integers(0, 2 ** 32 - 1),
       act=st.sampled_from([None, "relu", "clip"]), quant=st.sampled_from([None, False, True]),
       slice_bytes=st.sampled_from([8, 1 << 22]), specials=st.booleans(), threads=st.sampled_from([1, 2]),
       keep_sum=st.booleans())
def test_conv2d_scaled_with_add_matches_unfused(s, signed, mname, seed, act, quant, slice_bytes, specials, threads,
                                                keep_sum):
    """conv2d_scaled with a fused Add (every path, every ISA level, VNNI on and off, image slices down to one image,
    1 and 2 threads) gives the bits of the conv's float32 output (the numpy formula on the reference sums), then
    numpy's add, Relu/Clip and the quantizer; also those of the unfused kernels (conv2d_scaled, then add_act). With
    a quant and ``keep_sum`` False: the same patterns, no sum, and its float32 output never written."""
    rng = np.random.default_rng(seed)
    x, w, G = int_conv_operands(rng, s, signed)
    if s["extreme"]:
        x = np.where(x % 2 == 0, *((-128, 127) if signed else (0, 255)))
    mult = MULTS[mname]
    n_out = w.shape[0]
    args = (s["stride"], s["pads"], s["dil"], G)
    a_scale = float(rng.uniform(1e-3, 1))
    w_scale, bias = rng.uniform(1e-3, 1, n_out).astype(np.float32), rng.normal(0, 100, n_out).astype(np.float32)
    acc = K.reference_conv2d_int(x, w, mult, signed, *args).astype(np.float64)
    y = ((acc * a_scale) * w_scale.astype(np.float64)[None, :, None, None]).astype(np.float32) + \
        bias[None, :, None, None]
    other = other_operand(rng, y.shape, specials)
    lo, hi = sorted(rng.normal(0, 50, 2))
    oact = None if act is None else K.OutputAct(act, float(np.float32(lo)), float(np.float32(hi)))
    oquant = None
    if quant is not None:
        fin = np.abs(y + other)[np.isfinite(y + other)]
        oquant = K.OutputQuant(float(np.float32(max(float(fin.max(initial=1.0)), 1.0) / rng.choice([64, 127, 300]))),
                               quant)
    want = fused_reference(y, other, oact, oquant)
    keep_sum = keep_sum or oquant is None
    sc = K.Scaling(a_scale, w_scale, bias, oact, oquant, other, keep_sum)
    plain = K.Scaling(a_scale, w_scale, bias)
    with pytest.MonkeyPatch.context() as mp:
        outs = record_outputs(mp)
        mp.setattr(K, "_SCALED_SLICE_BYTES", slice_bytes)
        mp.setattr(K, "_FUSED_SLICE_BYTES", slice_bytes)
        mp.setattr(K, "_SCALED_SLICE_MIN_POS", 1)
        for vnni in (True, False):
            with vnni_env(vnni), K.using_threads(threads):
                for path in PATHS + (["exact"] if mname == "exact" else []):
                    for isa in ISAS:
                        got = K.conv2d_scaled(x, w, mult, signed, sc, *args, path=path, isa=isa)
                        assert_same(got, want if keep_sum else unstored_sum(want), (path, isa, vnni))
                        check_sum_unwritten(outs)
                unfused = K.add_act(K.conv2d_scaled(x, w, mult, signed, plain, *args), other, oact, oquant)
                assert_same(unfused if oquant is not None else unfused[0], want, "unfused")


@settings(deadline=None, max_examples=40)
@given(B=st.integers(1, 4), N=st.integers(1, 9), S=st.sampled_from([1, 7, 16, 33, 70]),
       act=st.sampled_from([None, "relu", "clip"]), quant=st.sampled_from([None, False, True]),
       bound=st.booleans(), specials=st.booleans(), seed=st.integers(0, 2 ** 32 - 1), keep_sum=st.booleans())
def test_scale_accumulators_with_add(B, N, S, act, quant, bound, specials, seed, keep_sum):
    """The int64 scaling pass (dse_dequantize: sums of any size, or under a bound) with a fused Add, every ISA level,
    1 and 2 threads: the numpy formula, numpy's add, Relu/Clip, quantizer (with a quant and ``keep_sum`` False: the
    patterns only, the float32 output never written)."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2 ** 40, 2 ** 40, (B, N, S)) >> int(rng.integers(0, 40))
    a_scale = float(rng.uniform(1e-3, 1)) / max(1.0, float(np.abs(acc).max(initial=1)) / 1e4)
    w_scale, bias = rng.uniform(1e-3, 1, N).astype(np.float32), rng.normal(0, 100, N).astype(np.float32)
    y = ((acc.astype(np.float64) * a_scale) * w_scale.astype(np.float64)[None, :, None]).astype(np.float32) + \
        bias[None, :, None]
    other = other_operand(rng, y.shape, specials)
    oact = None if act is None else K.OutputAct(act, *sorted(float(np.float32(v)) for v in rng.normal(0, 50, 2)))
    oquant = None if quant is None else K.OutputQuant(float(np.float32(rng.uniform(0.05, 3))), quant)
    want = fused_reference(y, other, oact, oquant)
    keep_sum = keep_sum or oquant is None
    sc = K.Scaling(a_scale, w_scale, bias, oact, oquant, other, keep_sum)
    with pytest.MonkeyPatch.context() as mp:
        outs = record_outputs(mp)
        for threads in (1, 2):
            with K.using_threads(threads):
                for isa in ISAS:
                    got = K.scale_accumulators(acc, sc, isa, bound=int(np.abs(acc).max(initial=0)) if bound else None)
                    assert_same(got, want if keep_sum else unstored_sum(want), (isa, threads))
                    check_sum_unwritten(outs)


def test_fused_add_checks_its_operands():
    """A fused Add needs an operand of the output's shape, and the kernels' outputs inside the base array; only an
    add's sum with its quantized input may go unstored."""
    acc = np.zeros((2, 3, 4), np.int64)
    with pytest.raises(ValueError, match="unstored"):
        K.Scaling(1.0, np.ones(3, np.float32), np.zeros(3, np.float32), add=np.zeros((2, 3, 4), np.float32),
                  keep_sum=False)
    with pytest.raises(ValueError, match="unstored"):
        K.Scaling(1.0, np.ones(3, np.float32), np.zeros(3, np.float32), quant=K.OutputQuant(1.0, False),
                  keep_sum=False)
    with pytest.raises(ValueError, match="unwritten"):
        K._kernels.dequantize(acc, 1.0, np.ones(3, np.float32), np.zeros(3, np.float32), out=np.zeros((2, 3, 4),
                              np.float32), add=(np.zeros((2, 3, 4), np.float32), None, False))
    sc = K.Scaling(1.0, np.ones(3, np.float32), np.zeros(3, np.float32), add=np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match="fused add"):
        K.scale_accumulators(acc, sc)
    with pytest.raises(ValueError, match="base array"):
        K._kernels.dw_conv(np.zeros((1, 1, 3, 3), np.uint8), np.zeros((1, 1, 1), np.uint8), "values",
                           np.zeros((256, 256), np.int32), np.zeros(256, np.int16), np.ones(256, np.int16), 1,
                           (1, 1), (0, 0), (1, 1), (3, 3), False,
                           scaling=(1.0, np.ones(1, np.float32), np.zeros(1, np.float32), "none", 0, 0, None,
                                    (np.zeros(4, np.float32), np.zeros(4, np.float32), None)))


# ----------------------------------------------------------------------------------------------- whole networks
def _w(*s, scale=0.4):
    return (RNG.standard_normal(s) * scale).astype(np.float32)


def _conv(name, x, out, W, b=None, **attrs):
    return helper.make_node("Conv", [x, W] + ([b] if b else []), [out], name=name, **attrs)


def resnet_style(relu_after_add: bool):
    """Stem conv + Relu; block 1 (identity skip): conv + Relu, conv, Add (+ Relu); block 2 (projection skip computed
    after the block's second conv): conv/2 + Relu, conv, 1x1/2 conv of the block input, Add (+ Relu); a conv reading
    the last Add, GAP, gemm."""
    inits = {"W0": _w(6, 3, 3, 3), "b0": _w(6), "W1": _w(6, 6, 3, 3), "b1": _w(6), "W2": _w(6, 6, 3, 3), "b2": _w(6),
             "W3": _w(8, 6, 3, 3), "b3": _w(8), "W4": _w(8, 8, 3, 3), "b4": _w(8), "Ws": _w(8, 6, 1, 1), "bs": _w(8),
             "W5": _w(8, 8, 1, 1), "Wf": _w(4, 8), "bf": _w(4)}
    nodes = [_conv("stem", "x", "s", "W0", "b0", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["s"], ["sr"]),
             _conv("c1", "sr", "h1", "W1", "b1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h1"], ["h1r"]),
             _conv("c2", "h1r", "h2", "W2", "b2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["h2", "sr"], ["a1" if relu_after_add else "a1r"])]
    if relu_after_add:
        nodes.append(helper.make_node("Relu", ["a1"], ["a1r"]))
    nodes += [_conv("c3", "a1r", "h3", "W3", "b3", pads=[1, 1, 1, 1], strides=[2, 2]),
              helper.make_node("Relu", ["h3"], ["h3r"]),
              _conv("c4", "h3r", "h4", "W4", "b4", pads=[1, 1, 1, 1]),
              _conv("skip", "a1r", "sk", "Ws", "bs", strides=[2, 2]),
              helper.make_node("Add", ["sk", "h4"], ["a2" if relu_after_add else "a2r"])]
    if relu_after_add:
        nodes.append(helper.make_node("Relu", ["a2"], ["a2r"]))
    nodes += [_conv("c5", "a2r", "h5", "W5"), helper.make_node("GlobalAveragePool", ["h5"], ["gp"]),
              helper.make_node("Flatten", ["gp"], ["f"]),
              helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], transB=1, name="fc")]
    return nodes, inits, [3, 9, 8]


def mbv2_style():
    """Stem conv + Clip; inverted residual without Relu after the Add (1x1 expand + Clip, depthwise + Clip, 1x1
    project, Add of the block input); a second one whose Add is the last MAC layer's input and feeds a Clip that is
    not the Add's only reader; the input image itself as the other operand of an Add of a 1x1 conv of it."""
    inits = {"W0": _w(3, 3, 3, 3), "b0": _w(3), "We": _w(9, 3, 1, 1), "be": _w(9), "Wd": _w(9, 1, 3, 3),
             "Wp": _w(3, 9, 1, 1), "bp": _w(3), "We2": _w(9, 3, 1, 1), "Wd2": _w(9, 1, 3, 3), "Wp2": _w(3, 9, 1, 1),
             "Wx": _w(3, 3, 1, 1), "Wf": _w(4, 3 * 8 * 8), "bf": _w(4), "lo": np.float32(0), "hi": np.float32(6)}
    nodes = [_conv("xc", "x", "xc", "Wx"), helper.make_node("Add", ["x", "xc"], ["x1"]),
             _conv("stem", "x1", "s", "W0", "b0", pads=[1, 1, 1, 1]), helper.make_node("Clip", ["s", "lo", "hi"], ["s6"]),
             _conv("e1", "s6", "e", "We", "be"), helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]),
             _conv("d1", "e6", "d", "Wd", pads=[1, 1, 1, 1], group=9), helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
             _conv("p1", "d6", "p", "Wp", "bp"), helper.make_node("Add", ["s6", "p"], ["r1"]),
             _conv("e2", "r1", "e2o", "We2"), helper.make_node("Clip", ["e2o", "lo", "hi"], ["e26"]),
             _conv("d2", "e26", "d2o", "Wd2", pads=[1, 1, 1, 1], group=9),
             helper.make_node("Clip", ["d2o", "lo", "hi"], ["d26"]),
             _conv("p2", "d26", "p2o", "Wp2"), helper.make_node("Add", ["p2o", "r1"], ["r2"]),
             helper.make_node("Clip", ["r2", "lo", "hi"], ["r26"]), helper.make_node("Add", ["r26", "r2"], ["r3"]),
             helper.make_node("Flatten", ["r3"], ["f"]),
             helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], transB=1, name="fc")]
    return nodes, inits, [3, 8, 8]


NETS = {"resnet_relu": (lambda: resnet_style(True), ["c2", "skip"]),
        "resnet_linear": (lambda: resnet_style(False), ["c2", "skip"]),
        "mbv2": (mbv2_style, ["xc", "p1", "p2"])}


@pytest.fixture(scope="module", params=sorted(NETS))
def net(request, tmp_path_factory, onnx_builder):
    nodes, inits, shape = NETS[request.param][0]()
    g = load_onnx(onnx_builder(tmp_path_factory.mktemp(request.param), nodes, inits, shape, name="m.onnx"))
    qm = calibrate(g, RNG.standard_normal((16, *shape)).astype(np.float32) * 2)
    return request.param, qm, (RNG.standard_normal((7, *shape)) * 2).astype(np.float32)


def _configs(qm):
    names = [l.name for l in qm.layers]
    return [None, {n: LayerConfig("mitch_w6") for n in names}, {n: LayerConfig("drum6") for n in names},
            {n: LayerConfig(m) for n, m in zip(names, ["exact", "bf16", "mitch_w6", "perf_j1_k2", "trunc_op2"] * 3)},
            {n: LayerConfig("drum4", cv=i % 2 == 1) for i, n in enumerate(names)},
            {n: LayerConfig("bf16" if i % 3 == 2 else "exact") for i, n in enumerate(names)}]


@pytest.mark.parametrize("threads", [1, 2])
def test_networks_fused_equal_unfused(net, threads):
    """ResNet-style (with and without Relu after the Add, the skip computed after the conv), MobileNetV2-style and
    input-skip networks: logits with the Adds fused into the convs' scaling passes equal those of the unfused run and
    of the reference emulator bit for bit, for exact, table, separable and mixed configurations (float-domain and CV
    convs take the unfused path), also through the prefix cache and with an accumulator hook."""
    name, qm, x = net
    fused, plain = Emulator(qm), Emulator(qm)
    plain._plan["residuals"] = {}
    assert sorted(fused.graph.nodes[i].name for i in fused._plan["residuals"]) == sorted(NETS[name][1])
    with K.using_threads(threads):
        seen = check_fused_equals_plain(fused, plain, qm, x)
    assert set(NETS[name][1]) <= set(seen)


def check_fused_equals_plain(fused: Emulator, plain: Emulator, qm, x) -> list:
    """For every configuration of :func:`_configs`: ``plain``'s logits equal the reference emulator's and ``fused``'s
    equal ``plain``'s bit for bit, also twice through one prefix cache (storing, then continuing from it); then the
    two agree with an accumulator hook on the all-exact configuration. Returns the layers the hook saw."""
    from dse.correction import cv_correction

    cache = PrefixCache(1 << 26)
    for cfg in _configs(qm):
        want = plain.run(x, cfg, batch_size=4)
        assert np.array_equal(want.view(np.uint32), reference_run(qm, x, cfg or {}, cv_correction).view(np.uint32))
        assert np.array_equal(fused.run(x, cfg, batch_size=4).view(np.uint32), want.view(np.uint32)), cfg
        for _ in range(2):
            got = fused.run(x, cfg, batch_size=4, cache=cache, tag="t")
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), cfg
    seen = []
    got = fused.run(x, None, batch_size=4, hook=lambda call, acc: seen.append(call.layer.name) or acc)
    assert np.array_equal(got.view(np.uint32), plain.run(x, None, batch_size=4).view(np.uint32))
    return seen


def record_own_quantizations(monkeypatch) -> list:
    """The list that the emulator's runs append each tensor to that they quantize on their own (its quantized form
    not already written by a fused pass)."""
    quantized, real_q = [], Emulator._quantized

    def quantize(t, v, scale, signed, qcache):
        if t not in qcache:
            quantized.append(t)
        return real_q(t, v, scale, signed, qcache)

    monkeypatch.setattr(Emulator, "_quantized", staticmethod(quantize))
    return quantized


def test_fusion_runs_in_the_scaling_pass(net, monkeypatch):
    """The fused Adds never reach add_act on an integer configuration: the conv's pass wrote their result, and the
    quantized input of their integer readers (none of them quantizes the sum itself)."""
    name, qm, x = net
    emu = Emulator(qm)
    calls, real = [], K.add_act
    monkeypatch.setattr(K, "add_act", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    quantized = record_own_quantizations(monkeypatch)
    emu.run(x, None)
    fused_q = {f.out for i, f in emu._plan["residuals"].items() if f.add in emu._plan["adds"]}
    assert fused_q and not fused_q & set(quantized)
    passes = {i for i in set(emu._plan["acts"]) | set(emu._plan["adds"]) if Emulator._runtime_add(qm.graph.nodes[i])}
    assert emu._plan["residuals"] and len(calls) == len(passes - {f.add for f in emu._plan["residuals"].values()})


def test_sum_read_only_by_integer_convs_is_not_stored(net, monkeypatch):
    """A fused Add's float32 sum is left unstored (``keep_sum`` False, never written) exactly where only conv/gemm
    layers read it, all on integer tables, and no prefix-cache cut stored by the run lies where it is live: the
    ResNet-style blocks' sums and the input-skip Add's (read by the stem conv alone); not the MobileNetV2-style sums
    that another Add or a Clip reads, nor where a reader runs a float-domain multiplier or a stored cut holds the
    sum; the logits stay the unfused run's."""
    name, qm, x = net
    fused, plain = Emulator(qm), Emulator(qm)
    plain._plan["residuals"] = {}
    outs = record_outputs(monkeypatch)
    kept, real = [], K.conv2d_scaled
    monkeypatch.setattr(K, "conv2d_scaled", lambda *a, **k: (a[4].add is not None and kept.append(a[4].keep_sum)) or
                        real(*a, **k))
    n = len(x)
    want = plain.run(x, None, batch_size=n)
    kept.clear()
    assert np.array_equal(fused.run(x, None, batch_size=n).view(np.uint32), want.view(np.uint32))
    readers = {"resnet_relu": ["c3", "c5"], "resnet_linear": ["c3", "c5"], "mbv2": ["stem"]}[name]
    nb = len(kept) // len(NETS[name][1])  # the run's batches
    assert nb and len(kept) == nb * len(NETS[name][1]) and kept.count(False) == nb * len(readers), kept
    check_sum_unwritten(outs)
    names = [l.name for l in qm.layers]
    for r in readers:  # one float-domain reader: that sum is stored
        cfg = {m: LayerConfig("bf16" if m == r else "exact") for m in names}
        kept.clear()
        assert np.array_equal(fused.run(x, cfg, batch_size=n).view(np.uint32),
                              plain.run(x, cfg, batch_size=n).view(np.uint32))
        assert kept.count(False) == nb * (len(readers) - 1), (r, kept)
    cache = PrefixCache(1 << 26)  # storing every cut (the first run), then continuing from the last one
    for i in range(2):
        kept.clear()
        assert np.array_equal(fused.run(x, None, batch_size=n, cache=cache, tag="s").view(np.uint32),
                              want.view(np.uint32))
        assert i or False not in kept, kept
    check_sum_unwritten(outs)
