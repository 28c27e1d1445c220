"""Post-training FxP8 quantization (owner of the FxP8 semantics in docs/ARCHITECTURE.md).

``calibrate(graph, x_calib) -> QuantModel``. The data classes below are the contract other modules (emulate, energy,
correction, predict, search) rely on; extend them, do not rename fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MacLayer:
    """One MAC layer (Conv or Gemm/MatMul) as the accelerator sees it; per-image GEMM view M x K x N."""

    name: str                 # unique ONNX node name
    op: str                   # "conv" or "gemm"
    in_shape: tuple           # per image: (C, H, W) for conv, (K,) for gemm
    out_shape: tuple          # per image: (Cout, Ho, Wo) for conv, (N,) for gemm
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple = (1, 1)
    groups: int = 1
    M: int = 1                # output positions per image (Ho*Wo, or 1 for gemm)
    K: int = 1                # MACs per output = Cin/groups*kh*kw
    N: int = 1                # output channels
    w_q: np.ndarray | None = None       # int8 weights [Cout, Cin/g, kh, kw] (conv) or [N, K] (gemm)
    w_scale: np.ndarray | None = None   # float32 [Cout]
    bias: np.ndarray | None = None      # float32 [Cout]
    a_scale: float = 1.0
    a_signed: bool = False
    act_hist: np.ndarray | None = None  # int64[256]: calibration histogram of activation patterns (incl. padding zeros)
    acc_std: float = 1.0      # std of the exact integer accumulators (pre-bias) over calibration, all channels
    acc_std_ch: np.ndarray | None = None  # float64[N]: the same per output channel

    @property
    def macs(self) -> int:
        """MACs per image."""
        return self.M * self.K * self.N

    @property
    def n_weights(self) -> int:
        return self.K * self.N


@dataclass
class QuantModel:
    graph: object                              # dse.model.graph.Graph
    layers: list = field(default_factory=list)  # [MacLayer] in execution order
    input_name: str = ""
    # tensor name -> (scale, signed) for every quantized tensor (inputs of MAC layers)
    act_quant: dict = field(default_factory=dict)

    def layer(self, name: str) -> MacLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)
