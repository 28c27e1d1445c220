"""ONNX op -> IR converters, one handler per op type registered with ``@converter("Conv", since=..., until=...)``.

A handler is ``fn(imp, n)`` with ``imp`` the :class:`dse.model.onnx_import.Importer` (constants, folding, node
emission, one-line errors) and ``n`` an :class:`OnnxNode`. ``since``/``until`` bound the opset versions (of the default
domain) the handler serves, so an op whose signature changed between opsets can have one handler per range. The
handlers live in one module per op family: ``mac`` (Conv, Gemm, MatMul, BatchNormalization), ``elementwise``,
``tensor`` (shape, layout and constant ops), ``pool`` (pooling and reductions).
"""
from dse.model.converters import elementwise, mac, pool, tensor  # noqa: F401  (importing them registers the handlers)
from dse.model.converters.registry import OnnxNode, converter, lookup, supported

__all__ = ["OnnxNode", "converter", "lookup", "supported"]
