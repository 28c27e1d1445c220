"""Energy model: hand counts on a 4x4 array, multiplier scaling, Ax-BxP, cv column, bit widths, tile-loop reference."""
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dse.arith.multipliers as mm
from dse import energy as E
from dse.layer_config import LayerConfig
from dse.energy import ArrayConfig, EnergyModel
from dse.errors import DseError
from dse.quant import MacLayer

C = {k: c.value for k, c in E.DEFAULT_CONSTANTS.items()}
A4 = ArrayConfig(rows=4, cols=4, glb_kib=32.0)
SRAM4 = C["sram"] * math.sqrt(32.0 / 8.0)  # 0.312 pJ/bit


def conv1x1(name="c", M=5, K=6, N=7, groups=1):
    """A 1x1 conv with M output positions (1 x M image), K input channels per group, N filters."""
    return MacLayer(name=name, op="conv", in_shape=(K * groups, 1, M), out_shape=(N, 1, M), groups=groups,
                    M=M, K=K, N=N)


@pytest.fixture
def fake_mults(monkeypatch):
    """Multipliers with chosen rel_power, independent of the library's power model."""
    real = mm.get_multiplier
    fakes = {
        "half": mm.Multiplier(name="half", family="test", rel_power=0.5),
        "quarter": mm.Multiplier(name="quarter", family="test", rel_power=0.25),
        "fhalf": mm.Multiplier(name="fhalf", family="test", domain="float", rel_power=0.5,
                               params={"power_reference": "fp32"}),
        "f16": mm.Multiplier(name="f16", family="test", domain="float", rel_power=1.0,
                             params={"power_reference": "fp16"}),
        "nanpow": mm.Multiplier(name="nanpow", family="test", rel_power=float("nan")),
    }
    monkeypatch.setattr(mm, "get_multiplier", lambda n: fakes[n] if n in fakes else real(n))
    E.multiplier_cost.cache_clear()
    yield fakes
    E.multiplier_cost.cache_clear()


def test_hand_counts_exact_1x1_conv_on_4x4():
    le = EnergyModel(array=A4).layer(conv1x1(), LayerConfig())
    # K=6 -> ceil(6/4)=2 row tiles, N=7 -> ceil(7/4)=2 column tiles: 4 tiles of M + rows + cols = 5+4+4 = 13 cycles.
    assert le.tiles == 4 and le.cycles == 52
    assert le.utilisation == pytest.approx(210 / (52 * 16))
    assert le.spatial_utilisation == pytest.approx(42 / 64)
    n = le.counts
    assert n["macs"] == n["mults"] == n["adds"] == 5 * 6 * 7 == 210
    # registers per MAC: weight 8 + input 8 + psum 32 = 48 bits; plus 42 weight loads of 8 bits.
    assert n["reg_bits"] == 210 * 48 + 42 * 8 == 10416
    # GLB reads: weights once per tile 42*8=336; inputs re-read per column tile 2 * (5*6) * 8 = 480;
    # psums read in the second row tile 35*32 = 1120; outputs drained to DRAM 35*8 = 280.
    assert n["glb_read_bits"] == 336 + 480 + 1120 + 280
    # GLB writes: the 42 weights stay resident (no fill per image), input fill 30*8 = 240, psums after the first row
    # tile 1120, outputs 280.
    assert n["glb_write_bits"] == 240 + 1120 + 280
    # DRAM: input 30*8 + output 35*8 (a one-layer network: its input and output are the network's).
    assert n["dram_bits"] == 240 + 280
    comp = le.components
    assert comp["multiplier"] == pytest.approx(210 * 0.2)
    assert comp["accumulate"] == pytest.approx(210 * 0.1)
    assert comp["registers"] == pytest.approx(10416 * 0.009)
    assert comp["glb"] == pytest.approx((2216 + 1640) * SRAM4)
    assert comp["dram"] == pytest.approx(520 * 20.0)
    leak_mw = 16 * C["pe_leak"] + 32.0 * C["glb_leak"]
    assert comp["leakage"] == pytest.approx(leak_mw * 52 / 500.0 * 1e3)  # mW * us -> nJ -> pJ
    assert comp["cv"] == 0.0
    assert le.total == pytest.approx(sum(comp.values()))


def test_approximate_multiplier_scales_only_the_multiplier(fake_mults):
    m = EnergyModel(array=A4)
    ex, half = m.layer(conv1x1(), LayerConfig()), m.layer(conv1x1(), LayerConfig("half"))
    assert half.components["multiplier"] == pytest.approx(0.5 * ex.components["multiplier"])
    for k in E.COMPONENTS:
        if k != "multiplier":
            assert half.components[k] == ex.components[k]
    assert half.cycles == ex.cycles
    rel = m.relative([conv1x1()], {"c": LayerConfig("half")})
    assert rel["multiplier"] == pytest.approx(0.5) and rel["latency"] == 1.0
    assert rel["system"] == pytest.approx((ex.total - 0.5 * ex.components["multiplier"]) / ex.total)


def test_axbxp_static_counts():
    le = EnergyModel(array=A4).layer(conv1x1(), LayerConfig("axbxp_k2_w2_a3_static"))
    n = le.counts
    # weights stored as Lw*K bits; activations stored at 8 bits (as their producer wrote them), La*K in the array
    assert (n["weight_bits"], n["act_bits"], n["act_store_bits"], n["out_bits"]) == (4, 6, 8, 8)
    # the multiplier unit costs its one relative-power number (block products, shift-add tree included)
    rel = mm.get_multiplier("axbxp_k2_w2_a3_static").rel_power
    assert le.components["multiplier"] == pytest.approx(210 * 0.2 * rel)
    assert n["dram_bits"] == 30 * 8 + 35 * 8
    assert n["reg_bits"] == 210 * (4 + 6 + 32) + 42 * 4
    assert n["glb_read_bits"] == 42 * 4 + 2 * 30 * 8 + 35 * 32 + 35 * 8


def test_axbxp_dynamic_index_bits():
    le = EnergyModel(array=A4).layer(conv1x1(), LayerConfig("axbxp_k2_w2_a3_dynamic"))
    n = le.counts
    # 4 blocks of 2 bits: a window of 2 weight blocks starts at 0..2 -> 2 index bits; 3 act blocks: 0..1 -> 1 bit.
    assert (n["weight_bits"], n["act_bits"]) == (4 + 2, 6 + 1)
    rel = mm.get_multiplier("axbxp_k2_w2_a3_dynamic").rel_power
    assert rel > mm.get_multiplier("axbxp_k2_w2_a3_static").rel_power  # block detection and shifters
    assert le.components["multiplier"] == pytest.approx(210 * 0.2 * rel)
    # full-width K=4 window: no index bits
    assert E.index_bits(4, 2) == 0 and E.index_bits(4, 1) == 1 and E.index_bits(2, 1) == 2


@pytest.mark.parametrize("name", ["axbxp_k2_w2_a2_static", "axbxp_k2_w3_a3_static", "axbxp_k4_w1_a2_dynamic",
                                  "drum4", "mitch_w6", "perf_j0_k2"])
def test_one_relative_power_per_multiplier(name):
    # the multiplier-energy ratio of an all-`name` network is the number `dse multipliers` lists
    layers = lenet_like()
    rel = EnergyModel().relative(layers, {l.name: LayerConfig(name) for l in layers})
    assert rel["multiplier"] == pytest.approx(mm.get_multiplier(name).rel_power)


def test_cv_extra_column():
    m = EnergyModel(array=A4)
    ex, cv = m.layer(conv1x1(), LayerConfig()), m.layer(conv1x1(), LayerConfig(cv=True))
    n = cv.counts
    assert cv.cycles == 4 * (5 + 4 + 4 + 1) == 56  # one more column to drain
    assert n["cv_adds"] == 5 * 6  # X = sum of the 6 inputs at each of the 5 positions
    assert n["cv_reg_bits"] == 30 * (8 + 32)
    # X psums: written after row tile 0 and read in row tile 1 (5*32 each); X written once, read per column tile.
    assert n["cv_glb_write_bits"] == 5 * 32 + 5 * 32 and n["cv_glb_read_bits"] == 5 * 32 + 2 * 5 * 32
    assert n["cv_corrections"] == 35
    corr = 35 * (0.2 * (8 / 8) * (32 / 8) + 0.1)  # alpha_f (8 bit) x X (32 bit) + one 32-bit add per output
    leak = 4 * C["pe_leak"] * 56 / 500.0 * 1e3
    want = 30 * 0.1 + 30 * 40 * 0.009 + (320 + 480) * SRAM4 + corr + leak
    assert cv.components["cv"] == pytest.approx(want)
    for k in ("multiplier", "accumulate", "registers", "glb", "dram"):
        assert cv.components[k] == ex.components[k]
    assert cv.components["leakage"] == pytest.approx(ex.components["leakage"] * 56 / 52)
    # the cv column and its coefficient multiply belong to the multiplier unit
    assert cv.multiplier_energy == pytest.approx(ex.multiplier_energy + cv.components["cv"])


def test_per_tensor_bits_and_batch():
    # a 0.01 KiB buffer (82 bits) holds neither the weights nor the activations
    m = EnergyModel(array=ArrayConfig(rows=4, cols=4, weight_bits=4, act_bits=8, out_bits=16, batch=4, glb_kib=0.01))
    le = m.layer(conv1x1(), LayerConfig())
    # weights once per batch of 4 images; the input stored at 16 bits like every activation
    assert le.counts["dram_bits"] == 42 * 4 / 4 + 30 * 16 + 35 * 16
    assert le.components["multiplier"] == pytest.approx(210 * 0.2 * (4 / 8) * (8 / 8))


def test_float_multipliers(fake_mults):
    m = EnergyModel(array=A4)
    le = m.layer(conv1x1(), LayerConfig("fhalf"))
    assert le.components["multiplier"] == pytest.approx(210 * 3.7 * 0.5)
    assert le.components["accumulate"] == pytest.approx(210 * 0.9)
    assert le.counts["dram_bits"] == (30 + 35) * 32  # weights resident
    assert m.layer(conv1x1(), LayerConfig("f16")).components["multiplier"] == pytest.approx(210 * 1.1)
    real = m.layer(conv1x1(), LayerConfig("bf16"))
    assert real.components["multiplier"] == pytest.approx(210 * 3.7 * mm.get_multiplier("bf16").rel_power)


def test_real_library_rel_power_is_used():
    m = EnergyModel(array=A4)
    for name in ("drum4", "perf_j0_k2", "mitch_w6"):
        le = m.layer(conv1x1(), LayerConfig(name))
        assert le.components["multiplier"] == pytest.approx(210 * 0.2 * mm.get_multiplier(name).rel_power)


def test_grouped_depthwise_mapping():
    le = EnergyModel(array=A4).layer(conv1x1(K=9, N=8, groups=4), LayerConfig())
    # per group K=9 -> 3 row tiles, N_g=2 -> 1 column tile; 4 groups: 12 tiles.
    assert le.tiles == 12 and le.cycles == 12 * (5 + 8)
    assert le.counts["macs"] == 5 * 9 * 8
    assert le.spatial_utilisation == pytest.approx(9 * 2 / (3 * 4 * 1 * 4))


def lenet_like():
    return [MacLayer(name="conv1", op="conv", in_shape=(1, 28, 28), out_shape=(6, 28, 28), M=784, K=25, N=6),
            MacLayer(name="conv2", op="conv", in_shape=(6, 14, 14), out_shape=(16, 10, 10), M=100, K=150, N=16),
            MacLayer(name="fc1", op="gemm", in_shape=(400,), out_shape=(120,), M=1, K=400, N=120),
            MacLayer(name="fc2", op="gemm", in_shape=(120,), out_shape=(84,), M=1, K=120, N=84),
            MacLayer(name="fc3", op="gemm", in_shape=(84,), out_shape=(10,), M=1, K=84, N=10)]


def test_relative_all_exact_is_one_and_network_totals():
    layers = lenet_like()
    m = EnergyModel()
    for cfg in ({}, {l.name: LayerConfig() for l in layers}):
        assert m.relative(layers, cfg) == {"system": 1.0, "multiplier": 1.0, "latency": 1.0}
    net = m.network(layers, {"conv2": LayerConfig("drum4", cv=True)})
    assert net.total == pytest.approx(sum(l.total for l in net.layers))
    assert net.total == pytest.approx(sum(net.components.values()))
    assert net.cycles == sum(l.cycles for l in net.layers)
    assert net.latency_s == pytest.approx(net.cycles / 500e6)
    d = json.loads(json.dumps(net.to_dict()))
    assert set(d["components"]) == set(E.COMPONENTS) and len(d["layers"]) == 5
    assert d["constants"]["mult8"] == {"value": 0.2, "unit": "pJ", "source": E.DEFAULT_CONSTANTS["mult8"].source}


def test_monotonicity():
    layers = lenet_like()
    m = EnergyModel()
    # fewer perforated rows -> more multiplier and system energy
    sys_e = [m.relative(layers, {"conv2": LayerConfig(f"perf_j0_k{k}")})["system"] for k in (3, 2, 1)]
    assert sys_e[0] < sys_e[1] < sys_e[2] < 1.0
    # cv costs energy; more layers approximated saves more
    base = m.relative(layers, {"conv2": LayerConfig("perf_j0_k2")})["system"]
    assert m.relative(layers, {"conv2": LayerConfig("perf_j0_k2", cv=True)})["system"] > base
    assert m.relative(layers, {"conv2": LayerConfig("perf_j0_k2"), "fc1": LayerConfig("perf_j0_k2")})["system"] < base
    # Ax-BxP: fewer blocks -> less energy; static cheaper than dynamic
    ax = [m.relative(layers, {"conv2": LayerConfig(f"axbxp_k2_w{w}_a{a}_static")})["system"]
          for w, a in ((2, 2), (2, 3), (3, 3), (4, 4))]
    assert ax == sorted(ax) and len(set(ax)) == 4
    assert (m.relative(layers, {"conv2": LayerConfig("axbxp_k2_w2_a2_static")})["system"]
            < m.relative(layers, {"conv2": LayerConfig("axbxp_k2_w2_a2_dynamic")})["system"])
    # a bigger global buffer costs more per access (same residency: both hold all weights); more images per batch
    # less DRAM when the weights do not fit
    e_small = EnergyModel(array=ArrayConfig(glb_kib=128)).network(layers).components["glb"]
    e_big = EnergyModel(array=ArrayConfig(glb_kib=512)).network(layers).components["glb"]
    assert e_big == pytest.approx(e_small * 2)
    assert (EnergyModel(array=ArrayConfig(batch=8)).network(layers).components["dram"]
            < EnergyModel().network(layers).components["dram"])


def reference_layer_counts(M, K, N, g, rows, cols, wb=8, ab=8, pb=32, ob=8):
    """Slow tile-by-tile walk of the weight-stationary mapping."""
    Ng = N // g
    r = dict(macs=0, cycles=0, tiles=0, w_reads=0, in_reads=0, ps_reads=0, ps_writes=0, out_writes=0, w_loads=0)
    for _ in range(g):
        row_tiles = list(range(0, K, rows))
        for ti, k0 in enumerate(row_tiles):
            ku = min(rows, K - k0)
            for n0 in range(0, Ng, cols):
                nu = min(cols, Ng - n0)
                r["tiles"] += 1
                r["cycles"] += M + rows + cols
                r["macs"] += M * ku * nu
                r["w_reads"] += ku * nu * wb
                r["w_loads"] += ku * nu
                r["in_reads"] += M * ku * ab
                if ti > 0:
                    r["ps_reads"] += M * nu * pb
                if ti < len(row_tiles) - 1:
                    r["ps_writes"] += M * nu * pb
                else:
                    r["out_writes"] += M * nu * ob
    return r


@settings(deadline=None, max_examples=80)
@given(M=st.integers(1, 60), K=st.integers(1, 70), Ng=st.integers(1, 40), g=st.integers(1, 4),
       rows=st.integers(1, 20), cols=st.integers(1, 20))
def test_matches_tile_loop_reference(M, K, Ng, g, rows, cols):
    N = Ng * g
    layer = MacLayer(name="x", op="conv", in_shape=(K * g, 1, M), out_shape=(N, 1, M), groups=g, M=M, K=K, N=N)
    le = EnergyModel(array=ArrayConfig(rows=rows, cols=cols)).layer(layer, LayerConfig())
    r = reference_layer_counts(M, K, N, g, rows, cols)
    assert (le.tiles, le.cycles, le.counts["macs"]) == (r["tiles"], r["cycles"], r["macs"])
    assert le.counts["reg_bits"] == r["macs"] * 48 + r["w_loads"] * 8
    in_fill, drain = K * g * M * 8, r["out_writes"]
    # the 64 KiB buffer keeps input, output, a column tile of psums and a double-buffered weight tile; what is
    # left holds weights (any part of them), the rest streams from DRAM per image
    psums = M * min(Ng, cols) * 32 if K > rows else 0
    left = 64 * 8192 - (in_fill + M * N * 8 + psums + 2 * rows * cols * 8)
    w_fill = r["w_reads"] - min(max(left, 0), K * N * 8)
    assert le.counts["glb_read_bits"] == r["w_reads"] + r["in_reads"] + r["ps_reads"] + drain
    assert le.counts["glb_write_bits"] == pytest.approx(w_fill + in_fill + r["ps_writes"] + r["out_writes"])
    assert le.counts["dram_bits"] == pytest.approx(w_fill + in_fill + drain)
    assert le.utilisation == pytest.approx(r["macs"] / (r["cycles"] * rows * cols))
    assert 0 < le.utilisation <= 1 and all(v >= 0 for v in le.components.values())


def test_repeated_networks_are_not_recomputed(monkeypatch):
    """A search re-prices the same layer configurations many times: the second pass over the same configurations
    maps, plans and counts nothing (counted, not timed; the speed is benchmarks/bench_overheads.py's figure)."""
    import dse.energy.model as EM

    layers = lenet_like()
    names = ["exact", "drum4", "drum6", "perf_j0_k2", "mitch_w6", "axbxp_k2_w2_a2_static", "axbxp_k2_w3_a3_dynamic"]
    cfgs = [{l.name: LayerConfig(names[(i * 7 + j * 3) % len(names)], cv=bool((i + j) % 2))
             for j, l in enumerate(layers)} for i in range(50)]
    calls = {"count": 0, "plan": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper
    monkeypatch.setattr(EM, "count_actions", counted("count", EM.count_actions))
    monkeypatch.setattr(EM, "plan_residency", counted("plan", EM.plan_residency))
    m = EnergyModel()
    first = [m.relative(layers, cfg) for cfg in cfgs]
    assert calls["count"] > 0 and calls["plan"] > 0
    seen = dict(calls)
    assert [m.relative(layers, cfg) for cfg in cfgs] == first
    assert calls == seen


@pytest.mark.parametrize("overrides, key", [({"mult9": 1.0}, "energy.mult9"), ({"dram": "cheap"}, "energy.dram"),
                                            ({"sram": -1.0}, "energy.sram"),
                                            ({"dram": {"value": 1.0, "unit": "pJ"}}, "energy.dram"),
                                            ({"dram": {"valu": 1.0}}, "energy.dram")])
def test_bad_constants_name_the_key(overrides, key):
    with pytest.raises(DseError) as ei:
        EnergyModel(constants=overrides)
    assert f"'{key}'" in str(ei.value) and "\n" not in str(ei.value)


def test_constant_overrides():
    m = EnergyModel(constants={"mult8": 0.4, "dram": {"value": 10.0, "source": "LPDDR4 datasheet"}}, array=A4)
    assert m.constants["mult8"].value == 0.4 and m.constants["dram"].source == "LPDDR4 datasheet"
    le = m.layer(conv1x1(), LayerConfig())
    assert le.components["multiplier"] == pytest.approx(210 * 0.4)
    assert le.components["dram"] == pytest.approx(520 * 10.0)


@pytest.mark.parametrize("kw, key", [({"rows": 0}, "accelerator.rows"), ({"cols": 2.5}, "accelerator.cols"),
                                     ({"frequency_mhz": -1.0}, "accelerator.frequency_mhz"),
                                     ({"batch": True}, "accelerator.batch")])
def test_bad_array_config(kw, key):
    with pytest.raises(DseError, match=f"'{key}'"):
        ArrayConfig(**kw)


def test_bad_inputs(fake_mults):
    m = EnergyModel(array=A4)
    with pytest.raises(DseError, match="'nope'"):
        m.network([conv1x1()], {"nope": LayerConfig()})
    with pytest.raises(DseError, match="unknown multiplier 'drum99x'"):
        m.layer(conv1x1(), LayerConfig("drum99x"))
    with pytest.raises(DseError, match="'nanpow' has unknown relative power"):
        m.layer(conv1x1(), LayerConfig("nanpow"))
    with pytest.raises(DseError, match="layer 'c'"):
        m.layer(conv1x1(K=6, N=7, groups=2), LayerConfig())  # N not divisible by groups


def chain(sizes):
    """Gemm layers n_i -> n_{i+1} (each one's output is the next one's input)."""
    return [MacLayer(name=f"fc{i}", op="gemm", in_shape=(a,), out_shape=(b,), M=1, K=a, N=b)
            for i, (a, b) in enumerate(zip(sizes, sizes[1:]))]


def test_activations_stay_on_chip_when_they_fit():
    layers = chain([64, 32, 32, 10])
    net = EnergyModel(array=ArrayConfig(glb_kib=64)).network(layers)
    dram = [l.counts["dram_bits"] for l in net.layers]
    # weights resident; only the network input (64 x 8 bits) and output (10 x 8 bits) go through DRAM
    assert dram == [64 * 8, 0, 10 * 8]
    # its psums (K=32 over 16 rows: one spill of 32 x 32 bits) and output; its input is already in the buffer
    assert net.layers[1].counts["glb_write_bits"] == 32 * 32 + 32 * 8
    # a buffer too small for the weights: activations still on chip, the weight bits left over stay resident (the
    # first layer's, in execution order), the rest streams per image. 8192 bits; largest need: fc0's input 512 +
    # output 256 + psums 16*32 + weight tile 2*16*16*8 = 5376 -> 2816 resident weight bits
    small = EnergyModel(array=ArrayConfig(glb_kib=1.0)).network(layers)
    assert [l.counts["dram_bits"] for l in small.layers] == [64 * 32 * 8 - 2816 + 64 * 8, 32 * 32 * 8,
                                                             32 * 10 * 8 + 80]


@settings(deadline=None, max_examples=60)
@given(sizes=st.lists(st.integers(1, 600), min_size=2, max_size=6), glb=st.sampled_from([0.01, 0.5, 2.0, 64.0]),
       mult=st.sampled_from(["exact", "axbxp_k2_w2_a3_static", "axbxp_k4_w1_a1_dynamic", "drum4"]))
def test_producer_and_consumer_agree(sizes, glb, mult):
    # a tensor between two layers is written and read in the same place and format: DRAM bits out == bits in
    layers = chain(sizes)
    net = EnergyModel(array=ArrayConfig(glb_kib=glb)).network(layers, {l.name: LayerConfig(mult) for l in layers})
    plan = E.plan_residency(layers, [E.operand_format(mult, ArrayConfig())] * len(layers), ArrayConfig(glb_kib=glb))
    for i, (prod, cons) in enumerate(zip(net.layers, net.layers[1:])):
        assert plan[i].output_dram == plan[i + 1].input_dram
        assert prod.counts["out_bits"] == cons.counts["act_store_bits"] == 8
    assert plan[0].input_dram and plan[-1].output_dram


def test_residency_is_continuous_in_one_layers_format(bundled_qmodel):
    """Narrowing one layer's weights changes the network's DRAM traffic by at most that layer's weight bits saved plus
    its smaller weight tile (which frees buffer for resident weights) - no all-or-nothing flip of every layer's
    residency: LeNet-5 and ResNet-8, each layer alone to 4-bit Ax-BxP weights."""
    for net in ("lenet5", "resnet8"):
        layers = bundled_qmodel(net)[1].layers
        m = EnergyModel()
        base = m.network(layers, {})
        for l in layers:
            cfg = {l.name: LayerConfig("axbxp_k2_w2_a2_static")}
            new = m.network(layers, cfg)
            saved = l.K * l.N * (8 - 4) + 2 * m.array.rows * m.array.cols * (8 - 4)
            d_weights = sum(b.counts["dram_bits"] - n.counts["dram_bits"] for b, n in zip(base.layers, new.layers))
            assert -1e-6 <= d_weights <= saved + 1e-6, (net, l.name, d_weights, saved)
        plan = E.plan_residency(layers, [E.operand_format("exact", m.array)] * len(layers), m.array)
        streamed = sum(r.weights_streamed * l.K * l.N * 8 for r, l in zip(plan, layers))
        assert 0 < streamed < sum(l.K * l.N * 8 for l in layers)  # partly resident at 64 KiB, both nets
