"""The search context cached in the run directory (dse.search.context_cache): computed once, loaded by later
processes and resumed runs; a changed model/data/preprocessing or a corrupt file is never used."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dse.budget import load_budget
from dse.layer_config import LayerConfig
from dse.search import context_cache
from dse.search.context import PREDICTOR_STAGE, build_context

BUDGET = ("[data]\nimages = 40\n[search]\nworkers = 1\nprefix_cache_mib = 8\n"
          "[space]\nmultipliers = ['drum4', 'perf_j0_k2']\ncv = [false]\n")


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctx")
    (d / "b.toml").write_text(BUDGET)
    seen = []
    ctx = build_context(str(d / "b.toml"), run_dir=d / "run", progress=lambda *a: seen.append(a))
    return d, ctx, seen


def _stages(seen):
    return [a[0] for a in seen]


def test_every_set_up_stage_reports_its_end_once(first):
    _, _, seen = first
    ends = [a[0] for a in seen if a[1] >= a[2]]
    assert ends and len(ends) == len(set(ends)), ends


def test_second_process_loads_the_cache(first):
    d, ctx, seen = first
    assert (d / "run" / context_cache.FILE).is_file() and ctx.info["setup"]["context_cache"] == "computed"
    assert PREDICTOR_STAGE in _stages(seen) and "float32 baselines" in _stages(seen)
    again = []
    ctx2 = build_context(str(d / "b.toml"), run_dir=d / "run", progress=lambda *a: again.append(a))
    assert ctx2.info["setup"]["context_cache"] == "loaded"
    assert PREDICTOR_STAGE not in _stages(again) and "float32 baselines" not in _stages(again)
    assert any("context cache" in a[-1] for a in again if len(a) > 3)
    assert ctx2.baseline == ctx.baseline
    assert json.dumps(ctx2.info["predictor"], sort_keys=True) == json.dumps(ctx.info["predictor"], sort_keys=True)
    s1, s2 = ctx.sensitivity.surrogate.state(), ctx2.sensitivity.surrogate.state()  # rebuilt without a network run
    assert s2.choices == s1.choices and np.array_equal(s2.exact, s1.exact) and np.array_equal(s2.deltas, s1.deltas)
    assert len(s1.choices) == ctx.info["predictor"]["single_layer_changes"] > 0
    for a, b in zip(ctx.evaluator.emulator.qmodel.layers, ctx2.evaluator.emulator.qmodel.layers):
        assert a.a_scale == b.a_scale and np.array_equal(a.w_q, b.w_q) and np.array_equal(a.act_hist, b.act_hist)
    cfg = {n: LayerConfig("drum4") for n in ctx.space.searchable}
    assert np.array_equal(ctx.evaluator.correct(cfg, 0, 40), ctx2.evaluator.correct(cfg, 0, 40))


@pytest.mark.parametrize("damage", ["flip", "garbage"])
def test_corrupt_cache_is_ignored_with_one_line_and_rewritten(first, tmp_path, damage):
    d, ctx, _ = first
    run = tmp_path / "run"
    run.mkdir()
    raw = (d / "run" / context_cache.FILE).read_bytes()
    bad = {"flip": raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:], "garbage": b"not a cache"}[damage]
    (run / context_cache.FILE).write_bytes(bad)
    seen = []
    ctx2 = build_context(str(d / "b.toml"), run_dir=run, progress=lambda *a: seen.append(a))
    notes = [a[3] for a in seen if a[0] == "context cache"]
    assert len(notes) == 1 and "\n" not in notes[0] and "recomputed" in notes[0] and str(run) in notes[0]
    assert ctx2.baseline == ctx.baseline
    assert isinstance(context_cache.load(run, _key(d))[0], context_cache.ContextCache)  # rewritten whole


def _key(d):
    from dse.model.onnx_import import resolve_model
    from dse.search.context import cache_extra

    b = load_budget(d / "b.toml")
    return context_cache.cache_key(b, resolve_model(b.model.path), cache_extra(True))


def test_key_follows_model_data_and_preprocessing(tmp_path):
    import shutil

    from dse.model.onnx_import import resolve_model

    model = tmp_path / "m.onnx"
    shutil.copy(resolve_model("lenet5"), model)
    data = tmp_path / "s.npz"
    np.savez(data, x=np.zeros((4, 28, 28), np.uint8), y=np.zeros(4, np.int64))

    def key(extra_budget=""):
        p = tmp_path / "b.toml"
        p.write_text(f"[model]\npath = '{model}'\n{extra_budget}[data]\nsearch = '{data}'\n")
        return context_cache.cache_key(load_budget(p), model, {})

    k0 = key()
    assert key() == k0
    assert key("preprocess = { mean = 0.5, std = 0.25 }\n") != k0
    np.savez(data, x=np.ones((4, 28, 28), np.uint8), y=np.zeros(4, np.int64))
    os.utime(data, ns=(1, 1))
    k1 = key()
    assert k1 != k0
    model.write_bytes(model.read_bytes() + b"\0")
    assert key() != k1


def test_stale_cache_is_recomputed(first, tmp_path):
    d, ctx, _ = first
    run = tmp_path / "run"
    context_cache.save(run, context_cache.ContextCache("another key", ctx.evaluator.emulator.qmodel.state(), {}, None))
    seen = []
    ctx2 = build_context(str(d / "b.toml"), run_dir=run, progress=lambda *a: seen.append(a))
    assert "another model, data or space" in ctx2.info["setup"]["context_cache"]
    assert ctx2.baseline == ctx.baseline


class _Payload:
    """Unpickling this would create the file named by ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_cache_with_a_valid_checksum_is_never_unpickled(first, tmp_path):
    """A run directory may come from elsewhere: a cache file whose payload is a pickle (checksum correct) is refused
    as unreadable and recomputed; nothing in it runs."""
    import hashlib
    import pickle

    d, ctx, _ = first
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    payload = pickle.dumps(_Payload(marker))
    (run / context_cache.FILE).write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    cache, why = context_cache.load(run, _key(d))
    assert cache is None and "unreadable" in why and not marker.exists()
    ctx2 = build_context(str(d / "b.toml"), run_dir=run, progress=lambda *a: None)
    assert ctx2.baseline == ctx.baseline and not marker.exists()


def _folder_budget(tmp_path, search: str = ""):
    """A budget whose search split is an image folder of 120 bundled 28x28 images (40 search, 30 confirmation), with
    ``search`` added to its [search] table."""
    from PIL import Image

    from dse.data import bundled_split

    x, y = bundled_split("search")
    for i, (a, k) in enumerate(zip(x[:120], y[:120])):
        (tmp_path / "imgs" / f"class{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(tmp_path / "imgs" / f"class{k}" / f"{i:03d}.png")
    budget = BUDGET.replace("[search]\n", "[search]\n" + search)
    (tmp_path / "b.toml").write_text(budget.replace("[data]\n", f"[data]\nsearch = '{tmp_path / 'imgs'}'\n"
                                                    "confirm = 30\n"))
    return tmp_path / "b.toml"


def test_search_images_of_an_image_folder_are_decoded_once(tmp_path, monkeypatch):
    """A search on an image folder: the search and confirmation images are read into memory in the set-up (a stage
    of its own), so trials decode no file again; the hold-out images, read only by hold-out checks, stay on disk."""
    import dse.data as data

    seen = []
    ctx = build_context(str(_folder_budget(tmp_path)), progress=lambda *a: seen.append(a))
    assert ("decoding the search images", 40, 40) in [a[:3] for a in seen]
    assert ("decoding the confirmation images", 30, 30) in [a[:3] for a in seen]
    assert not ctx.evaluator.data.source.decodes and not ctx.confirm.data.source.decodes
    assert not ctx.holdout.data.source.decodes  # the bundled hold-out split: arrays
    calls = []
    monkeypatch.setattr(data._Folder, "_decode", lambda self, p: calls.append(p))
    ctx.evaluator.correct({}, 0, 40)
    ctx.confirm.correct({}, 0, 30)
    assert calls == []


@pytest.mark.parametrize("images, search_held, confirm_held", [(0, False, False), (40, True, False),
                                                               (70, True, True)])
def test_image_cache_mib_bounds_the_decoded_images(tmp_path, images, search_held, confirm_held):
    """[search] image_cache_mib bounds the decoded images per process: room for 0, 40 (the search images only) or 70
    images of 28x28 bytes; what does not fit is decoded on every read, with the same results."""
    mib = images * 28 * 28 / (1 << 20)
    ctx = build_context(str(_folder_budget(tmp_path, f"image_cache_mib = {mib!r}\n")), progress=lambda *a: None)
    assert ctx.evaluator.data.source.decodes is not search_held
    assert ctx.confirm.data.source.decodes is not confirm_held
    full = build_context(str(_folder_budget(tmp_path / "full")), progress=lambda *a: None)
    assert not full.evaluator.data.source.decodes
    for a, b in ((ctx.evaluator, full.evaluator), (ctx.confirm, full.confirm)):
        assert np.array_equal(a.correct({}, 0, len(a.data)), b.correct({}, 0, len(b.data)))
