"""ONNX op -> IR converters, one handler per op type registered with ``@converter("Conv", since=..., until=...)``.

A handler is ``fn(imp, n)`` with ``imp`` the :class:`dse.model.onnx_import.Importer` (constants, folding, node
emission, one-line errors) and ``n`` an :class:`OnnxNode`. ``since``/``until`` bound the opset versions (of the default
domain) the handler serves, so an op whose signature changed between opsets can have one handler per range. The
handlers live in one module per op family: ``mac`` (Conv, Gemm, MatMul, BatchNormalization), ``elementwise``,
``tensor`` (shape, layout and constant ops), ``pool`` (pooling and reductions).
"""
from __future__ import annotations

from dataclasses import dataclass, field

_REGISTRY: dict[str, list] = {}


@dataclass
class OnnxNode:
    name: str                  # unique node name
    op_type: str
    inputs: list               # ONNX input names ("" = absent optional input)
    outputs: list
    attrs: dict = field(default_factory=dict)
    opset: int = 17

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""


def converter(*op_types: str, since: int = 1, until: int | None = None):
    """Register the decorated ``fn(imp, n)`` for ``op_types`` at opsets ``since..until`` (inclusive)."""
    def deco(fn):
        for op in op_types:
            _REGISTRY.setdefault(op, []).append((since, until, fn))
        return fn
    return deco


def lookup(op_type: str, opset: int):
    """The handler of ``op_type`` at ``opset``, or None."""
    for since, until, fn in _REGISTRY.get(op_type, ()):
        if since <= opset and (until is None or opset <= until):
            return fn
    return None


def supported() -> list[str]:
    return sorted(_REGISTRY)


from dse.model.converters import elementwise, mac, pool, tensor  # noqa: E402,F401  (register the handlers)
