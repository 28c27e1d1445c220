"""Shared test fixtures: the tiny-ONNX builder and the bundled models calibrated once per session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def save_onnx(directory: Path, nodes, inits: dict, in_shape, out_name: str = "y", opset: int = 17,
              name: str = "g.onnx") -> Path:
    """Write a one-input ONNX model (input "x" of shape [N, *in_shape], float initializers as float32, integer ones as
    int64); the output shape is inferred and the model checked, so a broken test model fails here, not in dse."""
    tensors = [numpy_helper.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind == "f"
                                                  else np.int64), k) for k, v in inits.items()]
    g = helper.make_graph(nodes, Path(name).stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["N", *in_shape])],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)], tensors)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)  # fills the output shape the checker requires
    onnx.checker.check_model(m)
    p = Path(directory) / name
    onnx.save(m, str(p))
    return p


@pytest.fixture(scope="session")
def onnx_builder():
    """``save_onnx(directory, nodes, inits, in_shape, out_name="y", opset=17, name="g.onnx") -> Path``."""
    return save_onnx


@pytest.fixture(scope="session")
def bundled_qmodel():
    """``get(name) -> (Graph, QuantModel)`` of a bundled model ("lenet5", "resnet8") calibrated on
    fashion-mnist:calib with the default method, each built once per test session."""
    from dse.data import load_dataset
    from dse.model.onnx_import import load_onnx, resolve_model
    from dse.quant import calibrate

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            g = load_onnx(resolve_model(name))
            cache[name] = (g, calibrate(g, load_dataset("fashion-mnist:calib").images()))
        return cache[name]
    return get
