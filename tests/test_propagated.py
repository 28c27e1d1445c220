"""The propagated surrogate (dse.predict.PropagatedSurrogate) and the emulator's accumulator hook it runs through:
against the emulator itself (identity models are the exact path bit for bit; a multiplier whose error is a gain is
predicted as emulated; separable tables run for real), the channel model's fit against its definition, determinism,
and the search's gate switching it off when trials contradict it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse import kernels
from dse.data import load_dataset
from dse.emulate import Emulator, MacCall
from dse.layer_config import LayerConfig
from dse.predict import ChannelErrorModel, PredictorGate, PropagatedSurrogate, loss_model_candidate
from dse.prefix_cache import PrefixCache

N_IMAGES = 48


@pytest.fixture(scope="module")
def resnet8(bundled_qmodel):
    """(Emulator, images, labels) of the bundled ResNet-8 (residual adds, projections, ReLU, a final Gemm)."""
    _, qm = bundled_qmodel("resnet8")
    ds = load_dataset("fashion-mnist:search")
    return Emulator(qm), ds.images(0, N_IMAGES), ds.y[:N_IMAGES]


@pytest.fixture()
def gain2(tmp_path):
    """An imported table whose products are twice the exact ones (sign-magnitude core; weight magnitudes <= 128 are
    the only ones int8 weights reach, larger entries stay exact to keep within the product bound): a gain of 2."""
    a = np.arange(256, dtype=np.int64)
    core = a[:, None] * a[None, :]
    core[:, :129] *= 2
    p = tmp_path / "double.npy"
    np.save(p, core)
    return f"lut:{p}?signmag=1"


def test_identity_hook_is_bit_exact_and_sees_every_layer_once_per_image(resnet8):
    emu, x, _ = resnet8
    seen: dict = {}

    def record(call: MacCall, acc):
        seen.setdefault(call.layer.name, []).append((call.images, call.q.shape, acc.shape))
        assert call.q.shape[0] == len(call.images) == acc.shape[0]
        return acc
    for threads in (1, 2):
        seen.clear()
        with kernels.using_threads(threads):
            np.testing.assert_array_equal(emu.run(x, {}, batch_size=20, hook=record), emu.run(x, {}, batch_size=20))
        assert set(seen) == set(emu.layers)
        for calls in seen.values():   # every image exactly once, in slices of the batches
            assert sorted(i for r, _, _ in calls for i in r) == list(range(N_IMAGES))
    with pytest.raises(ValueError, match="hook"):
        emu.run(x, {}, cache=PrefixCache(1 << 20), tag="t", hook=record)


def test_zero_injection_reproduces_the_exact_path_bit_for_bit(resnet8):
    emu, x, y = resnet8
    ps = PropagatedSurrogate(emu, x, y, direct_paths=())
    cfg = {name: LayerConfig("mitch_w5", cv) for name, cv in zip(emu.layers, [False, True] * 8)}
    for name, lc in cfg.items():
        ps._models[(name, lc.multiplier, lc.cv)] = ChannelErrorModel.identity(emu.layers[name].N)
    np.testing.assert_array_equal(ps.logits(cfg), emu.run(x, {}))
    np.testing.assert_array_equal(ps.exact, emu.run(x, {}))
    assert ps.features(cfg)[0] == 0.0 and ps.features(cfg)[2] == 0.0


def test_a_gain_multiplier_is_predicted_as_emulated(resnet8, gain2):
    """Its error is exactly a per-channel gain (2): the fitted model recovers it without noise and the propagated
    logits equal the emulated ones, also where the doubled activations then clip at the next layer's scale."""
    emu, x, y = resnet8
    ps = PropagatedSurrogate(emu, x, y, direct_paths=())
    names = list(emu.layers)
    for chosen in (names[1:3], names[1::2], names):
        cfg = {n: LayerConfig(gain2) for n in chosen}
        for n in chosen:
            m = ps.model(n, cfg[n])
            np.testing.assert_allclose(m.gain, 2.0, rtol=1e-12)
            np.testing.assert_allclose(m.std, 0.0, atol=1e-6)
            np.testing.assert_allclose(m.offset, 0.0, atol=1e-6)
        emulated = emu.run(x, cfg)
        np.testing.assert_allclose(ps.logits(cfg), emulated, rtol=1e-5, atol=1e-5)
        assert not ps.direct(chosen[0], cfg[chosen[0]])


def test_error_models_fit_on_the_first_images_that_fit_the_input_budget(resnet8, gain2):
    emu, x, y = resnet8
    per_image = sum(int(np.prod(l.in_shape)) for l in emu.layers.values())
    ps = PropagatedSurrogate(emu, x, y, direct_paths=(), fit_bytes=5 * per_image + 1)
    assert ps.fit_images == 5 and all(len(q) == 5 for q in ps.q.values())
    name = list(emu.layers)[2]
    full = PropagatedSurrogate(emu, x, y, direct_paths=())
    assert full.fit_images == N_IMAGES
    np.testing.assert_allclose(ps.model(name, LayerConfig(gain2)).gain, 2.0, rtol=1e-12)   # a gain: any images do
    cfg = {name: LayerConfig(gain2)}
    np.testing.assert_allclose(ps.logits(cfg), emu.run(x, cfg), rtol=1e-5, atol=1e-5)


def test_separable_tables_run_their_real_multiplier(resnet8):
    emu, x, y = resnet8
    ps = PropagatedSurrogate(emu, x, y)
    cfg = {n: LayerConfig("drum4", i % 2 == 0) for i, n in enumerate(emu.layers)}
    assert all(ps.direct(n, lc) for n, lc in cfg.items())
    np.testing.assert_array_equal(ps.logits(cfg), emu.run(x, cfg))
    assert ps.fitted == 0   # nothing modelled: the real tables ran


def test_predictions_do_not_depend_on_threads_or_the_noise_pool(resnet8):
    emu, x, y = resnet8
    cfg = {n: LayerConfig("mitch_w4", False) for n in list(emu.layers)[1:-1]}
    out = []
    for threads, pool in ((1, 0), (2, 0), (2, 1 << 30), (1, 1 << 30)):
        with kernels.using_threads(threads):
            out.append(PropagatedSurrogate(emu, x, y, seed=3, pool_bytes=pool).logits(cfg))
    for o in out[1:]:
        np.testing.assert_array_equal(o, out[0])
    other = PropagatedSurrogate(emu, x, y, seed=4).logits(cfg)
    assert not np.array_equal(other, out[0])   # the seed is the noise's


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 4), n=st.integers(1, 5),
       spatial=st.sampled_from([(), (1, 1), (3, 2), (5, 5)]))
def test_channel_model_fit_is_least_squares_per_channel(seed, b, n, spatial):
    rng = np.random.default_rng(seed)
    exact = rng.integers(-5000, 5000, (b, n) + spatial)
    approx = exact * rng.uniform(0.5, 1.5, (1, n) + (1,) * len(spatial)) + rng.normal(0, 50, exact.shape)
    m = ChannelErrorModel.fit(exact, approx)
    for c in range(n):
        xs, ys = exact[:, c].ravel().astype(float), approx[:, c].ravel()
        if np.ptp(xs) == 0:
            assert m.gain[c] == 1.0 and m.offset[c] == pytest.approx(np.mean(ys - xs))
            continue
        g, o = np.polyfit(xs, ys, 1)
        assert m.gain[c] == pytest.approx(g, rel=1e-7, abs=1e-9)
        assert m.offset[c] == pytest.approx(o, rel=1e-6, abs=1e-6)
        assert m.std[c] == pytest.approx(np.sqrt(np.mean((ys - g * xs - o) ** 2)), rel=1e-6, abs=1e-9)
    eps = rng.standard_normal(exact.shape)
    out = m.apply(exact, eps)
    sh = (1, -1) + (1,) * len(spatial)
    np.testing.assert_allclose(out, m.gain.reshape(sh) * exact + m.offset.reshape(sh) + m.std.reshape(sh) * eps)


def test_the_gate_keeps_it_while_it_predicts_and_switches_it_off_when_trials_contradict_it(bundled_qmodel):
    _, qm = bundled_qmodel("lenet5")
    ds = load_dataset("fashion-mnist:search")
    emu, x, y = Emulator(qm), ds.images(0, 200), ds.y[:200]
    ps = PropagatedSurrogate(emu, x, y)
    names = list(emu.layers)
    rng = np.random.default_rng(0)
    # separable tables: the surrogate runs them for real, so on its own images it predicts every loss exactly (a
    # configuration that gets more images right than exact as 0: the loss model never predicts a gain)
    mults = ["perf_j0_k3", "axbxp_k2_w2_a2_static", "axbxp_k2_w3_a2_static", "trunc_op2", "drum4"]
    cfgs = []
    for _ in range(14):
        chosen = rng.choice(names, size=int(rng.integers(1, len(names) + 1)), replace=False)
        cfgs.append({str(n): LayerConfig(str(rng.choice(mults)), bool(rng.integers(2))) for n in chosen})
    exact = emu.predict(x, {}) == y
    truth = [float(exact.mean() - (emu.predict(x, c) == y).mean()) for c in cfgs]
    # the losses are measured on the surrogate's own images: its count has no sampling error against them (images
    # None); propagated_candidate weighs the count against losses measured on other images
    gate = PredictorGate([loss_model_candidate("propagated surrogate", ps.features, None, ps.at_hand)])
    for i, c, t in zip(range(len(cfgs)), cfgs, truth):   # one trial after the other (of points observed at once,
        gate.observe([(i, c, t)])                        # only the latest gets a costly candidate's features)
    assert gate.state.active and gate.state.kind == "propagated surrogate", gate.state.line()
    gains = np.maximum(-np.asarray(truth), 0.0)
    assert gate.state.quality.mean_error == pytest.approx(gains.mean(), abs=1e-9) and gains.max() <= 0.02
    assert [gate.predicted(c) for c in cfgs] == pytest.approx(np.maximum(truth, 0.0), abs=1e-9)
    noisy = np.random.default_rng(1)
    line = None
    for j, c in enumerate(cfgs * 3):   # trials whose losses have nothing to do with the configurations
        line = gate.observe([(100 + j, c, noisy.uniform(0, 0.5))]) or line
        if not gate.state.active:
            break
    assert not gate.state.active and "predictor off" in gate.state.line() and gate.gate(cfgs[0]) is None


def test_the_build_stops_before_the_batch_after_check_raises(resnet8):
    """``check`` is looked at before each batch of the all-exact run the surrogate is built on: a deadline passing
    during the first batch stops the build before the second one; batched or not, the build is the same."""
    emu, x, y = resnet8
    ran: list[int] = []
    run = emu.run

    class Stop(Exception):
        pass

    def check():
        if ran:
            raise Stop
    emu.run = lambda xb, *a, **kw: ran.append(len(xb)) or run(xb, *a, **kw)
    try:
        with pytest.raises(Stop):
            PropagatedSurrogate(emu, x, y, check=check, batch_size=16)
        assert ran == [16]
    finally:
        del emu.run
    whole, batched = PropagatedSurrogate(emu, x, y), PropagatedSurrogate(emu, x, y, batch_size=20, fit_bytes=1 << 40)
    np.testing.assert_array_equal(whole.exact, batched.exact)
    assert whole.fit_images == batched.fit_images == N_IMAGES
    for name in emu.layers:
        np.testing.assert_array_equal(whole.q[name], batched.q[name])
