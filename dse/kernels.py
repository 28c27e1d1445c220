"""Integer and floating-point conv/GEMM with an emulated multiplier.

Public API (stable; other modules call only these):

* ``gemm_int(a, w, mult, a_signed, path="auto", isa=None) -> int64[M, N]``:
  ``out[m, n] = sum_k LUT[a[m, k] & 0xFF, w[n, k] & 0xFF]``; ``a`` int array [M, K] of activation values (uint8 range
  if unsigned, int8 range if signed), ``w`` int8 values [N, K].
* ``conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, path="auto",
  isa=None) -> int64[B, Cout, Ho, Wo]``: ``x`` [B, Cin, H, W] activation values, ``w`` int8 [Cout, Cin/groups, kh, kw];
  ``pads`` = (top, left, bottom, right) as in ONNX; padded positions contribute ``LUT[0, w]``.
* ``gemm_float`` / ``conv2d_float`` (aliases ``gemm_float_approx`` / ``conv2d_float_approx``): float-domain
  multipliers (FP32 Mitch-w, bfloat16), float32 results; products ``mult.float_product(x, y)`` accumulated in FP32
  in ascending k order (k = (c, i, j) row-major for convolutions).
* ``reference_gemm_int`` / ``reference_conv2d_int`` / ``reference_gemm_float`` / ``reference_conv2d_float``: slow,
  obviously-right numpy versions (direct table gather; sequential float32 loop).
* ``select_path(mult, a_signed, K, path="auto")``: the path a call with reduction length K actually uses.

``path``: "auto" picks per multiplier: "exact" (BLAS; only for multipliers whose error table is zero), "lowrank"
(exact GEMM + r GEMMs on per-operand gathers, float64, rounded; used when the error table has small exact rank and the
a-priori rounding bound is < 0.25, else it falls back to "lut"), "lut" (Cython SIMD table kernel, ISA dispatched at
run time: ``isa=`` or env ``DSE_KERNEL_ISA`` = scalar/avx2/avx512 caps it). All paths are bit-exact against the
reference. Auto prefers "lowrank" over "lut" only while it is expected to be faster (rank <= ``AUTO_MAX_RANK[isa]``).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from dse.arith.lowrank import LowRank, decompose_verified, gemm_error_bound
from dse.arith.multipliers import Multiplier
from dse.errors import DseError

try:
    from dse import _kernels
except ImportError:  # pragma: no cover - only when the extension was not built
    _kernels = None

PATHS = ("auto", "exact", "lowrank", "lut")
LOWRANK_MAX_RANK = 16
# Largest rank for which "auto" prefers lowrank over the LUT kernel at that ISA level. Measured on one Zen 4 core
# (benchmarks/RESULTS.md): lowrank ~8 GMAC/s at r = 1 and its cost grows ~(1 + r) (float64 GEMM of depth K(1+r) plus
# the gathers); LUT ~16-20 GMAC/s with AVX-512 VBMI but ~2.5 GMAC/s with AVX2 gathers or scalar code.
AUTO_MAX_RANK = {"avx512": 0, "avx2": 4, "scalar": 4}
_BOUND_LIMIT = 0.25
_F32_EXACT = 2 ** 24  # float32 holds every integer partial sum below this exactly
_BLOCK_ELEMS = 1 << 22  # working-set size (elements) of blocked float temporaries


def _patterns(v: np.ndarray) -> np.ndarray:
    return (np.asarray(v).astype(np.int64) & 0xFF).astype(np.intp)


def _u8(v: np.ndarray) -> np.ndarray:
    """8-bit patterns (value & 0xFF) as uint8, same shape."""
    v = np.asarray(v)
    if v.dtype == np.uint8:
        return v
    if v.dtype == np.int8:
        return v.view(np.uint8)
    return (v.astype(np.int64) & 0xFF).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------- references
def reference_gemm_int(a: np.ndarray, w: np.ndarray, mult: Multiplier, a_signed: bool) -> np.ndarray:
    """out[m, n] = sum_k LUT[a[m,k], w[n,k]] by direct table gather (slow, obviously right)."""
    lut = mult.table(a_signed, True).astype(np.int64)
    pa, pw = _patterns(a), _patterns(w)
    M, K = pa.shape
    N = pw.shape[0]
    out = np.zeros((M, N), dtype=np.int64)
    for n in range(N):
        out[:, n] = lut[pa, pw[n][None, :]].sum(axis=1)
    return out


def im2col(x: np.ndarray, kh: int, kw: int, stride, pads, dilation) -> tuple[np.ndarray, int, int]:
    """x [B, C, H, W] -> cols [B, Ho, Wo, C, kh, kw] (zero padded), Ho, Wo."""
    B, C, H, W = x.shape
    pt, pl, pb, pr = pads
    sh, sw = stride
    dh, dw = dilation
    xp = np.zeros((B, C, H + pt + pb, W + pl + pr), dtype=x.dtype)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((B, Ho, Wo, C, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, :, i, j] = xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh,
                                        j * dw: j * dw + sw * (Wo - 1) + 1: sw].transpose(0, 2, 3, 1)
    return cols, Ho, Wo


def reference_conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Direct conv by im2col + reference_gemm_int per group (slow, obviously right)."""
    B, C, H, W = x.shape
    Cout, Cg, kh, kw = w.shape
    cols, Ho, Wo = im2col(x, kh, kw, stride, pads, dilation)
    out = np.zeros((B, Cout, Ho, Wo), dtype=np.int64)
    og = Cout // groups
    for g in range(groups):
        a = cols[:, :, :, g * Cg:(g + 1) * Cg].reshape(B * Ho * Wo, Cg * kh * kw)
        wg = w[g * og:(g + 1) * og].reshape(og, Cg * kh * kw)
        out[:, g * og:(g + 1) * og] = reference_gemm_int(a, wg, mult, a_signed).reshape(B, Ho, Wo, og).transpose(0, 3, 1, 2)
    return out


def _float_product_fn(mult):
    fn = getattr(mult, "float_product", None)
    if getattr(mult, "domain", "float") != "float" or fn is None:
        raise DseError(f"multiplier '{getattr(mult, 'name', mult)}' has no floating-point product model; "
                       "use gemm_int/conv2d_int for 8-bit multipliers")
    return fn


def reference_gemm_float(a: np.ndarray, w: np.ndarray, mult) -> np.ndarray:
    """out[m, n] = (((p_0 + p_1) + p_2) + ...) in float32, p_k = mult.float_product(a[m,k], w[n,k]) (slow)."""
    prod = _float_product_fn(mult)
    a = np.asarray(a, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    p = np.asarray(prod(a[:, None, :], w[None, :, :]), dtype=np.float32)  # [M, N, K]
    acc = np.zeros(p.shape[:2], dtype=np.float32)
    for k in range(p.shape[2]):
        acc = acc + p[:, :, k]
    return acc


def reference_conv2d_float(x, w, mult, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Float conv by im2col + reference_gemm_float per group (slow, obviously right)."""
    x = np.asarray(x, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    B, C, H, W = x.shape
    Cout, Cg, kh, kw = w.shape
    cols, Ho, Wo = im2col(x, kh, kw, stride, pads, dilation)
    out = np.zeros((B, Cout, Ho, Wo), dtype=np.float32)
    og = Cout // groups
    for g in range(groups):
        a = cols[:, :, :, g * Cg:(g + 1) * Cg].reshape(B * Ho * Wo, Cg * kh * kw)
        wg = w[g * og:(g + 1) * og].reshape(og, Cg * kh * kw)
        out[:, g * og:(g + 1) * og] = reference_gemm_float(a, wg, mult).reshape(B, Ho, Wo, og).transpose(0, 3, 1, 2)
    return out


# ------------------------------------------------------------------------------------------ per-multiplier preparation
@dataclass
class _Prepared:
    """Everything the fast paths need for one (multiplier, activation signedness); built once and cached."""

    lut: np.ndarray  # int64[256 a, 256 w]
    lutT: np.ndarray  # int32[256 w, 256 a], contiguous
    planes: np.ndarray  # uint8[256 w, NP, 256 a]: byte planes of lut - off[w]
    off: np.ndarray  # int64[256 w]: column minimum
    maxabs: int
    is_exact: bool
    a_vals: np.ndarray  # int64[256]: value of each activation pattern
    _lowrank: object = field(default=False)  # False = not computed yet

    @property
    def lowrank(self) -> LowRank | None:
        if self._lowrank is False:
            err = self.lut - np.multiply.outer(self.a_vals, _W_VALS)
            self._lowrank = decompose_verified(err, LOWRANK_MAX_RANK)
        return self._lowrank


_W_VALS = np.where(np.arange(256) >= 128, np.arange(256) - 256, np.arange(256)).astype(np.int64)
_CACHE: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def _prepare(mult: Multiplier, a_signed: bool) -> _Prepared:
    try:
        per = _CACHE.setdefault(mult, {})
    except TypeError:  # not weak-referenceable: no caching
        per = {}
    key = bool(a_signed)
    prep = per.get(key)
    if prep is None:
        lut = np.asarray(mult.table(key, True)).astype(np.int64)
        if lut.shape != (256, 256):
            raise DseError(f"multiplier '{mult.name}': table has shape {lut.shape}, expected (256, 256)")
        if lut.min() < -2 ** 31 or lut.max() >= 2 ** 31:
            raise DseError(f"multiplier '{mult.name}': table values must fit int32")
        a_vals = _W_VALS.copy() if a_signed else np.arange(256, dtype=np.int64)
        off = lut.min(axis=0)
        D = (lut - off[None, :]).T  # [w, a], 0 <= D < 2^32
        nplanes = max(1, (int(D.max()).bit_length() + 7) // 8)
        planes = np.empty((256, nplanes, 256), dtype=np.uint8)
        for p in range(nplanes):
            planes[:, p, :] = (D >> (8 * p)) & 0xFF
        prep = _Prepared(lut=lut, lutT=np.ascontiguousarray(lut.T.astype(np.int32)), planes=planes, off=off,
                         maxabs=int(np.abs(lut).max()),
                         is_exact=bool(np.array_equal(lut, np.multiply.outer(a_vals, _W_VALS))), a_vals=a_vals)
        per[key] = prep
    return prep


def _isa_name(isa) -> str:
    if _kernels is None:
        raise DseError("the compiled kernels dse._kernels are missing; build them with "
                       "'pip install -e . --no-build-isolation' (or 'python setup.py build_ext --inplace')")
    try:
        return _kernels.isa(isa)
    except ValueError as e:
        raise DseError(f"{e} (isa= argument or DSE_KERNEL_ISA environment variable)") from None


def select_path(mult: Multiplier, a_signed: bool, K: int, path: str = "auto", isa=None,
                max_abs_a: int | None = None) -> str:
    """The path a GEMM with reduction length K uses: "exact", "lowrank" or "lut" (see module docstring)."""
    if path not in PATHS:
        raise DseError(f"unknown kernel path '{path}'; use one of {', '.join(PATHS)}")
    prep = _prepare(mult, a_signed)
    if path == "exact":
        if not prep.is_exact:
            raise DseError(f"kernel path 'exact' needs an exact multiplier, '{mult.name}' is approximate; "
                           "use path='auto', 'lowrank' or 'lut'")
        return "exact"
    if path == "auto" and prep.is_exact:
        return "exact"
    if path in ("auto", "lowrank"):
        lr = prep.lowrank
        if lr is not None:
            amax = (128 if a_signed else 255) if max_abs_a is None else max_abs_a
            ok = gemm_error_bound(lr, K, amax, 128) < _BOUND_LIMIT
            if ok and (path == "lowrank" or lr.rank <= AUTO_MAX_RANK[_isa_name(isa)]):
                return "lowrank"
    return "lut"


# ------------------------------------------------------------------------------------------------------- GEMM cores
def _exact_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared) -> np.ndarray:
    """int64[N, M] = W @ A with the exact product: float32 BLAS on K-chunks whose integer sums stay < 2^24
    (exact in any summation order), float64 if the chunks would be too short."""
    K, M = AT.shape
    N = Wp.shape[0]
    av = AT.view(np.int8) if prep.a_vals[255] < 0 else AT
    wv = Wp.view(np.int8)
    amax = int(np.abs(av.astype(np.int16)).max()) if AT.size else 0
    wmax = int(np.abs(wv.astype(np.int16)).max()) if Wp.size else 0
    kc = K if amax * wmax == 0 else _F32_EXACT // (amax * wmax)
    if kc >= max(1, K // 4):
        out = np.zeros((N, M), dtype=np.int64)
        for k0 in range(0, K, max(kc, 1)):
            k1 = min(K, k0 + kc)
            out += (wv[:, k0:k1].astype(np.float32) @ av[k0:k1].astype(np.float32)).astype(np.int64)
        return out
    return (wv.astype(np.float64) @ av.astype(np.float64)).astype(np.int64)  # |sums| < 2^53: exact


def _lowrank_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared) -> np.ndarray:
    """int64[N, M] = rint([W, V(W)] @ [A; U(A)]) in float64 (one GEMM of depth K(1+r)), blocked over M."""
    lr = prep.lowrank
    K, M = AT.shape
    N = Wp.shape[0]
    r = lr.rank
    ta = np.concatenate([prep.a_vals[None, :].astype(np.float64), lr.U.T], axis=0)  # [1+r, 256]
    tw = np.concatenate([_W_VALS[None, :].astype(np.float64), lr.V.T], axis=0)
    What = np.ascontiguousarray(tw[:, Wp].transpose(1, 0, 2).reshape(N, (1 + r) * K))
    out = np.empty((N, M), dtype=np.int64)
    mb = max(256, _BLOCK_ELEMS // max(1, (1 + r) * K))
    for m0 in range(0, M, mb):
        m1 = min(M, m0 + mb)
        Ahat = np.take(ta, AT[:, m0:m1], axis=1).reshape((1 + r) * K, m1 - m0)
        out[:, m0:m1] = np.rint(What @ Ahat)
    return out


def _lut_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared, isa) -> np.ndarray:
    out, used = _kernels.lut_gemm(AT, Wp, prep.lutT, prep.planes, prep.maxabs, _isa_name(isa))
    if used == "avx512":  # that kernel sums the offset table lut - off[w]
        out += prep.off[Wp].sum(axis=1)[:, None]
    return out


def _gemm_T(AT: np.ndarray, Wp: np.ndarray, mult: Multiplier, a_signed: bool, path: str, isa) -> np.ndarray:
    """int64[N, M] from activation patterns AT uint8[K, M] and weight patterns Wp uint8[N, K] (both C-contiguous)."""
    prep = _prepare(mult, a_signed)
    K = AT.shape[0]
    amax = None
    if path in ("auto", "lowrank") and AT.size:
        amax = int(np.abs(AT.view(np.int8).astype(np.int16)).max()) if a_signed else int(AT.max())
    chosen = select_path(mult, a_signed, K, path, isa, max_abs_a=amax)
    if chosen == "exact":
        return _exact_gemm(AT, Wp, prep)
    if chosen == "lowrank":
        return _lowrank_gemm(AT, Wp, prep)
    return _lut_gemm(AT, Wp, prep, isa)


def _check_range(v: np.ndarray, signed: bool, what: str) -> None:
    if v.size == 0 or v.dtype in (np.uint8, np.int8):
        if v.dtype == np.uint8 and signed or v.dtype == np.int8 and not signed:
            raise DseError(f"{what} has dtype {v.dtype} but is declared {'signed' if signed else 'unsigned'}; "
                           "pass values in the declared 8-bit range")
        return
    if not np.issubdtype(v.dtype, np.integer):
        raise DseError(f"{what} must be an integer array (8-bit values), got {v.dtype}")
    lo, hi = (-128, 127) if signed else (0, 255)
    vmin, vmax = int(v.min()), int(v.max())
    if vmin < lo or vmax > hi:
        raise DseError(f"{what} values span [{vmin}, {vmax}], outside the {'int8' if signed else 'uint8'} range "
                       f"[{lo}, {hi}]; quantize to 8 bits first")


# ----------------------------------------------------------------------------------------------------- public: int
def gemm_int(a, w, mult, a_signed, path="auto", isa=None):
    """out[m, n] = sum_k LUT[a[m, k] & 0xFF, w[n, k] & 0xFF] as int64[M, N] (bit-exact; see module docstring)."""
    a = np.asarray(a)
    w = np.asarray(w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise DseError(f"gemm_int: activations {a.shape} and weights {w.shape} must be [M, K] and [N, K] with equal K")
    _check_range(a, a_signed, "gemm_int activations")
    _check_range(w, True, "gemm_int weights")
    AT = np.ascontiguousarray(_u8(a).T)
    Wp = np.ascontiguousarray(_u8(w))
    return np.ascontiguousarray(_gemm_T(AT, Wp, mult, a_signed, path, isa).T)


def _pair(v, name):
    t = tuple(int(x) for x in (v if np.iterable(v) else (v, v)))
    if len(t) != 2 or min(t) < 1:
        raise DseError(f"conv2d: {name}={v!r} must be two positive integers")
    return t


def _conv_geometry(x_shape, w_shape, stride, pads, dilation, groups):
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    pads = tuple(int(p) for p in pads)
    if len(pads) != 4 or min(pads) < 0:
        raise DseError(f"conv2d: pads={pads!r} must be four non-negative integers (top, left, bottom, right)")
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise DseError(f"conv2d: input {x_shape} must be [B, C, H, W] and weights {w_shape} [Cout, C/groups, kh, kw]")
    B, C, H, W = x_shape
    Cout, Cg, kh, kw = w_shape
    if groups < 1 or C % groups or Cout % groups or Cg * groups != C:
        raise DseError(f"conv2d: groups={groups} does not fit input channels {C}, weight shape {w_shape}")
    Ho = (H + pads[0] + pads[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + pads[1] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if Ho < 1 or Wo < 1:
        raise DseError(f"conv2d: kernel {kh}x{kw} (dilation {dilation}) is larger than the padded input {H}x{W}")
    return stride, pads, dilation


def im2col_T(x: np.ndarray, kh: int, kw: int, stride, pads, dilation) -> tuple[np.ndarray, int, int]:
    """x [B, C, H, W] -> cols [C*kh*kw, B*Ho*Wo] (row index (c, i, j) row-major, zero padded), Ho, Wo."""
    B, C, H, W = x.shape
    pt, pl, pb, pr = pads
    sh, sw = stride
    dh, dw = dilation
    xp = np.zeros((C, B, H + pt + pb, W + pl + pr), dtype=x.dtype)
    xp[:, :, pt:pt + H, pl:pl + W] = x.transpose(1, 0, 2, 3)
    Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((C, kh, kw, B, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, i, j] = xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
    return cols.reshape(C * kh * kw, B * Ho * Wo), Ho, Wo


def conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, path="auto",
               isa=None):
    """Integer conv with the emulated multiplier -> int64[B, Cout, Ho, Wo] (bit-exact; see module docstring)."""
    x = np.asarray(x)
    w = np.asarray(w)
    stride, pads, dilation = _conv_geometry(x.shape, w.shape, stride, pads, dilation, groups)
    _check_range(x, a_signed, "conv2d_int input")
    _check_range(w, True, "conv2d_int weights")
    B = x.shape[0]
    Cout, Cg, kh, kw = w.shape
    AT, Ho, Wo = im2col_T(_u8(x), kh, kw, stride, pads, dilation)
    Wp = _u8(w).reshape(Cout, Cg * kh * kw)
    og, kg = Cout // groups, Cg * kh * kw
    out = np.empty((B, Cout, Ho, Wo), dtype=np.int64)
    for g in range(groups):
        res = _gemm_T(AT[g * kg:(g + 1) * kg], np.ascontiguousarray(Wp[g * og:(g + 1) * og]), mult, a_signed, path, isa)
        out[:, g * og:(g + 1) * og] = res.reshape(og, B, Ho, Wo).transpose(1, 0, 2, 3)
    return out


# --------------------------------------------------------------------------------------------------- public: float
def gemm_float(a, w, mult) -> np.ndarray:
    """out[m, n] = sequential FP32 sum over ascending k of mult.float_product(a[m, k], w[n, k]); float32[M, N]."""
    prod = _float_product_fn(mult)
    a = np.ascontiguousarray(a, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise DseError(f"gemm_float: activations {a.shape} and weights {w.shape} must be [M, K] and [N, K] with equal K")
    M, K = a.shape
    N = w.shape[0]
    out = np.empty((M, N), dtype=np.float32)
    if _kernels is None:
        raise DseError("the compiled kernels dse._kernels are missing; build them with 'python setup.py build_ext --inplace'")
    mb = max(1, _BLOCK_ELEMS // max(1, N * K))
    for m0 in range(0, M, mb):
        m1 = min(M, m0 + mb)
        p = np.ascontiguousarray(prod(a[m0:m1, None, :], w[None, :, :]), dtype=np.float32)
        out[m0:m1] = _kernels.fsum_seq(p.reshape((m1 - m0) * N, K)).reshape(m1 - m0, N)
    return out


def conv2d_float(x, w, mult, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1) -> np.ndarray:
    """Float conv with mult.float_product, FP32 sequential accumulation over k = (c, i, j); float32[B, Cout, Ho, Wo].
    Padded positions contribute float_product(0, w)."""
    x = np.asarray(x, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    stride, pads, dilation = _conv_geometry(x.shape, w.shape, stride, pads, dilation, groups)
    B = x.shape[0]
    Cout, Cg, kh, kw = w.shape
    AT, Ho, Wo = im2col_T(x, kh, kw, stride, pads, dilation)
    og, kg = Cout // groups, Cg * kh * kw
    wf = w.reshape(Cout, kg)
    out = np.empty((B, Cout, Ho, Wo), dtype=np.float32)
    for g in range(groups):
        res = gemm_float(AT[g * kg:(g + 1) * kg].T, wf[g * og:(g + 1) * og], mult)  # [M, og]
        out[:, g * og:(g + 1) * og] = res.reshape(B, Ho, Wo, og).transpose(0, 3, 1, 2)
    return out


gemm_float_approx = gemm_float
conv2d_float_approx = conv2d_float
