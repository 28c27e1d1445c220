"""The model IR: a topologically sorted list of :class:`Node` over named float32 tensors.

Ops and their ``attrs`` / ``params`` (all parameters float32 numpy arrays; tensors are NCHW or [B, F]):

* ``conv``: params ``W`` [Cout, Cin/groups, kh, kw], ``b`` [Cout]; attrs ``stride`` (sh, sw), ``pads``
  (top, left, bottom, right), ``dilation`` (dh, dw), ``groups``.
* ``gemm``: params ``W`` [N, K] (alpha and transB folded in), ``b`` [N]; input [B, K] -> [B, N].
* ``matmul``: two activation inputs ``A`` [..., M, K] and ``B`` [..., K, N] of equal rank (numpy broadcasting over
  the leading axes, ``np.matmul``): the MAC layer of attention's QK^T and AV. ``matmul_float``: a constant left
  operand (param) times an activation, kept in float.
* ``affine``: params ``scale``, ``shift`` [C]: ``y = x * scale[c] + shift[c]`` on axis 1 (a BatchNormalization
  that could not be folded into a preceding conv/gemm).
* ``relu``; ``clip``: attrs ``min``, ``max`` (floats, +-inf when absent).
* ``maxpool`` / ``avgpool``: attrs ``kernel``, ``stride``, ``pads``, ``dilation`` (maxpool), ``ceil_mode``,
  ``count_include_pad`` (avgpool); ``gap`` (global average pool, keepdims).
* ``add``: two tensor inputs, or one tensor input and param ``c`` (numpy broadcasting over the full batch shape).
* ``flatten`` (batch kept: [B, ...] -> [B, prod]); ``reshape``: attr ``shape`` = per-image target shape (batch kept);
  ``concat``: attr ``axis`` (>= 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAC_OPS = ("conv", "gemm", "matmul")


@dataclass
class Node:
    name: str                     # unique (ONNX node name, or "<OpType>_<index>" when empty)
    op: str                       # IR op, see module docstring
    inputs: list                  # tensor names
    outputs: list                 # tensor names (exactly one)
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # name -> float32 ndarray
    onnx_op: str = ""             # the ONNX op type this node came from (for messages)

    @property
    def output(self) -> str:
        return self.outputs[0]

    @property
    def is_mac(self) -> bool:
        return self.op in MAC_OPS


@dataclass
class Graph:
    nodes: list                   # [Node], topologically sorted
    input_name: str
    input_shape: tuple            # per image, e.g. (1, 28, 28)
    output_name: str
    shapes: dict = field(default_factory=dict)    # tensor name -> per-image shape (batch dim excluded)
    metadata: dict = field(default_factory=dict)  # ONNX metadata_props
    source: str = ""              # file the graph was loaded from

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def n_classes(self) -> int:
        """Number of output values per image (the classes of a classifier)."""
        return int(np.prod(self.shapes[self.output_name]))

    @property
    def mac_nodes(self) -> list:
        return [n for n in self.nodes if n.is_mac]

    def consumers(self, tensor: str) -> list:
        return [n for n in self.nodes if tensor in n.inputs]


def toposort(nodes: list, available: set) -> list:
    """Order ``nodes`` so every input is produced before use (stable; ``available`` = graph inputs/constants).

    Raises ValueError naming a node whose inputs can never be produced (cycle or missing tensor).
    """
    produced = set(available)
    pending = list(nodes)
    out = []
    while pending:
        rest = []
        for n in pending:
            if all(i in produced for i in n.inputs):
                out.append(n)
                produced.update(n.outputs)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted(i for i in rest[0].inputs if i not in produced)
            raise ValueError(f"node '{rest[0].name}' reads tensor(s) {missing} that no node produces (or a cycle)")
        pending = rest
    return out


def params_f32(node: Node) -> None:
    """Make every param of ``node`` a contiguous float32 array (in place)."""
    for k, v in node.params.items():
        a = np.asarray(v, dtype=np.float32)
        node.params[k] = a if a.flags.c_contiguous else np.ascontiguousarray(a)  # (ascontiguousarray makes 0-d 1-d)
