"""The slow, obviously-right emulator every fast path is checked against: reference kernels (dse.kernels.reference_*,
direct table gathers), the control-variate correction written out per output, explicit dequantization."""
from __future__ import annotations

import numpy as np

from dse import kernels
from dse.arith.multipliers import get_multiplier
from dse.layer_config import LayerConfig
from dse.model.float_exec import exec_node
from dse.quant import quantize_act


def naive_X(q, l):
    """sum of the activation values feeding each output: an exact all-ones conv per group (reference kernel)."""
    if l.op == "gemm":
        return q.astype(np.int64).sum(axis=1).astype(np.float64)
    C = q.shape[1]
    ones = np.ones((l.groups, C // l.groups) + tuple(l.kernel), np.int8)
    return kernels.reference_conv2d_int(q, ones, get_multiplier("exact"), l.a_signed, l.stride, l.pads, l.dilation,
                                        l.groups).astype(np.float64)


def reference_matmul_layer(l, args, mult, cv, cv_terms=None):
    """A matmul (activation x activation) layer: both operands quantized (right one signed), a direct table gather
    over every (m, n, k), the CV correction written out per output, ``float32((acc * s_a) * s_b)``."""
    if mult.domain == "float":
        return kernels.reference_matmul_float(args[0], args[1], mult)
    qa = quantize_act(args[0], l.a_scale, l.a_signed)
    qb = quantize_act(args[1], float(l.w_scale[0]), True)
    lut = mult.table(l.a_signed, True).astype(np.int64)
    pa = qa.view(np.uint8).astype(np.intp)[..., :, None, :]                     # [..., M, 1, K]
    pb = np.swapaxes(qb.view(np.uint8).astype(np.intp), -1, -2)[..., None, :, :]  # [..., 1, N, K]
    acc = lut[pa, pb].sum(axis=-1).astype(np.float64)
    if cv:
        alpha, beta = cv_terms(l, mult, qb)
        X = qa.astype(np.int64).sum(axis=-1).astype(np.float64)
        acc = acc - X[..., :, None] * alpha[..., None, :] - beta[..., None, :]
    return ((acc * l.a_scale) * float(l.w_scale[0])).astype(np.float32) + np.float32(0)


def reference_run(qm, x, config, cv_fn=None, cv_terms=None, record: dict | None = None):
    """Slow obviously-right emulator: reference kernels, explicit CV and dequantization; every integer conv/gemm layer
    quantizes its float32 input on its own (into ``record[layer name]`` when given)."""
    env = {qm.graph.input_name: x}
    for n in qm.graph.nodes:
        args = [env[t] for t in n.inputs]
        if not n.is_mac:
            env[n.output] = exec_node(n, args)
            continue
        l = qm.layer(n.name)
        lc = config.get(n.name, LayerConfig())
        mult = get_multiplier(lc.multiplier)
        if l.op == "matmul":
            env[n.output] = reference_matmul_layer(l, args, mult, lc.cv, cv_terms)
            continue
        if mult.domain == "float":
            if l.op == "conv":
                y = kernels.reference_conv2d_float(args[0], n.params["W"], mult, l.stride, l.pads, l.dilation,
                                                   l.groups) + l.bias.reshape(1, -1, 1, 1)
            else:
                y = kernels.reference_gemm_float(args[0], n.params["W"], mult) + l.bias
            env[n.output] = y.astype(np.float32)
            continue
        q = quantize_act(args[0], l.a_scale, l.a_signed)
        if record is not None:
            record[n.name] = q
        if l.op == "conv":
            acc = kernels.reference_conv2d_int(q, l.w_q, mult, l.a_signed, l.stride, l.pads, l.dilation, l.groups)
        else:
            acc = kernels.reference_gemm_int(q, l.w_q, mult, l.a_signed)
        acc = acc.astype(np.float64)
        if lc.cv:
            alpha, beta = cv_fn(l, mult)
            X = naive_X(q, l)
            if l.op == "conv":
                og = l.N // l.groups
                for c in range(l.N):
                    acc[:, c] -= alpha[c] * X[:, c // og] + beta[c]
            else:
                acc -= X[:, None] * alpha[None, :] + beta[None, :]
        sh = (1, -1) + (1,) * (acc.ndim - 2)
        y = (acc * l.a_scale) * l.w_scale.astype(np.float64).reshape(sh)
        env[n.output] = y.astype(np.float32) + l.bias.reshape(sh)
    return env[qm.graph.output_name]
