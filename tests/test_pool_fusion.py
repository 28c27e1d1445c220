"""A max pool fused into the conv before it (dse.kernels.conv2d_scaled_max_pool, dse.emulate's _fused_pools; on the
broadcast conv kernel each task's images are pooled from the cache and the conv's output is never stored): the
kernel against the numpy steps, and whole networks fused vs unfused, bit for bit."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from onnx import helper

from dse import _kernels
from dse import kernels as K
from dse.arith.multipliers import EXACT, get_multiplier
from dse.emulate import Emulator
from dse.model import nn
from dse.model.onnx_import import load_onnx
from dse.quant import calibrate, reference_quantize_act
from tests.mac_helpers import conv_kernel_env, vnni_env
from tests.test_residual_add import _conv, _w, check_fused_equals_plain, record_own_quantizations

ISAS = _kernels.isa_levels()
RNG = np.random.default_rng(31)


@pytest.fixture(autouse=True)
def _no_env_isa(monkeypatch):
    monkeypatch.delenv("DSE_KERNEL_ISA", raising=False)


@st.composite
def fused_cases(draw):
    k = draw(st.sampled_from([(1, 1), (3, 3), (5, 5), (7, 7), (2, 5)]))
    pk = (draw(st.integers(2, 3)), draw(st.integers(2, 3)))
    return dict(B=draw(st.integers(1, 3)), C=draw(st.sampled_from([1, 3, 4, 16, 17])), N=draw(st.integers(1, 70)),
                H=draw(st.integers(4, 40)), W=draw(st.integers(4, 72)), k=k,
                stride=draw(st.sampled_from([(1, 1), (2, 2), (1, 2)])),
                pads=tuple(draw(st.integers(0, kk // 2)) for kk in k + k),
                pool=K.MaxPoolStep(pk, (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                                   tuple(draw(st.integers(0, kk - 1)) for kk in pk + pk),
                                   (draw(st.integers(1, 2)), 1), draw(st.booleans()),
                                   draw(st.sampled_from([None, K.OutputQuant(0.05, False), K.OutputQuant(0.02, True)]))),
                act=draw(st.sampled_from([None, K.OutputAct("relu"), K.OutputAct("clip", -1.5, 2.0)])),
                signed=draw(st.booleans()), threads=draw(st.sampled_from([1, 2])), seed=draw(st.integers(0, 2 ** 32 - 1)))


@settings(deadline=None, max_examples=40)
@given(c=fused_cases())
def test_conv_max_pool_equals_the_unfused_steps(c):
    """conv2d_scaled_max_pool equals numpy's max pool of scale_accumulators of the numpy reference conv, and the
    quantizer of that, at every ISA level, VNNI on and off, 1 and 2 threads, the conv kernel forced to bcast and
    auto: ties (small integer operands), signed zeros (negative weight scales, -0 biases), no Relu, Clip, ceil mode,
    asymmetric pads, dilation; at the avx512 level with VNNI on the broadcast kernel ran the pool."""
    rng = np.random.default_rng(c["seed"])
    B, C, N, (kh, kw), signed, pool = c["B"], c["C"], c["N"], c["k"], c["signed"], c["pool"]
    H, W = max(c["H"], kh), max(c["W"], kw)
    x = rng.integers(-3, 4, (B, C, H, W)) if signed else rng.integers(0, 4, (B, C, H, W))
    w = rng.integers(-2, 3, (N, C, kh, kw))
    ref = K.reference_conv2d_int(x, w, EXACT, signed, c["stride"], c["pads"])
    sw = rng.choice(np.array([0.5, -0.5, 0.25], np.float32), N)
    bias = rng.choice(np.array([0.0, -0.0, 0.5, -1.0], np.float32), N)
    sc = K.Scaling(1.0, sw, bias, c["act"])
    y = K.scale_accumulators(ref, sc)
    try:
        hw = nn.out_hw(y.shape[2:], pool.kernel, pool.stride, pool.pads, pool.dilation, pool.ceil)
    except Exception:
        return
    z = nn.reference_max_pool(y, pool.kernel, pool.stride, pool.pads, pool.dilation, pool.ceil)
    assert z.shape[2:] == hw
    q = None if pool.quant is None else reference_quantize_act(z, pool.quant.scale, pool.quant.signed)
    seen, real = [], _kernels.int_gemm

    def spy(*a, **kw):
        r = real(*a, **kw)
        seen.append(kw.get("pool") is not None and r is not None)
        return r
    for isa in ISAS:
        for vnni in (True, False):
            for ck in ("bcast", "auto"):
                seen.clear()
                with conv_kernel_env(ck), vnni_env(vnni), K.using_threads(c["threads"]), \
                        mock.patch.object(K._kernels, "int_gemm", spy):
                    gz, gq = K.conv2d_scaled_max_pool(x, w, EXACT, signed, sc, pool, c["stride"], c["pads"], isa=isa)
                assert gz.dtype == np.float32 and np.array_equal(gz.view(np.uint32), z.view(np.uint32)), (isa, vnni, ck)
                assert (gq is None) == (q is None)
                if q is not None:
                    assert gq.dtype == q.dtype and np.array_equal(gq, q), (isa, vnni, ck)
                if isa == "avx512" and vnni and ck == "bcast" and "avx512" in _kernels.vnni_levels():
                    assert any(seen), seen
                    event("fused on the broadcast kernel")


@settings(deadline=None, max_examples=40)
@given(c=fused_cases(), B=st.integers(1, 6), mname=st.sampled_from(["mitch_w6", "exact"]),
       slice_bytes=st.sampled_from([1, 3000, 20000, 1 << 23]))
def test_conv_max_pool_in_image_slices(c, B, mname, slice_bytes):
    """Off the broadcast kernel (full tables such as Mitch-w on the rows kernel, or any conv below the avx512 level)
    conv2d_scaled_max_pool runs the conv, pool and quantization per slice of images of about _POOL_SLICE_BYTES of
    conv output (here 1 image, a few, all): the same bits as numpy's max pool of scale_accumulators of the numpy
    reference conv and its quantizer, at every ISA level, 1 and 2 threads, 8-bit operands over their whole range."""
    rng = np.random.default_rng(c["seed"])
    C, N, (kh, kw), signed, pool = c["C"], c["N"], c["k"], c["signed"], c["pool"]
    mult = get_multiplier(mname)
    H, W = max(c["H"], kh), max(c["W"], kw)
    x = rng.integers(-128, 128, (B, C, H, W)) if signed else rng.integers(0, 256, (B, C, H, W))
    w = rng.integers(-128, 128, (N, C, kh, kw))
    sc = K.Scaling(np.float32(0.01), rng.uniform(-0.05, 0.05, N).astype(np.float32),
                   rng.uniform(-2, 2, N).astype(np.float32), c["act"])
    y = K.scale_accumulators(K.reference_conv2d_int(x, w, mult, signed, c["stride"], c["pads"]), sc)
    try:
        nn.out_hw(y.shape[2:], pool.kernel, pool.stride, pool.pads, pool.dilation, pool.ceil)
    except Exception:
        return
    z = nn.reference_max_pool(y, pool.kernel, pool.stride, pool.pads, pool.dilation, pool.ceil)
    q = None if pool.quant is None else reference_quantize_act(z, pool.quant.scale, pool.quant.signed)
    for isa in ISAS:
        with mock.patch.object(K, "_POOL_SLICE_BYTES", slice_bytes), K.using_threads(c["threads"]):
            gz, gq = K.conv2d_scaled_max_pool(x, w, mult, signed, sc, pool, c["stride"], c["pads"], isa=isa)
        assert gz.dtype == np.float32 and np.array_equal(gz.view(np.uint32), z.view(np.uint32)), isa
        assert (gq is None) == (q is None)
        if q is not None:
            assert gq.dtype == q.dtype and np.array_equal(gq, q), isa


def test_fused_pool_checks_its_arguments():
    """int_gemm's pool takes the broadcast kernel, a float32 scaling without add, no out, and outputs of the pooled
    shape."""
    x = np.zeros((1, 3, 8, 8), np.uint8)
    wp = np.zeros((4, 27), np.uint8)
    tab = np.zeros((256, 1), np.int16)
    sc = (1.0, np.ones(4, np.float32), np.zeros(4, np.float32), "none", 0, 0, None, None)
    conv = (x, 0, (3, 3), (1, 1), (1, 1), (1, 1), (8, 8))
    z = np.empty((1, 4, 4, 4), np.float32)
    spec = ((2, 2), (2, 2), (0, 0), (1, 1), (4, 4), z, None, 1.0, False)
    with pytest.raises(ValueError, match="fused pool"):
        _kernels.int_gemm(None, wp, tab, "u8", tab, 1, None, "avx512", 1, sc, conv=conv, conv_kernel="im2col", pool=spec)
    with pytest.raises(ValueError, match="fused pool"):
        _kernels.int_gemm(None, wp, tab, "u8", tab, 1, None, "avx512", 1, sc[:6] + ((0.1, False), None), conv=conv,
                          conv_kernel="bcast", pool=spec)
    with pytest.raises(ValueError, match="pool's outputs"):
        _kernels.int_gemm(None, wp, tab, "u8", tab, 1, None, "avx512", 1, sc, conv=conv, conv_kernel="bcast",
                          pool=spec[:5] + (np.empty((1, 4, 3, 4), np.float32),) + spec[6:])


# ----------------------------------------------------------------------------------------------- whole networks
def resnet_stem(relu: bool, ceil: bool):
    """ResNet's stem: 5x5/2 conv (+ Relu), 3x3/2 max pool (or 2x2/2 in ceil mode), a block whose identity skip adds
    the pool's output (its first conv also reads it), a conv reading the Add, GAP, gemm."""
    inits = {"W0": _w(16, 3, 5, 5), "b0": _w(16), "W1": _w(16, 16, 3, 3), "b1": _w(16), "W2": _w(16, 16, 3, 3),
             "b2": _w(16), "W5": _w(8, 16, 1, 1), "Wf": _w(4, 8), "bf": _w(4)}
    pool = dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1) if ceil else \
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    nodes = [_conv("stem", "x", "s", "W0", "b0", pads=[2, 2, 2, 2], strides=[2, 2])]
    nodes += [helper.make_node("Relu", ["s"], ["sr"])] if relu else [helper.make_node("Identity", ["s"], ["sr"])]
    nodes += [helper.make_node("MaxPool", ["sr"], ["p"], **pool),
              _conv("c1", "p", "h1", "W1", "b1", pads=[1, 1, 1, 1]), helper.make_node("Relu", ["h1"], ["h1r"]),
              _conv("c2", "h1r", "h2", "W2", "b2", pads=[1, 1, 1, 1]), helper.make_node("Add", ["h2", "p"], ["a1"]),
              helper.make_node("Relu", ["a1"], ["a1r"]), _conv("c5", "a1r", "h5", "W5"),
              helper.make_node("GlobalAveragePool", ["h5"], ["gp"]), helper.make_node("Flatten", ["gp"], ["f"]),
              helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], transB=1, name="fc")]
    return nodes, inits, [3, 27, 30]


NETS = {"relu_pool": lambda: resnet_stem(True, False), "ceil_pool": lambda: resnet_stem(True, True),
        "linear_pool": lambda: resnet_stem(False, False)}


@pytest.fixture(scope="module", params=sorted(NETS))
def net(request, tmp_path_factory, onnx_builder):
    nodes, inits, shape = NETS[request.param]()
    g = load_onnx(onnx_builder(tmp_path_factory.mktemp(request.param), nodes, inits, shape, name="m.onnx"))
    qm = calibrate(g, RNG.standard_normal((16, *shape)).astype(np.float32) * 2)
    return request.param, qm, (RNG.standard_normal((7, *shape)) * 2).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
def test_networks_with_the_pool_fused_equal_unfused(net, threads):
    """Logits with the stem's max pool fused into the stem conv equal those of the unfused run and of the reference
    emulator bit for bit, for exact, table, separable and mixed configurations (float-domain and CV stems take the
    unfused path), also through the prefix cache and with an accumulator hook; the fused step ran on the exact
    configuration."""
    name, qm, x = net
    fused, plain = Emulator(qm), Emulator(qm)
    plain._plan["pools"] = {}
    assert [fused.graph.nodes[i].name for i in fused._plan["pools"]] == ["stem"]
    calls, real = [], K.conv2d_scaled_max_pool
    with K.using_threads(threads), mock.patch.object(K, "conv2d_scaled_max_pool",
                                                     lambda *a, **k: calls.append(1) or real(*a, **k)):
        seen = check_fused_equals_plain(fused, plain, qm, x)
    assert calls
    assert "stem" in seen


def test_fused_pool_emits_the_readers_patterns(net, monkeypatch):
    """On an integer configuration the fused step also wrote the quantized input of the pool's conv reader: nothing
    quantizes the pool's output on its own."""
    name, qm, x = net
    emu = Emulator(qm)
    quantized = record_own_quantizations(monkeypatch)
    emu.run(x, None)
    assert "p" not in quantized and qm.graph.input_name in quantized
