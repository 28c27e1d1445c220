"""Exact low-rank decomposition of a multiplier's error table E[a, w] = LUT[a, w] - a*w.

Perforation, truncation, DRUM and Ax-BxP tables have a small exact rank r, so an approximate GEMM is an exact GEMM
plus r GEMMs on per-operand gathers (``dse.kernels`` "lowrank" path).

Method (a verified float skeleton/CUR factorization): pivot rows I and columns J are chosen by Gaussian elimination
with complete pivoting on E (float64; E is integer with |E| < 2^53 so it is held exactly); then
``V = E[I, :].T`` (integer rows, exact in float64) and ``U = E[:, J] @ inv(E[I, J])``. The factorization is accepted
only if ``np.rint(U @ V.T) == E`` and the rigorous entrywise bound ``delta >= |U @ V.T - E|`` (exact real arithmetic
on the stored floats: observed residual + the float64 rounding bound of evaluating U @ V.T) is below 0.5.
``gemm_error_bound`` turns ``delta`` into an a-priori bound on the rounding error of a whole K-term GEMM; callers
use the low-rank path only when that bound is < 0.25, so rounding to the nearest integer recovers the exact result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNIT_ROUNDOFF = 2.0 ** -53  # float64


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): bound on the relative rounding error of an n-term float64 dot product."""
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu) if nu < 1.0 else float("inf")


@dataclass(frozen=True)
class LowRank:
    """E ~ U @ V.T with |U @ V.T - E| <= delta entrywise (exact arithmetic on the stored floats).

    uv_abs: max over (a, w) of sum_r |U[a, r]| |V[w, r]| (used by the GEMM rounding bound).
    """

    U: np.ndarray  # float64[256, r], indexed by activation pattern
    V: np.ndarray  # float64[256, r], indexed by weight pattern
    delta: float
    uv_abs: float

    @property
    def rank(self) -> int:
        return self.U.shape[1]


def _pivots(E: np.ndarray, max_rank: int, tol: float) -> tuple[list[int], list[int]] | None:
    """Complete-pivoting elimination; the pivot rows/cols of the first r steps, r = numerical rank (None if > max_rank)."""
    R = E.astype(np.float64).copy()
    rows: list[int] = []
    cols: list[int] = []
    for _ in range(max_rank + 1):
        i, j = np.unravel_index(int(np.argmax(np.abs(R))), R.shape)
        if abs(R[i, j]) <= tol:
            return rows, cols
        if len(rows) == max_rank:
            return None
        rows.append(int(i))
        cols.append(int(j))
        R -= np.outer(R[:, j], R[i, :] / R[i, j])
    return None


def decompose_verified(E: np.ndarray, max_rank: int = 16) -> LowRank | None:
    """Verified factorization of the integer table E (int64[256, 256]) with rank <= max_rank, or None."""
    E = np.asarray(E)
    if E.ndim != 2 or not np.issubdtype(E.dtype, np.integer):
        raise ValueError(f"decompose: expected an integer 2-D table, got {E.dtype} {E.shape}")
    if E.size and int(np.abs(E).max()) >= 2 ** 52:
        return None
    Ef = E.astype(np.float64)
    n_a, n_w = E.shape
    if not E.any():
        return LowRank(np.zeros((n_a, 0)), np.zeros((n_w, 0)), 0.0, 0.0)
    scale = float(np.abs(Ef).max())
    piv = _pivots(Ef, max_rank, tol=max(1e-9 * scale, 1e-6))
    if piv is None:
        return None
    rows, cols = piv
    core = Ef[np.ix_(rows, cols)]
    try:
        U = np.linalg.solve(core.T, Ef[:, cols].T).T  # U @ core = E[:, cols]
    except np.linalg.LinAlgError:
        return None
    V = Ef[rows, :].T.copy()
    P = U @ V.T
    if not np.array_equal(np.rint(P), Ef):
        return None
    absUV = np.abs(U) @ np.abs(V).T
    r = len(rows)
    delta = float(np.abs(P - Ef).max()) + gamma(r) * float(absUV.max()) * (1 + 2 * UNIT_ROUNDOFF)
    if not delta < 0.5:
        return None
    return LowRank(np.ascontiguousarray(U), np.ascontiguousarray(V), delta, float(absUV.max()))


def decompose(table_err: np.ndarray, max_rank: int = 16) -> tuple[np.ndarray, np.ndarray] | None:
    """(U float64[256, r], V float64[256, r]) with np.rint(U @ V.T) == table_err exactly, or None if rank > max_rank."""
    lr = decompose_verified(table_err, max_rank)
    return None if lr is None else (lr.U, lr.V)


def gemm_error_bound(lr: LowRank, K: int, max_abs_a: float, max_abs_w: float) -> float:
    """A-priori bound on |computed - exact| of one output of the concatenated float64 GEMM
    sum_k (a_k w_k + sum_r U[a_k, r] V[w_k, r]) over K terms (any summation order, FMA or not).

    = K * delta (factorization error) + gamma_{K (1 + r)} * K * (max|a| max|w| + max sum_r |U||V|).
    """
    n = K * (1 + lr.rank)
    magnitude = K * (max_abs_a * max_abs_w + lr.uv_abs)
    return K * lr.delta + gamma(n) * magnitude * (1 + 2 * UNIT_ROUNDOFF)
