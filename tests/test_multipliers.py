"""Multiplier library: design.md reference values, vectorized tables vs scalar bit-level references, names, imports,
C models, CLI."""
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.arith import multipliers as M
from dse.arith.multipliers import exact_table, get_multiplier, list_multipliers, pattern_values
from dse.cli import main
from dse.errors import DseError

SET = settings(deadline=None, max_examples=200)
U8 = st.integers(0, 255)


def val(p, signed):
    return p - 256 if signed and p >= 128 else p


# ---------------------------------------------------------------- scalar references (bit by bit, obviously right)

def ref_lead(x):
    return x.bit_length() - 1


def ref_mitch_w(a, b, w):
    def log(x):
        k = max(ref_lead(x), 0)
        bits = format(x, "b")[1:] if x else ""  # bits below the leading one
        frac = int((bits + "0" * 16)[: w - 2] or "0", 2)
        return (k << (w - 1)) | (frac << 1) | 1
    s = log(a) + log(b)
    ch, m = s >> (w - 1), (1 << (w - 1)) | (s & ((1 << (w - 1)) - 1))
    return m << (ch - w + 1) if ch >= w - 1 else m >> (w - 1 - ch)


def ref_drum(x, k):
    t = ref_lead(x)
    if t <= k - 1:
        return x, 0
    s = t - k + 1
    return (x >> s) | 1, s


def ref_trunc_col(a, b, c):
    return sum(((a >> j) & 1) * ((b >> i) & 1) << (i + j) for i in range(8) for j in range(8) if i + j >= c)


def ref_axbxp(a, w, K, Lw, La, mode):
    nb = 8 // K
    A = [(a >> (K * i)) & ((1 << K) - 1) for i in range(nb)]
    W = [(w >> (K * i)) & ((1 << K) - 1) for i in range(nb)]

    def kept(blocks, L):
        if mode == "static":
            return set(range(nb - L, nb))
        lead = max([i for i in range(nb) if blocks[i]] or [0])
        return set(range(max(lead - L + 1, 0), lead + 1))  # blocks above the leading one are zero
    ka, kw = kept(A, La), kept(W, Lw)
    return sum(W[i] * A[j] << ((i + j) * K) for i in kw for j in ka)


def ref_core(name, a, b):
    m = get_multiplier(name)
    p, f = m.params, m.family
    if f == "mitch_w":
        return ref_mitch_w(a, b, p["w"])
    if f == "mitchell":
        if a == 0 or b == 0:
            return 0
        from fractions import Fraction
        k1, k2 = ref_lead(a), ref_lead(b)
        f1, f2 = Fraction(a, 1 << k1) - 1, Fraction(b, 1 << k2) - 1
        v = (1 << (k1 + k2)) * (1 + f1 + f2) if f1 + f2 < 1 else (1 << (k1 + k2 + 1)) * (f1 + f2)
        return int(v // 1)
    if f == "drum":
        (va, sa), (vb, sb) = ref_drum(a, p["k"]), ref_drum(b, p["k"])
        return va * vb << (sa + sb)
    if f == "perforation":
        return a * sum(((b >> i) & 1) << i for i in range(8) if not p["j"] <= i < p["j"] + p["k"])
    if f == "trunc_op":
        return ((a >> p["t"]) << p["t"]) * ((b >> p["t"]) << p["t"])
    if f == "trunc_col":
        return ref_trunc_col(a, b, p["c"])
    if f == "axbxp":
        return ref_axbxp(a, b, p["K"], p["Lw"], p["La"], p["mode"])
    if f == "exact":
        return a * b
    raise AssertionError(f)


def ref_product(name, a, b):
    """Scalar reference for operand values a, b with the family's signed scheme."""
    m = get_multiplier(name)
    if m.params["signed_scheme"] == "ones_complement":
        if a == 0 or b == 0:
            return 0
        p = ref_core(name, a if a >= 0 else (~a & 0xFF), b if b >= 0 else (~b & 0xFF))
        return ~p if (a < 0) != (b < 0) else p
    s = (1 if a >= 0 else -1) * (1 if b >= 0 else -1)
    return s * ref_core(name, abs(a), abs(b))


INT_NAMES = [n for n in list_multipliers() if get_multiplier(n).domain == "int"]
EXTRA = ["perf_j5_k3", "perf_j0_k8", "trunc_op7", "trunc_col1", "trunc_col15", "drum2", "axbxp_k4_w2_a1_dynamic",
         "axbxp_k2_w4_a1_dynamic", "axbxp_k2_w1_a4_static"]


@SET
@given(name=st.sampled_from(INT_NAMES + EXTRA), a=U8, b=U8, a_s=st.booleans(), w_s=st.booleans())
def test_tables_match_scalar_reference(name, a, b, a_s, w_s):
    t = get_multiplier(name).table(a_s, w_s)
    assert int(t[a, b]) == ref_product(name, val(a, a_s), val(b, w_s))


@pytest.mark.parametrize("name", INT_NAMES)
def test_table_contract(name):
    m = get_multiplier(name)
    for a_s in (False, True):
        for w_s in (False, True):
            t = m.table(a_s, w_s)
            assert t.dtype == np.int32 and t.shape == (256, 256) and not t.flags.writeable
            assert m.table(a_s, w_s) is t  # cached
            np.testing.assert_array_equal(m.error_table(a_s, w_s), t.astype(np.int64) - exact_table(a_s, w_s))
    # zero operands give zero products in every built-in family
    t = m.table(False, True)
    assert not t[0, :].any() and not t[:, 0].any()
    assert m.params["signed_scheme"] in ("sign_magnitude", "ones_complement", "exact")
    phrase = {"sign_magnitude": "sign-magnitude", "ones_complement": "one's-complement", "exact": "exact"}
    assert phrase[m.params["signed_scheme"]] in m.description


def test_tables_are_built_once():
    """get_multiplier returns one object per name and its table is built once per signedness pair (counted, not
    timed; build times are benchmarks/bench_overheads.py's figure)."""
    import dataclasses

    for name in INT_NAMES + EXTRA:
        m = get_multiplier(name)
        assert get_multiplier(name) is m
        builds = []

        def builder(a_signed, w_signed, build=m._builder):
            builds.append((a_signed, w_signed))
            return build(a_signed, w_signed)
        fresh = dataclasses.replace(m, _builder=builder, _cache={})
        t = fresh.table(False, True)
        assert fresh.table(False, True) is t and builds == [(False, True)], name
        np.testing.assert_array_equal(t, m.table(False, True))


# ---------------------------------------------------------------- design.md reference values

def test_mitchell_reference_values():
    t = get_multiplier("mitchell").table(False, False).astype(np.int64)
    X = exact_table(False, False).astype(np.int64)
    nz = X != 0
    rel = (t[nz] - X[nz]) / X[nz]
    assert round(100 * rel.mean(), 3) == -3.788
    assert round(100 * rel.min(), 2) == -11.11 and t[3, 3] == 8
    assert (t <= X).all()


@pytest.mark.parametrize("a,b,p", [(3, 3, 8), (7, 9, 62), (100, 200, 19456), (255, 255, 63488), (1, 1, 1),
                                   (128, 128, 17408)])
def test_mitch_w6_unsigned_vectors(a, b, p):
    assert get_multiplier("mitch_w6").table(False, False)[a, b] == p


@pytest.mark.parametrize("a,b,p", [(-3, 3, -7), (-7, 9, -55), (-1, 1, -2), (-128, 127, -15873), (-3, -3, 4),
                                   (127, 127, 15872)])
def test_mitch_w6_signed_ones_complement_vectors(a, b, p):
    t = get_multiplier("mitch_w6").table(True, True)
    assert t[a & 0xFF, b & 0xFF] == p and t[b & 0xFF, a & 0xFF] == p


def test_mitch_w_mixed_signedness():
    """uint8 activation x int8 weight: unsigned side as is, weight one's-complemented; NOT taken at full width."""
    t = get_multiplier("mitch_w6").table(False, True)
    core = M.mitch_w_core
    assert t[255, 0x80] == -int(core(np.int64(255), np.int64(127), 6)) - 1
    assert t[200, 5] == core(np.int64(200), np.int64(5), 6)
    assert t[0, 0xFF] == 0 and t[7, 0] == 0


def drum_mean_abs_rel_error_16bit(k):
    """Exhaustive mean |relative error| over all non-zero 16-bit pairs: |ra rb - 1| with r = approx(x)/x; the 2^32
    pair sum is done exactly per distinct ra via sorting + prefix sums (no sampling)."""
    x = np.arange(1, 1 << 16, dtype=np.int64)
    v, s = M.drum_round(x, k)
    r = (v << s) / x
    rs = np.sort(r)
    cs = np.concatenate([[0.0], np.cumsum(rs)])
    n = len(rs)
    u, cnt = np.unique(r, return_counts=True)
    idx = np.searchsorted(rs, 1.0 / u)
    total = (cnt * ((idx - u * cs[idx]) + (u * (cs[n] - cs[idx]) - (n - idx)))).sum()
    return 100 * total / n / n


@pytest.mark.parametrize("k,ref", [(3, 11.90), (4, 5.89), (5, 2.94), (6, 1.47), (7, 0.73), (8, 0.37)])
def test_drum_16bit_mean_relative_error(k, ref):
    # Exhaustive, so the only tolerance is the publication's rounding to 2 decimals.
    assert abs(drum_mean_abs_rel_error_16bit(k) - ref) <= 0.005
    # cross-check the sort trick on a random sample of pairs
    rng = np.random.default_rng(k)
    a, b = rng.integers(1, 1 << 16, 200_000), rng.integers(1, 1 << 16, 200_000)
    mc = 100 * np.mean(np.abs(M.drum_core(a, b, k) / (a * b) - 1))
    assert abs(mc - ref) < 0.05 * ref


def test_drum_generic_width_matches_8bit_table():
    t = get_multiplier("drum4").table(False, False)
    a, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    np.testing.assert_array_equal(t, M.drum_core(a, b, 4))


@pytest.mark.parametrize("j,k", [(j, k) for j in range(8) for k in range(1, 9 - j)])
def test_perforation_nmed_formula(j, k):
    m = get_multiplier(f"perf_j{j}_k{k}")
    E = m.error_table(False, False)
    med = np.abs(E).mean()
    assert med / 255 ** 2 == pytest.approx(2 ** j * (2 ** k - 1) / (4 * 255), rel=1e-12)
    a = np.arange(256)[:, None]
    b_l = np.arange(256)[None, :] & (((1 << k) - 1) << j)
    np.testing.assert_array_equal(E, -a * b_l)


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_axbxp_all_blocks_is_exact(K, mode):
    nb = 8 // K
    m = get_multiplier(f"axbxp_k{K}_w{nb}_a{nb}_{mode}")
    for a_s in (False, True):
        for w_s in (False, True):
            np.testing.assert_array_equal(m.table(a_s, w_s), exact_table(a_s, w_s))


def test_axbxp_dynamic_beats_static_and_small_values_exact():
    st_, dy = get_multiplier("axbxp_k2_w2_a2_static"), get_multiplier("axbxp_k2_w2_a2_dynamic")
    es, ed = np.abs(st_.error_table(False, False)), np.abs(dy.error_table(False, False))
    assert (ed <= es).all() and ed.sum() < es.sum()
    assert not dy.error_table(False, False)[:16, :16].any()  # two 2-bit blocks hold any 4-bit operand
    assert st_.table(False, False)[15, 15] == 0  # static keeps only the top blocks


def test_trunc_col_properties():
    assert not get_multiplier("trunc_col1").error_table(False, False)[1:, 1:].all()
    prev = np.zeros((256, 256), np.int64)
    for c in range(1, 16):
        e = -get_multiplier(f"trunc_col{c}").error_table(False, False)
        assert (e >= prev).all()  # more columns dropped -> larger (non-negative) error
        prev = e


def test_sign_magnitude_symmetry():
    for name in ("drum5", "perf_j1_k2", "trunc_op2", "axbxp_k2_w2_a3_dynamic", "mitchell"):
        m = get_multiplier(name)
        tu, ts = m.table(False, False).astype(np.int64), m.table(True, True).astype(np.int64)
        v = pattern_values(True)
        np.testing.assert_array_equal(ts, np.sign(np.outer(v, v)) * tu[np.abs(v)[:, None], np.abs(v)[None, :]])


# ---------------------------------------------------------------- names

def test_list_resolves_and_is_canonical():
    names = list_multipliers()
    assert len(names) == len(set(names)) >= 40
    for n in names:
        m = get_multiplier(n)
        assert m.name == n and get_multiplier(n) is m
        assert np.isfinite(m.rel_power) and 0 < m.rel_power <= 1.5


@pytest.mark.parametrize("bad", ["", "exactt", "mitch_w2", "mitch_w9", "mitch_w06", "drum1", "drum9", "perf_j4_k5",
                                 "perf_j1_k0", "trunc_op0", "trunc_op8", "trunc_col16", "axbxp_k3_w1_a1_static",
                                 "axbxp_k2_w5_a1_static", "axbxp_k2_w2_a2_fast", "fp32_mitch_w2", "lut:",
                                 "lut:/nonexistent.npy", "cmodel:/nonexistent.c", "lut:x.npy?bogus=1", "DRUM4"])
def test_bad_names(bad):
    with pytest.raises(DseError) as ei:
        get_multiplier(bad)
    msg = str(ei.value)
    assert "\n" not in msg and (repr(bad) in msg or f"'{bad}'" in msg)
    assert "dse multipliers" in msg or "file" in msg


def test_pickle_by_name():
    m = get_multiplier("drum5")
    assert pickle.loads(pickle.dumps(m)) is m


def test_power_model_ordering():
    p = {n: get_multiplier(n).rel_power for n in list_multipliers()}
    assert p["exact"] == 1.0
    assert p["perf_j0_k3"] < p["perf_j0_k2"] < p["perf_j0_k1"] < 1
    assert p["trunc_op3"] < p["trunc_op2"] < p["trunc_op1"] < 1
    assert p["trunc_col8"] < p["trunc_col6"] < p["trunc_col4"] < 1
    assert p["drum3"] < p["drum4"] < p["drum5"]
    assert p["mitch_w4"] < p["mitch_w6"] < p["mitch_w8"]
    assert p["axbxp_k2_w2_a2_static"] < p["axbxp_k2_w2_a2_dynamic"]
    for v, src in M.POWER_COMPONENTS.values():
        assert v > 0 and isinstance(src, str) and len(src) > 20


def test_float_multiplier_has_no_table():
    with pytest.raises(DseError, match="floating-point"):
        get_multiplier("bf16").table(False, True)
    with pytest.raises(DseError, match="integer"):
        get_multiplier("drum4").float_product(np.ones(2), np.ones(2))


# ---------------------------------------------------------------- lut: imports

@pytest.fixture()
def drum_u(tmp_path):
    t = get_multiplier("drum4").table(False, False)
    p = tmp_path / "core.npy"
    np.save(p, t.astype(np.int64))
    return p, t


def test_lut_npy_unsigned_refuses_signed(drum_u):
    p, t = drum_u
    m = get_multiplier(f"lut:{p}")
    np.testing.assert_array_equal(m.table(False, False), t)
    with pytest.raises(DseError, match="unsigned x unsigned table.*signed"):
        m.table(False, True)


def test_lut_signmag_and_any(drum_u):
    p, _ = drum_u
    m = get_multiplier(f"lut:{p}?signmag=1&power=0.5")
    assert m.rel_power == 0.5
    for a_s in (False, True):
        for w_s in (False, True):
            np.testing.assert_array_equal(m.table(a_s, w_s), get_multiplier("drum4").table(a_s, w_s))
    np.testing.assert_array_equal(get_multiplier(f"lut:{p}?signed=any").table(True, True), drum_u[1])


def test_lut_signed_declared_refuses_unsigned(tmp_path):
    t = get_multiplier("drum3").table(False, True)
    p = tmp_path / "mixed.npy"
    np.save(p, t)
    m = get_multiplier(f"lut:{p}?a_signed=0&w_signed=1")
    np.testing.assert_array_equal(m.table(False, True), t)
    with pytest.raises(DseError, match="unsigned x signed table"):
        m.table(True, True)
    with pytest.raises(DseError, match="signmag=1 needs an unsigned"):
        get_multiplier(f"lut:{p}?signed=1&signmag=1")


def test_lut_bin_tfapprox_and_sidecar(tmp_path):
    ts = get_multiplier("mitch_w5").table(True, True)
    p = tmp_path / "mine.bin"
    p.write_bytes(ts.astype("<i2").tobytes())  # a-major, LUT[a*256+b], int16 two's complement as uint16
    (tmp_path / "mine.bin.json").write_text(json.dumps({"signed": True}))
    np.testing.assert_array_equal(get_multiplier(f"lut:{p}").table(True, True), ts)
    tu = get_multiplier("drum3").table(False, False)
    q = tmp_path / "mul8u_TEST.bin"
    q.write_bytes(tu.astype("<u2").tobytes())
    np.testing.assert_array_equal(get_multiplier(f"lut:{q}").table(False, False), tu)  # 65025 > int16: read as uint16
    r = tmp_path / "mul8s_TEST.bin"
    r.write_bytes(ts.astype("<i2").tobytes())
    np.testing.assert_array_equal(get_multiplier(f"lut:{r}").table(True, True), ts)  # EvoApprox name rule
    bad = tmp_path / "short.bin"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(DseError, match="131072 bytes"):
        get_multiplier(f"lut:{bad}").table(False, False)


def test_lut_bad_npy(tmp_path):
    p = tmp_path / "f.npy"
    np.save(p, np.zeros((256, 255), np.int32))
    with pytest.raises(DseError, match=r"shape \(256, 256\)"):
        get_multiplier(f"lut:{p}")
    np.save(p, np.zeros((256, 256), np.float64))
    with pytest.raises(DseError, match="integer"):
        get_multiplier(f"lut:{p}")


def _table(dtype, at=(3, 5), value=None, scale=1):
    t = (exact_table(False, False).astype(np.int64) * scale).astype(dtype)
    if value is not None:
        t[at] = value
    return t


@pytest.mark.parametrize("table, shown", [
    (_table(np.int32, value=-2 ** 31), "LUT[3, 5] = -2147483648"),   # crashed the kernel once (|-2^31| is no int32)
    (_table(np.int64, scale=30000), "LUT[1, 3] = 90000"),             # a scaled table: K products overflow int32
    (_table(np.uint64, value=2 ** 64 - 1), "LUT[3, 5] = 18446744073709551615"),
    (_table(np.int64, at=(255, 255), value=65537), "LUT[255, 255] = 65537"),
])
def test_lut_values_that_overflow_the_accumulator_are_refused_at_load(tmp_path, capsys, table, shown):
    p = tmp_path / "big.npy"
    np.save(p, table)
    with pytest.raises(DseError, match=r"not an 8x8 product"):
        get_multiplier(f"lut:{p}?signed=any")
    assert main(["multipliers", "export", f"lut:{p}?signed=any", "-o", str(tmp_path / "t.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(p) in err and shown in err and "fix the table" in err
    assert "Traceback" not in err and not (tmp_path / "t.npy").exists()
    z = tmp_path / "set.npz"  # the same table inside an exported table set
    assert main(["multipliers", "export", "drum4", "-o", str(z)]) == 0
    with np.load(z) as f:
        arrays = dict(f)
    arrays["a0_w0"] = table
    np.savez(z, **arrays)
    with pytest.raises(DseError, match=r"set.npz: table 'a0_w0': LUT\["):
        get_multiplier(f"lut:{z}")


def test_lut_largest_products_are_accepted(tmp_path):
    p = tmp_path / "edge.npy"
    np.save(p, _table(np.int64, at=(255, 255), value=-65536))
    assert get_multiplier(f"lut:{p}?signed=any").table(False, False)[255, 255] == -65536


# ---------------------------------------------------------------- cmodel:

@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("DSE_CACHE_DIR", str(d))
    monkeypatch.setenv("DSE_ALLOW_CMODEL", "1")  # C models are used only with the opt-in
    return d


def test_cmodel_compiles_and_caches(tmp_path, cache):
    c = tmp_path / "drum4.c"
    c.write_text("""
#include <stdint.h>
static int32_t rnd(int32_t x) { int t = 31 - __builtin_clz(x | 1); if (t <= 3) return x; int s = t - 3;
                                 return ((x >> s) | 1) << s; }
int32_t mul8(int32_t a, int32_t b) { int sa = a < 0, sb = b < 0; int32_t p = rnd(sa ? -a : a) * rnd(sb ? -b : b);
                                     return (sa ^ sb) ? -p : p; }
int main(void) { return 1; }
""")
    m = get_multiplier(f"cmodel:{c}?a_signed=0&w_signed=1")
    np.testing.assert_array_equal(m.table(False, True), get_multiplier("drum4").table(False, True))
    assert len(list(cache.glob("*.npy"))) == 1
    M._imported_cached.cache_clear()
    import dse.arith.cmodel as C
    orig = C.subprocess.run
    C.subprocess.run = lambda *a, **k: (_ for _ in ()).throw(AssertionError("recompiled"))
    try:
        np.testing.assert_array_equal(get_multiplier(f"cmodel:{c}?a_signed=0&w_signed=1").table(False, True),
                                      m.table(False, True))
    finally:
        C.subprocess.run = orig


def test_cmodel_evoapprox_prototype(tmp_path, cache):
    c = tmp_path / "mul8u_X.c"
    c.write_text("#include <stdint.h>\nuint16_t mul8u_X(uint8_t A, uint8_t B) { return (uint16_t)(A * (B & 0xFC)); }\n")
    t = get_multiplier(f"cmodel:{c}?fn=mul8u_X").table(False, False)
    np.testing.assert_array_equal(t, get_multiplier("perf_j0_k2").table(False, False))


def test_cmodel_compile_error_names_file_and_line(tmp_path, cache):
    c = tmp_path / "broken.c"
    c.write_text("#include <stdint.h>\nint32_t mul8(int32_t a, int32_t b) { return a * b }\n")
    with pytest.raises(DseError) as ei:
        get_multiplier(f"cmodel:{c}")
    msg = str(ei.value)
    assert str(c) in msg and "error" in msg and "\n" not in msg
    with pytest.raises(DseError, match="not a C identifier"):
        get_multiplier(f"cmodel:{c}?fn=a;b")
    d = tmp_path / "nofn.c"
    d.write_text("int other(int a, int b) { return a * b; }\n")
    with pytest.raises(DseError, match="mul8"):
        get_multiplier(f"cmodel:{d}")


# ---------------------------------------------------------------- CLI

def test_cli_list_json(capsys):
    assert main(["multipliers", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["multipliers"]}
    assert out["operands"] == "uint8 x int8" and set(rows) == set(list_multipliers())
    assert rows["exact"]["MED"] == 0 and rows["drum4"]["MED"] > 0 and "MED" not in rows["bf16"]
    assert main(["multipliers", "--signed", "--json"]) == 0
    out2 = json.loads(capsys.readouterr().out)
    assert out2["operands"] == "int8 x int8"
    assert {r["name"]: r for r in out2["multipliers"]}["mitch_w6"]["ME"] != rows["mitch_w6"]["ME"]


def test_cli_table(capsys):
    # how long the table takes is benchmarks/bench_overheads.py's figure, not a test (a timed test fails under load)
    assert main(["multipliers"]) == 0
    out = capsys.readouterr().out
    assert "axbxp_k2_w2_a3_dynamic" in out and "fp32_mitch_w6" in out


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "t.npy"
    assert main(["multipliers", "export", "mitch_w6", "-o", str(out), "--signed"]) == 0
    t = np.load(out)
    assert t.dtype == np.int32 and t[0xFD, 3] == -7
    assert main(["multipliers", "export", "drum4", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), get_multiplier("drum4").table(False, False))
    capsys.readouterr()
    assert main(["multipliers", "export", "nope", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "dse multipliers" in err and "Traceback" not in err
    assert main(["multipliers", "export", "bf16", "-o", str(out)]) == 2
    assert main(["multipliers", "export", "drum4", "-o", str(tmp_path / "t.txt")]) == 2


# ---------------------------------------------------------------- export -> lut: round trip (issue 10 item 5)

ROUND_TRIP = ["exact", "mitchell", "mitch_w6", "mitch_w3", "drum4", "perf_j1_k2", "trunc_op2", "trunc_col6",
              "axbxp_k2_w2_a3_static", "axbxp_k2_w2_a2_dynamic", "axbxp_k4_w1_a1_dynamic"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_export_npz_round_trip_every_pair(tmp_path, capsys, name):
    out = tmp_path / f"{name}.npz"
    assert main(["multipliers", "export", name, "-o", str(out)]) == 0
    m, imp = get_multiplier(name), get_multiplier(f"lut:{out}")
    for a_s in (False, True):
        for w_s in (False, True):
            np.testing.assert_array_equal(imp.table(a_s, w_s), m.table(a_s, w_s))
    assert imp.rel_power == m.rel_power and imp.family == "lut" and name in imp.description


def test_export_npz_mitch_w_ones_complement_vectors(tmp_path):
    out = tmp_path / "mw6.npz"
    export_tables = M.export_tables
    export_tables(get_multiplier("mitch_w6"), out)
    t = get_multiplier(f"lut:{out}").table(True, True).astype(np.int64)
    v = lambda x: x & 0xFF  # noqa: E731
    assert [t[v(-3), 3], t[v(-7), 9], t[v(-1), 1], t[v(-128), 127], t[v(-3), v(-3)], t[127, 127]] == \
        [-7, -55, -2, -15873, 4, 15872]


def test_export_npy_writes_sidecar_with_pair(tmp_path):
    out = tmp_path / "d.npy"
    assert main(["multipliers", "export", "mitch_w5", "-o", str(out), "--signed"]) == 0
    side = json.loads((tmp_path / "d.npy.json").read_text())
    assert side["a_signed"] is True and side["w_signed"] is True and side["source"] == "mitch_w5"
    m = get_multiplier(f"lut:{out}")
    np.testing.assert_array_equal(m.table(True, True), get_multiplier("mitch_w5").table(True, True))
    assert m.rel_power == get_multiplier("mitch_w5").rel_power
    with pytest.raises(DseError, match="signed x signed table"):
        m.table(False, True)


def test_npz_bad_input(tmp_path, capsys):
    out = tmp_path / "s.npz"
    M.export_tables(get_multiplier("drum4"), out)
    with pytest.raises(DseError, match="declares its own operand pairs"):
        get_multiplier(f"lut:{out}?signed=1")
    assert get_multiplier(f"lut:{out}?power=0.25").rel_power == 0.25
    part = tmp_path / "part.npz"
    z = dict(np.load(out))
    del z["a1_w1"]
    np.savez(part, **z)
    with pytest.raises(DseError, match="holds no signed x signed table"):
        get_multiplier(f"lut:{part}").table(True, True)
    junk = tmp_path / "junk.npz"
    np.savez(junk, x=np.zeros(3))
    with pytest.raises(DseError, match="not a dse table set"):
        get_multiplier(f"lut:{junk}")
    assert main(["multipliers", "export", "bf16", "-o", str(tmp_path / "f.npz")]) == 2
    assert "floating-point" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lenet_setup():
    from dse.data import load_dataset
    from dse.model.onnx_import import load_onnx, resolve_model
    from dse.quant import calibrate

    qm = calibrate(load_onnx(resolve_model("lenet5")), load_dataset("fashion-mnist:calib").head(200).images())
    return qm, load_dataset("fashion-mnist:holdout").head(48)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_export_round_trip_on_bundled_model(tmp_path, lenet_setup, name):
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig

    qm, d = lenet_setup
    out = tmp_path / "t.npz"
    M.export_tables(get_multiplier(name), out)
    emu = Emulator(qm)
    for cv in (False, True):
        cfg = {l.name: LayerConfig(name, cv) for l in qm.layers}
        cfg_lut = {l.name: LayerConfig(f"lut:{out}", cv) for l in qm.layers}
        np.testing.assert_array_equal(emu.run(d.images(), cfg_lut), emu.run(d.images(), cfg))


@pytest.mark.slow
def test_export_round_trip_cli_evaluate(tmp_path, capsys):
    from dse.config import save_config
    from dse.layer_config import LayerConfig

    out = tmp_path / "mw.npz"
    assert main(["multipliers", "export", "mitch_w6", "-o", str(out)]) == 0
    res = {}
    for label, mult in (("builtin", "mitch_w6"), ("lut", f"lut:{out}")):
        cfg = tmp_path / f"{label}.toml"
        save_config({"/conv1/Conv": LayerConfig(mult), "/conv2/Conv": LayerConfig(mult, True),
                     "/fc1/Gemm": LayerConfig(mult)}, cfg)
        capsys.readouterr()
        assert main(["evaluate", "lenet5", "--images", "300", "--config", str(cfg), "--json"]) == 0
        res[label] = json.loads(capsys.readouterr().out)
    assert res["lut"]["configured"] == res["builtin"]["configured"] != res["builtin"]["fxp8"]


@pytest.mark.parametrize("name", ["lut:{d}/t.npy", "lut:{d}/t.npz", "lut:{d}/t.bin", "cmodel:{d}/t.c"])
def test_table_path_that_is_a_directory_is_one_line(tmp_path, capsys, name):
    name = name.format(d=tmp_path)
    (tmp_path / name.split("/")[-1]).mkdir()
    assert main(["multipliers", "export", name, "-o", str(tmp_path / "o.npy")]) == 2  # before any opt-in check
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a directory" in err and "not found" not in err
