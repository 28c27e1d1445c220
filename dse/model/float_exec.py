"""Float32 reference executor of the IR (numpy, and dse.model.nn's compiled convolution and GEMMs: every output of a
Conv, Gemm or MatMul one fixed chain of fused multiply-adds, the same bits on every machine; no BLAS).

``run_float(graph, x, batch_size=256) -> float32 logits``; :func:`exec_node` runs one node on float32 inputs and is
shared with the FxP8 emulator for every non-MAC op. :data:`NUMERICS` names the float executor's arithmetic: caches of
what it computed (calibrations, float baselines) are keyed by it.
"""
from __future__ import annotations

import numpy as np

from dse.errors import DseError
from dse.model.graph import Graph, Node
from dse.model.ops import IR_OPS, arguments

# 1: convolutions and GEMMs on the machine's BLAS (its summation order per CPU); 2: the FMA chains of cy/float_gemm.h
NUMERICS = 2


def exec_node(node: Node, args: list) -> np.ndarray:
    """Run one IR node on float32 inputs (full batch shapes)."""
    fn = IR_OPS.get(node.op)
    if fn is None:  # pragma: no cover - the importer produces only registered ops
        raise DseError(f"node '{node.name}': unknown IR op '{node.op}'")
    return np.asarray(fn(node, arguments(node, args)), dtype=np.float32)


def run_float_all(graph: Graph, x: np.ndarray, keep: set | None = None) -> dict:
    """Execute the graph on one batch; return {tensor: float32 array} for the tensors in ``keep`` (all if None)
    plus the output."""
    env = {graph.input_name: np.asarray(x, dtype=np.float32)}
    last_use = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            last_use[t] = i
    for i, n in enumerate(graph.nodes):
        env[n.output] = exec_node(n, [env[t] for t in n.inputs])
        if keep is not None:
            for t in n.inputs:
                if last_use[t] == i and t not in keep and t != graph.output_name:
                    env.pop(t, None)
    return env


def check_input(graph: Graph, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != tuple(graph.input_shape):
        raise DseError(f"input images have shape {list(x.shape[1:])} but model {graph.source or 'graph'} expects "
                       f"{list(graph.input_shape)}; check the data set and preprocessing")
    return x


def run_float(graph: Graph, x, batch_size: int = 256) -> np.ndarray:
    """Float32 logits [B, ...] of the graph on preprocessed input ``x`` [B, *graph.input_shape]."""
    x = check_input(graph, x)
    outs = [run_float_all(graph, x[i:i + batch_size], keep=set())[graph.output_name]
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,) + graph.shapes[graph.output_name], np.float32)
