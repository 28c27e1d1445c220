"""The converter registry: ``@converter`` records a handler per op type and opset range; ``lookup`` finds it."""
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
