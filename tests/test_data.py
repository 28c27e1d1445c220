"""dse.data: bundled splits, .npz, IDX (.gz/raw), preprocessing, one-line errors."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from dse.data import (BUNDLED_FILE, BUNDLED_PREPROCESS, SPLIT_SIZES, Preprocess, bundled_split, load_dataset,
                      open_dataset, read_idx)
from dse.errors import DseError

SRC = Path("/usr/share/datasets/fashion-mnist")


def _idx_bytes(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape) + a.tobytes()


def test_bundled_splits_disjoint_and_complete():
    with np.load(BUNDLED_FILE, allow_pickle=False) as z:
        assert z["x"].dtype == np.uint8 and z["x"].shape == (10000, 28, 28)
        idx = {s: z[f"idx_{s}"] for s in SPLIT_SIZES}
    for s, n in SPLIT_SIZES.items():
        assert len(idx[s]) == n
    allidx = np.concatenate(list(idx.values()))
    assert len(np.unique(allidx)) == 10000 and allidx.min() == 0 and allidx.max() == 9999
    if (SRC / "t10k-images-idx3-ubyte.gz").is_file():  # the bundled images are the Fashion-MNIST TEST set
        x, y = bundled_split("all")
        assert np.array_equal(x, read_idx(SRC / "t10k-images-idx3-ubyte.gz"))
        assert np.array_equal(y, read_idx(SRC / "t10k-labels-idx1-ubyte.gz"))
    xc, yc = bundled_split("calib")
    xa, ya = bundled_split("all")
    assert np.array_equal(xc, xa[idx["calib"]]) and np.array_equal(yc, ya[idx["calib"]])
    assert len(np.unique(yc)) == 10


def test_bundled_default_preprocessing():
    d = load_dataset("fashion-mnist:search")
    raw, y = bundled_split("search")
    x = d.images()
    assert x.dtype == np.float32 and x.shape == (5000, 1, 28, 28) and d.y.dtype == np.int64
    exp = (raw.astype(np.float32) * np.float32(1 / 255) - np.float32(0.286)) / np.float32(0.353)
    assert np.array_equal(x[:, 0], exp) and np.array_equal(d.y, y)
    assert BUNDLED_PREPROCESS.mean == (0.2860,) and d.preprocess.source == "bundled data set default"
    # batches stream the same values in order
    got = np.concatenate([b for b, _ in d.batches(700)])
    assert np.array_equal(got, x) and np.array_equal(np.concatenate([l for _, l in d.batches(700)]), y)


def test_bad_split_name():
    with pytest.raises(DseError, match="unknown bundled split 'fashion-mnist:train'"):
        load_dataset("fashion-mnist:train")


def test_npz_forms_and_preprocessing(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (7, 3, 5, 6), dtype=np.uint8)
    y = np.arange(7) % 3
    p = tmp_path / "d.npz"
    np.savez(p, x=x, y=y)
    pre = Preprocess.from_mapping({"scale": 0.5, "mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 0.5]}, "t", "t")
    d = load_dataset(str(p), pre)
    exp = (x.astype(np.float32) * 0.5 - np.array([1, 2, 3], np.float32)[None, :, None, None]) \
        / np.array([2, 4, 0.5], np.float32)[None, :, None, None]
    assert np.allclose(d.images(), exp, rtol=0, atol=1e-6) and d.y.tolist() == y.tolist() and d.name == "d.npz"
    # 3-D float images with scale 1, mean 0, std 1: the values themselves
    xf = np.random.default_rng(2).standard_normal((4, 5, 5)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=xf, y=np.zeros(4, np.int32))
    d = load_dataset(str(tmp_path / "f.npz"), Preprocess(scale=1.0))
    assert d.image_shape == (1, 5, 5) and np.array_equal(d.images()[:, 0], xf)
    # uint8 with the default scale 1/255
    d = load_dataset(str(p), Preprocess())
    assert np.allclose(d.images(), x / np.float32(255), atol=1e-7)
    h = d.head(3)
    assert len(h) == 3 and np.array_equal(h.images(), d.images()[:3])
    # a data set that is not bundled needs its preprocessing stated
    with pytest.raises(DseError, match="give the preprocessing"):
        load_dataset(str(p))


def test_npz_errors(tmp_path):
    p = tmp_path / "nokey.npz"
    np.savez(p, images=np.zeros((2, 4, 4), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DseError, match=r"nokey.npz: missing key 'x'"):
        load_dataset(str(p), Preprocess())
    p = tmp_path / "count.npz"
    np.savez(p, x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DseError, match=r"count.npz: key 'y': 2 labels for 3 images"):
        load_dataset(str(p), Preprocess())
    p = tmp_path / "shape.npz"
    np.savez(p, x=np.zeros((3, 4), np.uint8), y=np.zeros(3, np.int64))
    with pytest.raises(DseError, match=r"shape.npz: key 'x' has shape \[3, 4\]"):
        load_dataset(str(p), Preprocess())
    p = tmp_path / "pickle.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, np.int64))
    with pytest.raises(DseError, match="pickle.npz"):
        load_dataset(str(p), Preprocess())
    with pytest.raises(DseError, match="missing.npz: data file not found"):
        load_dataset(str(tmp_path / "missing.npz"), Preprocess())
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DseError, match="junk.npz: cannot read .npz"):
        load_dataset(str(tmp_path / "junk.npz"), Preprocess())


def test_preprocessing_errors(tmp_path):
    p = tmp_path / "c3.npz"
    np.savez(p, x=np.zeros((2, 3, 4, 4), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DseError, match="'mean' has 2 values for 3 channel"):
        load_dataset(str(p), Preprocess(mean=(0.0, 1.0)))
    with pytest.raises(DseError, match="w: unknown preprocessing key 'sd'"):
        Preprocess.from_mapping({"sd": 1}, "s", "w")
    with pytest.raises(DseError, match="'std' contains 0"):
        Preprocess.from_mapping({"std": 0}, "s", "w")
    with pytest.raises(DseError, match="'size' = 0 must be a positive integer"):
        Preprocess.from_mapping({"size": 0}, "s", "w")
    with pytest.raises(DseError, match="'mean' = 'a' must be a number"):
        Preprocess.from_mapping({"mean": "a"}, "s", "w")


def test_preprocess_round_trips_through_dict_and_meta():
    p = Preprocess.from_mapping({"scale": 0.5, "mean": [1, 2, 3], "std": 2, "size": 36}, "budget [model] preprocess",
                                "w")
    assert Preprocess.from_dict(p.to_dict()) == p
    back = Preprocess.from_meta({"model": "m", **p.to_meta()}, "c.toml")
    assert (back.mean, back.std, back.scale, back.size) == (p.mean, p.std, p.scale, p.size)
    assert back.source == "c.toml [meta] preprocess (from budget [model] preprocess)"
    assert Preprocess.from_meta({"model": "m"}, "c.toml") is None
    assert "mean [1, 2, 3], std [2], resize 36 (budget [model] preprocess)" in p.describe()


@pytest.mark.parametrize("gz", [True, False])
def test_idx_with_labels_beside(tmp_path, gz):
    x = np.random.default_rng(3).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    y = np.array([0, 9, 3, 3, 1], np.uint8)
    ext = ".gz" if gz else ""
    op = gzip.open if gz else open
    with op(tmp_path / f"t-images-idx3-ubyte{ext}", "wb") as f:
        f.write(_idx_bytes(x))
    with op(tmp_path / f"t-labels-idx1-ubyte{ext}", "wb") as f:
        f.write(_idx_bytes(y))
    d = load_dataset(str(tmp_path / f"t-images-idx3-ubyte{ext}"), Preprocess(scale=1.0))
    assert np.array_equal(d.images()[:, 0], x.astype(np.float32)) and d.y.tolist() == y.tolist()
    d2 = load_dataset(f"{tmp_path / f't-images-idx3-ubyte{ext}'},{tmp_path / f't-labels-idx1-ubyte{ext}'}",
                      Preprocess(scale=1.0))
    assert np.array_equal(d2.images(), d.images())


def test_idx_errors(tmp_path):
    (tmp_path / "a-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DseError, match="a-images-idx3-ubyte: not an IDX file"):
        load_dataset(str(tmp_path / "a-images-idx3-ubyte"), Preprocess())
    (tmp_path / "b-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 2, 2)))[:-1])
    with pytest.raises(DseError, match="truncated"):
        load_dataset(str(tmp_path / "b-images-idx3-ubyte"), Preprocess())
    (tmp_path / "c-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 2, 2))))
    with pytest.raises(DseError, match="labels file .*c-labels-idx1-ubyte not found"):
        load_dataset(str(tmp_path / "c-images-idx3-ubyte"), Preprocess())
    (tmp_path / "c-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4)))
    with pytest.raises(DseError, match="4 labels for 3 images"):
        load_dataset(str(tmp_path / "c-images-idx3-ubyte"), Preprocess())
