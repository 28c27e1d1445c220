"""Shared test fixtures: the tiny-ONNX builder (tests/onnx_graphs.py) and the bundled models calibrated once per
session."""
from __future__ import annotations

import pytest

from tests.onnx_graphs import save_onnx


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
