"""Control-variate (CV) correction of approximate-multiplier accumulators (design.md "Control variate correction").

For an output with K terms, ``acc_approx = acc_exact + sum_i e(a_i, w_i)`` with ``e = LUT - exact``. Offline, per
weight value ``w``, a weighted least-squares line ``e(a, w) ~ alpha(w) a + beta(w)`` is fitted over the layer's
calibration activation histogram (weights = histogram probabilities, ``a`` = activation VALUES). Per filter f with
weights ``w_f1..w_fK``: ``alpha_f = mean_i alpha(w_fi)`` and the constant

    B_f = sum_i beta(w_fi) + sum_i (alpha(w_fi) - alpha_f) m_i

with ``m_i`` the calibration mean activation at reduction position i (``MacLayer.act_mean``). The emulator applies
``acc_cv = acc - alpha_f * X - B_f`` with ``X = sum_i a_i`` over the K activation values feeding the output (padding
contributes value 0), one extra accumulation shared by all filters.

Why the second term of B_f: design.md's ``B_f = sum_i beta(w_fi)`` is exact in mean only when every position has
the same activation mean. Real layers do not (fc1 of LeNet-5 reads 400 features of very different means, and trained
weights correlate with them), and then ``alpha_f X`` leaves the mean error ``sum_i (alpha(w_fi) - alpha_f) m_i``;
on LeNet-5 with perf_j3_k3 that made fc1 lose 35.8 pp instead of 8.7. With it, for multipliers whose error is linear in
``a`` (partial-product perforation of the weight: ``e(a, w) = -a g(w)``, the fit is exact) the corrected error has mean
exactly 0 per filter over the calibration data; for other multipliers the nonlinear residual of the per-value line
is left (its mean over the pooled histogram is 0). Without ``act_mean`` (hand-built layers) positions are assumed
alike and the second term is 0. The hardware is unchanged: one shared accumulation X, two constants per filter.
Under i.i.d. activations the corrected variance is ``sum_i Var(e(a, w_fi)) - K alpha_f^2 Var(a)``, never above the
uncorrected one; on real layers it can be above it (X correlates with e less than assumed), which tests bound.

A ``matmul`` layer (activation x activation) has no weights known offline: the per-pattern fit is the same (over its
left operand's histogram), ``alpha``/``B`` are formed per output column from the live right operand
(:func:`matmul_cv_terms`, the sums a weight-loading adder tree would form) and applied by :func:`apply_cv_matmul`.
"""
from __future__ import annotations

import hashlib

import numpy as np

from dse.arith.multipliers import Multiplier, pattern_values
from dse.errors import DseError

_CACHE: dict = {}
_CACHE_MAX = 4096


def _act_pmf(act_hist, where: str) -> np.ndarray:
    """Histogram int64[256] -> probabilities float64[256]; DseError on a missing/empty/negative histogram."""
    if act_hist is None:
        raise DseError(f"{where}: no activation histogram (act_hist); calibrate the model first (dse.quant.calibrate)")
    h = np.asarray(act_hist, dtype=np.float64)
    if h.shape != (256,):
        raise DseError(f"{where}: act_hist has shape {h.shape}, expected (256,); recalibrate the model")
    if not np.all(np.isfinite(h)) or np.any(h < 0) or h.sum() <= 0:
        raise DseError(f"{where}: act_hist is empty or has negative/non-finite counts; recalibrate with at least one image")
    return h / h.sum()


def fit_cv(mult: Multiplier, act_hist, a_signed: bool, where: str = "act_hist") -> tuple[np.ndarray, np.ndarray]:
    """Per weight PATTERN p (0..255, signed int8 weights) the weighted LS fit ``e(a, w_p) ~ alpha a + beta``.

    Returns ``(alpha float64[256], beta float64[256])``. Degenerate histogram (a single activation value, zero
    variance): ``alpha = 0``, ``beta = weighted mean of e``.
    """
    p = _act_pmf(act_hist, where)
    a = pattern_values(a_signed).astype(np.float64)
    err = mult.error_table(a_signed, True).astype(np.float64)  # [a_pattern, w_pattern]
    # numpy's own sums (pairwise / row by row), not BLAS dot products: OpenBLAS's ddot/dgemv order depends on the CPU
    mean_a = float(np.sum(p * a))
    da = a - mean_a
    var_a = float(np.sum(p * (da * da)))
    mean_e = (p[:, None] * err).sum(axis=0)                   # [256] per weight pattern
    # var_a == 0 iff only one activation value has mass (exact: all mass on a single integer)
    if np.count_nonzero(p) <= 1 or var_a <= 0.0:
        return np.zeros(256), mean_e
    alpha = ((p * da)[:, None] * err).sum(axis=0) / var_a
    beta = mean_e - alpha * mean_a
    return alpha, beta


def _weight_patterns(layer) -> np.ndarray:
    """Layer weights as patterns intp[N, K] (filter-major, K in the layer's reduction order)."""
    if layer.w_q is None:
        raise DseError(f"layer '{layer.name}': no quantized weights (w_q); calibrate the model first")
    w = np.asarray(layer.w_q)
    if not np.issubdtype(w.dtype, np.integer) or w.min(initial=0) < -128 or w.max(initial=0) > 127:
        raise DseError(f"layer '{layer.name}': w_q must be int8 values; recalibrate the model")
    n = w.shape[0]
    return (w.reshape(n, -1).astype(np.int64) & 0xFF).astype(np.intp)


def _layer_key(layer, mult: Multiplier, tag: str) -> tuple:
    """Cache key (layer name, multiplier name, signedness, content digest of weights and histogram)."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (layer.w_q, layer.act_hist, np.zeros(0) if layer.act_mean is None else layer.act_mean):
        arr = np.ascontiguousarray(arr)
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return (tag, layer.name, mult.name, bool(layer.a_signed), h.hexdigest())


def _cache_put(key, value):
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = value
    return value


def cv_correction(layer, mult: Multiplier) -> tuple[np.ndarray, np.ndarray]:
    """Per-filter CV coefficients ``(alpha float64[N], beta float64[N])`` of a MacLayer for a multiplier.

    ``alpha[f] = mean_i alpha(w_fi)``, ``beta[f] = B_f = sum_i beta(w_fi) + sum_i (alpha(w_fi) - alpha_f) m_i`` (module
    docstring). Cached per (layer name, multiplier name, activation signedness) and the content of
    ``w_q``/``act_hist``/``act_mean``. Returned arrays are read-only.
    """
    wp = _weight_patterns(layer)
    key = _layer_key(layer, mult, "cv")
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    alpha_w, beta_w = fit_cv(mult, layer.act_hist, layer.a_signed, where=f"layer '{layer.name}'")
    A = alpha_w[wp]                                        # [N, K] per-term slopes
    alpha = A.mean(axis=1)
    beta = beta_w[wp].sum(axis=1) + _position_term(layer, A - alpha[:, None])
    alpha.setflags(write=False)
    beta.setflags(write=False)
    return _cache_put(key, (alpha, beta))


def _position_term(layer, dA: np.ndarray) -> np.ndarray:
    """``sum_i (alpha(w_fi) - alpha_f) m_i`` per filter (0 without per-position means: the deviations sum to 0)."""
    if layer.act_mean is None:
        return np.zeros(dA.shape[0])
    m = np.asarray(layer.act_mean, dtype=np.float64)
    n, k = dA.shape
    if m.ndim != 2 or m.shape[1] != k or n % m.shape[0]:
        raise DseError(f"layer '{layer.name}': act_mean has shape {m.shape}, expected (groups, {k}); recalibrate "
                       "the model")
    return np.einsum("nk,nk->n", dA, np.repeat(m, n // m.shape[0], axis=0))


def cv_pattern_fit(layer, mult: Multiplier) -> tuple[np.ndarray, np.ndarray]:
    """The layer's per weight-pattern fit ``(alpha float64[256], beta float64[256])`` (:func:`fit_cv`), cached."""
    key = _layer_key(layer, mult, "cv-fit")
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    fit = fit_cv(mult, layer.act_hist, layer.a_signed, where=f"layer '{layer.name}'")
    for v in fit:
        v.setflags(write=False)
    return _cache_put(key, fit)


def matmul_cv_terms(layer, mult: Multiplier, qb) -> tuple[np.ndarray, np.ndarray]:
    """Per output column of a matmul layer, from its right operand ``qb`` int8 [..., K, N]: ``alpha`` [..., N] = mean
    over k of alpha(b_kn) and ``B`` [..., N] = sum over k of beta(b_kn) + sum_k (alpha(b_kn) - alpha_n) m_k (the
    position term of :func:`cv_correction`, ``m`` = the left operand's calibration mean per k, ``act_mean`` [1, K])."""
    alpha_w, beta_w = cv_pattern_fit(layer, mult)
    bp = np.asarray(qb).view(np.uint8).astype(np.intp)
    A = alpha_w[bp]
    alpha = A.mean(axis=-2)
    beta = beta_w[bp].sum(axis=-2)
    if layer.act_mean is not None:
        beta = beta + np.einsum("...kn,k->...n", A - alpha[..., None, :], np.asarray(layer.act_mean, np.float64)[0])
    return alpha, beta


def apply_cv_matmul(acc, qa, alpha, beta) -> np.ndarray:
    """Corrected matmul accumulators ``acc - alpha[..., n] * X[..., m] - B[..., n]`` in float64, ``X`` = sum over k of
    the left operand's values ``qa`` [..., M, K] (leading axes broadcast as in the matmul)."""
    X = np.asarray(qa).astype(np.float64).sum(axis=-1)
    return np.asarray(acc, np.float64) - X[..., :, None] * alpha[..., None, :] - beta[..., None, :]


def clear_cache() -> None:
    _CACHE.clear()


def activation_sums(layer, x) -> np.ndarray:
    """``X`` = sum of the K activation VALUES feeding each output (padding = 0).

    gemm: ``x`` [B, K] -> float64[B]. conv: ``x`` [B, C, H, W] -> float64[B, G, Ho, Wo] (G = groups; outputs of
    channel c use group ``c // (N // G)``), honouring the layer's kernel, stride, pads and dilation.
    """
    x = np.asarray(x)
    if layer.op == "gemm":
        return x.reshape(x.shape[0], -1).astype(np.float64).sum(axis=1)
    b, c, h, w = x.shape
    g = int(layer.groups)
    kh, kw = layer.kernel
    sh, sw = layer.stride
    dh, dw = layer.dilation
    pt, pl, pb, pr = layer.pads
    s = x.astype(np.float64).reshape(b, g, c // g, h, w).sum(axis=2)
    s = np.pad(s, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((b, g, ho, wo))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            out += s[:, :, r0:r0 + sh * (ho - 1) + 1:sh, c0:c0 + sw * (wo - 1) + 1:sw]
    return out


def apply_cv(acc, X, alpha, beta) -> np.ndarray:
    """Corrected accumulators ``acc - alpha[n] * X - beta[n]`` in float64.

    GEMM layout: ``acc`` [M, N], ``X`` [M]. Conv layout: ``acc`` [B, N, Ho, Wo], ``X`` [B, G, Ho, Wo] from
    :func:`activation_sums` (G divides N; channel n uses group ``n // (N // G)``).
    """
    acc = np.asarray(acc)
    X = np.asarray(X, dtype=np.float64)
    alpha = np.asarray(alpha, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    n = acc.shape[1] if acc.ndim >= 2 else -1
    if alpha.shape != (n,) or beta.shape != (n,):
        raise ValueError(f"apply_cv: alpha/beta shapes {alpha.shape}/{beta.shape} do not match N={n} of acc {acc.shape}")
    if acc.ndim == 2:
        if X.shape != (acc.shape[0],):
            raise ValueError(f"apply_cv: X shape {X.shape} does not match M={acc.shape[0]}")
        return acc.astype(np.float64) - X[:, None] * alpha[None, :] - beta[None, :]
    if acc.ndim == 4:
        bsz, _, ho, wo = acc.shape
        if X.ndim != 4 or X.shape[0] != bsz or X.shape[2:] != (ho, wo) or n % X.shape[1]:
            raise ValueError(f"apply_cv: X shape {X.shape} does not match acc {acc.shape}")
        g = X.shape[1]
        Xc = np.repeat(X, n // g, axis=1)  # [B, N, Ho, Wo]
        return acc.astype(np.float64) - Xc * alpha[None, :, None, None] - beta[None, :, None, None]
    raise ValueError(f"apply_cv: acc must be [M, N] or [B, N, Ho, Wo], got shape {acc.shape}")
