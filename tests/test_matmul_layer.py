"""The activation x activation MatMul layer (attention QK^T and AV): kernels against a direct table gather, the
emulated layer (exact, approximate, CV, float domain) against a plain numpy reference, its calibration, energy and
predictor terms, and the one-line refusal of operands that would mix images."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import correction, kernels
from dse.arith.multipliers import get_multiplier
from dse.emulate import Emulator
from dse.energy import EnergyModel
from dse.errors import DseError
from dse.layer_config import LayerConfig
from dse.model.onnx_import import load_onnx
from dse.predict import layer_term
from dse.quant import calibrate
from tests.reference import reference_run
from tests.onnx_graphs import G, attention, token_head

RNG = np.random.default_rng(23)


def _operands(rng, lead, M, K, N, a_signed):
    """Random patterns a [*lead[0], M, K] (int8 or uint8) and b [*lead[1], K, N] (int8), each starting with three
    of its extreme value (-128, or 0 for unsigned a)."""
    lo, hi = (-128, 128) if a_signed else (0, 256)
    a = rng.integers(lo, hi, lead[0] + (M, K)).astype(np.int8 if a_signed else np.uint8)
    b = rng.integers(-128, 128, lead[1] + (K, N)).astype(np.int8)
    a.reshape(-1)[:3] = lo
    b.reshape(-1)[:3] = -128
    return a, b


_RANDOM_LUT = []


def _random_lut() -> str:
    """An imported full table of random entries (|T| <= 2^16, the bound of an imported table)."""
    if not _RANDOM_LUT:
        import tempfile
        from pathlib import Path

        p = Path(tempfile.mkdtemp()) / "random_lut.npy"
        np.save(p, np.random.default_rng(5).integers(-2 ** 16, 2 ** 16 + 1, (256, 256)))
        _RANDOM_LUT.append(f"lut:{p}?signed=any")
    return _RANDOM_LUT[0]


_CLEARED_LUT = []


def _cleared_lut() -> str:
    """An imported full table close to exact (bench_e2e's: the signed product with its 3 low bits cleared), which the
    split path takes: the exact product on the integer kernel plus the rows kernel on the short error table."""
    if not _CLEARED_LUT:
        import tempfile
        from pathlib import Path

        v = np.arange(256)
        v = np.where(v >= 128, v - 256, v).astype(np.int64)
        t = np.multiply.outer(v, v)
        p = Path(tempfile.mkdtemp()) / "cleared_lut.npy"
        np.save(p, t - (t & 7))
        _CLEARED_LUT.append(f"lut:{p}?signed=any")
    return _CLEARED_LUT[0]


def _mult(name: str):
    return get_multiplier(_random_lut() if name == "random lut" else _cleared_lut() if name == "cleared lut" else name)


def _gather(a, b, mult, a_signed):
    """out[..., m, n] = sum_k LUT[a[..., m, k], b[..., k, n]] by one broadcast table gather."""
    lut = mult.table(a_signed, True).astype(np.int64)
    pa = (a.astype(np.int64) & 0xFF)[..., :, None, :]
    pb = np.swapaxes(b.astype(np.int64) & 0xFF, -1, -2)[..., None, :, :]
    return lut[pa, pb].sum(axis=-1)


@settings(max_examples=25, deadline=None)
@given(lead=st.sampled_from([((2, 3), (2, 3)), ((2, 3), (2, 1)), ((1, 3), (2, 3)), ((4,), (4,)), ((1,), (1,))]),
       M=st.integers(1, 6), K=st.integers(1, 9), N=st.integers(1, 6), a_signed=st.booleans(),
       mult=st.sampled_from(["exact", "mitch_w6", "drum4", "perf_j1_k2"]))
def test_matmul_int_matches_table_gather(lead, M, K, N, a_signed, mult):
    m = get_multiplier(mult)
    lo, hi = (-128, 128) if a_signed else (0, 256)
    a = RNG.integers(lo, hi, lead[0] + (M, K)).astype(np.int8 if a_signed else np.uint8)
    b = RNG.integers(-128, 128, lead[1] + (K, N)).astype(np.int8)
    want = _gather(a, b, m, a_signed)
    np.testing.assert_array_equal(kernels.matmul_int(a, b, m, a_signed), want)
    np.testing.assert_array_equal(kernels.reference_matmul_int(a, b, m, a_signed), want)


def test_matmul_int_refuses_mismatched_operands():
    m = get_multiplier("exact")
    with pytest.raises(DseError, match="equal K"):
        kernels.matmul_int(np.zeros((2, 3, 4), np.int8), np.zeros((2, 5, 3), np.int8), m, True)
    with pytest.raises(DseError, match="do not broadcast"):
        kernels.matmul_int(np.zeros((2, 3, 4), np.int8), np.zeros((3, 4, 3), np.int8), m, True)


@pytest.fixture(scope="module")
def att_model(tmp_path_factory):
    T, D, H = 5, 8, 2
    g = G(17)
    p = g.save(tmp_path_factory.mktemp("att"), token_head(g, attention(g, "x", T, D, H), D), [T, D])
    graph = load_onnx(p)
    qm = calibrate(graph, RNG.standard_normal((16, T, D)).astype(np.float32))
    return qm, (T, D, H)


def test_attention_matmuls_are_quantized_searchable_layers(att_model):
    qm, (T, D, H) = att_model
    qk, av = [l for l in qm.layers if l.op == "matmul"]
    assert qk.a_signed and not av.a_signed                       # Q signed, softmax output unsigned
    assert qm.act_quant[qk.b_input][1] and qm.act_quant[av.b_input][1]  # K^T and V on the signed weight port
    assert qk.macs == H * T * (D // H) * T and av.macs == H * T * T * (D // H)
    assert qk.w_q.dtype == np.int8 and qk.w_q.shape[1] == qk.K and qk.act_hist.sum() > 0 and qk.acc_std > 0
    x = RNG.standard_normal((4, T, D)).astype(np.float32)
    emu = Emulator(qm)
    exact = emu.run(x)
    approx = emu.run(x, {qk.name: LayerConfig("mitch_w6"), av.name: LayerConfig("drum4", cv=True)})
    assert not np.array_equal(exact, approx)                     # the choice reaches the layer
    accs = emu.accumulators(x, {qk.name: LayerConfig("mitch_w6")})
    assert accs[qk.name].shape == (4, H, T, T) and accs[qk.name].dtype == np.int64


@pytest.mark.parametrize("cfg", [("exact", False), ("mitch_w6", False), ("perf_j1_k2", True), ("drum4", True),
                                 ("bf16", False)])
def test_attention_emulation_bit_exact_vs_reference(att_model, cfg):
    qm, (T, D, _) = att_model
    mult, cv = cfg
    config = {l.name: LayerConfig(mult, cv) for l in qm.layers if l.op == "matmul"}
    x = RNG.standard_normal((3, T, D)).astype(np.float32)
    want = reference_run(qm, x, config, cv_terms=correction.matmul_cv_terms)
    np.testing.assert_array_equal(Emulator(qm).run(x, config), want)


def test_matmul_cv_is_exact_for_perforation_on_constant_columns(att_model):
    """Perforation's error is linear in the activation (e = a * g(b)), so the per-pattern fit is exact; where a column
    of the right operand holds one value, alpha_n X + B_n is exactly that column's error: CV restores the exact
    accumulators (on a broadcast batch of heads)."""
    qm, _ = att_model
    av = [l for l in qm.layers if l.op == "matmul"][1]
    mult = get_multiplier("perf_j1_k2")
    qa = RNG.integers(0, 256, (3, 2, 5, av.K)).astype(np.uint8)
    qb = np.broadcast_to(RNG.integers(-128, 128, (3, 1, 1, 4)), (3, 1, av.K, 4)).astype(np.int8)
    exact = kernels.matmul_int(qa, qb, get_multiplier("exact"), False).astype(np.float64)
    raw = kernels.matmul_int(qa, qb, mult, False).astype(np.float64)
    fixed = correction.apply_cv_matmul(raw, qa, *correction.matmul_cv_terms(av, mult, qb))
    assert np.abs(raw - exact).max() > 0
    np.testing.assert_allclose(fixed, exact, rtol=0, atol=1e-6)


def test_energy_and_predictor_count_the_matmul_layers(att_model):
    qm, _ = att_model
    em = EnergyModel()
    net = em.network(qm.layers)
    mm = {l.name: l for l in qm.layers if l.op == "matmul"}
    per = {le.name: le for le in net.layers}
    for name, l in mm.items():
        assert per[name].counts["macs"] == l.macs and per[name].tiles >= l.groups
        assert per[name].counts["glb_read_bits"] >= l.K * l.N * 8      # the right operand is read per tile
    rel = em.relative(qm.layers, {n: LayerConfig("perf_j1_k2") for n in mm})
    assert rel["multiplier"] < 1.0
    t = layer_term(next(iter(mm.values())), "mitch_w6")
    assert t.K > 0 and t.contrib > 0 and np.isfinite(t.contrib)


def test_matmul_of_rank2_activations_refused(tmp_path):
    """[N, K] @ [N, K]^T would mix images: one line naming the node."""
    g = G(17)
    y = g.op("MatMul", ["x", g.op("Transpose", ["x"], perm=[1, 0])])
    p = g.save(tmp_path, y, [4])
    with pytest.raises(DseError) as e:
        load_onnx(p)
    assert "\n" not in str(e.value) and re.search(r"node '(transpose|matmul)\d+'", str(e.value))


def test_zigzag_backend_maps_the_matmul_layers(att_model, tmp_path, monkeypatch):
    zz = pytest.importorskip("dse.energy.zigzag_backend")
    pytest.importorskip("zigzag")
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    qm, _ = att_model
    mm = [l for l in qm.layers if l.op == "matmul"]
    net = zz.ZigZagEnergyModel().network(mm)
    assert all(le.cycles > 0 and le.counts["macs"] == l.macs for le, l in zip(net.layers, mm))


def test_prefix_cache_bit_identical_with_matmul_layers(att_model):
    """Trials sharing the first layers continue from the stored cut (incl. a quantized right operand): same logits."""
    from dse.prefix_cache import PrefixCache

    qm, (T, D, _) = att_model
    names = [l.name for l in qm.layers]
    x = RNG.standard_normal((6, T, D)).astype(np.float32)
    emu, cache = Emulator(qm), PrefixCache(1 << 24)
    for tail in ("exact", "drum4", "mitch_w6", "perf_j1_k2"):
        cfg = {names[0]: LayerConfig("drum4"), names[1]: LayerConfig("mitch_w6"), names[-1]: LayerConfig(tail)}
        np.testing.assert_array_equal(emu.run(x, cfg, 6, cache=cache, tag="a"), emu.run(x, cfg, 6))
    assert cache.stats.hits > 0


@settings(max_examples=60, deadline=None)
@given(lead=st.sampled_from([((3, 2), (3, 2)), ((4, 1), (1, 3)), ((5,), (5,)), ((1,), (2,))]),
       M=st.integers(1, 70), K=st.integers(1, 70), N=st.integers(1, 40), a_signed=st.booleans(),
       mult=st.sampled_from([("exact", "auto"), ("drum4", "auto"), ("mitch_w6", "auto"), ("mitch_w6", "rows"),
                             ("mitch_w6", "split"), ("mitch_w6", "lut"), ("mitchell", "auto"),
                             ("random lut", "auto"), ("cleared lut", "auto")]), kernel=st.sampled_from(
           [(isa, False) for isa in kernels._kernels.isa_levels()] +
           [(isa, True) for isa in kernels._kernels.quad_levels()]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_matmul_int_batched_every_kernel(lead, M, K, N, a_signed, mult, kernel, threads, seed):
    """matmul_int's GEMMs in one compiled call (int_gemm_batch on the integer kernel's multipliers, rows_gemm_batch
    on the rows and split paths, both orientations of the row tables by the shapes) or one by one (the lut path)
    against the direct gather, at every ISA level, with and without the VNNI kernel, 1 and 2 threads; extreme
    operands included."""
    from tests.mac_helpers import vnni_env

    rng = np.random.default_rng(seed)
    mult, path = mult
    m = _mult(mult)
    isa, vnni = kernel
    a, b = _operands(rng, lead, M, K, N, a_signed)
    with kernels.using_threads(threads), vnni_env(vnni):
        got = kernels.matmul_int(a, b, m, a_signed, path=path, isa=isa)
    np.testing.assert_array_equal(got, _gather(a, b, m, a_signed))


def test_matmul_int_exact_runs_one_batched_call(monkeypatch):
    """The exact multiplier's GEMMs of all leading indices go to the integer kernel in one call."""
    calls = []
    real = kernels._kernels.int_gemm_batch
    monkeypatch.setattr(kernels._kernels, "int_gemm_batch", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    a = RNG.integers(0, 256, (2, 4, 9, 16)).astype(np.uint8)
    b = RNG.integers(-128, 128, (2, 4, 16, 9)).astype(np.int8)
    m = get_multiplier("exact")
    np.testing.assert_array_equal(kernels.matmul_int(a, b, m, False), _gather(a, b, m, False))
    assert calls == [(8, 16, 9)]


def test_int_gemm_batch_refuses_bad_shapes():
    z = np.zeros
    t = np.zeros((256, 1), np.int16)
    with pytest.raises(ValueError, match="must be"):
        kernels._kernels.int_gemm_batch(z((2, 3, 4), np.uint8), z((2, 5, 4), np.uint8), t, "u8", t, 1,
                                        z((2, 4, 5), np.int64))


@pytest.mark.parametrize("path", ["rows", "split"])
@pytest.mark.parametrize("shape", [(9, 16, 40), (40, 16, 9)])  # the two orientations of the row tables
def test_matmul_int_tables_run_batched(monkeypatch, path, shape):
    """The rows and split paths run every leading index's GEMM in one rows_gemm_batch call, in the orientation of
    the shape; the same sums as the gather."""
    calls = []
    real = kernels._kernels.rows_gemm_batch
    monkeypatch.setattr(kernels._kernels, "rows_gemm_batch",
                        lambda *a, **k: calls.append((a[0].shape, k["sel_is_m"], k["add"])) or real(*a, **k))
    M, K, N = shape
    a = RNG.integers(-128, 128, (3, 2, M, K)).astype(np.int8)
    b = RNG.integers(-128, 128, (3, 2, K, N)).astype(np.int8)
    m = get_multiplier("mitch_w6")
    np.testing.assert_array_equal(kernels.matmul_int(a, b, m, True, path=path), _gather(a, b, m, True))
    assert len(calls) == 1 and calls[0][0][0] == 6 and calls[0][2] == (path == "split")


@pytest.mark.parametrize("mult", ["mitch_w6", "cleared lut"])
@pytest.mark.parametrize("shape", [(65, 65, 16), (16, 40, 65)])  # the two orientations of the row tables
def test_matmul_scaled_tables_scale_in_the_batched_call(monkeypatch, mult, shape):
    """matmul_scaled on the rows path (mitch_w6) and the split path (the cleared table) scales the sums in its one
    rows_gemm_batch call (no int64 matmul_int result, no scaling pass), the operands in their own layouts; the same
    bits as the dequantized gather. At the avx2 level: at avx512 these GEMMs take the byte-plane lookups
    (lutb_gemm_batch, its own test below)."""
    from dse.kernels import Scaling

    if "avx2" not in kernels._kernels.isa_levels():
        pytest.skip("the rows kernel's batched call is checked at the avx2 level")
    calls = []
    real = kernels._kernels.rows_gemm_batch
    monkeypatch.setattr(kernels._kernels, "rows_gemm_batch",
                        lambda *a, **k: calls.append((a[0].shape, a[1].shape, k["add"], k["scaling"] is not None))
                        or real(*a, **k))
    monkeypatch.setattr(kernels, "scale_accumulators", None)
    M, K, N = shape
    a = RNG.integers(0, 256, (3, 2, M, K)).astype(np.uint8)
    b = RNG.integers(-128, 128, (3, 2, K, N)).astype(np.int8)
    m = _mult(mult)
    sa, sw, bias = 0.0123, np.array([-0.37], np.float32), np.array([0.5], np.float32)
    got = kernels.matmul_scaled(a, b, m, False, Scaling(sa, sw, bias), isa="avx2")
    want = ((_gather(a, b, m, False).astype(np.float64) * sa) * np.float64(sw[0])).astype(np.float32) + bias[0]
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert calls == [((6, M, K), (6, K, N), mult == "cleared lut", True)]


@settings(max_examples=40, deadline=None)
@given(L=st.integers(2, 6), M=st.integers(1, 70), K=st.integers(33, 80), N=st.integers(1, 70), a_signed=st.booleans(),
       mult=st.sampled_from(["mitch_w6", "cleared lut", "random lut"]), scaled=st.booleans(),
       isa=st.sampled_from(kernels._kernels.isa_levels()), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_matmul_rows_or_split_measured_on_its_calls(L, M, K, N, a_signed, mult, scaled, isa, threads, seed):
    """The batched matmul's choice between the rows and split paths, measured on its own calls (here on every
    shape): _table_plan's path for the first _MATMUL_TRIALS calls of a shape, the other path for the next ones, then
    the one whose shortest trial was shorter (each in its cheaper orientation), every call the gather's sums (matmul_int) or their scaled bits
    (matmul_scaled); every ISA level, 1 and 2 threads."""
    from dse.kernels import Scaling

    calls = []
    real = kernels._kernels.rows_gemm_batch
    rng = np.random.default_rng(seed)
    m = _mult(mult)
    a, b = _operands(rng, ((L,), (L,)), M, K, N, a_signed)
    prep = kernels._prepare(m, a_signed)
    prep.matmul_times.clear()
    want = _gather(a, b, m, a_signed)
    sw, bias = np.array([-0.37], np.float32), np.array([0.5], np.float32)
    sc = Scaling(0.0123, sw, bias)
    if scaled:
        want = ((want.astype(np.float64) * 0.0123) * np.float64(sw[0])).astype(np.float32) + bias[0]
    n = 2 * kernels._MATMUL_TRIALS + 2
    with kernels.using_threads(threads), pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "_MATMUL_TIMED_MACS", 0)
        mp.setattr(kernels._kernels, "rows_gemm_batch",
                   lambda *a, **k: calls.append(("split" if k["add"] else "rows", k["sel_is_m"])) or real(*a, **k))
        for _ in range(n):
            got = kernels.matmul_scaled(a, b, m, a_signed, sc, isa=isa) if scaled else \
                kernels.matmul_int(a, b, m, a_signed, isa=isa)
            np.testing.assert_array_equal(got.view(np.uint32) if scaled else got, want.view(np.uint32) if scaled
                                          else want)
    if not calls:  # the small GEMMs' kernel took the matmul (the avx512 level)
        return
    first = kernels._table_plan(prep, M, N, "auto", K, isa)[0]
    other = "split" if first == "rows" else "rows"
    times = prep.matmul_times[(L, M, K, N, kernels._isa_name(isa), threads)]
    best = first if min(times[first]) <= min(times[other]) else other
    trials = kernels._MATMUL_TRIALS
    kinds = [first] * trials + [other] * trials + [best] * (n - 2 * trials)
    assert calls == [(k, kernels._rows_by_act(prep.rows if k == "rows" else prep.err_rows, M, N)) for k in kinds]
    assert len(times["rows"]) == len(times["split"]) == trials


@settings(max_examples=80, deadline=None)
@given(lead=st.sampled_from([((3, 2), (3, 2)), ((4, 1), (1, 3)), ((5,), (5,)), ((1,), (2,)), ((1,), (1,))]),
       M=st.integers(1, 70), K=st.integers(1, 70), N=st.integers(1, 70), a_signed=st.booleans(),
       mult=st.sampled_from(["exact", "exact", "exact", "mitch_w6", "drum4", "perf_j1_k2",
                             "axbxp_k2_w2_a2_dynamic", "mitchell", "random lut", "cleared lut"]), kernel=st.sampled_from(
           [(isa, False) for isa in kernels._kernels.isa_levels()] +
           [(isa, True) for isa in kernels._kernels.quad_levels()]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_matmul_scaled_matches_dequantized_gather(lead, M, K, N, a_signed, mult, kernel, threads, seed):
    """matmul_scaled (the exact product's and the lowrank path's integer-factor GEMMs with swapped operands, scaled
    from the int32 tile; the table paths on the small-GEMM kernel at avx512, else through matmul_int and the scaling
    pass; the shallow ones below avx512 on its scalar lookups) against the direct gather dequantized in numpy (float64 products, a
    float32 bias add): every ISA level, with and without the VNNI kernel, 1 and 2 threads, extreme operands, scales
    and biases of both signs (-0 included)."""
    from dse.kernels import Scaling
    from tests.mac_helpers import vnni_env

    rng = np.random.default_rng(seed)
    m = _mult(mult)
    isa, vnni = kernel
    a, b = _operands(rng, lead, M, K, N, a_signed)
    sa = float(rng.choice([1.0, -1.0]) * rng.uniform(1e-4, 0.1))
    sw = np.array([rng.choice([1.0, -1.0]) * rng.uniform(1e-3, 1.0)], np.float32)
    bias = np.array([rng.choice([0.0, -0.0, rng.normal()])], np.float32)
    with kernels.using_threads(threads), vnni_env(vnni):
        got = kernels.matmul_scaled(a, b, m, a_signed, Scaling(sa, sw, bias), isa=isa)
    want = ((_gather(a, b, m, a_signed).astype(np.float64) * sa) * np.float64(sw[0])).astype(np.float32) + bias[0]
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("mult", ["exact", "drum6", "perf_j1_k2"])
def test_matmul_scaled_integer_kernel_writes_no_int64_sums(monkeypatch, mult):
    """The exact product's and the lowrank path's matmul_scaled is one scaled int_gemm_batch call on the operands in
    their own layouts (b on the activation port: s8 values, or G(b) as its table)."""
    from dse.kernels import Scaling

    calls = []
    real = kernels._kernels.int_gemm_batch
    monkeypatch.setattr(kernels._kernels, "int_gemm_batch",
                        lambda *a, **k: calls.append((a[0].shape, a[3], a[6].dtype, k.get("scaling") is not None))
                        or real(*a, **k))
    a = RNG.integers(0, 256, (2, 4, 9, 16)).astype(np.uint8)
    b = RNG.integers(-128, 128, (2, 4, 16, 7)).astype(np.int8)
    m = get_multiplier(mult)
    assert kernels.select_path(m, False, 16) == ("exact" if mult == "exact" else "lowrank")
    got = kernels.matmul_scaled(a, b, m, False, Scaling(0.5, np.array([0.25], np.float32), np.zeros(1, np.float32)))
    np.testing.assert_array_equal(got, (_gather(a, b, m, False) * 0.125).astype(np.float32))
    assert calls == [((8, 16, 7), "s8" if mult == "exact" else "table", np.float32, True)]


def test_matmul_scaled_refuses_per_channel_scaling():
    from dse.kernels import Scaling

    z = np.zeros((2, 3, 3), np.int8)
    with pytest.raises(DseError, match="per tensor"):
        kernels.matmul_scaled(z, z, get_multiplier("exact"), True,
                              Scaling(1.0, np.ones(3, np.float32), np.zeros(3, np.float32)))


@settings(max_examples=90, deadline=None)
@given(level=st.sampled_from(kernels._kernels.isa_levels()), L=st.integers(1, 3),
       M=st.sampled_from([1, 2, 17, 63, 64, 65, 68, 69, 127, 128, 129, 200, 257, 300]),
       K=st.sampled_from([1, 3, 8, 16, 32, 64, 65, 255, 256, 257, 600]), N=st.sampled_from([1, 5, 16, 64, 65, 68, 130, 256, 270]),
       span_bits=st.sampled_from([1, 8, 9, 16, 17, 24, 25, 30]), sel_is_m=st.booleans(), scaled=st.booleans(),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 32 - 1))
def test_lutb_gemm_batch_matches_gather(level, L, M, K, N, span_bits, sel_is_m, scaled, threads, seed):
    """The small table GEMMs' kernel (lutb_gemm_batch) against the direct gather of its table T[sel, idx] = planes +
    off[sel]: 1-4 byte planes (entries spanning 1 .. 2^30 above a random per-selector offset, the largest sums close
    to the int32 limit), positions over several passes and blocks (masked tails, and 1-4 positions past the last
    whole block summed from the int32 table; below avx512 every position from it, 8 at a time and the rest one by
    one), K over the 256-step 16-bit chunks, both orientations, int64 sums and the per-tensor scaled float32
    outputs, every ISA level, 1 and 2 threads."""
    from dse.kernels import Scaling, _byte_planes

    rng = np.random.default_rng(seed)
    span = 2 ** span_bits
    bound = (2 ** 31 - 1) // K  # K max |T| < 2^31
    D = rng.integers(0, min(span, bound // 2 + 1), (256, 256), dtype=np.int64)
    D[rng.integers(0, 256), rng.integers(0, 256)] = min(span, bound // 2 + 1) - 1
    off = rng.integers(-(bound // 2), bound // 2 + 1 - int(D.max()), 256).astype(np.int64)
    T = D + off[:, None]
    assert np.abs(T).max() * K < 2 ** 31
    a = rng.integers(0, 256, (L, M, K), dtype=np.uint8)
    b = rng.integers(0, 256, (L, K, N), dtype=np.uint8)
    a.reshape(-1)[:3] = 255
    b.reshape(-1)[:3] = 128
    if sel_is_m:
        want = T[a[:, :, None, :], np.swapaxes(b, 1, 2)[:, None, :, :]].sum(axis=-1)
    else:
        want = T[np.swapaxes(b, 1, 2)[:, None, :, :], a[:, :, None, :]].sum(axis=-1)
    planes, T32 = _byte_planes(D), np.ascontiguousarray(T.astype(np.int32))
    with kernels.using_threads(threads):
        if scaled:
            sa, sw, bias = float(rng.uniform(-1e-6, 1e-6)), np.array([rng.uniform(-1, 1)], np.float32), \
                np.array([rng.choice([0.0, -0.0, rng.normal()])], np.float32)
            out = np.empty((L, M, N), np.float32)
            kernels._kernels.lutb_gemm_batch(a, b, planes, off.astype(np.int32), T32, sel_is_m, out, level,
                                             threads, scaling=Scaling(sa, sw, bias).args())
            ref = ((want.astype(np.float64) * sa) * np.float64(sw[0])).astype(np.float32) + bias[0]
            np.testing.assert_array_equal(out.view(np.uint32), ref.view(np.uint32))
        else:
            out = np.empty((L, M, N), np.int64)
            kernels._kernels.lutb_gemm_batch(a, b, planes, off.astype(np.int32), T32, sel_is_m, out, level, threads)
            np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("shape", [(65, 16, 65), (65, 65, 16), (17, 32, 17)])  # a ViT 64's QK^T and AV; K 32
@pytest.mark.parametrize("mult", ["mitch_w6", "lut"])
def test_matmul_table_paths_take_the_small_gemm_kernel(monkeypatch, tmp_path, shape, mult):
    """The attention GEMMs of a full table (rows/split paths) run on lutb_gemm_batch in one call, matmul_int and
    matmul_scaled, with the gather's sums: at the avx512 level all of them (the orientation by _lutb_cost), below it
    those with K <= 32 (scalar lookups, a's rows selecting); AV's K 65 stays on the rows kernel there."""
    from dse.kernels import Scaling

    if mult == "lut":
        v = np.arange(256)
        v = np.where(v >= 128, v - 256, v).astype(np.int64)
        t = np.multiply.outer(v, v)
        np.save(tmp_path / "t.npy", t - (t & 7))
        mult = f"lut:{tmp_path / 't.npy'}?signed=any"
    M, K, N = shape
    a = RNG.integers(-128, 128, (3, 2, M, K)).astype(np.int8)
    b = RNG.integers(-128, 128, (3, 2, K, N)).astype(np.int8)
    m = get_multiplier(mult)
    want = _gather(a, b, m, True)
    sc = Scaling(0.5, np.array([0.25], np.float32), np.array([-1.5], np.float32))
    real = kernels._kernels.lutb_gemm_batch
    for isa in kernels._kernels.isa_levels():
        calls = []
        monkeypatch.setattr(kernels._kernels, "lutb_gemm_batch",
                            lambda *a, **k: calls.append((a[0].shape, a[5], a[7])) or real(*a, **k))
        np.testing.assert_array_equal(kernels.matmul_int(a, b, m, True, isa=isa), want)
        got = kernels.matmul_scaled(a, b, m, True, sc, isa=isa)
        np.testing.assert_array_equal(got, (want * 0.125).astype(np.float32) + np.float32(-1.5))
        if isa == "avx512":
            assert len(calls) == 2 and all(c[0] == (6, M, K) for c in calls)
        else:
            assert calls == ([((6, M, K), True, isa)] * 2 if K <= 32 else [])
