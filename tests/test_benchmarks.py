"""The benchmark scripts run (a benchmark measures; these tests only check that its code path works end to end on the
smallest input, so an API change cannot silently break a script that CI never runs)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from tests.budgets import TINY_BUDGET

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("variant", ["dse", "optuna-tpe", "optuna-nsga2", "hawq-milp"])
def test_bench_search_variant_runs(tmp_path, variant):
    import bench_search

    budget = tmp_path / "tiny.toml"
    budget.write_text(TINY_BUDGET)
    row = bench_search.run_variant(variant, budget, 0, 3, 1, 0, tmp_path / "run")
    assert row["variant"] == variant and row["seed"] == 0
    if variant != "hawq-milp":
        assert row["trials"] == 3 and row["wall"] > 0


def test_bench_kernels_tables_runs():
    import bench_kernels

    rows = bench_kernels.table_paths([(3, 5, 4, 1), (4, 6, 5, 2)], batch=1, repeats=1)
    assert [r[0] for r in rows] == ["3->4 5x5 s1 b1", "4->5 6x6 s2 b1"]
    assert set(rows[0][1]) == {"exact auto", "mitch_w6 auto", "mitch_w6 rows", "LUT auto", "LUT rows", "LUT split"}
    assert all(v > 0 for _, r in rows for v in r.values())


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(20, 400), st.integers(2, 30), st.booleans())
def test_poststratified_weights_match_the_split_histogram(seed, n, k, ties):
    import bench_surrogate_sampling as bss

    rng = np.random.default_rng(seed)
    draw = (lambda size: rng.integers(-5, 6, size).astype(float)) if ties else (lambda size: rng.normal(0, 2, size))
    m, m_split = draw(n), draw(5 * n)
    w = bss.poststratified(m, m_split, k)
    e = bss.strata_of(m, k)
    s, s_split = np.searchsorted(e, m, side="right"), np.searchsorted(e, m_split, side="right")
    assert np.all(np.bincount(s, minlength=e.size + 1) > 0)
    share = np.bincount(s_split, minlength=e.size + 1) / m_split.size
    np.testing.assert_allclose(np.bincount(s, w, e.size + 1) / n, share)
    assert np.isclose(w.mean(), 1.0) and np.all(w >= 0)
    np.testing.assert_allclose(bss.poststratified(m, np.tile(m, 3), k), 1.0)   # the split's histogram already: all 1


def _flips(rng, m: np.ndarray, driven: bool) -> np.ndarray:
    """Synthetic flips of images with exact margins ``m``: margin-driven (an image turns wrong with probability
    Phi(-m / 0.3)) or independent of the margin (5 % of the images, any margin)."""
    p = norm.cdf(-m / 0.3) if driven else np.full(m.size, 0.05)
    return (rng.uniform(size=m.size) < p).astype(float)


@pytest.mark.parametrize("driven", [True, False])
def test_poststratification_cuts_the_sampling_error_only_of_margin_driven_flips(driven):
    """The estimator the sampling benchmark compares: with flips that follow the margin, weighting 300 images to the
    split's margin strata cuts the SD of their loss well below a plain mean's; with flips independent of the margin
    (what the benchmark finds on ResNet-8: the strata explain under a tenth of the flip variance) it cannot."""
    import bench_surrogate_sampling as bss

    rng = np.random.default_rng(0)
    m_split = rng.normal(1.0, 1.0, 20000)
    flips = _flips(rng, m_split, driven)
    plain, strat = [], []
    for _ in range(300):
        i = rng.choice(m_split.size, 300, replace=False)
        plain.append(flips[i].mean())
        strat.append(np.average(flips[i], weights=bss.poststratified(m_split[i], m_split, 10)))
    ratio = np.std(strat) / np.std(plain)
    r2 = bss.explained(flips[None], m_split, 10)[0]
    if driven:
        assert ratio < 0.8 and r2 > 0.3
    else:
        assert ratio > 0.9 and r2 < 0.01


@pytest.mark.parametrize("driven", [True, False])
def test_neyman_allocation_helps_only_where_the_flips_follow_the_margin(driven):
    import bench_surrogate_sampling as bss

    rng = np.random.default_rng(1)
    m = rng.normal(1.0, 1.0, 5000)
    ratio = bss.neyman_ratio(np.stack([_flips(rng, m, driven) for _ in range(4)]), m, 10)
    if driven:
        assert np.all(ratio < 0.8)
    else:
        assert np.all(np.abs(ratio - 1) < 0.05)


def test_bench_kernels_zero_fractions_runs():
    import bench_e2e
    import bench_kernels

    z = bench_kernels.zero_fractions(bench_e2e.resnet18(32, classes=10), 32, n_images=2, n_calib=2)
    assert 0.0 < z["zero_chunks"] < z["zeros"] < 1.0  # post-Relu inputs: zeros, fewer whole zero chunks
    assert 0.0 <= z["sparse_share"] <= 1.0
    assert abs(z["gmac"] - 0.556) < 0.01  # ResNet-18 at 32x32: 0.556 GMAC per image, all on the GEMM kernels


def test_bench_e2e_resnet50_layout():
    """bench_e2e's ResNet-50 (torchvision v1.5): 53 convs (the 7x7/2 stem, 16 bottlenecks of 1x1-3x3-1x1 and 4 1x1
    downsample convs), the stride in the 3x3 and the downsample of each later stage's first block, 16 residual Adds
    followed by Relu, 4.089 GMAC per 224x224 image (torchvision's figure); a one-block-per-stage variant at 64x64 runs through the emulator
    (exact FxP8) and its float32 logits are onnxruntime's."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper, shape_inference

    import bench_e2e

    m = shape_inference.infer_shapes(bench_e2e.resnet50(224))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    inits = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    stride = {n.name: next(list(a.ints) for a in n.attribute if a.name == "strides") for n in convs}
    strided = [(inits[n.input[1]][2], inits[n.input[1]][1]) for n in convs if stride[n.name] == [2, 2]]
    assert len(convs) == 53 and strided == [(7, 3), (3, 128), (1, 256), (3, 256), (1, 512), (3, 512), (1, 1024)]
    macs = sum(int(np.prod(inits[n.input[1]])) * int(np.prod(shapes[n.output[0]][2:])) for n in convs)
    assert abs((macs + 2048 * 1000) / 1e9 - 4.089) < 0.001  # the convs and the FC
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("Add") == 16 and all(ops[i + 1] == "Relu" for i, o in enumerate(ops) if o == "Add")
    assert ops[:3] == ["Conv", "Relu", "MaxPool"] and ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]

    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model.float_exec import run_float
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r50.onnx"
        onnx.save(bench_e2e.resnet50(64, classes=10, blocks=(1, 1, 1, 1)), str(p))
        g = load_onnx(p)
        x = bench_e2e.images(2, 64, seed=11)
        want = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(run_float(g, x), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    qm = calibrate(g, bench_e2e.images(2, 64, seed=3))
    out = Emulator(qm).run(x, {layer.name: LayerConfig("exact") for layer in qm.layers})
    assert out.shape == (2, 10) and np.isfinite(out).all() and len(qm.layers) == 18


def test_bench_e2e_thread_rounds_alternate(monkeypatch):
    """bench_e2e's thread rows: 1 and t threads alternate round by round (the order flipped every round), and the
    speedup is the median of the rounds' ratios, so a noisy spell over one round does not decide it: here 1 thread
    takes 2 s and 2 threads 1 s, except in one round where everything runs 5x slower."""
    import bench_e2e

    now, calls, slow = [0.0], [], {4}
    monkeypatch.setattr(bench_e2e, "CLOCK", lambda: now[0])

    def fn(k, x):
        calls.append((k, len(x)))
        now[0] += (2.0 if k == 1 else 1.0) * (5.0 if len(calls) in slow else 1.0)

    r1, r2, speedup = bench_e2e._paired_rates(fn, np.zeros((8, 1)), 3, 2)
    assert calls[:2] == [(1, 1), (2, 1)]  # one-image warm-ups
    assert [k for k, _ in calls[2:]] == [1, 2, 2, 1, 1, 2]
    assert speedup == 2.0 and (r1, r2) == (4.0, 8.0)


def test_predict_replay_neighbour_correction():
    """bench_predict_replay's correction: a configuration right on the same images as one measured point (and on other
    images than the rest) gets that point's leave-one-out residual added to the loss model's prediction; a large
    shrink leaves the loss model's prediction alone; the leave-one-out quality never uses a point's own residual."""
    import bench_predict_replay as bpr

    from dse.layer_config import LayerConfig
    from dse.predict import Candidate, LossModel, surrogate_quality

    rng = np.random.default_rng(0)
    n, images = 12, 200
    cfgs = [{"a": LayerConfig("drum4", bool(i % 2)), "b": LayerConfig(f"m{i}", False)} for i in range(n + 1)]
    feats = {bpr._key(c): np.r_[rng.uniform(0, 0.1), rng.uniform(0, 0.1, 3)] for c in cfgs}
    vecs = [rng.uniform(size=images) < 0.8 for _ in range(n)]
    vecs.append(vecs[3].copy())   # the new configuration: right on exactly the images point 3 is right on
    r = {"vectors": {"s": {"rows": ["".join("1" if b else "0" for b in v) for v in vecs]}}}
    base = Candidate("s", lambda c: feats[bpr._key(c)], LossModel.fit, surrogate_quality)
    X = np.stack([feats[bpr._key(c)] for c in cfgs[:n]])
    y = X[:, 0] * 0.8 + rng.normal(0, 0.01, n)
    res = y - LossModel.loo_predictions(X, y)
    plain = LossModel.fit(X, y)(feats[bpr._key(cfgs[n])])

    near = bpr.corrected(base, r, cfgs, tau=1e-3, shrink=1e-9)   # weights of the points unlike it: about e^-300
    Xc = np.stack([near.features(c) for c in cfgs[:n]])
    assert Xc.shape == (n, 4 + images)
    got = near.fit(Xc, y)(near.features(cfgs[n]))
    assert np.isclose(got, max(plain + res[3], 0.0), atol=1e-7)
    far = bpr.corrected(base, r, cfgs, tau=1e-3, shrink=1e9)
    assert np.isclose(far.fit(Xc, y)(far.features(cfgs[n])), max(plain, 0.0), atol=1e-9)
    # a point's own residual is left out of its leave-one-out prediction: every other point is unlike it, so the
    # leave-one-out predictions are the loss model's own
    q = near.quality(Xc, y)
    np.testing.assert_allclose(q.mean_error, np.mean(np.abs(np.maximum(LossModel.loo_predictions(X, y), 0) - y)),
                               atol=1e-9)


def test_bench_predict_search_stream_predicts_every_proposal_before_measuring_it_and_skips_none():
    """bench_predict's search-stream set: a search with dse.search's own study, sampler, objective (racing,
    confirmation) and run loop on the budget's search images proposes the configurations; a fresh gate predicts every
    proposal before it is measured, refitted on exactly the full-fidelity trials before it (as in a search), and never
    skips one; its would-be skips are the gate's own decisions (on, conservative loss over the line)."""
    import bench_predict as bp

    from dse.layer_config import LayerConfig
    from dse.predict import Candidate, PredictorGate, leave_one_out
    from dse.search.objective import _config_key
    from tests.fakes import FakeEvaluator, make_ctx, settings_

    ctx = make_ctx(n=2000)
    flips = FakeEvaluator(2000, 0)
    seen = []

    class Spy:
        n_images = 2000

        def correct(self, config, start, stop):
            seen.append((start, stop))
            return flips.correct(config, start, stop)

    def fit(X, y):
        m = np.polyfit(X[:, 0], y, 1)
        return lambda f: float(np.polyval(m, f[0]))
    cand = Candidate("linear", lambda c: np.array([flips.p_flip(c)]), fit, lambda X, y: leave_one_out(fit, X, y))
    ctx.predictor, ctx.evaluator = PredictorGate([cand], focus=0.04), Spy()
    exact = flips.correct({}, 0, 2000).mean()
    rng = np.random.default_rng(0)
    layers, mults = ctx.space.searchable, ["drum6", "mitchell", "perf_2_2"]
    setup = [({}, 0.0)] + [(c, exact - flips.correct(c, 0, 300).mean()) for c in (
        {n: LayerConfig(mults[rng.integers(3)], bool(rng.integers(2))) for n in layers if rng.uniform() < 0.6}
        for _ in range(10))]
    s = settings_(n_trials=30, seed=0, fidelities=[300, 0], predictor_skip=2.0)
    trials, gate = bp.search_proposals(ctx, s, 5, setup, 0.04, (1000, 500))
    assert len(trials) == 30 and max(b for _, b in seen) <= 1500   # the search's 1000 images and 500 confirmation
    assert not any(t.user_attrs.get("skipped") == "predictor" for t in trials)
    assert all(t.user_attrs["images"] in (300, 1000) for t in trials if "duplicate_of" not in t.user_attrs)
    # prequential: each trial's prediction is that of a gate fed the full-fidelity trials before it, nothing else
    replay, _ = bp.fresh_gate([cand], setup, 0.04)
    for t in trials:
        replay.observe([(u.number, bp_config(u), u.user_attrs["loss"]) for u in trials
                        if u.number < t.number and u.user_attrs.get("full") and "duplicate_of" not in u.user_attrs])
        if "duplicate_of" not in t.user_attrs:
            assert t.user_attrs["predicted_loss"] == pytest.approx(replay.predicted(bp_config(t)), abs=1e-12)
            assert gate.would[_config_key(bp_config(t))] == replay.gate(bp_config(t))
    rows = bp.proposal_rows(trials, gate, s.predictor_skip * s.budget_loss)
    assert rows and all(r["predicted"] is not None for r in rows)
    assert any(r["skip"] for r in rows) and any(r["full"] for r in rows) and any(not r["full"] for r in rows)
    for r in rows:
        cons = gate.would[_config_key(r["config"])]
        assert r["skip"] == (r["active"] and cons is not None and cons > 0.02)
        assert not all(lc.multiplier == "exact" for lc in r["config"].values())
    hits = np.array([flips.correct(r["config"], 300, 2000) for r in rows])
    d = bp.stream_scores(rows, bp.Measured.of(flips.correct({}, 300, 2000), hits), 0.04, 0.01)
    assert d["n"] == len(rows) and d["focus"]["count"] == sum(y <= 0.04 for y in d["loss"])
    assert d["skipped"] == sum(r["skip"] for r in rows) and d["all"]["spearman"] > 0.9


def bp_config(t):
    from dse.layer_config import config_from_dict

    return config_from_dict(t.user_attrs["config"])


def test_bench_predict_replay_reproduces_a_search_stream_record():
    """bench_predict_replay --smooth on a search-stream record (bench_predict.search_proposals, stream_points,
    stream_scores): its "as recorded" replay of the gate on the recorded feature rows gives the recorded predictions'
    scores, over all proposals and within the focus; the smooth twins change only the candidates."""
    import bench_predict as bp
    import bench_predict_replay as bpr

    from dse.layer_config import LayerConfig
    from dse.predict import Candidate, LossModel, PredictorGate, surrogate_quality
    from tests.fakes import FakeEvaluator, make_ctx, settings_

    ctx, flips = make_ctx(n=2000), FakeEvaluator(2000, 0)
    rng = np.random.default_rng(1)
    noise = {}

    def feats(c):   # a surrogate-like row: a noisy raw count, then smooth features
        k = tuple(sorted((n, lc.multiplier, lc.cv) for n, lc in c.items() if lc.multiplier != "exact"))
        p = flips.p_flip(c)
        return np.array([p + noise.setdefault(k, rng.normal(0, 0.003)), 0.5 * p, 2 * p, 0.9 * p])
    cand = Candidate("logit surrogate", feats, LossModel.fit, surrogate_quality)
    ctx.predictor = PredictorGate([cand], focus=0.04)
    exact = flips.correct({}, 0, 2000).mean()
    layers, mults = ctx.space.searchable, ["drum6", "mitchell", "perf_2_2"]
    fit0 = [{}] + [{n: LayerConfig(mults[rng.integers(3)], bool(rng.integers(2))) for n in layers
                    if rng.uniform() < 0.6} for _ in range(10)]
    setup = [(c, exact - flips.correct(c, 0, 300).mean()) for c in fit0]
    s = settings_(n_trials=30, seed=0, fidelities=[300, 0], predictor_skip=2.0)
    trials, gate = bp.search_proposals(ctx, s, 3, setup, 0.04, (1000, 500))
    rows = bp.proposal_rows(trials, gate, 0.02)
    hits = np.array([flips.correct(r["config"], 300, 2000) for r in rows])
    d = bp.stream_scores(rows, bp.Measured.of(flips.correct({}, 300, 2000), hits), 0.04, 0.01)
    d["stream"] = bp.stream_points([cand], trials)
    rec = {"focus": 0.04, "setup_points": {"loss": [y for _, y in setup], **bp._feature_lists([cand], fit0)},
           "seeds": {"3": d}}
    (a, f), (sa, sf) = (bpr.replay_stream(rec, "3", sm) for sm in (False, True))
    y, pred = np.array(d["loss"]), np.array(d["predicted"])
    for got, want in ((a, bp._scores(pred, y)), (f, bp._scores(pred[y <= 0.04], y[y <= 0.04]))):
        assert got["n"] == want["n"] and got["spearman"] == pytest.approx(want["spearman"], abs=1e-12)
        assert got["mae"] == pytest.approx(want["mae"], abs=1e-12)
    assert sa["n"] == a["n"] and sf["n"] == f["n"]
    # --reliability: the gate after (the logit surrogate's count weighted on its 300 images, averaged predictions)
    # scores the same proposals; with one candidate the averaging changes nothing, and the skip counts add up
    from collections import Counter

    from dse.predict import ENSEMBLE_SPEARMAN
    kept: Counter = Counter()
    rec.update(skip_line=0.02, budget_loss=0.01)
    ra, rf = bpr.replay_stream(rec, "3", False, ({"logit surrogate": 300}, ENSEMBLE_SPEARMAN), kept)
    assert ra["n"] == a["n"] and rf["n"] == f["n"] and kept["logit surrogate"] == a["n"]
    assert kept["would skip within budget"] <= kept["would skip"] <= kept["gate on"] <= a["n"]
    # --adopted: the gate as dse.predict builds it scores the same proposals
    rec["surrogate_images"] = 300
    da, df = bpr.replay_stream(rec, "3", False, bpr.ADOPTED)
    assert da["n"] == a["n"] and df["n"] == f["n"]
    # own_only: the proposals predicted from fits on the set-up's points leave the score, the rest stay
    oa, of = bpr.replay_stream(rec, "3", False, own_only=True)
    assert 0 < oa["n"] < a["n"] and of["n"] <= f["n"]


def test_replay_raw_count_shrink_keeps_a_reliable_count_and_smooths_a_noisy_one():
    """bench_predict_replay.RawCountShrink: a count spanning tens of images keeps its values; one of 0-3 images of
    300 whatever the configuration (counting noise) becomes the monotone curve of the count on the Gaussian loss, 0 at
    0; loss_model_fits(images) is dse.predict's LossModel on the weighted rows."""
    import bench_predict_replay as bpr

    from dse.predict import LossModel
    rng = np.random.default_rng(4)
    g = np.sort(rng.uniform(0.0, 0.3, 30))
    wide = np.stack([np.round(300 * (g + rng.normal(0, 0.02, g.size))) / 300, g, g, g], 1)
    s = bpr.RawCountShrink(wide, 300)
    assert s.reliability > 0.9 and np.max(np.abs(s.apply(wide)[:, 0] - np.maximum(wide[:, 0], 0))) < 0.01
    tiny = np.stack([rng.integers(0, 4, g.size) / 300, g, g, g * 0.01], 1)
    t = bpr.RawCountShrink(tiny, 300)
    shrunk = t.apply(tiny)[:, 0]
    assert t.reliability == 0.0 and np.all(np.diff(shrunk) >= 0) and t.apply(np.zeros((1, 4)))[0, 0] == 0.0
    y = 0.8 * g * 0.01 + 0.3 * tiny[:, 0]
    fit, quality = bpr.loss_model_fits(300)
    assert fit(tiny, y)(tiny[3]) == pytest.approx(LossModel.fit(t.apply(tiny), y)(t.apply(tiny)[3]), abs=1e-15)
    assert bpr.loss_model_fits(None)[0] == LossModel.fit


def test_replay_gates_are_the_library_gate_before_and_after_its_adopted_changes():
    """bench_predict_replay's "before" is dse.predict's gate without the averaged prediction and with the count always
    in the loss model; its "adopted" is the gate as dse.predict builds it (the ensemble, each surrogate's images)."""
    import bench_predict_replay as bpr

    from dse.predict import ENSEMBLE_SPEARMAN, PredictorGate
    assert bpr.averaging_gate(0.0)([]).ensemble == 0.0 and isinstance(bpr.averaging_gate(0.1)([]), PredictorGate)
    assert bpr._how({"skip": 300}, bpr.BEFORE) == ({}, 0.0, None)
    assert bpr._how({"surrogate_images": 300, "propagated_images": 200, "skip": 300}, bpr.ADOPTED) == (
        {}, ENSEMBLE_SPEARMAN, {"logit surrogate": 300, "propagated surrogate": 200})


def test_bench_e2e_memory_row_is_the_child_s_own_peak():
    """The memory row's child reports its own peak RSS, not that of the benchmark process that started it (Linux
    keeps getrusage's ru_maxrss over the exec of a subprocess's vfork child: the child reported its parent's peak)."""
    import subprocess

    from bench_e2e import peak_rss_mib

    big = np.ones(400 << 20, np.uint8)  # the parent's peak: >= 400 MiB resident
    assert peak_rss_mib() >= 400
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from bench_e2e import peak_rss_mib; "
            "print(peak_rss_mib())")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent.parent / "benchmarks")],
                         capture_output=True, text=True, check=True).stdout
    del big
    assert float(out) < 300


def test_bench_identity_runs():
    import bench_identity

    (name, n, fwd, dig, cal, cdig, nbytes), = bench_identity.rows(["lenet5"], 8, 1)
    assert name == "lenet5" and n == 8 and min(fwd, dig, cal, cdig) >= 0 and nbytes > 0
