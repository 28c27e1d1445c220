"""Prefix-activation cache (dse.prefix_cache) used by the emulator: a run with the cache is bit-identical to one
without, on the bundled networks (residual adds included), for random configuration sequences with control variates
on and off, Ax-BxP and float-domain layers, on racing-style image ranges; and it does skip work."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dse.emulate import Emulator
from dse.layer_config import LayerConfig
from dse.prefix_cache import CutState, PrefixCache, live_tensors

MULTS = ["exact", "drum4", "mitch_w6", "perf_j0_k2", "trunc_op2", "axbxp_k2_w2_a3_static", "axbxp_k2_w2_a2_dynamic",
         "bf16"]


@pytest.fixture(scope="module")
def images():
    from dse.data import load_dataset

    return load_dataset("fashion-mnist:search").images(0, 24)


@pytest.fixture(scope="module", params=["resnet8", "lenet5"])
def emu(request, bundled_qmodel):
    return Emulator(bundled_qmodel(request.param)[1])


@st.composite
def config_sequences(draw, names):
    """A few configurations, each derived from the previous one by changing the layers from a random point on (as a
    search does when consecutive trials share a prefix), sometimes all fresh."""
    layer = st.tuples(st.sampled_from(MULTS), st.booleans())

    def fresh():
        out = {}
        for n in names:
            m, cv = draw(layer)
            out[n] = LayerConfig(m, cv and m not in ("bf16", "exact"))
        return out
    seq = [fresh()]
    for _ in range(draw(st.integers(2, 4))):
        new = fresh()
        k = draw(st.integers(0, len(names)))
        seq.append({n: (seq[-1][n] if i < k else new[n]) for i, n in enumerate(names)})
    return seq


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cached_runs_bit_identical(emu, images, data):
    seq = data.draw(config_sequences(list(emu.layers)))
    ranges = data.draw(st.sampled_from([[(0, 16)], [(0, 10), (10, 16)], [(0, 5), (5, 9), (9, 16)]]))
    batch = data.draw(st.sampled_from([4, 8, 64]))
    mib = data.draw(st.sampled_from([0.05, 64]))  # a tiny budget evicts constantly
    cache = PrefixCache.from_mib(mib)
    for cfg in seq + seq[:1]:
        for a, b in ranges:
            ref = emu.run(images[a:b], cfg, batch)
            got = emu.run(images[a:b], cfg, batch, cache=cache, tag=("search", a, b))
            np.testing.assert_array_equal(got, ref)
            assert got.dtype == ref.dtype
    assert cache.stats.bytes <= cache.max_bytes


def test_shared_prefix_skips_work_and_stays_exact(bundled_qmodel, images):
    """Single-layer perturbations (the set-up's sensitivities) after the all-exact run: every perturbation of a layer
    after the first continues from the stored exact prefix."""
    emu = Emulator(bundled_qmodel("resnet8")[1])
    cache = PrefixCache.from_mib(256)
    x = images[:24]
    names = list(emu.layers)
    emu.run(x, {}, 8, cache=cache, tag="x")
    calls = 0
    for n in names[1:]:
        for m, cv in (("drum4", False), ("perf_j0_k2", True), ("mitch_w6", False)):
            cfg = {n: LayerConfig(m, cv)}
            before = cache.stats.runs - cache.stats.hits
            np.testing.assert_array_equal(emu.run(x, cfg, 8, cache=cache, tag="x"), emu.run(x, cfg, 8))
            calls += 1
            if calls > 1:  # the first perturbation stores the exact prefix, every later one continues from it
                assert cache.stats.runs - cache.stats.hits == before, (n, m)
    assert cache.stats.mac_fraction_skipped > 0.3, cache.stats


def test_cache_key_separates_images(bundled_qmodel, images):
    """The same configuration on other images (another tag) never reuses a state."""
    emu = Emulator(bundled_qmodel("lenet5")[1])
    cache = PrefixCache.from_mib(64)
    cfg = {n: LayerConfig("drum4") for n in emu.layers}
    for _ in range(3):
        emu.run(images[:8], cfg, 8, cache=cache, tag="a")
    hits = cache.stats.hits
    assert hits > 0  # the third run on "a"
    np.testing.assert_array_equal(emu.run(images[8:16], cfg, 8, cache=cache, tag="b"), emu.run(images[8:16], cfg, 8))
    assert cache.stats.hits == hits


def test_lru_bound_and_admission():
    c = PrefixCache(1000)
    st_ = CutState({"t": np.zeros(100, np.float32)}, {})  # 400 bytes
    keys = [("a",), ("a", "b")]
    p = c.plan(0, keys)
    assert p.store == () and p.speculate == (1,)  # first request: only speculatively, never the last cut
    p = c.plan(0, keys)
    assert p.hit == 0 and p.store == (1, 2)       # requested before: store every shared cut
    c.store(0, keys[1], st_)
    assert c.plan(0, keys).hit == 2
    for b in (1, 2, 3):
        c.store(b, keys[0], st_)
    assert len(c) == 2 and c.stats.evictions == 2 and c.stats.bytes == 800
    c.store(9, keys[0], CutState({"t": np.zeros(1000, np.float32)}, {}))  # larger than the whole budget: skipped
    assert len(c) == 2


def test_speculative_states_only_fill_free_memory():
    """A speculative state is kept only below half the budget and never evicts a state whose prefix was shared."""
    c = PrefixCache(1000)
    st_ = CutState({"t": np.zeros(50, np.float32)}, {})  # 200 bytes
    c.store(0, ("a",), st_, speculative=True)
    c.store(1, ("a",), st_, speculative=True)
    assert len(c) == 2 and c.stats.bytes == 400
    c.store(2, ("a",), st_, speculative=True)           # would pass 500 bytes: refused
    assert len(c) == 2 and c.stats.evictions == 0
    for b in (3, 4, 5):                                  # shared states fill the rest and evict as needed
        c.store(b, ("a",), st_)
    assert c.stats.bytes == 1000 and c.stats.evictions == 0
    c.store(6, ("a",), st_, speculative=True)           # full: refused, nothing evicted
    assert c.stats.evictions == 0 and c.plan(6, [("a",)]).hit == 0
    c.store(7, ("a",), st_)
    assert c.stats.evictions == 1 and c.plan(0, [("a",)]).hit == 0  # the least recently used went


def test_live_tensors_residual():
    """A tensor read by a later add stays live across the cut (residual branch), the input dies after its use."""
    from dse.model.graph import Node

    nodes = [Node("c1", "conv", ["x"], ["a"]), Node("r", "relu", ["a"], ["b"]), Node("c2", "conv", ["b"], ["c"]),
             Node("add", "add", ["a", "c"], ["y"])]
    live = live_tensors(nodes, "x", "y")
    assert live[0] == {"x"} and live[2] == {"a", "b"} and live[3] == {"a", "c"} and live[4] == {"y"}
