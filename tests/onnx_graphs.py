"""ONNX test graphs: ``save_onnx`` (one input "x" [N, *in_shape], checked on save), the builder ``G`` and the op
patterns of the architectures dse imports (SE block, HardSwish inverted residual, channel shuffle, LayerNorm + GELU
MLP, three multi-head attention layouts, classifier heads). Weights come from one seeded generator, ``RNG``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
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


RNG = np.random.default_rng(5)
I64 = TensorProto.INT64


def rand_w(*shape, s=0.3):
    return (RNG.standard_normal(shape) * s).astype(np.float32)


class G:
    """Tiny ONNX graph builder with a dynamic batch input 'x' and output 'y'."""

    def __init__(self, opset: int):
        self.opset, self.nodes, self.inits, self.k = opset, [], {}, 0

    def c(self, v, dtype=None) -> str:
        self.k += 1
        name = f"c{self.k}"
        self.inits[name] = v
        return name

    def op(self, op_type, inputs, n_out=1, **attrs):
        self.k += 1
        outs = [f"t{self.k}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"{op_type.lower()}{self.k}", **attrs))
        return outs[0] if n_out == 1 else outs

    def axes_op(self, op_type, x, axes, **attrs):
        """Squeeze/Unsqueeze/Reduce* with axes as an attribute or (newer opsets) an input."""
        since = 18 if op_type.startswith("Reduce") else 13
        if self.opset >= since:
            return self.op(op_type, [x, self.c(axes)], **attrs)
        return self.op(op_type, [x], axes=axes, **attrs)

    def save(self, tmp_path, y, in_shape, name="m.onnx"):
        return save_onnx(tmp_path, self.nodes + [helper.make_node("Identity", [y], ["y"], name="out")], self.inits,
                         in_shape, opset=self.opset, name=name)


def shape_dims(g: G, x, idx):
    """Shape(x) -> Gather(idx) -> Unsqueeze: a 1-element int64 tensor (the dynamic-batch reshape idiom)."""
    return g.axes_op("Unsqueeze", g.op("Gather", [g.op("Shape", [x]), g.c(np.array(idx))], axis=0), [0])


def se_block(g: G, x, C, use_reduce_mean, gate_first=False):
    """EfficientNet MBConv squeeze-and-excitation: pool -> 1x1 -> SiLU (Sigmoid*Mul) -> 1x1 -> Sigmoid -> Mul (the
    gate as the Mul's first operand with ``gate_first``)."""
    s = g.axes_op("ReduceMean", x, [2, 3], keepdims=1) if use_reduce_mean else g.op("GlobalAveragePool", [x])
    s = g.op("Conv", [s, g.c(rand_w(C // 2, C, 1, 1)), g.c(rand_w(C // 2))])
    s = g.op("Mul", [s, g.op("Sigmoid", [s])])
    s = g.op("Sigmoid", [g.op("Conv", [s, g.c(rand_w(C, C // 2, 1, 1)), g.c(rand_w(C))])])
    return g.op("Mul", [s, x] if gate_first else [x, s])


def hardswish(g: G, x):
    if g.opset >= 14:
        return g.op("HardSwish", [x])
    return g.op("Mul", [x, g.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])  # what exporters emit before opset 14


def inverted_residual(g: G, x, C):
    """MobileNetV3: expand 1x1 + HardSwish, depthwise 3x3 + BN, SE with HardSigmoid, project, residual Add."""
    e = hardswish(g, g.op("Conv", [x, g.c(rand_w(2 * C, C, 1, 1)), g.c(rand_w(2 * C))]))
    d = g.op("Conv", [e, g.c(rand_w(2 * C, 1, 3, 3))], group=2 * C, pads=[1, 1, 1, 1])
    d = g.op("BatchNormalization", [d, g.c(rand_w(2 * C) + 1), g.c(rand_w(2 * C)), g.c(rand_w(2 * C)),
                                    g.c(np.abs(rand_w(2 * C)) + 0.5)])
    s = g.op("Relu", [g.op("Conv", [g.op("GlobalAveragePool", [d]), g.c(rand_w(C, 2 * C, 1, 1))])])
    s = g.op("HardSigmoid", [g.op("Conv", [s, g.c(rand_w(2 * C, C, 1, 1))])], alpha=1 / 6, beta=0.5)
    p = g.op("Conv", [g.op("Mul", [d, s]), g.c(rand_w(C, 2 * C, 1, 1))])
    return g.op("Add", [x, p])


def mbv2_block(g: G, x, C, Cout, stride, t=3):
    """MobileNetV2: expand 1x1 + ReLU6 (Clip), depthwise 3x3 (stride) + ReLU6, linear 1x1 projection, residual Add
    when the shape is kept."""
    def relu6(v):
        return g.op("Clip", [v, g.c(np.float32(0)), g.c(np.float32(6))])

    e = relu6(g.op("Conv", [x, g.c(rand_w(t * C, C, 1, 1)), g.c(rand_w(t * C))]))
    d = relu6(g.op("Conv", [e, g.c(rand_w(t * C, 1, 3, 3)), g.c(rand_w(t * C))], group=t * C, pads=[1, 1, 1, 1],
                   strides=[stride, stride]))
    p = g.op("Conv", [d, g.c(rand_w(Cout, t * C, 1, 1, s=0.5)), g.c(rand_w(Cout))])
    return g.op("Add", [x, p]) if stride == 1 and C == Cout else p


def shuffle_block(g: G, x, C, H, W):
    """ShuffleNetV2: Split channels, branch conv, Concat, channel shuffle Reshape/Transpose/Reshape (batch taken from
    a Shape subgraph), then Slice half the channels back."""
    half = C // 2
    if g.opset >= 13:
        a, b = g.op("Split", [x, g.c([half, half])], n_out=2, axis=1)
    else:
        a, b = g.op("Split", [x], n_out=2, axis=1, split=[half, half])
    b = g.op("Relu", [g.op("Conv", [b, g.c(rand_w(half, half, 3, 3))], pads=[1, 1, 1, 1])])
    y = g.op("Concat", [a, b], axis=1)
    n = shape_dims(g, x, 0)
    shp = g.op("Concat", [n, g.c([2, half, H, W])], axis=0)
    y = g.op("Reshape", [y, shp])
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3, 4])
    y = g.op("Reshape", [y, g.c([-1, C, H, W])])
    return g.op("Slice", [y, g.c([0]), g.c([half]), g.c([1])])


def layernorm(g: G, x, D):
    if g.opset >= 17:
        return g.op("LayerNormalization", [x, g.c(rand_w(D) + 1), g.c(rand_w(D))], axis=-1, epsilon=1e-5)
    mu = g.axes_op("ReduceMean", x, [-1])
    d = g.op("Sub", [x, mu])
    var = g.axes_op("ReduceMean", g.op("Pow", [d, g.c(np.float32(2))]), [-1])
    y = g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, g.c(np.float32(1e-5))])])])
    return g.op("Add", [g.op("Mul", [y, g.c(rand_w(D) + 1)]), g.c(rand_w(D))])


def gelu(g: G, x):
    if g.opset >= 20:
        return g.op("Gelu", [x])
    e = g.op("Erf", [g.op("Div", [x, g.c(np.float32(np.sqrt(2)))])])
    return g.op("Mul", [g.op("Mul", [x, g.op("Add", [e, g.c(np.float32(1))])]), g.c(np.float32(0.5))])


def linear(g: G, x, K, N):
    return g.op("Add", [g.op("MatMul", [x, g.c(rand_w(K, N))]), g.c(rand_w(N))])


def mlp_block(g: G, x, D):
    """ConvNeXt/ViT MLP: LayerNorm -> Linear -> GELU -> Linear, residual."""
    return g.op("Add", [x, linear(g, gelu(g, linear(g, layernorm(g, x, D), D, 2 * D)), 2 * D, D)])


def attention(g: G, x, T, D, H):
    """Multi-head self-attention with the batch from a Shape subgraph: qkv Linear, Split, Reshape [N, T, H, d],
    Transpose, QK^T (MatMul of two activations), scale, Softmax, AV, Transpose back, Reshape [N, T, D], proj."""
    d = D // H
    qkv = linear(g, layernorm(g, x, D), D, 3 * D)
    if g.opset >= 13:
        q, k, v = g.op("Split", [qkv, g.c([D, D, D])], n_out=3, axis=2)
    else:
        q, k, v = g.op("Split", [qkv], n_out=3, axis=2, split=[D, D, D])
    n = shape_dims(g, x, 0)
    heads = g.op("Concat", [n, g.c([T, H, d])], axis=0)
    q, k, v = (g.op("Transpose", [g.op("Reshape", [t, heads])], perm=[0, 2, 1, 3]) for t in (q, k, v))
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    s = g.op("Mul", [g.op("MatMul", [q, kt]), g.c(np.float32(d ** -0.5))])
    a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    a = g.op("Transpose", [a], perm=[0, 2, 1, 3])
    back = g.op("Concat", [n, shape_dims(g, x, 1), g.c([D])], axis=0)
    return g.op("Add", [x, linear(g, g.op("Reshape", [a, back]), D, D)])


def timm_attention(g: G, x, T, D, H):
    """timm's Attention: qkv Linear, Reshape [N, T, 3, H, d], Transpose perm (2, 0, 3, 1, 4) to [3, N, H, T, d] (the
    batch on axis 1), q/k/v = Gather(axis 0), QK^T, Softmax, AV, Transpose back, Reshape [N, T, D], proj."""
    d = D // H
    qkv = linear(g, layernorm(g, x, D), D, 3 * D)
    n = shape_dims(g, x, 0)
    qkv = g.op("Reshape", [qkv, g.op("Concat", [n, g.c([T, 3, H, d])], axis=0)])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Gather", [qkv, g.c(np.array(i))], axis=0) for i in range(3))
    s = g.op("MatMul", [g.op("Mul", [q, g.c(np.float32(d ** -0.5))]), g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    a = g.op("Reshape", [g.op("Transpose", [a], perm=[0, 2, 1, 3]), g.op("Concat", [n, g.c([T, D])], axis=0)])
    return g.op("Add", [x, linear(g, a, D, D)])


def mha_attention(g: G, x, T, D, H):
    """torch.nn.MultiheadAttention (batch_first) as torch exports it: Transpose to [T, N, D], in-projection on that
    layout, [3, T, N, D] by Unsqueeze/Transpose/Squeeze, Gather q/k/v, Reshape [T, N * H, d] and Transpose to
    [N * H, T, d] (the batch merged with the heads), QK^T, Softmax, AV, back to [T * N, D] for the out-projection Gemm,
    Reshape [T, N, D], Transpose to [N, T, D]."""
    d = D // H
    t = g.op("Transpose", [layernorm(g, x, D)], perm=[1, 0, 2])
    qkv = linear(g, t, D, 3 * D)                                                  # [T, N, 3D]
    n = shape_dims(g, t, 1)
    qkv = g.op("Reshape", [qkv, g.op("Concat", [g.c([T]), n, g.c([3, D])], axis=0)])
    qkv = g.op("Transpose", [g.axes_op("Unsqueeze", qkv, [0])], perm=[3, 1, 2, 0, 4])
    qkv = g.axes_op("Squeeze", qkv, [-2])                                         # [3, T, N, D]
    nh = g.op("Mul", [n, g.c([H])])
    heads = g.op("Concat", [g.c([T]), nh, g.c([d])], axis=0)
    q, k, v = (g.op("Transpose", [g.op("Reshape", [g.op("Gather", [qkv, g.c(np.array(i))], axis=0), heads])],
                    perm=[1, 0, 2]) for i in range(3))                            # [N * H, T, d]
    s = g.op("MatMul", [g.op("Mul", [q, g.c(np.float32(d ** -0.5))]), g.op("Transpose", [k], perm=[0, 2, 1])])
    a = g.op("MatMul", [g.op("Softmax", [s], axis=-1), v])
    a = g.op("Transpose", [a], perm=[1, 0, 2])                                    # [T, N * H, d]
    tn = g.op("Mul", [n, g.c([T])])
    a = g.op("Reshape", [a, g.op("Concat", [tn, g.c([D])], axis=0)])              # [T * N, D]
    o = g.op("Gemm", [a, g.c(rand_w(D, D)), g.c(rand_w(D))], transB=1)
    o = g.op("Reshape", [o, g.op("Concat", [g.c([T]), n, g.c([D])], axis=0)])
    return g.op("Add", [x, g.op("Transpose", [o], perm=[1, 0, 2])])


def head(g: G, x, C, classes=5):
    f = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    return g.op("Gemm", [f, g.c(rand_w(classes, C)), g.c(rand_w(classes))], transB=1)


def token_head(g: G, x, D, classes=5):
    """cls token via Gather(axis=1) + mean of tokens via ReduceMean, concatenated, classifier."""
    cls = g.op("Gather", [x, g.c(np.array(0))], axis=1)
    mean = g.axes_op("ReduceMean", x, [1], keepdims=0)
    return g.op("Gemm", [g.op("Concat", [cls, mean], axis=1), g.c(rand_w(classes, 2 * D)), g.c(rand_w(classes))], transB=1)
