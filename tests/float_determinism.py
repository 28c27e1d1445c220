"""One process's float forward and calibration digests, for tests/test_float_determinism.py: ``python -m
tests.float_determinism OUT_DIR THREADS [bundled]`` prints one JSON object {name: sha256 prefix}.

Digested: the float32 logits of the test CNN (``cnn_model``: convs with stride, asymmetric padding, dilation, groups,
depthwise, 1x1, a residual Add, max/average pools, an unfolded BatchNormalization, Clip, Gemm) on seeded inputs, in
batches of 5 and of all images; its calibration (every meta value and array of QuantModel.state()); its FxP8 logits
(exact, and mitch_w6 with the CV correction) and the CV fits of three multipliers on its layers' histograms (float64
sums); with ``bundled`` the same for the bundled resnet8 and lenet5 on the Fashion-MNIST calibration split.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from tests.onnx_graphs import G, mbv2_block, rand_w

from dse.arith.multipliers import get_multiplier
from dse.correction import fit_cv
from dse.emulate import Emulator
from dse.layer_config import LayerConfig
from dse.model.float_exec import run_float
from dse.model.onnx_import import load_onnx, resolve_model
from dse.quant import calibrate
from dse.threads import set_threads


def cnn_model(directory: Path) -> Path:
    g = G(17)
    x = g.op("Relu", [g.op("Conv", ["x", g.c(rand_w(8, 3, 3, 3)), g.c(rand_w(8))], pads=[1, 1, 1, 1])])
    x = g.op("Conv", [x, g.c(rand_w(8, 8, 3, 3)), g.c(rand_w(8))], strides=[2, 1], pads=[0, 1, 2, 1])
    x = g.op("Conv", [x, g.c(rand_w(8, 8, 3, 3))], dilations=[2, 2], pads=[2, 2, 2, 2])
    x = g.op("Clip", [g.op("Conv", [x, g.c(rand_w(8, 4, 3, 3)), g.c(rand_w(8))], group=2, pads=[1, 1, 1, 1]),
                      g.c(np.float32(0)), g.c(np.float32(6))])
    d = g.op("Conv", [x, g.c(rand_w(8, 1, 3, 3)), g.c(rand_w(8))], group=8, pads=[1, 1, 1, 1], strides=[2, 2])
    r = g.op("Add", [g.op("Conv", [d, g.c(rand_w(16, 8, 1, 1)), g.c(rand_w(16))]),
                     g.op("Conv", [d, g.c(rand_w(16, 8, 1, 1))])])
    r = g.op("BatchNormalization", [r, g.c(rand_w(16) + 1), g.c(rand_w(16)), g.c(rand_w(16)),
                                    g.c(np.abs(rand_w(16)) + 0.5)])
    r = mbv2_block(g, g.op("Relu", [r]), 16, 16, 1)
    r = g.op("MaxPool", [r], kernel_shape=[2, 2], strides=[2, 2])
    r = g.op("AveragePool", [r], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    f = g.op("Flatten", [g.op("GlobalAveragePool", [r])])
    f = g.op("Relu", [g.op("Gemm", [f, g.c(rand_w(12, 16)), g.c(rand_w(12))], transB=1)])
    y = g.op("Gemm", [f, g.c(rand_w(5, 12)), g.c(rand_w(5))], transB=1)
    return g.save(directory, y, [3, 21, 19], name="cnn.onnx")


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else np.ascontiguousarray(p).tobytes())
    return h.hexdigest()[:16]


def state_digest(qm) -> str:
    st = qm.state()
    return digest(json.dumps(st.meta, sort_keys=True).encode(),
                  *[v for k in sorted(st.arrays) for v in (k.encode(), st.arrays[k])])


def main(out_dir: str, threads: int, bundled: bool) -> dict:
    set_threads(threads)
    graph = load_onnx(cnn_model(Path(out_dir)))
    x = np.random.default_rng(7).standard_normal((23,) + tuple(graph.input_shape)).astype(np.float32)
    qm = calibrate(graph, x, batch_size=6)
    out = {"cnn.logits": digest(run_float(graph, x)), "cnn.logits_b5": digest(run_float(graph, x, batch_size=5)),
           "cnn.calib": state_digest(qm)}
    emu = Emulator(qm)  # the FxP8 emulation from that calibration: exact, and approximate with the CV correction
    cfg = {n: LayerConfig("mitch_w6", cv=True) for n in qm.layer_names}
    out["cnn.fxp8"] = digest(emu.run(x, {}), emu.run(x, cfg))
    out["cnn.cv_fit"] = digest(*[v for l in qm.layers for m in ("mitch_w6", "drum4", "trunc_op2")
                                 for v in fit_cv(get_multiplier(m), l.act_hist, l.a_signed)])
    if bundled:
        from dse.data import bundled_split

        images = bundled_split("calib")[0][:300]
        for name in ("resnet8", "lenet5"):
            g = load_onnx(resolve_model(name))
            xb = ((images.astype(np.float32) / 255 - 0.2860) / 0.3530).reshape((len(images),) + tuple(g.input_shape))
            out[f"{name}.logits"] = digest(run_float(g, xb))
            out[f"{name}.calib"] = state_digest(calibrate(g, xb, batch_size=64))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "bundled")))
