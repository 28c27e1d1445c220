"""Shared test helpers for MAC layers: multipliers built independently from the design.md definitions (so tests do
not depend on dse.arith.multipliers' own cores), operand histograms, small gemm layers with random activations, and
an obviously-right error accumulation by direct table gather; DSE_KERNEL_VNNI set for a block."""
from __future__ import annotations

import contextlib
import os

import numpy as np

from dse.arith.multipliers import Multiplier, pattern_values
from dse.quant import MacLayer


@contextlib.contextmanager
def env_var(name: str, value: str):
    """Environment variable ``name`` set to ``value`` for the block, then as it was (also inside hypothesis tests,
    where monkeypatch's function scope does not reach every example)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def vnni_env(on: bool):
    """DSE_KERNEL_VNNI set for the block (the default of dse._kernels.int_gemm and dw_conv, hence of dse.kernels'
    calls)."""
    return env_var("DSE_KERNEL_VNNI", "1" if on else "0")


def conv_kernel_env(kind: str):
    """DSE_KERNEL_CONV set for the block (dse.kernels.conv_kernel: the integer GEMM's conv operand, "im2col", "bcast"
    or "auto")."""
    return env_var("DSE_KERNEL_CONV", kind)


def _ilog2(x):
    return np.where(x > 0, np.floor(np.log2(np.maximum(x, 1))).astype(np.int64), 0)


def mitchell_core(x, y):
    x, y = x.astype(np.int64), y.astype(np.int64)
    k1, k2 = _ilog2(x), _ilog2(y)
    f1 = (x - (1 << k1)) / (1 << k1)
    f2 = (y - (1 << k2)) / (1 << k2)
    s = f1 + f2
    p = np.where(s < 1, np.ldexp(1 + s, k1 + k2), np.ldexp(s, k1 + k2 + 1))
    return np.where((x == 0) | (y == 0), 0, np.floor(p)).astype(np.int64)


def drum_core(k):
    def core(x, y):
        def trunc(v):
            t = _ilog2(v)
            sh = np.maximum(t - k + 1, 0)
            return np.where(t > k - 1, (v >> sh) | 1, v), sh
        (xa, sa), (ya, sb) = trunc(x.astype(np.int64)), trunc(y.astype(np.int64))
        return (xa * ya) << (sa + sb)
    return core


def signmag(core):
    def build(a_signed, w_signed):
        A, W = np.meshgrid(pattern_values(a_signed), pattern_values(w_signed), indexing="ij")
        return np.sign(A) * np.sign(W) * core(np.abs(A), np.abs(W))
    return build


def perforation(j, k):
    mask = ((1 << k) - 1) << j

    def build(a_signed, w_signed):
        A, W = np.meshgrid(pattern_values(a_signed), pattern_values(w_signed), indexing="ij")
        return A * (W & ~mask)
    return build


MITCHELL = Multiplier(name="t_mitchell", family="lut", _builder=signmag(mitchell_core))
DRUM4 = Multiplier(name="t_drum4", family="lut", _builder=signmag(drum_core(4)))
PERF = Multiplier(name="t_perf_j0_k2", family="lut", _builder=perforation(0, 2))
PERF13 = Multiplier(name="t_perf_j1_k3", family="lut", _builder=perforation(1, 3))


def relu_hist(rng, zero_frac=0.4, scale=30.0):
    h = np.zeros(256, np.int64)
    v = np.minimum(np.round(rng.exponential(scale, 100000)), 255).astype(int)
    h += np.bincount(v, minlength=256)
    h[0] += int(zero_frac * h.sum())
    return h


def signed_hist(rng, loc=5.0, scale=25.0):
    v = np.clip(np.round(rng.laplace(loc, scale, 100000)), -128, 127).astype(int)
    return np.bincount(v & 0xFF, minlength=256).astype(np.int64)


def gemm_layer(name, w, hist, a_signed):
    n, k = w.shape
    return MacLayer(name=name, op="gemm", in_shape=(k,), out_shape=(n,), K=k, N=n, w_q=w.astype(np.int8),
                    a_signed=a_signed, act_hist=hist)


def draw_acts(rng, hist, a_signed, shape):
    pats = rng.choice(256, size=shape, p=hist / hist.sum())
    return pattern_values(a_signed)[pats]


def err_acc(mult, a_vals, w, a_signed):
    """sum_k e(a[m,k], w[n,k]) -> int64[M, N] by direct table gather (obviously right)."""
    E = mult.error_table(a_signed, True)
    ap, wp = a_vals & 0xFF, w.astype(np.int64) & 0xFF
    return np.stack([E[ap, wp[n][None, :]].sum(axis=1) for n in range(w.shape[0])], axis=1)
