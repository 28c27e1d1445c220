"""Exact low-rank decomposition of error tables and its rounding bounds."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.arith.lowrank import _row_hnf, decompose, decompose_integer, decompose_verified, gamma, gemm_error_bound
from dse.arith.multipliers import pattern_values

A_U = pattern_values(False)[:, None]
W_S = pattern_values(True)[None, :]


def drum_like(v, k=3):
    """Keep the k leading bits of |v| (lowest kept bit forced to 1) -- a per-operand function, so the product
    error is separable."""
    s, m = np.sign(v), np.abs(v)
    t = np.floor(np.log2(np.maximum(m, 1))).astype(np.int64)
    sh = np.maximum(t - k + 1, 0)
    return s * np.where(sh > 0, (((m >> sh) | 1) << sh), m)


def test_perforation_is_rank_one_and_exact():
    E = -A_U * (W_S & 0b1100)  # perforation j=2, k=2 : approx = a * (w & ~mask), error = -a * w_L
    lr = decompose_verified(E)
    assert lr.rank == 1
    U, V = decompose(E)
    assert np.array_equal(np.rint(U @ V.T), E)
    assert lr.delta < 1e-9


def test_drum_like_operand_rounding_has_rank_2():
    ea, ew = drum_like(A_U), drum_like(W_S)
    E = ea * ew - A_U * W_S  # = [ea, a] . [ew, -w]: rank 2
    lr = decompose_verified(E)
    assert np.linalg.matrix_rank(E.astype(float)) == 2
    assert lr.rank == 2 and np.array_equal(np.rint(lr.U @ lr.V.T), E)


@settings(deadline=None, max_examples=30)
@given(r=st.integers(0, 16), mag=st.integers(1, 200), seed=st.integers(0, 2 ** 32 - 1))
def test_random_integer_rank_r_recovered(r, mag, seed):
    rng = np.random.default_rng(seed)
    E = rng.integers(-mag, mag + 1, (256, r)) @ rng.integers(-mag, mag + 1, (r, 256))
    lr = decompose_verified(E, max_rank=16)
    assert lr is not None and lr.rank <= r
    assert np.array_equal(np.rint(lr.U @ lr.V.T), E) and lr.delta < 0.5


def test_rank_above_max_is_rejected():
    rng = np.random.default_rng(0)
    E = rng.integers(-3, 4, (256, 5)) @ rng.integers(-3, 4, (5, 256))
    assert decompose(E, max_rank=4) is None
    assert decompose(rng.integers(-1000, 1000, (256, 256))) is None  # full rank
    assert decompose_verified(E, max_rank=5).rank == 5


def test_zero_table_rank_zero():
    U, V = decompose(np.zeros((256, 256), np.int64))
    assert U.shape == (256, 0) and V.shape == (256, 0)


def test_gemm_bound_grows_with_k_and_is_conservative():
    E = -A_U * (W_S & 0b111)
    lr = decompose_verified(E)
    b1, b2 = gemm_error_bound(lr, 9, 255, 128), gemm_error_bound(lr, 9000, 255, 128)
    assert 0 < b1 < b2 < 0.25
    assert gamma(10) == pytest.approx(10 * 2.0 ** -53)
    # an absurdly long reduction must not pass the 0.25 limit
    assert gemm_error_bound(lr, 10 ** 12, 255, 128) > 0.25
    # empirical check: the float64 concatenated GEMM is within the bound of the exact integer result
    rng = np.random.default_rng(1)
    Kd = 4096
    a = rng.integers(0, 256, (8, Kd))
    w = rng.integers(-128, 128, (5, Kd))
    ah = np.concatenate([a, lr.U[a, 0]], axis=1).astype(np.float64)
    wh = np.concatenate([w, lr.V[w & 0xFF, 0]], axis=1).astype(np.float64)
    exact = a @ w.T + (E[a[:, None, :], (w & 0xFF)[None, :, :]]).sum(-1)
    assert np.abs(ah @ wh.T - exact).max() <= gemm_error_bound(lr, Kd, 255, 128)


def test_rejects_non_integer_tables():
    with pytest.raises(ValueError):
        decompose(np.zeros((256, 256)))


# ------------------------------------------------------------------------------------------- exact integer factors
def test_integer_factors_of_separable_tables_are_rank_one():
    T = A_U * (W_S & ~np.int64(0b110))  # perforation table itself: a * (w & ~mask)
    f = decompose_integer(T)
    assert f.rank == 1 and f.F.dtype == np.int64 and np.array_equal(f.F @ f.G.T, T)
    assert np.array_equal(f.F[:, 0], A_U[:, 0])  # primitive: the factor is a itself, not a / pivot
    T = drum_like(A_U) * drum_like(W_S)
    f = decompose_integer(T)
    assert f.rank == 1 and np.array_equal(f.F @ f.G.T, T)


@settings(deadline=None, max_examples=30)
@given(r=st.integers(0, 8), mag=st.integers(1, 50), scale=st.integers(1, 12), seed=st.integers(0, 2 ** 32 - 1))
def test_integer_factors_random_lattices(r, mag, scale, seed):
    """Rows built so the pivot rows alone need not generate the row lattice (scaled rows + a few unscaled ones).
    The echelon basis can blow up on dense random lattices (then None = the caller falls back); rank <= 1 always
    succeeds, and any answer is exact."""
    rng = np.random.default_rng(seed)
    U = rng.integers(-mag, mag + 1, (256, r)) * np.where(rng.random((256, 1)) < 0.9, scale, 1)
    T = U @ rng.integers(-mag, mag + 1, (r, 256))
    f = decompose_integer(T)
    if r <= 1:
        assert f is not None
    if f is not None:
        assert f.rank == np.linalg.matrix_rank(T.astype(float)) and np.array_equal(f.F @ f.G.T, T)


def test_integer_factors_reject_high_rank_and_non_integer():
    rng = np.random.default_rng(5)
    assert decompose_integer(rng.integers(-100, 100, (256, 256))) is None
    E = rng.integers(-3, 4, (256, 5)) @ rng.integers(-3, 4, (5, 256))
    assert decompose_integer(E, max_rank=4) is None and decompose_integer(E, max_rank=5).rank == 5
    assert decompose_integer(np.zeros((256, 256), np.int64)).rank == 0
    with pytest.raises(ValueError):
        decompose_integer(np.zeros((256, 256)))


def test_row_hnf_spans_same_lattice():
    rows = [[6, 4, 2], [9, 6, 3], [0, 5, 10]]
    B = _row_hnf(rows)
    assert len(B) == 2
    Bm = np.array(B)
    for r in rows:  # each original row has integer coordinates in B
        c, *_ = np.linalg.lstsq(Bm.T.astype(float), np.array(r, float), rcond=None)
        assert np.allclose(c, np.rint(c)) and np.array_equal(np.rint(c).astype(int) @ Bm, r)
    assert B[0][0] == 3  # gcd(6, 9): the lattice is not just the span of the first row
