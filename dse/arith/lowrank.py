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


# ------------------------------------------------------------------------------------------- exact integer factors
@dataclass(frozen=True)
class IntFactors:
    """T == F @ G.T exactly, with integer F (activation side) and G (weight side); verified in exact integer
    arithmetic. Column t of F/G is one "term": a GEMM over gathered operands F[a, t], G[w, t]."""

    F: np.ndarray  # int64[256, t], indexed by activation pattern
    G: np.ndarray  # int64[256, t], indexed by weight pattern

    @property
    def rank(self) -> int:
        return self.F.shape[1]


def _row_hnf(rows: list[list[int]]) -> list[list[int]]:
    """Row echelon (Hermite-like) basis over the integers of the lattice spanned by ``rows`` (Python ints, exact):
    Euclidean row operations only, so the result spans exactly the same Z-lattice."""
    A = [list(r) for r in rows]
    out: list[list[int]] = []
    ncol = len(A[0]) if A else 0
    for c in range(ncol):
        while True:
            nz = [i for i in range(len(A)) if A[i][c] != 0]
            if len(nz) <= 1:
                break
            p = min(nz, key=lambda i: abs(A[i][c]))
            for i in nz:
                if i != p:
                    q = A[i][c] // A[p][c]
                    A[i] = [x - q * y for x, y in zip(A[i], A[p])]
        nz = [i for i in range(len(A)) if A[i][c] != 0]
        if nz:
            row = A.pop(nz[0])
            if row[c] < 0:
                row = [-x for x in row]
            for j, prev in enumerate(out):  # size-reduce earlier rows against the new pivot
                q = prev[c] // row[c]
                if q:
                    out[j] = [x - q * y for x, y in zip(prev, row)]
            out.append(row)
        A = [r for r in A if any(r)]
        if not A:
            break
    return out


def decompose_integer(T: np.ndarray, max_rank: int = 17, max_iter: int = 64) -> IntFactors | None:
    """Integer factors T == F @ G.T (F int64[256, t], G int64[256, t], t = rank of T), or None if the rank exceeds
    max_rank or the factors get too large to verify in int64.

    G.T is an integer basis (echelon form) of the Z-lattice spanned by the rows of T, grown from the pivot rows until
    every row of T has integer coordinates F; the identity F @ G.T == T is then checked exactly in int64 (overflow
    excluded by a magnitude test first)."""
    T = np.asarray(T)
    if T.ndim != 2 or not np.issubdtype(T.dtype, np.integer):
        raise ValueError(f"decompose_integer: expected an integer 2-D table, got {T.dtype} {T.shape}")
    T = T.astype(np.int64)
    n_a, n_w = T.shape
    if not T.any():
        return IntFactors(np.zeros((n_a, 0), np.int64), np.zeros((n_w, 0), np.int64))
    if int(np.abs(T).max()) >= 2 ** 40:
        return None
    Tf = T.astype(np.float64)
    piv = _pivots(Tf, max_rank, tol=max(1e-9 * float(np.abs(Tf).max()), 1e-6))
    if piv is None:
        return None
    rows = [[int(x) for x in T[i]] for i in piv[0]]
    for _ in range(max_iter):
        B = _row_hnf(rows)
        if len(B) != len(piv[0]):
            return None
        Bm = np.array(B, dtype=object)
        if max(abs(int(x)) for x in Bm.ravel()) >= 2 ** 40:
            return None
        Bi = Bm.astype(np.int64)
        pc = [int(np.flatnonzero(b)[0]) for b in Bi]
        C = np.linalg.solve(Bi[:, pc].T.astype(np.float64), Tf[:, pc].T).T  # T[:, pc] = C @ B[:, pc]
        if not np.isfinite(C).all() or np.abs(C).max() >= 2 ** 40:
            return None
        Ci = np.rint(C).astype(np.int64)
        r = len(B)
        if float(np.abs(Ci).max()) * float(np.abs(Bi).max()) * r >= 2.0 ** 62:
            return None
        bad = np.flatnonzero((Ci @ Bi != T).any(axis=1))
        if bad.size == 0:
            # canonical signs: first non-zero activation factor of each term positive
            for t in range(r):
                nz = np.flatnonzero(Ci[:, t])
                if nz.size and Ci[nz[0], t] < 0:
                    Ci[:, t], Bi[t] = -Ci[:, t], -Bi[t]
            return IntFactors(np.ascontiguousarray(Ci), np.ascontiguousarray(Bi.T))
        rows = B + [[int(x) for x in T[bad[0]]]]
    return None
