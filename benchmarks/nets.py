"""Networks for the energy benchmarks: the bundled LeNet-5 and ResNet-8 and a VGG-style CIFAR-size net built with
onnx.helper (random weights: the energy models only see the layer shapes)."""
from pathlib import Path

import numpy as np


def vgg_onnx(path: Path, widths=(32, 32, "M", 64, 64, "M", 128, 128, "M"), in_shape=(3, 32, 32), classes=10,
             seed=0) -> Path:
    """A VGG-style ONNX model (3x3 conv + ReLU stacks, 2x2 max pools, one Gemm) written to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x, c, hw = "input", in_shape[0], in_shape[1]
    for i, w in enumerate(widths):
        if w == "M":
            nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            x, hw = f"p{i}", hw // 2
            continue
        W = (rng.standard_normal((w, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(np.zeros(w, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [x, f"W{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                   name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, c = f"r{i}", w
    nodes.append(helper.make_node("Flatten", [x], ["flat"]))
    W = (rng.standard_normal((classes, c * hw * hw)) * 0.01).astype(np.float32)
    inits += [numpy_helper.from_array(W, "Wfc"), numpy_helper.from_array(np.zeros(classes, np.float32), "bfc")]
    nodes.append(helper.make_node("Gemm", ["flat", "Wfc", "bfc"], ["logits"], transB=1, name="fc"))
    graph = helper.make_graph(nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           [1, *in_shape])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def mac_layers(model: str):
    """The MacLayers of a model path or bundled name (calibrated on two random images: shapes are all that counts)."""
    from dse.model.onnx_import import load_onnx, resolve_model
    from dse.quant import calibrate

    graph = load_onnx(resolve_model(model))
    x = np.random.default_rng(0).random((2, *graph.input_shape), dtype=np.float32)
    return calibrate(graph, x).layers
