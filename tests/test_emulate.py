"""dse.emulate: bit-exact against a slow numpy reference emulator, control variate, float domain, CLI evaluate."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper

from dse import kernels
from dse.arith.multipliers import get_multiplier
from dse.correction import activation_sums
from dse.emulate import Emulator
from dse.errors import DseError
from dse.layer_config import LayerConfig
from dse.model.onnx_import import load_onnx
from dse.quant import calibrate, quantize_act
from tests.reference import naive_X, reference_run

RNG = np.random.default_rng(11)


def _model(tmp_path, build):
    """Signed-input conv (asym pads, stride 2) -> relu -> depthwise conv + 1x1 projection, residual Add -> relu
    -> GAP -> flatten -> gemm. Two MAC layers share the relu output (one quantization)."""
    def w(*s):
        return (RNG.standard_normal(s) * 0.4).astype(np.float32)

    inits = {"W1": w(4, 2, 3, 3), "b1": w(4), "Wd": w(4, 1, 3, 3), "Wp": w(4, 4, 1, 1), "Wf": w(3, 4), "bf": w(3)}
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], strides=[2, 2], pads=[1, 0, 2, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "Wd"], ["cd"], pads=[1, 1, 1, 1], group=4, name="dw"),
             helper.make_node("Conv", ["r1", "Wp"], ["cp"], name="proj"),
             helper.make_node("Add", ["cd", "cp"], ["a"]),
             helper.make_node("Relu", ["a"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["gp"]),
             helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], transB=1, name="fc")]
    graph = load_onnx(build(tmp_path, nodes, inits, [2, 7, 6], name="m.onnx"))
    return calibrate(graph, RNG.standard_normal((16, 2, 7, 6)).astype(np.float32))


@pytest.fixture(scope="module")
def qm(tmp_path_factory, onnx_builder):
    return _model(tmp_path_factory.mktemp("emu"), onnx_builder)


def _fake_cv(layer, mult):
    r = np.random.default_rng(len(layer.name))
    return r.standard_normal(layer.N) * 0.1, r.standard_normal(layer.N) * 5.0


@pytest.fixture
def fake_correction(monkeypatch):
    """Random (alpha, beta) instead of the fitted ones: checks the emulator applies whatever correction it is given."""
    import dse.correction

    monkeypatch.setattr(dse.correction, "cv_correction", _fake_cv)
    return dse.correction


X_IN = RNG.standard_normal((5, 2, 7, 6)).astype(np.float32)


@pytest.mark.parametrize("mults", [("exact",) * 4, ("drum4", "mitch_w6", "perf_j1_k2", "mitchell"),
                                   ("mitchell", "trunc_op2", "drum3", "axbxp_k2_w2_a2_dynamic")])
def test_bit_exact_vs_reference(qm, mults):
    cfg = {n: LayerConfig(m) for n, m in zip(["conv1", "dw", "proj", "fc"], mults)}
    y = Emulator(qm).run(X_IN, cfg, batch_size=2)
    assert y.dtype == np.float32 and np.array_equal(y, reference_run(qm, X_IN, cfg))
    if mults[0] != "exact":
        assert not np.array_equal(y, Emulator(qm).run(X_IN))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_split_images_bit_identically(qm, threads):
    """Image-parallel emulation (slices of each batch on separate threads) gives the single-thread bits."""
    from dse import kernels

    cfg = {n: LayerConfig(m, cv) for n, m, cv in zip(["conv1", "dw", "proj", "fc"],
                                                     ("drum4", "mitch_w6", "exact", "perf_j1_k2"), (True, 0, 0, 1))}
    with kernels.using_threads(threads):
        y = Emulator(qm).run(X_IN, cfg, batch_size=4)
    from dse.correction import cv_correction

    assert np.array_equal(y, reference_run(qm, X_IN, cfg, cv_correction))


def test_control_variate_bit_exact(qm, fake_correction):
    cfg = {"conv1": LayerConfig("perf_j1_k2", True), "dw": LayerConfig("drum4", True),
           "proj": LayerConfig("mitch_w6", False), "fc": LayerConfig("perf_j0_k2", True)}
    y = Emulator(qm).run(X_IN, cfg)
    assert np.array_equal(y, reference_run(qm, X_IN, cfg, _fake_cv))
    assert not np.array_equal(y, Emulator(qm).run(X_IN, {k: LayerConfig(v.multiplier) for k, v in cfg.items()}))


@pytest.fixture(scope="module")
def qm_clip(tmp_path_factory, onnx_builder):
    """Inverted residual: 1x1 expand -> Clip(0, 6) -> depthwise 3x3/2 with channel multiplier 2 -> Clip(-1, 2) ->
    1x1 projection -> Relu that also feeds an Add with the projection itself (not fusible) -> flatten -> gemm ->
    Relu (the graph output)."""
    def w(*s):
        return (RNG.standard_normal(s) * 0.5).astype(np.float32)

    inits = {"We": w(6, 3, 1, 1), "be": w(6), "Wd": w(12, 1, 3, 3), "Wp": w(4, 12, 1, 1), "Wf": w(3, 64),
             "bf": w(3), "lo": np.float32(0), "hi": np.float32(6), "lo2": np.float32(-1), "hi2": np.float32(2)}
    nodes = [helper.make_node("Conv", ["x", "We", "be"], ["e"], name="expand"),
             helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]),
             helper.make_node("Conv", ["e6", "Wd"], ["d"], strides=[2, 2], pads=[1, 1, 1, 1], group=6, name="dw"),
             helper.make_node("Clip", ["d", "lo2", "hi2"], ["d6"]),
             helper.make_node("Conv", ["d6", "Wp"], ["p"], name="proj"),
             helper.make_node("Relu", ["p"], ["pr"]),
             helper.make_node("Add", ["pr", "p"], ["a"]),
             helper.make_node("Flatten", ["a"], ["f"]),
             helper.make_node("Gemm", ["f", "Wf", "bf"], ["g"], transB=1, name="fc"),
             helper.make_node("Relu", ["g"], ["y"])]
    graph = load_onnx(onnx_builder(tmp_path_factory.mktemp("clip"), nodes, inits, [3, 8, 8], name="c.onnx"))
    return calibrate(graph, RNG.standard_normal((16, 3, 8, 8)).astype(np.float32))


@pytest.mark.parametrize("mults", [("exact",) * 4, ("drum4", "mitch_w6", "perf_j1_k2", "axbxp_k2_w2_a2_dynamic"),
                                   ("bf16", "exact", "mitchell", "drum3"), ("exact", "bf16", "drum4", "exact")])
@pytest.mark.parametrize("cv", [False, True])
def test_fused_output_activation_bit_exact(qm_clip, mults, cv):
    """A Relu/Clip right after a MAC layer (its output's only consumer) runs inside the layer's scaling pass, and so
    does the next layer's input quantization where that layer is the only consumer (unless one of the two runs in
    floating point); the logits are the reference emulator's (which runs every node on its own), also with CV and
    float-domain layers."""
    from dse.correction import cv_correction

    emu = Emulator(qm_clip)
    names = ["expand", "dw", "proj", "fc"]
    assert sorted(emu._plan["acts"]) == [0, 2, 8]  # all but proj, whose output has two consumers
    assert sorted(emu._plan["quants"]) == [0, 2]  # expand -> dw, dw -> proj
    cfg = {n: LayerConfig(m, cv and get_multiplier(m).domain == "int") for n, m in zip(names, mults)}
    x = RNG.standard_normal((5, 3, 8, 8)).astype(np.float32) * 2
    y = emu.run(x, cfg, batch_size=3)
    assert np.array_equal(y, reference_run(qm_clip, x, cfg, cv_correction))


def test_real_control_variate_reduces_bias(qm):
    x = RNG.standard_normal((64, 2, 7, 6)).astype(np.float32)
    emu = Emulator(qm)
    ex = emu.run(x)
    plain = emu.run(x, {"conv1": LayerConfig("perf_j0_k2")})
    cv = emu.run(x, {"conv1": LayerConfig("perf_j0_k2", True)})
    assert abs((cv - ex).mean()) < abs((plain - ex).mean())


def test_float_domain_layers(qm):
    cfg = {"dw": LayerConfig("bf16"), "fc": LayerConfig("fp32_mitch_w6")}
    y = Emulator(qm).run(X_IN[:2], cfg)
    assert np.array_equal(y, reference_run(qm, X_IN[:2], cfg))


def test_accumulators_are_integer_sums(qm):
    from dse.quant import exact_acc

    emu = Emulator(qm)
    accs = emu.accumulators(X_IN)
    assert set(accs) == {"conv1", "dw", "proj", "fc"} and all(a.dtype == np.int64 for a in accs.values())
    l = qm.layer("conv1")
    q = quantize_act(X_IN, l.a_scale, l.a_signed)
    assert np.array_equal(accs["conv1"], exact_acc(q, l))
    approx = emu.accumulators(X_IN, {"conv1": LayerConfig("drum4")})["conv1"]
    assert np.array_equal(approx, kernels.reference_conv2d_int(q, l.w_q, get_multiplier("drum4"), True, l.stride,
                                                                l.pads, l.dilation, l.groups))
    assert not np.array_equal(approx, accs["conv1"])


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 2), g=st.integers(1, 3), cg=st.integers(1, 3), k=st.integers(1, 3), s=st.integers(1, 2),
       d=st.integers(1, 2), pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), H=st.integers(4, 7),
       signed=st.booleans())
def test_activation_sums_vs_all_ones_conv(B, g, cg, k, s, d, pads, H, signed):
    from dse.quant import MacLayer

    assume(H + min(pads[0] + pads[2], pads[1] + pads[3]) >= d * (k - 1) + 1)
    l = MacLayer(name="l", op="conv", in_shape=(g * cg, H, H), out_shape=(), kernel=(k, k), stride=(s, s),
                 pads=tuple(pads), dilation=(d, d), groups=g, a_signed=signed)
    lo, hi = (-128, 128) if signed else (0, 256)
    q = np.random.default_rng(B * 7 + H).integers(lo, hi, (B, g * cg, H, H)).astype(np.int8 if signed else np.uint8)
    assert np.array_equal(activation_sums(l, q), naive_X(q, l))


def test_config_errors(qm):
    emu = Emulator(qm)
    with pytest.raises(DseError, match="'conv9' is not a layer of the model; valid layers: conv1, dw, proj, fc"):
        emu.run(X_IN, {"conv9": LayerConfig("drum4")})
    with pytest.raises(DseError, match="nosuchmult"):
        emu.run(X_IN, {"conv1": LayerConfig("nosuchmult")})
    with pytest.raises(DseError, match="cv=true needs an 8-bit integer multiplier"):
        emu.run(X_IN, {"fc": LayerConfig("bf16", True)})
    with pytest.raises(DseError, match="3 images but 2 labels"):
        emu.accuracy(X_IN[:3], np.zeros(2))


def test_accuracy_bundled_lenet5(bundled_qmodel):
    from dse.data import load_dataset

    _, qm = bundled_qmodel("lenet5")
    d = load_dataset("fashion-mnist:holdout").head(300)
    emu = Emulator(qm)
    exact = emu.accuracy(d.images(), d.y)
    assert emu.dataset_accuracy(d, None, batch_size=64) == exact  # streamed in batches: the same figure
    approx = emu.accuracy(d.images(), d.y, {l.name: LayerConfig("mitchell") for l in qm.layers})
    assert 0.85 < exact <= 1.0 and 0.5 < approx < exact + 0.02


# ------------------------------------------------------------------------------------------------ CLI evaluate
def test_cli_evaluate_json_with_config(tmp_path, capsys):
    from dse.cli import main
    from dse.config import save_config

    cfg = tmp_path / "c.toml"
    save_config({"/conv2/Conv": LayerConfig("drum4", False), "/fc1/Gemm": LayerConfig("mitchell")}, cfg,
                meta={"note": "test"})
    assert main(["evaluate", "lenet5", "--images", "200", "--config", str(cfg), "--json", "--batch-size", "64"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["images"] == 200 and res["data"] == "fashion-mnist:holdout[:200]" and res["calib"] == "fashion-mnist:calib"
    assert 0.8 < res["float"] <= 1 and abs(res["fxp8"] - res["float"]) <= 0.03 and 0.5 < res["configured"] <= 1
    assert res["layers"]["/conv2/Conv"] == {"multiplier": "drum4", "cv": False}
    assert res["layers"]["/conv1/Conv"] == {"multiplier": "exact", "cv": False} and res["meta"] == {"note": "test"}


def test_cli_evaluate_table(capsys):
    from dse.cli import main

    assert main(["evaluate", "lenet5", "--images", "50", "--data", "fashion-mnist:search"]) == 0
    out = capsys.readouterr().out
    assert "FxP8 exact" in out and "float32" in out and "configured" not in out


@pytest.mark.parametrize("args,msg", [
    (["--data", "fashion-mnist:calib"], "overlap"),
    (["--calib", "fashion-mnist:all"], "overlap"),
    (["--data", "nowhere.npz"], "nowhere.npz: data file not found"),
    (["--config", "nowhere.toml"], "nowhere.toml: configuration file not found"),
    (["--images", "0"], "--images 0"),
])
def test_cli_evaluate_errors(args, msg, capsys):
    from dse.cli import main

    assert main(["evaluate", "lenet5", *args]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_evaluate_unknown_layer_in_config(tmp_path, capsys):
    from dse.cli import main

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"layers": {"conv7": {"multiplier": "drum4", "cv": False}}}))
    assert main(["evaluate", "lenet5", "--images", "10", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "key 'layers.conv7' is not a layer of the model; valid layers: /conv1/Conv" in err
