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
* ``matmul_int(a, b, mult, a_signed) -> int64[..., M, N]`` / ``matmul_float(a, b, mult)``: activation x activation
  (attention): ``a`` [..., M, K] on the multiplier's activation port, ``b`` [..., K, N] (int8 values) on its weight
  port, numpy broadcasting over the leading axes; one GEMM per leading index as ``gemm_int`` / ``gemm_float``
  computes it (``matmul_int``: on the integer GEMM kernel or the rows kernel all of them in one compiled call,
  ``int_gemm_batch`` / ``rows_gemm_batch``; the table paths' small GEMMs on byte-plane lookups at the avx512
  level, the shallow ones on scalar lookups below it, ``lutb_gemm_batch``, see _lutb_plan); ``matmul_scaled(a, b, mult, a_signed, scaling) -> float32[..., M, N]``:
  its per-tensor output stage without int64 sums (the exact product's GEMMs scaled from the int32 tile, the small
  table GEMMs' from their int32 sums).
* ``select_path(mult, a_signed, K, path="auto")``: the path a call with reduction length K actually uses.

``path``: "auto" picks per multiplier: "exact" (only for multipliers whose error table is zero), "lowrank"
(t GEMMs on per-operand gathers with exact integer factors LUT = F @ G.T -- t = 1 for perforation, truncation, DRUM,
Ax-BxP; if no such integer plan is proven, exact GEMM + r GEMMs with float64 error-table factors, rounded, when the
a-priori rounding bound is < 0.25; else it falls back to "lut"). Both run on the integer GEMM kernel
(``cy/int_gemm.h``: int16 operands, vpmaddwd pair sums, int32 accumulation segments bounded by the largest term,
int64 results) whenever the factors fit int16 and one pair of terms fits int32 (the exact product and every separable
family; on CPUs with AVX512-VNNI (avx512 level) or AVX-VNNI (avx2 level), calls whose operand values fit bytes --
the exact product, one-term factors with F(a) in [0, 255] or [-128, 127] and G(w) in [-128, 127] or the other way
round, e.g. perforation, Ax-BxP, truncation, DRUM6 on unsigned activations without the weight pattern -128 -- run on
its VNNI micro-kernel: vpdpbusd byte quads, signed activations offset by 128 with an exact per-channel correction;
the environment variable ``DSE_KERNEL_VNNI=0`` keeps the int16 kernel, e.g. to compare them); other integer factors
take float32 BLAS on K-chunks whose partial sums are provably <= 2^24, else float64 with K * S < 2^53
(``_factor_gemm``), "rows" (any table whose entries span < 2^16 per weight pattern or per activation pattern: for
every k-step and tile of 32 output rows a 256-row table of the 32 selected table columns
is built (one row per class of index patterns with equal table columns: Mitch-w's truncated operands give 80 of the
256 unsigned activation patterns; a conv maps its input to these classes before im2col), then each position adds one
table row -- 16 products per AVX2 16-bit add (whole entries and their high bytes summed apart, exact over 256-step
windows), portable int32 code otherwise, instead of one gather per product;
it falls back to "lut" for wider tables; tables whose entries span < 2^15 per selector add two k-steps' rows before
taking the high bytes, < 256 take 16-bit sums without the high bytes, < 32 (error tables of near-exact products) 8-bit
sums of 32-byte rows; each block of positions builds its tables only up to its largest index at that k-step), "split" (the exact product on the integer GEMM kernel + the rows kernel on the error table E = LUT - a*w,
added in place: tables close to exact have short error row tables, e.g. 16 rows for a*w with its low 3 bits
cleared; auto takes it instead of "rows" per call when cheaper by the cost model, i.e. on calls with few positions,
where building 256-row tables dominates), "lut" (Cython SIMD per-element lookups: AVX-512 VBMI byte
permutes, AVX2 gathers or scalar code). ``isa=`` or env ``DSE_KERNEL_ISA`` = scalar/avx2/avx512 caps the ISA level
picked at run time. All paths are bit-exact against the reference. Auto prefers "lowrank" over the table kernels only
while it is expected to be faster (terms t <= ``AUTO_MAX_RANK[isa]``), and "rows" over "lut" at every level (on a Zen 5
core the AVX2 rows kernel ran 1.0-2.0x the AVX-512 VBMI lookups on ResNet-style conv and GEMM shapes, the lookups
ahead only where a narrow output leaves the rows kernel's 32-row tiles half empty: benchmarks/RESULTS.md).
"""
from __future__ import annotations

import functools
import os
import time
import weakref
from dataclasses import dataclass, field, replace

import numpy as np

from dse import threads as _thr
from dse.arith.lowrank import IntFactors, LowRank, decompose_integer, decompose_verified, gemm_error_bound
from dse.arith.multipliers import Multiplier
from dse.errors import DseError
from dse.model.nn import out_size

try:
    from dse import _kernels
except ImportError:  # pragma: no cover - only when the extension was not built
    _kernels = None

# glibc malloc: blocks of at most this many bytes come from the heap, and up to _HEAP_KEEP_BYTES of freed memory at its
# top stays mapped. By default glibc maps each block above its (dynamic, <= 32 MiB) threshold on its own and unmaps it
# when freed, so every layer output of a streamed batch (a few MiB to ~50 MiB) arrived as fresh pages that the kernel
# zeroed on first touch: clear_page was 8 % of a ResNet-18 32 exact run (perf; benchmarks/RESULTS.md). _HEAP_KEEP_BYTES
# is dse.quant.STREAM_BUDGET, the working memory one streamed batch may take (a test keeps them equal: this layer may
# not import dse.quant).
_MMAP_MIN_BYTES = 64 << 20
_HEAP_KEEP_BYTES = 384 << 20


def _keep_freed_memory() -> bool:
    """Apply the malloc thresholds above (glibc only; not when the environment sets glibc's own MALLOC_MMAP_THRESHOLD_
    or MALLOC_TRIM_THRESHOLD_, or DSE_KEEP_FREED_MEMORY=0). True if applied."""
    import ctypes
    import platform

    if (os.environ.get("DSE_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc"
            or any(v in os.environ for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a glibc without mallopt
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, _MMAP_MIN_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, _HEAP_KEEP_BYTES))


_keep_freed_memory()

PATHS = ("auto", "exact", "lowrank", "rows", "split", "lut")
LOWRANK_MAX_RANK = 16
# Largest number of GEMM terms t (integer factors of the whole table, so t = 1 for perforation, truncation, DRUM,
# Ax-BxP) for which "auto" prefers lowrank over the table kernels at that ISA level. Measured (benchmarks/RESULTS.md):
# lowrank t = 1 runs at ~the exact path's speed (the integer GEMM kernel) and its cost grows ~t; on a Zen 5 core
# (AVX-512) lowrank t = 1 ran 29-83 GMAC/s, the AVX2 row-table kernel 17-36 and the AVX-512 VBMI lookups 13-23; on
# Zen 3 the AVX2 row-table kernel reaches ~0.3-0.5x of float32 BLAS (AVX2 gathers: ~0.05x), its portable version ~0.05x.
AUTO_MAX_RANK = {"avx512": 2, "avx2": 2, "scalar": 6}
_BOUND_LIMIT = 0.25
_F32_EXACT = 2 ** 24  # float32 holds every integer partial sum of magnitude <= this exactly
_F64_EXACT = 2 ** 53
_BLOCK_ELEMS = 1 << 22  # working-set size (elements) of blocked float temporaries
# Shortest K-chunk for which float32 BLAS on chunks (+ one float64 add per chunk) beats one float64 GEMM.
_MIN_F32_CHUNK = 128


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


def _taps(x: np.ndarray, kh: int, kw: int, stride, pads, dilation) -> tuple[list, int, int]:
    """The kernel taps of a conv over x [B, C, H, W] (zero padded): views [B, C, Ho, Wo] of the padded input, one
    per tap (i, j) in row-major order, and Ho, Wo."""
    B, C, H, W = x.shape
    pt, pl, pb, pr = pads
    (sh, sw), (dh, dw) = stride, dilation
    Ho, Wo = conv_out_hw(H, W, kh, kw, stride, pads, dilation)
    xp = np.zeros((B, C, H + pt + pb, W + pl + pr), dtype=x.dtype)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    return [xp[:, :, i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
            for i in range(kh) for j in range(kw)], Ho, Wo


def im2col(x: np.ndarray, kh: int, kw: int, stride, pads, dilation) -> tuple[np.ndarray, int, int]:
    """x [B, C, H, W] -> cols [B, Ho, Wo, C, kh, kw] (zero padded), Ho, Wo."""
    taps, Ho, Wo = _taps(x, kh, kw, stride, pads, dilation)
    B, C = x.shape[:2]
    cols = np.empty((B, Ho, Wo, C, kh * kw), dtype=x.dtype)
    for t, v in enumerate(taps):
        cols[..., t] = v.transpose(0, 2, 3, 1)
    return cols.reshape(B, Ho, Wo, C, kh, kw), Ho, Wo


def _reference_conv(x, w, gemm, dtype, stride, pads, dilation, groups):
    """Direct conv by im2col + ``gemm(a, w)`` per group, accumulated in ``dtype`` (slow, obviously right)."""
    B = x.shape[0]
    Cout, Cg, kh, kw = w.shape
    cols, Ho, Wo = im2col(x, kh, kw, stride, pads, dilation)
    out = np.zeros((B, Cout, Ho, Wo), dtype=dtype)
    og = Cout // groups
    for g in range(groups):
        a = cols[:, :, :, g * Cg:(g + 1) * Cg].reshape(B * Ho * Wo, Cg * kh * kw)
        wg = w[g * og:(g + 1) * og].reshape(og, Cg * kh * kw)
        out[:, g * og:(g + 1) * og] = gemm(a, wg).reshape(B, Ho, Wo, og).transpose(0, 3, 1, 2)
    return out


def reference_conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Direct conv by im2col + reference_gemm_int per group (slow, obviously right)."""
    return _reference_conv(x, w, lambda a, wg: reference_gemm_int(a, wg, mult, a_signed), np.int64, stride, pads,
                           dilation, groups)


def reference_gemm_float(a: np.ndarray, w: np.ndarray, mult) -> np.ndarray:
    """out[m, n] = (((p_0 + p_1) + p_2) + ...) in float32, p_k = mult.float_product(a[m,k], w[n,k]) (slow)."""
    prod = mult.float_product
    a = np.asarray(a, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    p = np.asarray(prod(a[:, None, :], w[None, :, :]), dtype=np.float32)  # [M, N, K]
    acc = np.zeros(p.shape[:2], dtype=np.float32)
    for k in range(p.shape[2]):
        acc = acc + p[:, :, k]
    return acc


def reference_conv2d_float(x, w, mult, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Float conv by im2col + reference_gemm_float per group (slow, obviously right)."""
    return _reference_conv(np.asarray(x, dtype=np.float32), np.asarray(w, dtype=np.float32),
                           lambda a, wg: reference_gemm_float(a, wg, mult), np.float32, stride, pads, dilation, groups)


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
    _intf: object = field(default=False)
    _rows: object = field(default=False)
    _err_rows: object = field(default=False)
    _err_signed: bool = False
    _int16: object = field(default=False)
    _intf_bound: object = field(default=False)
    _planes_a: object = field(default=False)
    int_plans: dict = field(default_factory=dict)  # (K, path, isa name) -> _int_plan's answer, filled by it
    lowrank_terms: dict = field(default_factory=dict)  # (K, max_abs_a) -> _lowrank_terms' answer, filled by it
    matmul_times: dict = field(default_factory=dict)  # _matmul_table_kind's CPU times of the batched matmul's paths

    def range_matters_for(self, path: str) -> bool:
        """Whether a call on ``path`` needs the activations' largest |value| (the lowrank/exact paths' bounds), so
        computes it: never for tables without integer or float factors (e.g. Mitch-w); with "auto" only if auto could
        pick exact or lowrank, i.e. the fewest lowrank terms (integer factors: max(1, rank), float factors: 1 + rank)
        are within AUTO_MAX_RANK at some level; else (e.g. an imported 256x256 LUT: ranks 6-7) auto takes the table
        kernels whatever the largest |value| is, and the pass over the operand for it (1-3 ms on a 1x1 conv's 4-13 MB
        input) is skipped."""
        if not (self.is_exact or self.intf is not None or self.lowrank is not None):
            return False
        if path != "auto" or self.is_exact:
            return True
        most = max(AUTO_MAX_RANK.values())
        return self.intf is not None and max(1, self.intf.rank) <= most or \
            self.lowrank is not None and 1 + self.lowrank.rank <= most

    @property
    def rows(self) -> "_RowTables":
        """uint16 offset tables of the "rows" kernel in both orientations (None where a span reaches 2^16)."""
        if self._rows is False:
            self._rows = _RowTables(_offset_table(self.lut.T), _offset_table(self.lut))
        return self._rows

    @property
    def planes_a(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(planes uint8[256 a, NP, 256 w], off int32[256 a], lut int32[256 a, 256 w]): byte planes of lut - off[a]
        (the row minimum), the activation-selected twin of ``planes`` / ``off`` / ``lutT`` (the small table GEMMs'
        kernel, _lutb_plan)."""
        if self._planes_a is False:
            off = self.lut.min(axis=1)
            self._planes_a = (_byte_planes(self.lut - off[:, None]), off.astype(np.int32),
                              np.ascontiguousarray(self.lut.astype(np.int32)))
        return self._planes_a

    @property
    def err_rows(self) -> "_RowTables":
        """Row tables of the error table E = LUT - a*w (the "split" path: exact integer GEMM + rows on E). Tables close
        to exact have few distinct error rows/columns and small spans (the bench's imported LUT, a*w with 3 low bits
        cleared: 16 classes per orientation, entries 0..7), so its row tables are short and, with spans < 32, summed
        in bytes (cy/lut_kernel.h). a is the activation pattern's value read as ``err_signed`` says: for unsigned
        activations also as int8 when that gives the smaller spans (a table of signed products used on unsigned
        patterns, e.g. an imported table declared ``signed=any``: E is then small everywhere, while against the
        unsigned value it is off by 256 w on the patterns >= 128)."""
        if self._err_rows is False:
            best = None
            for signed in dict.fromkeys((bool(self.a_vals[255] < 0), True)):
                err = self.lut - np.multiply.outer(_W_VALS if signed else self.a_vals, _W_VALS)
                tabs = _RowTables(_offset_table(err.T), _offset_table(err))
                spans = [int(t.D.max()) for t in (tabs.by_weight, tabs.by_act) if t is not None]
                if spans and (best is None or min(spans) < best[0]):
                    best = (min(spans), signed, tabs)
            self._err_signed, self._err_rows = (best[1], best[2]) if best else (False, _RowTables(None, None))
        return self._err_rows

    @property
    def err_signed(self) -> bool:
        """Whether the split path's exact product reads the activation patterns as int8 (see ``err_rows``)."""
        self.err_rows
        return self._err_signed

    @property
    def lowrank(self) -> LowRank | None:
        """Float factors of the error table E = LUT - a*w (the float64 fallback of the lowrank path)."""
        if self._lowrank is False:
            err = self.lut - np.multiply.outer(self.a_vals, _W_VALS)
            self._lowrank = decompose_verified(err, LOWRANK_MAX_RANK)
        return self._lowrank

    @property
    def int16(self) -> "_Int16Plan | None":
        """The integer GEMM kernel's operands: the exact product, or the integer factors F, G when they fit int16
        and one pair of terms fits int32 over every pattern (None otherwise)."""
        if self._int16 is False:
            self._int16 = _int16_plan(self)
        return self._int16

    @property
    def intf_bound(self) -> int:
        """_term_bound of ``intf`` over every pattern pair (0 without integer factors), computed once."""
        if self._intf_bound is False:
            fac = self.intf
            self._intf_bound = 0 if fac is None else _term_bound(fac.F, fac.G, np.arange(256), np.arange(256))
        return self._intf_bound

    @property
    def intf(self) -> IntFactors | None:
        """Exact integer factors of the whole table LUT = F @ G.T (rank <= rank(E) + 1; 1 for separable tables)."""
        if self._intf is False:
            self._intf = decompose_integer(self.lut, LOWRANK_MAX_RANK + 1)
        return self._intf


@dataclass(frozen=True)
class _OffsetTable:
    """T[s, i] = D[s, c(i)] + off[s] with 0 <= D < 2^16: the table as the rows kernel reads it (s selects, i indexes).
    Index patterns whose columns T[:, i] are equal share one class c(i) (``cls``), numbered in the order of their
    first pattern (so pattern 0, the padding, is class 0), and the kernel builds one table row per class (Mitch-w: 80
    of the 256 unsigned activation patterns, its operands being truncated); without duplicate columns c(i) = i."""

    D: np.ndarray  # uint16[256 s, R]: R classes padded to a multiple of 16 (padding columns are never indexed)
    off: np.ndarray  # int32[256 s]
    cls: np.ndarray | None  # uint8[256]: the class of each index pattern (None: every pattern its own, R = 256)

    @property
    def rows(self) -> int:
        """Rows of each per-k table the kernel builds (R)."""
        return self.D.shape[1]

    def classes(self, I: np.ndarray) -> np.ndarray:
        """The kernel's index operand of index patterns I (uint8): their classes (same shape), or I itself."""
        if self.cls is None:
            return I
        return _kernels.translate(np.ascontiguousarray(I).reshape(-1), self.cls).reshape(I.shape)


@dataclass(frozen=True)
class _RowTables:
    by_weight: "_OffsetTable | None"  # s = weight pattern, i = activation pattern (M positions index the rows)
    by_act: "_OffsetTable | None"  # s = activation pattern, i = weight pattern (N output channels index them)


def _offset_table(T: np.ndarray) -> _OffsetTable | None:
    off = T.min(axis=1)
    D = T - off[:, None]
    if D.max() >= 2 ** 16:
        return None
    _, first, inv = np.unique(D, axis=1, return_index=True, return_inverse=True)
    R = -(-len(first) // 16) * 16
    if R >= 256:
        return _OffsetTable(np.ascontiguousarray(D.astype(np.uint16)), off.astype(np.int32), None)
    order = np.argsort(first)  # classes numbered by their first pattern
    number = np.empty_like(order)
    number[order] = np.arange(len(order))
    Dc = np.zeros((256, R), dtype=np.uint16)
    Dc[:, :len(first)] = D[:, first[order]]
    return _OffsetTable(Dc, off.astype(np.int32), number[inv.reshape(-1)].astype(np.uint8))


_W_VALS = np.where(np.arange(256) >= 128, np.arange(256) - 256, np.arange(256)).astype(np.int64)


@dataclass(frozen=True)
class _Int16Plan:
    """Operands of dse._kernels.int_gemm (cy/int_gemm.h): out = sum_{k, j} fa[a_k, j] gw[w_k, j] on int16 values."""

    fa: np.ndarray  # int16[256, t] (unused for the "u8"/"s8" modes: the pattern's own value)
    gw: np.ndarray  # int16[256, t]
    a_mode: str  # "table", "u8" or "s8"
    S: int  # max over all patterns of sum_j |fa[a, j]| |gw[w, j]|: bound on every term (2 S < 2^31)
    fac: IntFactors  # the factors as int64 (fa, gw), for the exactness plan of the call
    # "table" mode with one term whose activation factor F(a) fits 8 bits: the pattern of F(a) per activation pattern
    # and whether those bytes are signed (an operand translated through it runs as "u8"/"s8" values); else None
    a_bytes: "tuple[np.ndarray, bool] | None" = None


@functools.lru_cache(maxsize=2)
def _exact_plan(a_signed: bool) -> _Int16Plan:
    """The integer GEMM kernel's operands of the exact product (activation values u8/s8, int8 weights)."""
    a_vals = _W_VALS if a_signed else np.arange(256, dtype=np.int64)
    fac = IntFactors(a_vals[:, None], _W_VALS[:, None])
    S = _term_bound(fac.F, fac.G, np.arange(256), np.arange(256))
    return _Int16Plan(np.ascontiguousarray(fac.F.astype(np.int16)), np.ascontiguousarray(fac.G.astype(np.int16)),
                      "s8" if a_signed else "u8", S, fac)


def _int16_plan(prep: "_Prepared") -> _Int16Plan | None:
    signed = bool(prep.a_vals[255] < 0)
    if prep.is_exact:
        return _exact_plan(signed)
    else:
        fac = prep.intf
        if fac is None or fac.rank == 0:
            return None
        # F(a) = a (perforation: a * G(w)) packs like the exact product
        mode = ("s8" if signed else "u8") if fac.rank == 1 and np.array_equal(fac.F[:, 0], prep.a_vals) else "table"
    if max(np.abs(fac.F).max(), np.abs(fac.G).max()) >= 2 ** 15:
        return None
    if mode == "table":
        fac = _byte_factors(fac)
    S = _term_bound(fac.F, fac.G, np.arange(256), np.arange(256))
    if not 1 <= S or 2 * S >= 2 ** 31:
        return None
    return _Int16Plan(np.ascontiguousarray(fac.F.astype(np.int16)), np.ascontiguousarray(fac.G.astype(np.int16)),
                      mode, S, fac, _factor_bytes(fac) if mode == "table" else None)


def _fits_bytes(v: np.ndarray) -> bool:
    """Whether the integers v fit one of the byte ranges of the VNNI kernel's ports ([0, 255] or [-128, 127])."""
    return v.size == 0 or (0 <= v.min() and v.max() <= 255) or (-128 <= v.min() and v.max() <= 127)


def _byte_factors(fac: IntFactors) -> IntFactors:
    """One-term factors rescaled so that both fit byte ranges, when moving a divisor d of the entries of one factor
    into the other does it (F d, G / d: the same products and term bound), else ``fac``: the integer GEMM kernel runs
    one-term factors that fit bytes on its VNNI micro-kernel (cy/int_gemm.h), e.g. truncation and static Ax-BxP,
    whose decomposition gives G(w) = -2048..1792 (multiples of 256) and F(a) = 0..15: d = 16."""
    if fac.rank != 1 or (_fits_bytes(fac.F) and _fits_bytes(fac.G)):
        return fac
    for F, G, swap in ((fac.F, fac.G, False), (fac.G, fac.F, True)):  # move a divisor of G into F, or of F into G
        g = int(np.gcd.reduce(np.abs(G[:, 0])))
        for d in (d for d in range(2, g + 1) if g % d == 0):
            if _fits_bytes(F * d) and _fits_bytes(G // d):
                return IntFactors(G // d, F * d) if swap else IntFactors(F * d, G // d)
    return fac


def _factor_bytes(fac: IntFactors) -> "tuple[np.ndarray, bool] | None":
    """(uint8[256] patterns of F(a), signed) when the factors have one term whose activation factor F fits uint8 or
    int8 (DRUM, Ax-BxP on unsigned operands: F(a) is a truncated a), else None."""
    if fac.rank != 1:
        return None
    F = fac.F[:, 0]
    for lo, hi, signed in ((0, 255, False), (-128, 127, True)):
        if lo <= F.min() and F.max() <= hi:
            return (F & 0xFF).astype(np.uint8), signed
    return None
_CACHE: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def _byte_planes(D: np.ndarray) -> np.ndarray:
    """uint8[256, NP, 256]: the byte planes of the table D [selector, index] (0 <= D < 2^32), as few as its largest
    entry needs (NP >= 1)."""
    nplanes = max(1, (int(D.max()).bit_length() + 7) // 8)
    planes = np.empty((256, nplanes, 256), dtype=np.uint8)
    for p in range(nplanes):
        planes[:, p, :] = (D >> (8 * p)) & 0xFF
    return planes


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
        prep = _Prepared(lut=lut, lutT=np.ascontiguousarray(lut.T.astype(np.int32)), planes=_byte_planes(D), off=off,
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
    """The path a GEMM with reduction length K uses: "exact", "lowrank", "rows", "split" or "lut" (see module
    docstring). "rows" stands for the table kernels, which become "split" per call when that is cheaper
    (_table_plan)."""
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
        terms = _lowrank_terms(prep, a_signed, K, max_abs_a)
        if terms and (path == "lowrank" or terms <= AUTO_MAX_RANK[_isa_name(isa)]):
            return "lowrank"
    if path == "split" and (prep.err_rows.by_weight is not None or prep.err_rows.by_act is not None):
        return "split"
    rows_ok = prep.rows.by_weight is not None or prep.rows.by_act is not None
    if rows_ok and path in ("auto", "rows", "split"):
        return "rows"
    return "lut"


def _a_patterns(a_signed: bool, max_abs_a: int | None) -> np.ndarray:
    """Activation patterns whose value lies in [-max_abs_a, max_abs_a] (all patterns if None)."""
    if max_abs_a is None:
        return np.arange(256)
    vals = _W_VALS if a_signed else np.arange(256)
    return np.flatnonzero(np.abs(vals) <= max_abs_a)


def _term_bound(F: np.ndarray, G: np.ndarray, a_pat: np.ndarray, w_pat: np.ndarray) -> int:
    """S = max over the given patterns of sum_t |F[a, t]| |G[w, t]|: bound on |one k-step's contribution| and on every
    term of it (exact: integers < 2^53 in float64)."""
    if F.shape[1] == 0 or a_pat.size == 0 or w_pat.size == 0:
        return 0
    return int((np.abs(F[a_pat]).astype(np.float64) @ np.abs(G[w_pat]).astype(np.float64).T).max())


def _int_plan_ok(fac: IntFactors, K: int, S: int) -> bool:
    """A-priori exactness of the integer-factor GEMM: every partial sum is an integer of magnitude <= K * S < 2^53
    (float64 exact, any order) and every factor entry is exact in float64."""
    return K * S < _F64_EXACT and (fac.rank == 0 or max(np.abs(fac.F).max(), np.abs(fac.G).max()) < _F64_EXACT)


def _lowrank_terms(prep: _Prepared, a_signed: bool, K: int, max_abs_a: int | None) -> int:
    """Number of GEMM terms of the lowrank path for this call (0 = cannot be proven exact -> LUT); decided once per
    (K, max_abs_a) of the prepared table (``prep`` belongs to one activation signedness)."""
    key = (K, max_abs_a)
    if key not in prep.lowrank_terms:
        prep.lowrank_terms[key] = _count_lowrank_terms(prep, a_signed, K, max_abs_a)
    return prep.lowrank_terms[key]


def _count_lowrank_terms(prep: _Prepared, a_signed: bool, K: int, max_abs_a: int | None) -> int:
    fac = prep.intf
    if fac is not None:
        S = prep.intf_bound if max_abs_a is None else \
            _term_bound(fac.F, fac.G, _a_patterns(a_signed, max_abs_a), np.arange(256))
        if _int_plan_ok(fac, K, S):
            return max(1, fac.rank)
    lr = prep.lowrank
    if lr is not None:
        amax = (128 if a_signed else 255) if max_abs_a is None else max_abs_a
        if gemm_error_bound(lr, K, amax, 128) < _BOUND_LIMIT:
            return 1 + lr.rank
    return 0


# ----------------------------------------------------------------------------------------------------------- threads
# the thread count lives in dse.threads (below dse.model, whose float executor's compiled loops use it too)
available_cores, get_threads, map_split, set_threads, using_threads = (
    _thr.available_cores, _thr.get_threads, _thr.map_split, _thr.set_threads, _thr.using_threads)


# ------------------------------------------------------------------------------------------------------- GEMM cores
def _int_plan(mult: Multiplier, a_signed: bool, K: int, path: str, isa) -> _Int16Plan | None:
    """The integer GEMM kernel's plan when a call of reduction length K takes path "exact" or "lowrank" and the
    kernel is exact for it (the int16 plan exists and K * S < 2^53 as for the integer factor plan), else None."""
    if path not in ("auto", "exact", "lowrank"):
        return None
    prep = _prepare(mult, a_signed)
    key = (K, path, _isa_name(isa))
    if key not in prep.int_plans:  # it depends on nothing else: called per GEMM, decided once per layer shape
        plan = prep.int16
        ok = plan is not None and _int_plan_ok(plan.fac, K, plan.S) and \
            select_path(mult, a_signed, K, path, isa) in ("exact", "lowrank")
        prep.int_plans[key] = plan if ok else None
    return prep.int_plans[key]


def _int_gemm(AT: np.ndarray, Wp: np.ndarray, plan: _Int16Plan, isa, out: np.ndarray | None = None):
    """sum_{k, j} fa[AT[k, m], j] gw[Wp[n, k], j] by the integer GEMM kernel (int16 operands, int32 pair sums and
    accumulation segments, int64 result; exact: the plan's S bounds every term): int64[N, M], or None after writing
    it into ``out`` [M / P, N, P] (m = b * P + p; the strided view of a ``_Dest``, e.g. a conv output's channels)."""
    res = np.empty((1, Wp.shape[0], AT.shape[1]), dtype=np.int64) if out is None else out
    _kernels.int_gemm(AT, Wp, plan.fa, plan.a_mode, plan.gw, plan.S, res, _isa_name(isa), get_threads())
    return res[0] if out is None else None


def _gather(f: np.ndarray, AT: np.ndarray, a_vals: np.ndarray, out: np.ndarray) -> None:
    """out[...] = f[AT] (f int64[256] per pattern, AT uint8): a plain conversion when f is the value of the pattern,
    a byte translation when f fits 8 bits, else a float table gather."""
    if np.array_equal(f, a_vals):
        np.copyto(out, AT.view(np.int8) if a_vals[255] < 0 else AT, casting="unsafe")
    elif (0 <= f.min() and f.max() <= 255) or (-128 <= f.min() and f.max() <= 127):
        signed = f.min() < 0
        tbl = (f & 0xFF).astype(np.uint8).tobytes()
        b = np.frombuffer(np.ascontiguousarray(AT).tobytes().translate(tbl), dtype=np.int8 if signed else np.uint8)
        np.copyto(out, b.reshape(AT.shape), casting="unsafe")
    else:
        np.copyto(out, np.take(f.astype(out.dtype), AT), casting="unsafe")


def _factor_gemm(AT: np.ndarray, Wp: np.ndarray, F: np.ndarray, G: np.ndarray, S: int, a_vals: np.ndarray) -> np.ndarray:
    """int64[N, M] = sum_k sum_t G[Wp[n, k], t] F[AT[k, m], t] for integer factors F, G, with S >= every k-step's
    sum_t |F||G| on the data. The one home of exact integer GEMM on BLAS:
    float32 BLAS on K-chunks of kc = 2^24 // S steps (every partial sum, in any order, is an integer of magnitude
    <= kc * S <= 2^24, hence exact in float32), accumulated in float64 across chunks (integers < 2^53, exact); float64
    in one pass if the chunks would be short (kc < _MIN_F32_CHUNK) -- the caller has checked K * S < 2^53. Blocked over
    M; depth layout (k, t)."""
    K, M = AT.shape
    N = Wp.shape[0]
    t = F.shape[1]
    if t == 0 or S == 0 or K == 0:
        return np.zeros((N, M), dtype=np.int64)
    kc = _F32_EXACT // S
    f32 = kc >= min(K, _MIN_F32_CHUNK) and max(np.abs(F).max(), np.abs(G).max()) <= _F32_EXACT
    dt = np.float32 if f32 else np.float64
    if not f32:
        kc = K
    What = np.ascontiguousarray(G[Wp].astype(dt).reshape(N, K * t))  # [N, (k, t)]
    out = np.zeros((N, M), dtype=np.int64)
    mb = max(256, _BLOCK_ELEMS // max(1, t * K))
    for m0 in range(0, M, mb):
        m1 = min(M, m0 + mb)
        Ahat = np.empty((K, t, m1 - m0), dtype=dt)
        blk = AT[:, m0:m1]
        for j in range(t):
            _gather(F[:, j], blk, a_vals, Ahat[:, j, :])
        if kc >= K:
            out[:, m0:m1] = What @ Ahat.reshape(K * t, m1 - m0)
            continue
        total = np.zeros((N, m1 - m0), dtype=np.float64)
        for k0 in range(0, K, kc):
            k1 = min(K, k0 + kc)
            total += What[:, k0 * t:k1 * t] @ Ahat[k0:k1].reshape((k1 - k0) * t, m1 - m0)
        out[:, m0:m1] = total
    return out


def _used_patterns(Wp: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.bincount(Wp.ravel(), minlength=256)) if Wp.size else np.zeros(0, np.intp)


def _exact_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared, max_abs_a: int) -> np.ndarray:
    """int64[N, M] = W @ A with the exact product (_factor_gemm with the one-term factors a, w)."""
    wmax = int(np.abs(_W_VALS[_used_patterns(Wp)]).max(initial=0))
    F = prep.a_vals[:, None]
    return _factor_gemm(AT, Wp, F, _W_VALS[:, None], max_abs_a * wmax, prep.a_vals)


def _lowrank_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared, a_signed: bool, max_abs_a: int) -> np.ndarray:
    """Integer factors of the table when their a-priori bound holds (float32/float64 BLAS, exact), else the float64
    error-table factors with rounding (a-priori bound < 0.25, checked by select_path)."""
    fac = prep.intf
    K = AT.shape[0]
    if fac is not None:
        S = _term_bound(fac.F, fac.G, _a_patterns(a_signed, max_abs_a), _used_patterns(Wp))
        if _int_plan_ok(fac, K, S):
            return _factor_gemm(AT, Wp, fac.F, fac.G, S, prep.a_vals)
    return _lowrank_float_gemm(AT, Wp, prep)


def _lowrank_float_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared) -> np.ndarray:
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
    out, used = _kernels.lut_gemm(AT, Wp, prep.lutT, prep.planes, prep.maxabs, _isa_name(isa), get_threads())
    if used == "avx512":  # that kernel sums the offset table lut - off[w]
        out += prep.off[Wp].sum(axis=1)[:, None]
    return out


# Cost of building one table row of the rows kernel relative to adding one (measured on Zen 3, AVX2: ResNet-18 conv
# shapes with 256-, 128- and 80-row tables, both orientations, 2026-11-26; fits 0.9-2.0), and the kernel's tile sizes
# (cy/lut_kernel.h: DSE_RT_NT selector rows per tile, DSE_RT_MB index positions per block).
_ROWS_BUILD_COST = 1.5
_ROWS_NT, _ROWS_MB = (32, 4096) if _kernels is None else (_kernels.ROWS_TILE, _kernels.ROWS_BLOCK)
# Time per unit of _rows_cost with activations selecting relative to weights selecting (its operands are transposed
# per call, its outputs written at stride P): measured on mitch_w6 (Zen 2, AVX2, one thread, 2026-11-26) 1.2-2.3x over
# M = 4..784 positions (FC layers to 14x14 convs); 1.3 picks the faster orientation on each of the 7 shapes measured
# (benchmarks/RESULTS.md), where 1.0 took the slower one at M = 98 and 196 (ResNet-18's 7x7 layers at batch 2-4).
_ROWS_ACT_COST = 1.3


def _rows_cost(n_sel: int, n_idx: int, rows: int) -> float:
    """Relative time of the rows kernel with n_sel selector rows (padded to tiles), n_idx index positions and tables
    of ``rows`` rows."""
    pad = -(-n_sel // _ROWS_NT) * _ROWS_NT
    return pad * (n_idx + _ROWS_BUILD_COST * rows * -(-n_idx // _ROWS_MB))


@dataclass(frozen=True)
class _Dest:
    """Where a GEMM writes its result: element (n, m) of [N, M] goes to buf[offset + (m // P) * ldb + n * P + m % P]
    (P = 1, ldb = N: [M, N]; a conv's [B, C, Ho*Wo] output with offset = first channel * P, ldb = C * P)."""

    buf: np.ndarray  # flat: int64 sums, or the float32/uint8 output of a scaled rows kernel call
    offset: int
    P: int
    ldb: int

    def view(self, N: int, M: int) -> np.ndarray:
        """The destination of an [N, M] result as a strided view [M / P, N, P]."""
        e = self.buf.itemsize
        return np.lib.stride_tricks.as_strided(self.buf[self.offset:], (M // self.P, N, self.P),
                                               (self.ldb * e, self.P * e, e), writeable=True)

    def put(self, res: np.ndarray) -> None:
        """Copy a finished [N, M] result into place (paths that do not write into the layout themselves)."""
        N, M = res.shape
        self.view(N, M)[...] = res.reshape(N, M // self.P, self.P).transpose(1, 0, 2)


def _rows_orientation_cost(tabs: _RowTables, M: int, N: int) -> tuple[bool, float]:
    """(by_act, relative time) of the rows kernel on ``tabs`` for an [N, M] result in its cheaper orientation:
    weights selecting (_rows_cost) or activations selecting (_rows_cost with the roles swapped, x _ROWS_ACT_COST)."""
    by_w = None if tabs.by_weight is None else _rows_cost(N, M, tabs.by_weight.rows)
    by_a = None if tabs.by_act is None else _ROWS_ACT_COST * _rows_cost(M, N, tabs.by_act.rows)
    if by_w is None or by_a is not None and by_a < by_w:
        return True, by_a
    return False, by_w


def _rows_by_act(tabs: _RowTables, M: int, N: int) -> bool:
    """Whether the rows kernel's cheaper orientation for an [N, M] result is activations selecting."""
    return _rows_orientation_cost(tabs, M, N)[0]


# The split path's cost next to _rows_cost (whose unit is one 16-bit row add per selector, position and k-step, the
# reduction length K divided out), per ISA level; refitted on the AVX-512 machine (Zen 5 class, one thread,
# 2026-11-27, ResNet-18 32 and 224 convs with benchmarks/bench_e2e.py's imported LUT, `bench_rows_calls.py paths`
# and the calls' parts timed apart, benchmarks/RESULTS.md):
# - _SPLIT_EXACT_COST: the exact integer GEMM per MAC: 0.24 at avx512 (VNNI), 0.33 at avx2 (AVX-VNNI); 0.45 without a
#   VNNI kernel (fitted on Zen 2, AVX2, 2026-11-26: the integer kernel ran ~45-55 GMAC/s there);
# - _SPLIT_TINY_COST: per unit of _rows_cost of an error table whose entries are < 32 (the 8-bit sums: one byte per
#   selector and position instead of two): 0.62 at avx512 (64-row tiles), 0.66 at avx2 (32-row tiles); 1 otherwise;
# - _SPLIT_OUT_COST: per output (divided by K as the rest), the error table's int64 sums that the rows kernel writes
#   and the integer GEMM adds to its int32 tiles before it scales them (conv2d_scaled, _conv_split_scaled; the rows
#   path gathers and scales its tiles in the kernel): refitted 2026-11-27 07:00 UTC after that fusion (was ~110 /
#   80: the GEMM's int64 sums, the rows kernel's add into them and a scaling pass of their own) to 40 at avx512 (the
#   least squared log error of the split/rows time ratio over ResNet-18 32 and 224's 40 LUT convs); 80 kept at avx2
#   (there the fit leaves 4-9 of ResNet-18 32's 20 picks wrong at any value, and 80 took auto within 1 % of the
#   per-call best: the avx2 split's error is in its other two terms).
#   Split then wins on the 3x3 convs (K >= 576, 1.04-1.5x at avx512) and the 1x1 convs at K = 256, and loses on the
#   stems and the 1x1 downsampling convs at K = 64 / 128.
_SPLIT_EXACT_COST = {"avx512": 0.24, "avx2": 0.33}
_SPLIT_EXACT_COST_NO_VNNI = 0.45
_SPLIT_TINY_COST = {"avx512": 0.62, "avx2": 0.66}
_SPLIT_OUT_COST = {"avx512": 40.0, "avx2": 80.0}


def _split_cost(err: _RowTables, M: int, N: int, K: int | None, isa) -> tuple[bool, float]:
    """(by_act, relative time in _rows_cost's unit) of the split path for an [N, M] result of reduction K (None: the
    per-output term left out)."""
    level = _isa_name(isa)
    e_act, e_cost = _rows_orientation_cost(err, M, N)
    t = err.by_act if e_act else err.by_weight
    if int(t.D.max()) < 32:
        e_cost *= _SPLIT_TINY_COST.get(level, 1.0)
    vnni = _kernels.vnni_enabled() and level in _kernels.vnni_levels()
    exact = _SPLIT_EXACT_COST.get(level, _SPLIT_EXACT_COST_NO_VNNI) if vnni else _SPLIT_EXACT_COST_NO_VNNI
    out = 0.0 if not K else _SPLIT_OUT_COST.get(level, 0.0) / K
    return e_act, (exact + out) * M * N + e_cost


def _table_plan(prep: _Prepared, M: int, N: int, path: str, K: int | None = None, isa=None) -> tuple[str, bool]:
    """(kernel, by_act) of a table GEMM with an [N, M] result of reduction K on the "rows" path family: "rows" (row
    tables of the table itself) or "split" (the exact integer GEMM + row tables of the error table E = LUT - a*w),
    whichever is cheaper for path="auto" (split wins where E's tables are much shorter or their entries tiny and K is
    long enough to amortize its output pass; _split_cost), and the orientation of the row tables."""
    err = prep.err_rows
    split_ok = err.by_weight is not None or err.by_act is not None
    rows_ok = prep.rows.by_weight is not None or prep.rows.by_act is not None
    if path == "split" and split_ok or not rows_ok:
        return "split", _rows_by_act(err, M, N)
    by_act, cost = _rows_orientation_cost(prep.rows, M, N)
    if path == "auto" and split_ok:
        e_act, e_cost = _split_cost(err, M, N, K, isa)
        if e_cost < cost:
            return "split", e_act
    return "rows", by_act


def _rows_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared, isa, by_act: bool | None = None,
               into: _Dest | None = None, classed: bool = False, tabs: _RowTables | None = None,
               add: bool = False, scaling: "Scaling | None" = None, scaled: tuple = ()) -> np.ndarray | None:
    """int64[N, M] by the row-table kernel (or None after writing it into ``into``; ``add``: added to what ``into``
    holds); with ``scaling`` (one entry per channel n) its output instead, scaled in the kernel (``scaling.dtype``
    viewed as the kernel's float32/uint8; ``into`` of that dtype; ``scaled``: the whole outputs (out, q) of
    Scaling.empty that ``into`` lies in, with a fused add). Orientation: weights select the tables and the M positions index them, or (by_act) activations select
    and the N output channels index: the cheaper one by _rows_cost unless forced. ``classed``: AT holds the
    activation classes of the weight-selected table already (``_OffsetTable.classes``; a conv maps its input before
    im2col), not patterns. ``tabs``: the row tables (default: the table's own, ``prep.rows``)."""
    tabs = prep.rows if tabs is None else tabs
    K, M = AT.shape
    N = Wp.shape[0]
    if by_act is None:
        by_act = _rows_by_act(tabs, M, N)
    if classed and by_act:
        raise ValueError("_rows_gemm: activation classes index the weight-selected tables only")
    t = tabs.by_act if by_act else tabs.by_weight
    if by_act:
        I, S = t.classes(np.ascontiguousarray(Wp.T)), np.ascontiguousarray(AT.T)
    else:
        I, S = (AT if classed else t.classes(AT)), Wp
    dest = () if into is None else (into.buf, into.offset, into.P, into.ldb)
    out, _ = _kernels.rows_gemm(I, S, t.D, t.off, _isa_name(isa), get_threads(), *dest, sel_is_m=by_act, add=add,
                                scaling=None if scaling is None else scaling.args(*scaled))
    return out if out is None or scaling is None else out.view(scaling.dtype)


def _split_gemm(AT: np.ndarray, Wp: np.ndarray, prep: _Prepared, a_signed: bool, isa, by_act: bool,
                into: _Dest | None = None) -> np.ndarray | None:
    """int64[N, M] (or None after writing it into ``into``) as the exact product's integer GEMM plus the rows
    kernel on the error table E = LUT - a*w, added in place."""
    N, M = Wp.shape[0], AT.shape[1]
    res = None
    if into is None:
        res = np.empty((N, M), dtype=np.int64)
        into = _Dest(res.reshape(-1), 0, max(M, 1), 0)
    _int_gemm(AT, Wp, _exact_plan(prep.err_signed), isa, into.view(N, M))
    _rows_gemm(AT, Wp, prep, isa, by_act=by_act, into=into, tabs=prep.err_rows, add=True)
    return res


def _gemm_T(AT: np.ndarray, Wp: np.ndarray, mult: Multiplier, a_signed: bool, path: str, isa,
            into: _Dest | None = None, classed: bool = False) -> np.ndarray | None:
    """int64[N, M] from activation patterns AT uint8[K, M] and weight patterns Wp uint8[N, K] (both C-contiguous);
    with ``into`` the result is written there and None returned. ``classed``: AT holds the activation classes of the
    rows kernel's weight-selected table (see _conv_row_classes), which then computes the GEMM."""
    if classed:
        return _rows_gemm(AT, Wp, _prepare(mult, a_signed), isa, by_act=False, into=into, classed=True)
    res = _gemm_T_paths(AT, Wp, mult, a_signed, path, isa, into)
    if into is None or res is None:
        return res
    into.put(res)
    return None


def _gemm_T_paths(AT, Wp, mult, a_signed, path, isa, into):
    """The chosen path's int64[N, M], or None when it wrote into ``into`` itself (the rows kernel)."""
    prep = _prepare(mult, a_signed)
    K = AT.shape[0]
    plan = _int_plan(mult, a_signed, K, path, isa)
    if plan is not None:
        return _int_gemm(AT, Wp, plan, isa, None if into is None else into.view(Wp.shape[0], AT.shape[1]))
    amax = _max_abs(AT, a_signed) if path in ("auto", "exact", "lowrank") and AT.size \
        and prep.range_matters_for(path) else None
    chosen = select_path(mult, a_signed, K, path, isa, max_abs_a=amax)
    if chosen == "exact":
        return _exact_gemm(AT, Wp, prep, amax or 0)
    if chosen == "lowrank":
        return _lowrank_gemm(AT, Wp, prep, a_signed, amax)
    if chosen in ("rows", "split"):
        kind, by_act = _table_plan(prep, AT.shape[1], Wp.shape[0], path, K, isa)
        if kind == "split":
            return _split_gemm(AT, Wp, prep, a_signed, isa, by_act, into)
        return _rows_gemm(AT, Wp, prep, isa, by_act=by_act, into=into)
    return _lut_gemm(AT, Wp, prep, isa)


def _max_abs(P: np.ndarray, a_signed: bool) -> int:
    """Largest |value| of the (non-empty) uint8 activation patterns P."""
    return max(-int(P.view(np.int8).min()), int(P.view(np.int8).max())) if a_signed else int(P.max())


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
    out = np.empty((a.shape[0], w.shape[0]), dtype=np.int64)
    _gemm_T(AT, Wp, mult, a_signed, path, isa, into=_Dest(out.reshape(-1), 0, 1, w.shape[0]))
    return out


def _slices(a_shape: tuple, b_shape: tuple, what: str) -> tuple:
    """Broadcast leading shape of ``a`` [..., M, K] @ ``b`` [..., K, N]."""
    if len(a_shape) < 2 or len(b_shape) < 2 or a_shape[-1] != b_shape[-2]:
        raise DseError(f"{what}: operands {a_shape} and {b_shape} must be [..., M, K] and [..., K, N] with equal K")
    try:
        return np.broadcast_shapes(a_shape[:-2], b_shape[:-2])
    except ValueError:
        raise DseError(f"{what}: leading axes of {a_shape} and {b_shape} do not broadcast") from None


def _sliced(fn, a, b, out_dtype, what):
    """out[i] = fn(a[i], b[i].T) over the broadcast leading index i of a [..., M, K] and b [..., K, N]."""
    lead = _slices(a.shape, b.shape, what)
    a = np.broadcast_to(a, lead + a.shape[-2:])
    b = np.broadcast_to(b, lead + b.shape[-2:])
    out = np.empty(lead + (a.shape[-2], b.shape[-1]), dtype=out_dtype)
    for i in np.ndindex(*lead):
        out[i] = fn(a[i], np.ascontiguousarray(b[i].T))
    return out


def matmul_int(a, b, mult, a_signed, path="auto", isa=None):
    """int64[..., M, N]: ``out[..., m, n] = sum_k LUT[a[..., m, k] & 0xFF, b[..., k, n] & 0xFF]`` (``b`` int8 values on
    the weight port; leading axes broadcast as in np.matmul). Each leading index is one GEMM as :func:`gemm_int`
    computes it; the operands are checked and laid out once for all of them, and GEMMs on the integer kernel run in
    one compiled call (``int_gemm_batch``): attention has heads x images GEMMs of a few thousand MACs each."""
    a, b = np.asarray(a), np.asarray(b)
    lead = _slices(a.shape, b.shape, "matmul_int")
    _check_range(a, a_signed, "matmul_int left operand")
    _check_range(b, True, "matmul_int right operand")
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    L = int(np.prod(lead, dtype=np.int64))
    out = np.empty((L, M, N), dtype=np.int64)
    lutb = _lutb_plan(mult, a_signed, M, K, N, path, isa) if L and K and M and N else None
    if lutb is not None:  # reads both operands in their own layouts
        _lutb_batch(a, b, lead, lutb, out, isa)
        return out.reshape(lead + (M, N))
    plan = _int_plan(mult, a_signed, K, path, isa) if K and M and N else None
    if plan is None and K and M and N and L > 1 and _rows_batch(a, b, lead, mult, a_signed, path, isa, out):
        return out.reshape(lead + (M, N))
    AT = np.ascontiguousarray(np.swapaxes(np.broadcast_to(_u8(a), lead + (M, K)), -1, -2)).reshape(L, K, M)
    Wp = np.ascontiguousarray(np.swapaxes(np.broadcast_to(_u8(b), lead + (K, N)), -1, -2)).reshape(L, N, K)
    if plan is not None:
        _kernels.int_gemm_batch(AT, Wp, plan.fa, plan.a_mode, plan.gw, plan.S, out, _isa_name(isa), get_threads())
    else:
        flat = out.reshape(-1)
        for i in range(L):
            _gemm_T(AT[i], Wp[i], mult, a_signed, path, isa, into=_Dest(flat, i * M * N, 1, N))
    return out.reshape(lead + (M, N))


def matmul_scaled(a, b, mult, a_signed, scaling: "Scaling", isa=None) -> np.ndarray:
    """float32[..., M, N]: ``scale_accumulators(matmul_int(a, b, mult, a_signed), scaling)`` for a per-tensor
    ``scaling`` (one w_scale and bias entry, no act/quant/add: an activation matmul's output stage), the same bits.
    On the integer GEMM kernel (the exact product, and the lowrank path's integer factors: sum_j F(a)_j G(b)_j is
    symmetric in its two factor tables) the GEMMs run with the operands in their own layouts (no transposing copies):
    ``b`` [K, N] as the kernel's activation operand (its int8 value, or G(b) as the port's table) and ``a`` [M, K] on
    its weight port (the table of a's values or F(a)), scaled from the int32 tile into the [M, N] layout
    (``int_gemm_batch`` with a scaling: no int64 sums); the table paths' small GEMMs (all at the avx512 level, the
    shallow ones below it) by ``lutb_gemm_batch`` scaled from its int32 sums (_lutb_plan); the other GEMMs of the
    rows path family by ``rows_gemm_batch``, which scales each GEMM's sums in the same call (_rows_batch); other
    calls, and those whose depth does not fit one int32 segment, take matmul_int and the separate scaling pass."""
    a, b = np.asarray(a), np.asarray(b)
    lead = _slices(a.shape, b.shape, "matmul_scaled")
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    if scaling.w_scale.size != 1 or scaling.bias.size != 1 or scaling.act is not None or \
            scaling.quant is not None or scaling.add is not None:
        raise DseError("matmul_scaled: the scaling must be per tensor without act, quant or add")
    prep = _prepare(mult, a_signed)
    L = int(np.prod(lead, dtype=np.int64))
    plan = lutb = None
    if L and K and M and N:
        plan = _exact_plan(a_signed) if prep.is_exact else _int_plan(mult, a_signed, K, "auto", isa)
        lutb = _lutb_plan(mult, a_signed, M, K, N, "auto", isa) if plan is None else None
    if lutb is None and plan is None and L > 1:  # the rows path family: scaled from the sums in the same call
        _check_range(a, a_signed, "matmul_scaled left operand")
        _check_range(b, True, "matmul_scaled right operand")
        out = _aligned_empty((L, M, N), np.float32)
        if _rows_batch(a, b, lead, mult, a_signed, "auto", isa, out, scaling):
            return out.reshape(lead + (M, N))
    if lutb is None and (plan is None or not _kernels.int_gemm_fits32(K, plan.gw.shape[1], plan.S)):
        acc = matmul_int(a, b, mult, a_signed, isa=isa)
        return scale_accumulators(acc.reshape(1, 1, -1), scaling, isa).reshape(acc.shape)
    _check_range(a, a_signed, "matmul_scaled left operand")
    _check_range(b, True, "matmul_scaled right operand")
    if lutb is not None:
        out = _aligned_empty((L, M, N), np.float32)
        _lutb_batch(a, b, lead, lutb, out, isa, scaling)
        return out.reshape(lead + (M, N))
    AT = np.ascontiguousarray(np.broadcast_to(_u8(b), lead + (K, N))).reshape(L, K, N)
    Wp = np.ascontiguousarray(np.broadcast_to(_u8(a), lead + (M, K))).reshape(L, M, K)
    sc = Scaling(scaling.a_scale, np.full(M, scaling.w_scale.reshape(-1)[0], np.float32),
                 np.full(M, scaling.bias.reshape(-1)[0], np.float32))
    out = _aligned_empty((L, M, N), np.float32)
    # the b values (s8; the exact product) or the G(b) factors (as the activation port's table) on the activation
    # port, a's values / F(a) factors as the weight port's table
    b_tab, b_mode = (plan.fa, "s8") if prep.is_exact else (plan.gw, "table")
    _kernels.int_gemm_batch(AT, Wp, b_tab, b_mode, plan.fa, plan.S, out, _isa_name(isa), get_threads(),
                            scaling=sc.args())
    return out.reshape(lead + (M, N))


# Relative cost of the small table GEMMs' kernel (dse_lutb_batch) per selector row and k-step: loading a selector's
# byte-plane row (4 zmm per plane) against one lookup of 64 positions in one plane (two vpermi2b and a blend, two 16-bit
# adds), and per byte of the transposes / int32 of the output transposition the orientation with the columns of b
# selecting pays. Measured on the Zen 5 class box (one thread, 2026-11-27, mitch_w6 and the imported LUT): it picks the
# faster orientation on attention shapes 65x16x65, 65x65x16 (ViT 64), 197x64x197, 197x197x64 (ViT 224), 512x64x512.
_LUTB_LOAD_COST, _LUTB_COPY_COST = 1.0, 0.25
# Positions past the last whole block of 64 summed by scalar lookups (cy/lut_kernel.h DSE_LUTB_TAIL), each costing
# about a quarter of a block's lookup in one plane.
_LUTB_TAIL, _LUTB_SCALAR_COST = 4, 0.25
# The paths whose matmuls the kernel takes over: on the shapes above and at 4 x 512x64x512 and 8 x 256x256x256 it
# ran the rows/split paths' matmuls 1.05-9x as fast (mitch_w6 and the imported LUT, int64 sums; the rows kernel's
# table builds of R x 64 entries per k-step are paid for a few hundred positions at most per GEMM); the lowrank path
# (integer GEMM kernel) kept, it was faster on most of them.
_LUTB_PATHS = ("rows", "split", "lut")
# Below the avx512 level the kernel looks every product up in the whole int32 table (scalar loads, 8 positions per
# 64-bit load of index bytes): taken for GEMMs at most this deep. Measured on the AVX2-only Zen 3 box (one thread,
# 2026-11-28, the ViT 64's captured operands, 1024 GEMMs per MatMul, a's rows selecting): QK^T 65x16x65 1.8x (mitch_w6)
# and 2.2x (the imported LUT) as fast as the rows path, AV 65x65x16 0.75x and 1.0x (the rows kernel's table builds of
# 65 k-steps are paid back over the GEMM's positions there).
_LUTB_LOOKUP_MAX_K = 32


@dataclass(frozen=True)
class _LutbPlan:
    sel_is_m: bool  # the rows of a select (b's rows index) or the columns of b (a^T indexes)
    planes: np.ndarray
    off: np.ndarray
    T32: np.ndarray  # int32[256 selector, 256 index]: the whole table


def _lutb_cost(nsel: int, nidx: int, K: int, NP: int, copies: int) -> float:
    tail = nidx % 64 if nidx > 64 and nidx % 64 <= _LUTB_TAIL else 0  # dse_lutb_tail: scalar lookups
    blocks = -(-(nidx - tail) // 64)
    passes = -(-(nidx - tail) // (64 * (4 if NP <= 2 else 2 if NP == 3 else 1)))
    return nsel * K * (_LUTB_LOAD_COST * NP * passes + NP * blocks + _LUTB_SCALAR_COST * tail) + \
        _LUTB_COPY_COST * copies


def _lutb_plan(mult: Multiplier, a_signed: bool, M: int, K: int, N: int, path: str, isa) -> _LutbPlan | None:
    """The small table GEMMs' kernel for an activation matmul's GEMMs [M, K] x [K, N] (``lutb_gemm_batch``), or None:
    for path "auto" where a GEMM alone would take a table path (_LUTB_PATHS: the rows kernel's table builds are paid
    for a few dozen positions per GEMM here) and every sum fits int32 (K max |T| < 2^31); at the avx512 level (VBMI
    byte permutes) the orientation by _lutb_cost, below it (scalar lookups in the whole table) for K <=
    _LUTB_LOOKUP_MAX_K with a's rows selecting (no transposing copies)."""
    isa_name = _isa_name(isa)
    if path != "auto" or (isa_name != "avx512" and K > _LUTB_LOOKUP_MAX_K):
        return None
    prep = _prepare(mult, a_signed)
    if prep.is_exact or K * prep.maxabs >= 2 ** 31 or select_path(mult, a_signed, K, path, isa) not in _LUTB_PATHS:
        return None
    pa, offa, luta = prep.planes_a
    if isa_name != "avx512":
        return _LutbPlan(True, pa, offa, luta)
    by_m = _lutb_cost(M, N, K, pa.shape[1], 0)
    by_n = _lutb_cost(N, M, K, prep.planes.shape[1], (M + N) * K + 4 * M * N)
    if by_m <= by_n:
        return _LutbPlan(True, pa, offa, luta)
    return _LutbPlan(False, prep.planes, prep.off.astype(np.int32), prep.lutT)


def _lutb_batch(a, b, lead, plan: _LutbPlan, out, isa, scaling: "Scaling | None" = None) -> None:
    """The matmul's GEMMs on the small table GEMMs' kernel into out [L, M, N] (int64, or float32 scaled)."""
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    A = np.ascontiguousarray(np.broadcast_to(_u8(a), lead + (M, K))).reshape(-1, M, K)
    B = np.ascontiguousarray(np.broadcast_to(_u8(b), lead + (K, N))).reshape(-1, K, N)
    sc = None if scaling is None else _per_tensor(scaling)
    _kernels.lutb_gemm_batch(A, B, plan.planes, plan.off, plan.T32, plan.sel_is_m, out, _isa_name(isa), get_threads(),
                             scaling=sc)


def _per_tensor(scaling: "Scaling") -> tuple:
    """The kernels' arguments of an activation matmul's per-tensor output stage (channel 0's scale and bias)."""
    return Scaling(scaling.a_scale, scaling.w_scale.reshape(-1)[:1].astype(np.float32),
                   scaling.bias.reshape(-1)[:1].astype(np.float32)).args()


def _rows_batch(a, b, lead, mult: Multiplier, a_signed: bool, path: str, isa, out: np.ndarray,
                scaling: "Scaling | None" = None) -> bool:
    """matmul_int's L GEMMs (a [..., M, K], b [..., K, N], leading axes ``lead``) into out [L, M, N] (int64, or with
    a per-tensor ``scaling`` the float32 outputs) on the rows path family in compiled calls over all of them
    (``rows_gemm_batch``, the operands in their own layouts; the split path's exact part by ``int_gemm_batch``
    first) when that is the path each takes on its own (chosen once, from the largest activation of all: every path
    gives the same sums); False (nothing done) otherwise."""
    prep = _prepare(mult, a_signed)
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    A = np.ascontiguousarray(np.broadcast_to(_u8(a), lead + (M, K))).reshape(-1, M, K)
    amax = _max_abs(A, a_signed) if path in ("auto", "exact", "lowrank") and prep.range_matters_for(path) else None
    if select_path(mult, a_signed, K, path, isa, max_abs_a=amax) not in ("rows", "split"):
        return False
    B = np.ascontiguousarray(np.broadcast_to(_u8(b), lead + (K, N))).reshape(-1, K, N)
    kind, by_act, timed = _matmul_table_kind(prep, A.shape[0], M, K, N, path, isa)
    t0 = time.process_time()
    tabs = prep.rows if kind == "rows" else prep.err_rows
    t = tabs.by_act if by_act else tabs.by_weight
    sums = None
    if kind == "split":
        plan = _exact_plan(prep.err_signed)
        AT, Wp = np.ascontiguousarray(A.transpose(0, 2, 1)), np.ascontiguousarray(B.transpose(0, 2, 1))
        sums = out if scaling is None else np.empty(out.shape, np.int64)
        _kernels.int_gemm_batch(AT, Wp, plan.fa, plan.a_mode, plan.gw, plan.S, sums, _isa_name(isa), get_threads())
    sc = None if scaling is None else _per_tensor(scaling)
    _kernels.rows_gemm_batch(A, B, t.D, t.off, t.cls, out, _isa_name(isa), get_threads(), sel_is_m=by_act,
                             add=kind == "split", out64=sums if scaling is not None else None, scaling=sc)
    if timed is not None:
        timed[kind].append(time.process_time() - t0)
    return True


# The batched matmul's choice between the rows and split paths (where both can run and path is "auto") is measured
# on its own calls from _MATMUL_TIMED_MACS multiply-accumulates up: the first _MATMUL_TRIALS calls of a shape take
# _table_plan's choice, the next ones the other path, then the one of least CPU time (the shortest of its trials) for
# good. _split_cost is fitted on convs; on the small GEMMs of attention the rows kernel's table builds cover only the
# classes up to each k-step's largest index, which depends on the data (a Softmax output's columns rarely reach its
# top classes), and the split path pays its transposing copies and int64 sums per GEMM: on the AVX2-only box with the
# imported LUT rows took 0.67-0.81x of split's time on Softmax-like operands of 65x65x16, 197x197x64 and 256x64x256
# GEMMs but 1.3-1.6x on uniform ones and at 65x64x65, where _split_cost picks split on all of them (RESULTS.md). Every
# path gives the same sums, so the choice changes only the time.
_MATMUL_TIMED_MACS = 1 << 22
_MATMUL_TRIALS = 2


def _matmul_table_kind(prep: _Prepared, L: int, M: int, K: int, N: int, path: str, isa) -> tuple:
    """(kind, by_act, times) of a batched matmul's L GEMMs [M, K] x [K, N] on the rows path family: _table_plan's
    answer, or for a measured shape (see _MATMUL_TIMED_MACS) the path its trials found faster; ``times``: the
    shape's {kind: CPU seconds} lists to append this call's time to while it is on trial, else None."""
    kind, by_act = _table_plan(prep, M, N, path, K, isa)
    err, rows = prep.err_rows, prep.rows
    both = (err.by_weight is not None or err.by_act is not None) and \
        (rows.by_weight is not None or rows.by_act is not None)
    if path != "auto" or not both or L * M * K * N < _MATMUL_TIMED_MACS:
        return kind, by_act, None
    times = prep.matmul_times.setdefault((L, M, K, N, _isa_name(isa), get_threads()), {"rows": [], "split": []})
    other = "split" if kind == "rows" else "rows"
    if len(times[kind]) >= _MATMUL_TRIALS:
        if len(times[other]) < _MATMUL_TRIALS or min(times[other]) < min(times[kind]):
            kind = other
        if len(times[kind]) >= _MATMUL_TRIALS:
            times = None
    by_act = _rows_by_act(rows if kind == "rows" else err, M, N)
    return kind, by_act, times


def reference_matmul_int(a, b, mult, a_signed):
    """numpy twin of :func:`matmul_int` (reference_gemm_int per leading index)."""
    return _sliced(lambda x, w: reference_gemm_int(x, w, mult, a_signed), np.asarray(a), np.asarray(b), np.int64,
                   "reference_matmul_int")


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
    Ho, Wo = conv_out_hw(H, W, kh, kw, stride, pads, dilation)
    if Ho < 1 or Wo < 1:
        raise DseError(f"conv2d: kernel {kh}x{kw} (dilation {dilation}) is larger than the padded input {H}x{W}")
    return stride, pads, dilation


def conv_out_hw(H: int, W: int, kh: int, kw: int, stride, pads, dilation) -> tuple[int, int]:
    """(Ho, Wo) of a conv over an H x W input, pads (top, left, bottom, right): dse.model.nn.out_size per axis."""
    return (out_size(H, kh, stride[0], pads[0], pads[2], dilation[0]),
            out_size(W, kw, stride[1], pads[1], pads[3], dilation[1]))


def im2col_T(x: np.ndarray, kh: int, kw: int, stride, pads, dilation) -> tuple[np.ndarray, int, int]:
    """x [B, C, H, W] -> cols [C*kh*kw, B*Ho*Wo] (row index (c, i, j) row-major, zero padded), Ho, Wo."""
    taps, Ho, Wo = _taps(x, kh, kw, stride, pads, dilation)
    B, C = x.shape[:2]
    cols = np.empty((C, kh * kw, B, Ho, Wo), dtype=x.dtype)
    for t, v in enumerate(taps):
        cols[:, t] = v.transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, B * Ho * Wo), Ho, Wo


def gemm_operand_T(x: np.ndarray, kh: int, kw: int, stride, pads, dilation,
                   table: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """The activation operand [C*kh*kw, B*Ho*Wo] of a conv GEMM (contiguous). For a 1x1 kernel without padding it
    is the (strided) input itself: no copy for one image at stride 1, one transposing copy otherwise (compiled for
    uint8 patterns); else the compiled im2col for uint8 patterns (same bytes as im2col_T), im2col_T for other dtypes.
    ``table`` (uint8[256], uint8 patterns only): every input pattern is read as table[pattern], the padding stays 0
    (the rows kernel's activation classes: pattern 0 is class 0); a 1x1 operand maps and transposes in one pass."""
    if table is not None and (x.dtype != np.uint8 or table[0] != 0):
        raise ValueError("gemm_operand_T: a table maps uint8 patterns and keeps pattern 0 (the padding) at 0")
    if kh == 1 and kw == 1 and not any(pads):
        xs = x[:, :, ::stride[0], ::stride[1]]
        B, C, Ho, Wo = xs.shape
        if x.dtype == np.uint8 and (B > 1 or table is not None) and _kernels is not None:
            return _kernels.images_T(np.ascontiguousarray(xs).reshape(B, C, Ho * Wo), table), Ho, Wo
        at = xs[0].reshape(C, Ho * Wo) if B == 1 else xs.transpose(1, 0, 2, 3).reshape(C, B * Ho * Wo)
        return np.ascontiguousarray(at), Ho, Wo
    if table is not None:
        x = _kernels.translate(np.ascontiguousarray(x).reshape(-1), table).reshape(x.shape)
    if x.dtype == np.uint8 and x.size and _kernels is not None:  # patterns: the compiled im2col, no GIL
        Ho, Wo = conv_out_hw(*x.shape[2:], kh, kw, stride, pads, dilation)
        return _kernels.im2col(np.ascontiguousarray(x), kh, kw, stride, pads[:2], dilation, (Ho, Wo),
                               get_threads()), Ho, Wo
    return im2col_T(x, kh, kw, stride, pads, dilation)


# The "rowsum" depthwise kernel builds 256 packed table entries per group of taps (_rowsum_groups) per output channel
# and call, then takes one lookup per group and position where plain lookups take one per tap: it pays where the
# positions per channel (images x Ho x Wo) times the lookups saved (taps - groups) reach this many lookups per entry
# built (1.5: the break-even fitted on Zen 3, avx2, mitch_w6, MobileNetV3-small / EfficientNet-B0-style layers on 7x7
# to 28x28 planes: 3x3 and 5x5 at strides 1 and 2 broke even at 200-800 positions, fits 1.46-1.7).
_DW_ROWSUM_BUILD = 1.5


def _depthwise_mode(mult, a_signed: bool, w_shape, groups: int, path: str, geo: "_ConvGeometry",
                    batch: int) -> str | None:
    """How a depthwise conv (one input channel per group) runs on the direct kernel dse._kernels.dw_conv, no im2col:
    "values" (G[w] * the activation value: the exact product, or a rank-1 table whose activation factor is the
    value, e.g. perforation), "bytes" (G[w] * F[a] of a rank-1 table whose F fits 8 bits, e.g. DRUM and Ax-BxP on
    unsigned activations: the input is read through the byte table of F, then as "values"), "factor" (G[w] * F[a]
    of any other rank-1 integer table), "rowsum" (tables of higher rank whose columns span < 2^16, e.g. Mitch-w and
    8-bit imported tables, when _rowsum_fits: e.g. 3x3 and 5x5 at stride 1 and 2 on enough positions; one
    lookup per kernel row (and column phase) of packed columns), "lut" (table lookups: path="lut" and the other tables of higher
    rank); None for the per-group GEMMs (path="lowrank"/"rows")."""
    Cout, Cg, kh, kw = w_shape
    if Cg != 1 or groups == 1 or path in ("lowrank", "rows") or _kernels is None:
        return None
    select_path(mult, a_signed, kh * kw, path)  # checks the path (e.g. "exact" on an approximate multiplier)
    plan = None if path == "lut" else _prepare(mult, a_signed).int16
    if plan is None or plan.gw.shape[1] != 1:
        return "rowsum" if path != "lut" and _rowsum_fits(_prepare(mult, a_signed), kh, kw, geo, batch) else "lut"
    if plan.a_mode == "table":
        return "factor" if plan.a_bytes is None else "bytes"
    return "values"


def _rowsum_groups(kh: int, kw: int, sw: int, dw: int) -> int:
    """The "rowsum" depthwise kernel's groups of taps (dse_dw_rowsum_groups): per kernel row, one per column phase of
    the stride and three column offsets in its phase plane (three 21-bit fields), e.g. 3 for 3x3 and 10 for 5x5 at
    stride 1 or 2."""
    return kh * len({(j * dw % sw, j * dw // sw // 3) for j in range(kw)})


def _rowsum_fits(prep: "_Prepared", kh: int, kw: int, geo: "_ConvGeometry", batch: int) -> bool:
    """Whether the "rowsum" depthwise kernel takes the conv: every table column spans < 2^16 (2 byte planes), there
    are <= 32 groups of taps (_rowsum_groups: their sums of values < 2^16 fit a field) and the lookups they save on
    the call's positions pay for their tables (_DW_ROWSUM_BUILD)."""
    ng = _rowsum_groups(kh, kw, geo.stride[1], geo.dilation[1])
    return (prep.planes.shape[1] <= 2 and ng <= 32
            and batch * geo.out_hw[0] * geo.out_hw[1] * (kh * kw - ng) >= _DW_ROWSUM_BUILD * 256 * ng)


def conv2d_int(x, w, mult, a_signed, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, path="auto",
               isa=None):
    """Integer conv with the emulated multiplier -> int64[B, Cout, Ho, Wo] (bit-exact; see module docstring)."""
    x, w, geo = _conv_args(x, w, a_signed, stride, pads, dilation, groups, "conv2d_int")
    direct = _depthwise_mode(mult, a_signed, w.shape, groups, path, geo, x.shape[0])
    if direct is not None:
        return _dw_conv(x, w, mult, a_signed, geo, direct, isa)
    out = np.empty((x.shape[0], w.shape[0]) + geo.out_hw, dtype=np.int64)
    _conv_gemm_into(x, w, mult, a_signed, geo, groups, path, isa, out)
    return out


@dataclass(frozen=True)
class _ConvGeometry:
    stride: tuple
    pads: tuple
    dilation: tuple
    out_hw: tuple


def _conv_args(x, w, a_signed, stride, pads, dilation, groups, what):
    """Checked operands (uint8/int8 values) and geometry of an integer conv."""
    x = np.asarray(x)
    w = np.asarray(w)
    stride, pads, dilation = _conv_geometry(x.shape, w.shape, stride, pads, dilation, groups)
    _check_range(x, a_signed, f"{what} input")
    _check_range(w, True, f"{what} weights")
    kh, kw = w.shape[2:]
    return x, w, _ConvGeometry(stride, pads, dilation, conv_out_hw(*x.shape[2:], kh, kw, stride, pads, dilation))


# The direct depthwise kernel takes a channel's planes in blocks of images of about this many positions of the padded
# planes (at least one image): one kernel run, tap set-up and scaling call per block instead of per plane.
_DW_BLOCK_POS = 4096


def _dw_conv(x, w, mult, a_signed, geo: _ConvGeometry, direct: str, isa, scaling: "Scaling | None" = None):
    """The direct depthwise kernel: int64 sums, or with ``scaling`` the layer's output (Scaling.result)."""
    Cout, _, kh, kw = w.shape
    prep = _prepare(mult, a_signed)
    xtab = None
    if direct in ("lut", "rowsum"):
        ftab = gtab = np.zeros(256, np.int16)
        bound = prep.maxabs
    else:
        plan = prep.int16
        ftab, gtab, bound = np.ascontiguousarray(plan.fa[:, 0]), np.ascontiguousarray(plan.gw[:, 0]), plan.S
        if direct == "bytes":
            (xtab, a_signed), direct = plan.a_bytes, "values"
    out, q = (None, None) if scaling is None else scaling.empty((x.shape[0], Cout) + geo.out_hw)
    res = _kernels.dw_conv(np.ascontiguousarray(_u8(x)), np.ascontiguousarray(_u8(w).reshape(Cout, kh, kw)), direct,
                           prep.lutT, ftab, gtab, bound, geo.stride, geo.pads[:2], geo.dilation, geo.out_hw,
                           a_signed, _isa_name(isa), get_threads(), None if scaling is None else scaling.args(out, q),
                           xtab, _DW_BLOCK_POS, out=out)
    return res if scaling is None else scaling.result(res, q)


def _conv_gemm_into(x, w, mult, a_signed, geo: _ConvGeometry, groups, path, isa, out: np.ndarray) -> None:
    """The conv as one GEMM per group, written into ``out`` int64[B, Cout, Ho, Wo] (C-contiguous)."""
    Cout, Cg, kh, kw = w.shape
    og, kg = Cout // groups, Cg * kh * kw
    xq = _u8(x)
    classes = _conv_row_classes(xq, mult, a_signed, kg, og, x.shape[0] * geo.out_hw[0] * geo.out_hw[1], path, isa)
    AT, Ho, Wo = gemm_operand_T(xq, kh, kw, geo.stride, geo.pads, geo.dilation,
                                None if classes is None else classes.cls)
    Wp = _u8(w).reshape(Cout, Cg * kh * kw)
    P = Ho * Wo
    for g in range(groups):
        _gemm_T(AT[g * kg:(g + 1) * kg], np.ascontiguousarray(Wp[g * og:(g + 1) * og]), mult, a_signed, path, isa,
                into=_Dest(out.reshape(-1), g * og * P, P, Cout * P), classed=classes is not None)


def _conv_row_classes(xq: np.ndarray, mult, a_signed: bool, K: int, N: int, M: int, path: str,
                      isa) -> _OffsetTable | None:
    """The weight-selected row table when a conv's GEMMs (reduction K, N channels, M positions per group) run on it
    and it has activation classes: the conv then maps its input patterns xq to classes before im2col (a fraction of
    the bytes of the GEMM operand; padding stays 0, the class of pattern 0). Else None."""
    plan = _conv_table_plan(xq, mult, a_signed, K, N, M, path, isa) if path in ("auto", "rows") else None
    return None if plan is None or plan[0] != "rows" else _classed_table(_prepare(mult, a_signed), plan[1])


def _classed_table(prep: _Prepared, by_act: bool) -> _OffsetTable | None:
    """The weight-selected row table when the rows kernel runs in that orientation (not ``by_act``) and the table has
    activation classes (a conv maps its input to them before im2col), else None."""
    t = prep.rows.by_weight
    return None if by_act or t is None or t.cls is None else t


def _conv_table_plan(xq: np.ndarray, mult, a_signed: bool, K: int, N: int, M: int, path: str,
                     isa) -> tuple[str, bool] | None:
    """(kind, by_act) of _table_plan when a conv's GEMMs (reduction K, N channels, M positions per group) run on the
    table kernels: kind "rows" (its own row tables) or "split" (the exact integer GEMM + row tables of the error
    table), by_act the orientation of the row tables; else None. The path is chosen as _gemm_T_paths does, with the
    input's largest |value| (>= the operand's)."""
    if path not in ("auto", "rows", "split") or _kernels is None or xq.size == 0 or K == 0:
        return None
    prep = _prepare(mult, a_signed)
    if _int_plan(mult, a_signed, K, path, isa) is not None:
        return None
    amax = _max_abs(xq, a_signed) if path == "auto" and prep.range_matters_for(path) else None
    if select_path(mult, a_signed, K, path, isa, max_abs_a=amax) not in ("rows", "split"):
        return None
    return _table_plan(prep, M, N, path, K, isa)


# Image slices of conv2d_scaled on the paths that emit int64 sums (split, lut, ...): at most this many bytes of sums
# (scaled while they are in cache), unless one slice would then hold fewer than _SCALED_SLICE_MIN_POS output positions
# (the row-table kernel, also the rows path's slices, builds its tables per block of _ROWS_MB positions; short GEMMs
# would repeat those builds).
_SCALED_SLICE_BYTES = 1 << 21
_SCALED_SLICE_MIN_POS = _ROWS_MB


def _scaled_slice_images(Cout: int, P: int) -> int:
    """Images per slice of int64 sums (Cout channels x P positions each) of conv2d_scaled's sliced paths."""
    return max(1, _SCALED_SLICE_BYTES // max(1, 8 * Cout * P), -(-_SCALED_SLICE_MIN_POS // P))


def conv2d_scaled(x, w, mult, a_signed, scaling: "Scaling", stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                  groups=1, path="auto", isa=None, channels_last: bool = False) -> np.ndarray:
    """``scale_accumulators(conv2d_int(x, w, ...), scaling)`` bit for bit ([B, Cout, Ho, Wo], ``scaling.dtype``:
    float32, or the next layer's quantized input), without the int64 tensor: the direct depthwise kernel scales each
    output plane as it finishes; the integer GEMM kernel scales its int32 tiles when they hold the whole reduction
    (_scaled_int_plan); the rows kernel scales each finished tile of sums (_conv_rows_scaled); the split path adds
    the error table's sums to the integer GEMM's int32 tiles before they are scaled (_conv_split_scaled); the other
    GEMM paths run on slices of images whose sums (<= _SCALED_SLICE_BYTES) are scaled from cache into the output.
    A SiLU output stage (``scaling.silu``) runs in every path's output step: numpy's own Sigmoid loops on the scaled
    float32 values in cache (the integer GEMM's int32 tile scaled in place, the other passes' chunks through a
    buffer: no float32 conv output), except a depthwise conv's quantized output, where the SiLU and quantization run
    after the float32 output (:meth:`Scaling.finish`). ``channels_last``: a float32 output without add or SiLU that
    the rows kernel computes with weights selecting is written as [B, Ho, Wo, Cout] (one position's channels in one
    scaling run) and returned as its transposed view [B, Cout, Ho, Wo], the same values (for a reader that takes the
    output channels-last, e.g. a token MatMul's 1x1 conv); the other paths ignore it."""
    x, w, geo = _conv_args(x, w, a_signed, stride, pads, dilation, groups, "conv2d_scaled")
    if scaling.silu and not _kernels.numpy_loops_found():
        return scaling.finish(conv2d_scaled(x, w, mult, a_signed, scaling.without_act(), stride, pads, dilation,
                                            groups, path, isa))
    direct = _depthwise_mode(mult, a_signed, w.shape, groups, path, geo, x.shape[0])
    if direct is not None:
        if scaling.silu and scaling.quant is not None:
            return scaling.finish(_dw_conv(x, w, mult, a_signed, geo, direct, isa, scaling.without_act()))
        return _dw_conv(x, w, mult, a_signed, geo, direct, isa, scaling)
    plan = _scaled_int_plan(mult, a_signed, w.shape, path, isa)
    if plan is not None:
        return _conv_int_gemm_scaled(x, w, plan, geo, groups, isa, scaling)
    xq, (Cout, Cg, kh, kw) = _u8(x), w.shape
    P = max(1, geo.out_hw[0] * geo.out_hw[1])
    step = max(1, _FUSED_SLICE_BYTES // max(1, Cg * groups * kh * kw * P), -(-_SCALED_SLICE_MIN_POS // P))
    tplan = _conv_table_plan(xq, mult, a_signed, Cg * kh * kw, Cout // groups, min(x.shape[0], step) * P, path, isa)
    if tplan is not None and tplan[0] == "rows":
        last = channels_last and not tplan[1] and scaling.dtype == np.float32 and scaling.add is None and \
            not scaling.silu
        return _conv_rows_scaled(xq, w, mult, a_signed, geo, groups, isa, scaling, tplan[1], step, last)
    if tplan is not None and _split_fits32(_prepare(mult, a_signed), Cg * kh * kw):
        return _conv_split_scaled(xq, w, _prepare(mult, a_signed), geo, groups, isa, scaling, tplan[1])
    B = x.shape[0]
    out, q = scaling.empty((B, Cout) + geo.out_hw)
    step = _scaled_slice_images(Cout, P)
    acc = np.empty((min(B, step), Cout) + geo.out_hw, dtype=np.int64)
    bound = w[0].size * _prepare(mult, a_signed).maxabs  # every sum has K = Cg kh kw table entries
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        _conv_gemm_into(x[b0:b1], w, mult, a_signed, geo, groups, path, isa, acc[:b1 - b0])
        part = scaling if scaling.add is None else replace(scaling, add=scaling.add[b0:b1])
        scale_accumulators(acc[:b1 - b0], part, isa, out=out[b0:b1], bound=bound, q=None if q is None else q[b0:b1])
    return scaling.result(out, q)


@dataclass(frozen=True)
class MaxPoolStep:
    """An ONNX MaxPool (float32, ``pads`` top, left, bottom, right; ``ceil`` mode) that reads a scaled conv's output,
    and with ``quant`` the quantization of its readers (:func:`conv2d_scaled_max_pool`)."""

    kernel: tuple
    stride: tuple
    pads: tuple
    dilation: tuple = (1, 1)
    ceil: bool = False
    quant: OutputQuant | None = None


def conv2d_scaled_max_pool(x, w, mult, a_signed, scaling: "Scaling", pool: MaxPoolStep, stride=(1, 1),
                           pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, isa=None):
    """(z, q): z = ``dse.model.nn.max_pool`` of ``conv2d_scaled(...)`` (float32) and q = ``quantize_patterns(z,
    pool.quant...)`` viewed as ``pool.quant.dtype`` (None without a quant), bit for bit. Where the conv runs on the
    broadcast conv kernel (a float32 scaling without add), the pool and quantization run inside it (each task's
    images pooled from the cache: the conv's float32 output is never written, e.g. ResNet's 7x7 stem before its 3x3/2
    max pool); else the three steps one after another, per slice of images whose conv output is about
    _POOL_SLICE_BYTES (pooled while it is in cache, not written to memory for the whole batch: e.g. ShuffleNetV2's
    and ResNet's stems on full tables)."""
    from dse.model.nn import max_pool, out_hw

    xc, wc, geo = _conv_args(x, w, a_signed, stride, pads, dilation, groups, "conv2d_scaled_max_pool")
    Cout, Cg, kh, kw = wc.shape
    plan = None
    if groups == 1 and scaling.quant is None and scaling.add is None and not scaling.silu and xc.shape[0] and \
            _depthwise_mode(mult, a_signed, wc.shape, groups, "auto", geo, xc.shape[0]) is None and \
            conv_kernel(kh, kw, Cg, Cout, groups, geo, isa) == "bcast":
        plan = _scaled_int_plan(mult, a_signed, wc.shape, "auto", isa)
    if plan is not None:
        ohw = out_hw(geo.out_hw, pool.kernel, pool.stride, pool.pads, pool.dilation, pool.ceil)
        z = np.empty((xc.shape[0], Cout) + ohw, np.float32)
        q = None if pool.quant is None else np.empty(z.shape, np.uint8)
        wg, sargs = _group_args(wc, 1, scaling, None, None)
        spec = (pool.kernel, pool.stride, pool.pads[:2], pool.dilation, ohw, z, q,
                float(np.float32(pool.quant.scale)) if pool.quant else 1.0, bool(pool.quant and pool.quant.signed))
        if _kernels.int_gemm(None, wg[0], plan.fa, plan.a_mode, plan.gw, plan.S, None, _isa_name(isa),
                             get_threads(), sargs[0], conv=(np.ascontiguousarray(_u8(xc)), 0, (kh, kw), geo.stride,
                                                            geo.pads[:2], geo.dilation, geo.out_hw),
                             conv_kernel="bcast", pool=spec) is not None:
            return z, None if q is None else q.view(pool.quant.dtype)
    B = xc.shape[0]
    per = max(1, _POOL_SLICE_BYTES // max(1, np.dtype(scaling.dtype).itemsize * Cout * geo.out_hw[0] * geo.out_hw[1]))
    if scaling.add is not None:  # (the residual Add's operand would need slicing too)
        per = B
    z = q = None
    for i in range(0, max(B, 1), per):  # one slice of all images when they fit (or none)
        zi = max_pool(conv2d_scaled(xc[i:i + per], wc, mult, a_signed, scaling, stride, pads, dilation, groups,
                                    isa=isa), pool.kernel, pool.stride, pool.pads, pool.dilation, pool.ceil)
        qi = None if pool.quant is None else quantize_patterns(zi, pool.quant.scale, pool.quant.signed)
        if per >= B:
            z, q = zi, qi
            break
        if z is None:
            z = np.empty((B,) + zi.shape[1:], zi.dtype)
            q = None if qi is None else np.empty(z.shape, np.uint8)
        z[i:i + per] = zi
        if qi is not None:
            q[i:i + per] = qi
    return z, None if q is None else q.view(pool.quant.dtype)


# conv2d_scaled_max_pool off the broadcast kernel: conv outputs of about this many bytes per slice of images, pooled
# while in cache (ShuffleNetV2 224's stem on full tables: 6 of 68 images per slice, the stem + pool 1.2x faster
# than the whole batch's 82 MB output written and re-read; one image per slice was slower: the conv's per-call cost)
_POOL_SLICE_BYTES = 1 << 23


# Image slices of the int32-scaled GEMMs of conv2d_scaled: at most this many bytes of GEMM operand (im2col) per call.
_FUSED_SLICE_BYTES = 1 << 22


def _scaled_int_plan(mult, a_signed: bool, w_shape, path: str, isa) -> _Int16Plan | None:
    """The integer GEMM plan of a conv's per-group GEMMs when one int32 segment of the kernel holds their whole
    reduction (K t S within int32; every 8-bit exact or separable conv of practical depth): the kernel then scales
    its int32 sums from cache (``_kernels.int_gemm`` with a scaling) and no int64 sums exist. Else None."""
    Cout, Cg, kh, kw = w_shape
    K = Cg * kh * kw
    plan = _int_plan(mult, a_signed, K, path, isa) if K else None
    if plan is None or not _kernels.int_gemm_fits32(K, plan.gw.shape[1], plan.S):
        return None
    return plan


def _group_args(w, groups: int, scaling: "Scaling", out, q) -> tuple[list, list]:
    """Per group g of a scaled integer-GEMM conv with weights ``w`` [Cout, Cg, kh, kw]: its weight patterns [og, kg]
    (C-contiguous) and the kernel's scaling arguments for its output channels (``scaling.args`` of ``out``, ``q``)."""
    Cout = w.shape[0]
    og = Cout // groups
    sa, sw, bias, kind, lo, hi, quant, add, silu = scaling.args(out, q)
    Wp = _u8(w).reshape(Cout, -1)
    wg = [np.ascontiguousarray(Wp[g * og:(g + 1) * og]) for g in range(groups)]
    sargs = [(sa, sw[g * og:(g + 1) * og], bias[g * og:(g + 1) * og], kind, lo, hi, quant, add, silu)
             for g in range(groups)]
    return wg, sargs


def _conv_int_gemm_scaled(x, w, plan: _Int16Plan, geo: _ConvGeometry, groups: int, isa, scaling: "Scaling"):
    """conv2d_scaled on the integer GEMM kernel with the scaling in its int32 tiles, per group: the operand built
    inside the kernel from the input where it can (_conv_int_gemm_direct), else on image slices of at most
    _FUSED_SLICE_BYTES of GEMM operand (a 1x1 conv's operand is its input)."""
    B, C = x.shape[:2]
    Cout, Cg, kh, kw = w.shape
    og, kg = Cout // groups, Cg * kh * kw
    P = geo.out_hw[0] * geo.out_hw[1]
    out, q = scaling.empty((B, Cout) + geo.out_hw)
    view = out.reshape(B, Cout, P)
    wg, sargs = _group_args(w, groups, scaling, out, q)
    todo = range(groups)
    ck = conv_kernel(kh, kw, C // groups, og, groups, geo, isa)
    if (ck == "bcast" or kh * kw > 1 or any(geo.pads)) and x.size:
        todo = _conv_int_gemm_direct(np.ascontiguousarray(_u8(x)), wg, kh, kw, plan, geo, isa, view, sargs, ck)
        if not todo:
            return scaling.result(out, q)
    step = max(1, _FUSED_SLICE_BYTES // max(1, C * kh * kw * P))
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        AT = _per_image_operand(_u8(x[b0:b1]), kh, kw, geo)
        if AT is None:
            AT = gemm_operand_T(_u8(x[b0:b1]), kh, kw, geo.stride, geo.pads, geo.dilation)[0]
        for g in todo:
            c = slice(g * og, (g + 1) * og)
            _kernels.int_gemm(AT[..., g * kg:(g + 1) * kg, :], wg[g], plan.fa, plan.a_mode, plan.gw, plan.S,
                              view[b0:b1, c], _isa_name(isa), get_threads(), sargs[g])
    return scaling.result(out, q)


# The integer GEMM's conv operand (_conv_int_gemm_scaled): "im2col" (built per task and depth block in cache and
# packed into position panels), "bcast" (the broadcast conv kernel: channels-last images, output channels in the
# lanes), or "auto" (conv_kernel's per-shape choice); the environment variable DSE_KERNEL_CONV forces one.
CONV_KERNELS = ("auto", "im2col", "bcast")


def conv_kernel(kh: int, kw: int, cg: int, og: int, groups: int, geo: _ConvGeometry, isa=None) -> str:
    """The conv operand of a scaled integer-GEMM conv (kernel kh x kw, cg input and og output channels per group):
    DSE_KERNEL_CONV when set to "im2col" or "bcast", else the one measured faster for the shape; "im2col" where the
    broadcast kernel cannot run (below the avx512 level, no AVX512-VNNI, DSE_KERNEL_VNNI=0)."""
    v = os.environ.get("DSE_KERNEL_CONV", "").strip().lower() or "auto"
    if v not in CONV_KERNELS:
        raise DseError(f"DSE_KERNEL_CONV={v!r}: use one of {', '.join(CONV_KERNELS)}")
    if v == "auto":
        # benchmarks/bench_bcast_conv.py (RESULTS.md): ResNet-18's k x k convs of >= 64 input channels 1.05-1.34x,
        # its 7x7 3-channel stem 1.07x, its strided 1x1 convs of >= 128 input channels 1.03-1.25x; the 3x3 3-channel
        # stem 0.8x, the 64-channel strided 1x1 conv 0.95-1.11x, MobileNetV2's stride-1 1x1 convs (whose input is
        # the matrix operand as it is) 0.66-1.19x; ResNet-50's stride-1 1x1 convs in the network 1.03-1.19x with
        # >= 128 input and >= 64 output channels on planes of >= 14 x 14, 0.92-0.98x on 7 x 7 or with 64 inputs;
        # MobileNetV2 32's 4x4 projections (576 / 960 -> 160 / 320: their 16-position planes take the transposing
        # operand copy, not _per_image_operand) 1.05-1.26x, its 4x4 expansions (160 -> 960) and head 0.91-0.97x
        p = geo.out_hw[0] * geo.out_hw[1]
        v = "bcast" if groups == 1 and (cg >= 16 or kh * kw >= 25 if kh * kw > 1 else
                                        cg >= 128 and (geo.stride != (1, 1) or og >= 64 and p >= 196) or
                                        cg >= 512 and og >= 64 and og < cg and 16 <= p < _PER_IMAGE_PANEL) else "im2col"
    runs = _isa_name(isa) == "avx512" and "avx512" in _kernels.vnni_levels() and _kernels.vnni_enabled()
    return v if runs else "im2col"


def _conv_int_gemm_direct(xq, wg, kh: int, kw: int, plan: _Int16Plan, geo: _ConvGeometry, isa, view,
                          sargs, ck: str = "im2col") -> list[int]:
    """The scaled conv GEMMs of _conv_int_gemm_scaled (per group g: weights wg[g], scaling sargs[g], output channels
    of ``view`` [B, Cout, Ho*Wo]) with the operand built by the kernel from the input patterns xq, each task's block
    of im2col rows in cache (no operand matrix, no image slices), where it can: the VNNI kernel at the avx512 level,
    a geometry the VBMI im2col takes; or the int16 kernel at the avx2 level packing its panels straight from the input
    (stride-1 convs with output rows as wide as the input's, >= 128 depth rows: int_gemm's ``conv``). Returns the groups it could not run (nothing written for them): the VNNI kernel
    may take one group and not another (a weight table outside the bytes, e.g. DRUM's G(-128), on the patterns a
    group uses). ``ck``: the kernel's conv operand ("im2col", or "bcast": the broadcast conv kernel, which takes
    any geometry; a group it does not run, e.g. signed activations on the weights' unsigned port, tries "im2col")."""
    og, cg = wg[0].shape[0], wg[0].shape[1] // (kh * kw)
    todo = []
    for g in range(len(wg)):
        conv = (xq, g * cg, (kh, kw), geo.stride, geo.pads[:2], geo.dilation, geo.out_hw)
        for k in (ck, "im2col") if ck == "bcast" and (kh * kw > 1 or any(geo.pads)) else (ck,):
            if _kernels.int_gemm(None, wg[g], plan.fa, plan.a_mode, plan.gw, plan.S, view[:, g * og:(g + 1) * og],
                                 _isa_name(isa), get_threads(), sargs[g], conv=conv, conv_kernel=k) is not None:
                break
        else:
            todo.append(g)
    return todo


def _conv_rows_scaled(xq, w, mult, a_signed: bool, geo: _ConvGeometry, groups: int, isa, scaling: "Scaling",
                      by_act: bool, step: int, channels_last: bool = False) -> np.ndarray:
    """conv2d_scaled on the rows kernel (orientation by_act; xq the input's uint8 patterns), which scales each
    finished tile of sums into the output, per group, on slices of ``step`` images (conv2d_scaled: at most
    _FUSED_SLICE_BYTES of GEMM operand, but at least _SCALED_SLICE_MIN_POS positions, since the kernel builds its
    tables per block of _ROWS_MB positions); ``channels_last``: into [B, Ho, Wo, Cout] memory (P = 1, ldb = Cout),
    returned as its [B, Cout, Ho, Wo] view."""
    B = xq.shape[0]
    Cout, Cg, kh, kw = w.shape
    og, kg = Cout // groups, Cg * kh * kw
    P = max(1, geo.out_hw[0] * geo.out_hw[1])
    prep = _prepare(mult, a_signed)
    t = _classed_table(prep, by_act)
    cls = None if t is None else t.cls  # activation classes, mapped before im2col
    out, q = scaling.empty((B,) + geo.out_hw + (Cout,) if channels_last else (B, Cout) + geo.out_hw)
    flat = out.reshape(-1)
    Wp = _u8(w).reshape(Cout, kg)
    wg = [np.ascontiguousarray(Wp[g * og:(g + 1) * og]) for g in range(groups)]
    sg = [replace(scaling, w_scale=scaling.w_scale[g * og:(g + 1) * og], bias=scaling.bias[g * og:(g + 1) * og])
          for g in range(groups)]
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        AT = gemm_operand_T(xq[b0:b1], kh, kw, geo.stride, geo.pads, geo.dilation, cls)[0]
        for g in range(groups):
            into = _Dest(flat, b0 * Cout * P + g * og, 1, Cout) if channels_last else \
                _Dest(flat, (b0 * Cout + g * og) * P, P, Cout * P)
            _rows_gemm(AT[g * kg:(g + 1) * kg], wg[g], prep, isa, by_act=by_act, into=into, classed=cls is not None,
                       scaling=sg[g], scaled=(out, q))
    return scaling.result(out.transpose(0, 3, 1, 2) if channels_last else out, q)


def _split_fits32(prep: _Prepared, K: int) -> bool:
    """Whether the split path's sums of reduction K fit the integer GEMM's scaled int32 tiles: the exact product's
    in one int32 segment, and the error sums (|E| <= the table's largest |entry| + the product's bound S) and the
    totals (<= K x the largest |entry|) within int32, so that the error sums can be added to the exact ones there."""
    S = _exact_plan(prep.err_signed).S
    return _kernels.int_gemm_fits32(K, 1, S) and K * (prep.maxabs + S) < 2 ** 31


def _conv_split_scaled(xq, w, prep: _Prepared, geo: _ConvGeometry, groups: int, isa, scaling: "Scaling",
                       by_act: bool) -> np.ndarray:
    """conv2d_scaled on the split path (_split_fits32 holds), per group, on slices of images: the rows kernel writes
    the error table's int64 sums of a slice (orientation by_act; at most _SCALED_SLICE_BYTES of sums, at least
    _SCALED_SLICE_MIN_POS positions), then the integer GEMM computes the exact product on the same im2col operand
    and adds the error sums to its int32 tiles before it scales them into the output: no int64 sums of the exact
    product, no scaling pass. (The kernel's own in-cache im2col, _conv_int_gemm_direct, measured no faster here:
    the operand exists for the rows kernel anyway.)"""
    B = xq.shape[0]
    Cout, Cg, kh, kw = w.shape
    og, kg = Cout // groups, Cg * kh * kw
    P = max(1, geo.out_hw[0] * geo.out_hw[1])
    plan = _exact_plan(prep.err_signed)
    out, q = scaling.empty((B, Cout) + geo.out_hw)
    view = out.reshape(B, Cout, P)
    wg, sargs = _group_args(w, groups, scaling, out, q)
    step = _scaled_slice_images(Cout, P)
    acc = np.empty((min(B, step), Cout, P), dtype=np.int64)
    level, threads = _isa_name(isa), get_threads()
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        AT = gemm_operand_T(xq[b0:b1], kh, kw, geo.stride, geo.pads, geo.dilation)[0]
        err = acc[:b1 - b0]
        for g in range(groups):
            c = slice(g * og, (g + 1) * og)
            _rows_gemm(AT[g * kg:(g + 1) * kg], wg[g], prep, isa, by_act=by_act,
                       into=_Dest(err.reshape(-1), g * og * P, P, Cout * P), tabs=prep.err_rows)
            _kernels.int_gemm(AT[g * kg:(g + 1) * kg], wg[g], plan.fa, plan.a_mode, plan.gw, plan.S, view[b0:b1, c],
                              level, threads, sargs[g], addend=err[:, c])
    return scaling.result(out, q)


# Output positions per image for which the integer GEMM reads a batch of 1x1 conv inputs image by image (whole SIMD
# panels of positions never straddle two images: 32 is a multiple of the int16 kernels' panel widths, cy/int_gemm.h;
# the VNNI kernel's panels of 64 positions that straddle two images are packed element by element).
_PER_IMAGE_PANEL = 32


def _per_image_operand(x: np.ndarray, kh: int, kw: int, geo: _ConvGeometry) -> np.ndarray | None:
    """A 1x1 conv's integer GEMM operand without the transposing copy: x [B, C, H, W] as [B, C, Ho*Wo] (the strided
    positions copied at stride > 1), read by the kernel image by image; for one image or Ho*Wo a multiple of
    _PER_IMAGE_PANEL and no padding, else None."""
    B, C = x.shape[:2]
    P = geo.out_hw[0] * geo.out_hw[1]
    if kh != 1 or kw != 1 or any(geo.pads) or (B > 1 and P % _PER_IMAGE_PANEL):
        return None
    return np.ascontiguousarray(x[:, :, ::geo.stride[0], ::geo.stride[1]]).reshape(B, C, P)


# ------------------------------------------------------------------------------------ fused FxP8 passes (dse.quant)
def quantize_patterns(x: np.ndarray, scale, signed: bool) -> np.ndarray:
    """uint8 patterns of clip(rint(float32(x) / float32(scale)), qmin, qmax), one threaded pass; same shape."""
    _isa_name(None)
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim and not x.flags.c_contiguous and \
            not any(t % 4 for t in x.strides):  # a view (slice, transpose): read in place, no float32 copy
        return _kernels.quantize_strided(x, np.float32(scale), bool(signed), get_threads())
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _kernels.quantize(x.reshape(-1), np.float32(scale), bool(signed), get_threads()).reshape(x.shape)


def _aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """np.empty(shape, dtype) whose data starts at a multiple of ``align`` bytes (C-contiguous)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(n + align, np.uint8)
    off = -raw.ctypes.data % align
    return raw[off:off + n].view(dtype).reshape(shape)


@dataclass(frozen=True)
class OutputAct:
    """The activation that follows a MAC layer, fused into its scaling pass: ``kind`` "relu" is numpy's
    ``maximum(y, 0)``, "clip" numpy's ``clip(y, lo, hi)`` (the IR ops "relu" and "clip"; float32 bounds), "silu" the
    SiLU pair Sigmoid + Mul as exported, ``y * sigmoid(y)`` (``times_x`` 1) or ``sigmoid(y) * y`` (2), with the bits
    of :func:`dse.model.nn.sigmoid` (numpy's own float32 loops)."""

    kind: str
    lo: float = -np.inf
    hi: float = np.inf
    times_x: int = 0

    def __post_init__(self):
        if (self.kind == "silu") != (self.times_x in (1, 2)) or self.kind not in ("relu", "clip", "silu"):
            raise ValueError(f"OutputAct({self.kind!r}, times_x={self.times_x}): relu, clip, or silu with times_x "
                             "1 or 2")

    def apply(self, y: np.ndarray) -> np.ndarray:
        """The numpy twin of the fused pass (the IR op on float32 values)."""
        if self.kind == "relu":
            return np.maximum(y, np.float32(0))
        if self.kind == "silu":
            from dse.model.nn import sigmoid

            return sigmoid(y, self.times_x)
        return np.clip(y, np.float32(self.lo), np.float32(self.hi))


@dataclass(frozen=True)
class OutputQuant:
    """The next MAC layer's input quantization, fused into a layer's scaling pass: the output is
    ``quantize_patterns(y, scale, signed)`` viewed as int8 (signed) or uint8 values, the bits of quantizing the
    float32 output in a pass of its own, without that float32 tensor."""

    scale: float
    signed: bool

    @property
    def dtype(self):
        return np.dtype(np.int8 if self.signed else np.uint8)


@dataclass(frozen=True)
class Scaling:
    """The FxP8 output stage of a MAC layer: ``y = act(float32((acc * a_scale) * w_scale[c]) + bias[c])`` with the
    products in float64 and a float32 add (``act``: the fused Relu/Clip, or None); with ``quant`` the stage emits
    the next layer's quantized input instead of ``y``. With ``add`` (a runtime Add of the layer's output and this
    float32 tensor of the output's shape, fused: the Add is the output's only reader) ``y = act(float32(...) + bias[c]
    + add)``, the Add's float32 sum (IEEE addition commutes, so the operand order of the Add does not matter) with
    the Add's Relu/Clip; the stage then emits ``y`` and, with ``quant``, also the quantized input of the Add's
    consumers (:meth:`result`); with ``keep_sum`` False (an add and a quant only: the sum's readers all take its
    quantized input) ``y`` is not stored, only its patterns."""

    a_scale: float
    w_scale: np.ndarray  # float32[N]
    bias: np.ndarray  # float32[N]
    act: OutputAct | None = None
    quant: OutputQuant | None = None
    add: np.ndarray | None = None  # float32, the output's shape, C-contiguous
    keep_sum: bool = True

    def __post_init__(self):
        if self.silu and self.add is not None:
            raise ValueError("a SiLU output step takes no fused add")
        if not self.keep_sum and (self.add is None or self.quant is None):
            raise ValueError("only a fused add's sum with its quantized input may go unstored")

    @property
    def silu(self) -> int:
        """1 / 2 where ``act`` is a SiLU (its ``times_x``), else 0."""
        return self.act.times_x if self.act is not None and self.act.kind == "silu" else 0

    @property
    def dtype(self):
        """The output's dtype: float32, or the int8/uint8 values of ``quant`` (with ``add``: float32, the patterns
        are a second output)."""
        return np.dtype(np.float32) if self.quant is None or self.add is not None else self.quant.dtype

    def empty(self, shape) -> tuple[np.ndarray, np.ndarray | None]:
        """New outputs of a pass of ``shape``: (out, q), out as the kernels write it (float32, or uint8 patterns),
        q the uint8 patterns of an add's sum with a quant (else None)."""
        kernel = np.float32 if self.dtype == np.float32 else np.uint8
        q = np.empty(shape, np.uint8) if self.add is not None and self.quant is not None else None
        if kernel == np.float32:  # 64-byte aligned: a large one is written with non-temporal stores (STREAM_MIN_BYTES)
            return _aligned_empty(shape, np.float32), q
        return np.empty(shape, kernel), q

    def result(self, out: np.ndarray, q: np.ndarray | None):
        """What a scaled layer returns from the outputs of :meth:`empty`: out viewed as ``dtype``, or with ``add``
        and ``quant`` the pair (float32 sum, quantized input viewed as ``quant.dtype``), the sum None where it is
        not stored (``keep_sum``)."""
        if q is None:
            return out.view(self.dtype)
        return out if self.keep_sum else None, q.view(self.quant.dtype)

    def args(self, out: np.ndarray | None = None, q: np.ndarray | None = None) -> tuple:
        """(a_scale, w_scale, bias, act kind, lo, hi, quant, add, silu) as dse._kernels takes them (quant: None or
        (scale, signed); add: None, or (add, out, q) with the whole outputs of :meth:`empty`, whose offsets address the
        add operand and the patterns, then False where the sum is not stored (``keep_sum``); silu: :attr:`silu`, the
        act kind "none" then)."""
        kind, lo, hi = ("none", -np.inf, np.inf) if self.act is None or self.silu else \
            (self.act.kind, self.act.lo, self.act.hi)
        quant = None if self.quant is None else (float(np.float32(self.quant.scale)), bool(self.quant.signed))
        add = None
        if self.add is not None:
            if out is None or self.add.shape != out.shape:
                raise ValueError(f"a fused add of shape {self.add.shape} needs the pass's output of that shape")
            add = (self.add, out, q) if self.keep_sum else (self.add, out, q, False)
        return (float(self.a_scale), np.ascontiguousarray(self.w_scale, np.float32),
                np.ascontiguousarray(self.bias, np.float32), kind, lo, hi, quant, add, self.silu)

    def without_act(self) -> "Scaling":
        """This output stage up to the float32 scaled value: no activation, no quantization (an unfused SiLU's
        input; :meth:`finish` applies the rest)."""
        return replace(self, act=None, quant=None)

    def finish(self, y: np.ndarray) -> np.ndarray:
        """The rest of a SiLU output stage on :meth:`without_act`'s float32 output y, as the unfused nodes compute it:
        :func:`dse.model.nn.sigmoid`, or with ``quant`` :func:`dse.model.nn.sigmoid_quantized`."""
        from dse.model.nn import sigmoid, sigmoid_quantized

        return sigmoid(y, self.silu) if self.quant is None else sigmoid_quantized(y, self.silu, self.quant)


def scale_accumulators(acc: np.ndarray, scaling: Scaling, isa=None, out: np.ndarray | None = None,
                       bound: int | None = None, q: np.ndarray | None = None):
    """``scaling`` applied to int64 acc [B, N, ...] (same shape, ``scaling.dtype``; with an add and a quant the pair
    :meth:`Scaling.result`), one threaded SIMD pass; into ``out`` (that dtype, C-contiguous, acc's shape) and ``q``
    (the add's patterns, uint8) when given. ``bound``: a proven bound on every |acc| (a conv's K times its table's
    largest |entry|), which lets the pass convert the sums faster; None when unknown."""
    if scaling.silu and not _kernels.numpy_loops_found():
        return scaling.finish(scale_accumulators(acc, scaling.without_act(), isa, bound=bound))
    a = np.ascontiguousarray(acc, dtype=np.int64)
    if out is None:
        out, q = scaling.empty(a.shape)
    sa, sw, bias, kind, lo, hi, quant, add, silu = scaling.args(out, q)
    R, N = a.shape[0], a.shape[1]
    raw = out.reshape(R, N, -1).view(np.float32 if scaling.dtype == np.float32 else np.uint8)
    _kernels.dequantize(a.reshape(R, N, -1), sa, sw, bias, get_threads(), kind, lo, hi, quant, _isa_name(isa), raw,
                        -1 if bound is None else min(int(bound), 2 ** 62), None if add is None else (add[0],) + add[2:],
                        silu)
    return scaling.result(out, q)


def add_act(a: np.ndarray, b: np.ndarray, act: OutputAct | None = None, quant: OutputQuant | None = None,
            isa=None) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, q): y = act(a + b) (float32, numpy's add then the IR op Relu/Clip) and, with ``quant``, q = the next
    layers' input values (``quantize_patterns(y)`` viewed as ``quant.dtype``; else None), one threaded pass over
    operands of equal shape (the numpy twin: ``act.apply(np.add(a, b))``); an operand whose last two axes are those
    of a C-contiguous array swapped, beside a C-contiguous one, is read in its own memory."""
    if a.shape != b.shape:
        raise ValueError(f"add_act: operands {a.shape} and {b.shape} must have one shape")
    level = _isa_name(isa)
    kind, lo, hi = ("none", -np.inf, np.inf) if act is None else (act.kind, act.lo, act.hi)
    qa = None if quant is None else (float(np.float32(quant.scale)), bool(quant.signed))
    t, b_first = None, False
    if transposed_operand(a, b) == 1:
        t = a.shape[-2:]
    elif transposed_operand(a, b) == 0:
        t, b_first, a, b = b.shape[-2:], True, b, a
    if t is not None:  # b read through its transposed memory, a 2-D view of it: no contiguous copy
        y, q = _kernels.add_act(a.reshape(-1), np.swapaxes(b, -1, -2).reshape(-1), kind, lo, hi, qa, level,
                                get_threads(), transposed=t, b_first=b_first)
    else:
        y, q = _kernels.add_act(np.ascontiguousarray(a, np.float32).reshape(-1),
                                np.ascontiguousarray(b, np.float32).reshape(-1), kind, lo, hi, qa, level, get_threads())
    return y.reshape(a.shape), None if q is None else q.view(quant.dtype).reshape(a.shape)


def transposed_operand(a: np.ndarray, b: np.ndarray) -> int | None:
    """Which of two float32 operands of one shape :func:`add_act` reads transposed in its own memory (0: a, 1: b;
    None: neither): one whose last two axes are a C-contiguous array's swapped (a channels-first tensor read
    channels-last, as a token MatMul's 1x1 conv output reaches a residual Add), the other C-contiguous."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.shape != b.shape or a.ndim < 2 or \
            a.dtype != np.float32 or b.dtype != np.float32:
        return None
    for k, (x, y) in enumerate(((a, b), (b, a))):
        if y.flags.c_contiguous and not x.flags.c_contiguous and np.swapaxes(x, -1, -2).flags.c_contiguous:
            return k
    return None


def mul_quantized(x: np.ndarray, s: np.ndarray, quant: OutputQuant, isa=None) -> np.ndarray:
    """``quantize_patterns(x * s)`` viewed as ``quant.dtype``, for float32 x [B, C, H, W] and a per-channel float32
    s [B, C, 1, 1] (squeeze-and-excitation's scale), one threaded pass without the float32 product."""
    if x.ndim != 4 or s.shape != x.shape[:2] + (1, 1):
        raise ValueError(f"mul_quantized: {x.shape} times {s.shape} is not a per-channel product")
    level = _isa_name(isa)
    q = _kernels.mul_planes_quantize(np.ascontiguousarray(x, np.float32).reshape(-1),
                                     np.ascontiguousarray(s, np.float32).reshape(-1), np.float32(quant.scale),
                                     bool(quant.signed), level, get_threads())
    return q.view(quant.dtype).reshape(x.shape)


# --------------------------------------------------------------------------------------------------- public: float
def gemm_float(a, w, mult) -> np.ndarray:
    """out[m, n] = sequential FP32 sum over ascending k of mult.float_product(a[m, k], w[n, k]); float32[M, N]."""
    prod = mult.float_product
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
    AT, Ho, Wo = gemm_operand_T(x, kh, kw, stride, pads, dilation)
    og, kg = Cout // groups, Cg * kh * kw
    wf = w.reshape(Cout, kg)
    out = np.empty((B, Cout, Ho, Wo), dtype=np.float32)
    for g in range(groups):
        res = gemm_float(AT[g * kg:(g + 1) * kg].T, wf[g * og:(g + 1) * og], mult)  # [M, og]
        out[:, g * og:(g + 1) * og] = res.reshape(B, Ho, Wo, og).transpose(0, 3, 1, 2)
    return out


def matmul_float(a, b, mult) -> np.ndarray:
    """float32[..., M, N] of a float-domain multiplier: :func:`gemm_float` per broadcast leading index."""
    return _sliced(lambda x, w: gemm_float(x, w, mult), np.asarray(a, np.float32), np.asarray(b, np.float32),
                   np.float32, "matmul_float")


def reference_matmul_float(a, b, mult) -> np.ndarray:
    """numpy twin of :func:`matmul_float`."""
    return _sliced(lambda x, w: reference_gemm_float(x, w, mult), np.asarray(a, np.float32),
                   np.asarray(b, np.float32), np.float32, "reference_matmul_float")


gemm_float_approx = gemm_float
conv2d_float_approx = conv2d_float
