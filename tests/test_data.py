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


# ----------------------------------------------------------------------------------------------------- image folders
def _png(path, arr):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _folder(root, n_per_class=3, classes=("cat", "ant", "bee"), hw=(8, 8), seed=0):
    rng = np.random.default_rng(seed)
    arrs = {}
    for c in classes:
        for i in range(n_per_class):
            a = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
            _png(root / c / f"{i:03d}.png", a)
            arrs[(c, i)] = a
    return arrs


PRE = Preprocess(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), source="test")


def _ref(a: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Plain numpy: HWC uint8 -> CHW float32 (a * scale - mean) / std."""
    x = a.transpose(2, 0, 1).astype(np.float32) * np.float32(pre.scale)
    return (x - np.float32(pre.mean).reshape(-1, 1, 1)) / np.float32(pre.std).reshape(-1, 1, 1)


def test_image_folder_matches_numpy_reference(tmp_path):
    arrs = _folder(tmp_path / "imgs")
    d = open_dataset(str(tmp_path / "imgs"), PRE, (3, 8, 8))
    classes = sorted({c for c, _ in arrs})  # ant, bee, cat
    assert len(d) == 9 and d.n_classes == 3 and d.image_shape == (3, 8, 8)
    assert d.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    exp = np.stack([_ref(arrs[(c, i)], PRE) for c in classes for i in range(3)])
    assert np.allclose(d.images(), exp, rtol=0, atol=1e-6)
    got = np.concatenate([x for x, _ in d.batches(4)])
    assert np.array_equal(got, d.images())
    # a labels file sets the class order
    (tmp_path / "labels.txt").write_text("cat\nbee\nant\n")
    d2 = open_dataset(f"{tmp_path / 'imgs'},{tmp_path / 'labels.txt'}", PRE, (3, 8, 8))
    assert {(f.parent.name, int(k)) for f, k in zip(d2.source.files, d2.y)} == {("cat", 0), ("bee", 1), ("ant", 2)}


def test_image_folder_gray_resize_and_center_crop(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)  # H 12, W 20
    _png(tmp_path / "f" / "a" / "x.png", a)
    Image.fromarray(a).save(tmp_path / "f" / "a" / "y.jpg", quality=95)
    pre = Preprocess(mean=(0.1,), std=(0.9,), size=9, source="test")
    d = open_dataset(str(tmp_path / "f"), pre, (1, 8, 6))
    # reference: grayscale, shorter side 12 -> 9 (width 20 -> 15), center crop 8 x 6
    for k, name in enumerate(("x.png", "y.jpg")):
        with Image.open(tmp_path / "f" / "a" / name) as im:
            g = np.asarray(im.convert("L").resize((15, 9), Image.BILINEAR))
        top, left = int(round((9 - 8) / 2)), int(round((15 - 6) / 2))
        exp = (g[top:top + 8, left:left + 6].astype(np.float32) * np.float32(1 / 255) - np.float32(0.1)) \
            / np.float32(0.9)
        assert np.allclose(d.images(k, k + 1)[0, 0], exp, rtol=0, atol=1e-6)
    # default size: the larger model input side (8): 12x20 -> 8x13, crop 8x6
    d = open_dataset(str(tmp_path / "f"), Preprocess(), (1, 8, 6))
    assert d.images().shape == (2, 1, 8, 6)


def test_image_folder_is_read_lazily(tmp_path, monkeypatch):
    from PIL import Image
    for i in range(120):
        _png(tmp_path / "f" / f"c{i % 2}" / f"{i:04d}.png", np.full((4, 4, 3), i, np.uint8))
    opened = []
    real = Image.open
    monkeypatch.setattr(Image, "open", lambda p, *a, **k: (opened.append(p), real(p, *a, **k))[1])
    d = open_dataset(str(tmp_path / "f"), Preprocess(), (3, 4, 4))
    assert len(d) == 120 and opened == []          # listing and labels: nothing decoded
    it = d.batches(16)
    x, y = next(it)
    assert x.shape == (16, 3, 4, 4) and len(opened) == 16  # one batch decoded, not the folder
    sub = d.subset([100, 3]).head(1)
    assert len(opened) == 16
    assert sub.images().shape == (1, 3, 4, 4) and len(opened) == 17
    assert opened[-1] == d.source.files[100]


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DseError, match=r"empty: no images found .*<class>/\*\.png"):
        open_dataset(str(tmp_path / "empty"), Preprocess(), (3, 4, 4))
    _folder(tmp_path / "f", n_per_class=1, classes=("a", "b"))
    (tmp_path / "f" / "b" / "bad.png").write_bytes(b"not a png")
    d = open_dataset(str(tmp_path / "f"), Preprocess(), (3, 8, 8))
    with pytest.raises(DseError, match=r"bad.png: cannot read image .*replace or remove"):
        d.images()
    (tmp_path / "l.txt").write_text("a\n")
    with pytest.raises(DseError, match="class folder 'b' is not listed in"):
        open_dataset(f"{tmp_path / 'f'},{tmp_path / 'l.txt'}", Preprocess(), (3, 8, 8))
    d = open_dataset(str(tmp_path / "f"), Preprocess(), (3, 8, 8))
    with pytest.raises(DseError, match="w: the data set has 2 classes but model m has 10"):
        d.check_fits((3, 8, 8), 10, "w", "m")
    with pytest.raises(DseError, match="4-channel images"):
        open_dataset(str(tmp_path / "f"), Preprocess(), (4, 8, 8))


# ----------------------------------------------------------------------------------------------------- CIFAR
def _cifar(path, n, label_bytes, seed=0):
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10 if label_bytes == 1 else 100, (n, label_bytes), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.concatenate([labels, px], axis=1).tobytes())
    return px.reshape(n, 3, 32, 32), labels[:, -1].astype(np.int64)


@pytest.mark.parametrize("label_bytes, files", [(1, ("data_batch_1.bin", "test_batch.bin")),
                                                 (2, ("train.bin", "test.bin"))])
def test_cifar_binary_matches_numpy_reference(tmp_path, label_bytes, files):
    root = tmp_path / ("cifar-10-batches-bin" if label_bytes == 1 else "cifar-100-binary")
    _cifar(root / files[0], 5, label_bytes, seed=1)
    x, y = _cifar(root / files[1], 7, label_bytes, seed=2)
    pre = Preprocess(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), source="t")
    for spec in (root, root / files[1]):  # the directory means its test file
        d = open_dataset(str(spec), pre, (3, 32, 32))
        assert d.y.tolist() == y.tolist() and d.n_classes == (10 if label_bytes == 1 else 100)
        exp = (x.astype(np.float32) * np.float32(1 / 255) - np.float32(pre.mean).reshape(1, 3, 1, 1)) \
            / np.float32(pre.std).reshape(1, 3, 1, 1)
        assert np.array_equal(d.images(), exp)
    assert len(open_dataset(str(root / files[0]), pre)) == 5
    from dse.data import specs_overlap
    assert specs_overlap(str(root), str(root / files[1])) and not specs_overlap(str(root), str(root / files[0]))


def test_cifar_errors(tmp_path):
    p = tmp_path / "test_batch.bin"
    p.write_bytes(bytes(3073 * 2 + 5))
    with pytest.raises(DseError, match=r"test_batch.bin: 6151 bytes is not a whole number of CIFAR-10 records"):
        open_dataset(str(p), Preprocess())
    q = tmp_path / "odd.bin"
    q.write_bytes(bytes(100))
    with pytest.raises(DseError, match="odd.bin: 100 bytes is not a whole number of CIFAR-10 .* or CIFAR-100"):
        open_dataset(str(q), Preprocess())
    _cifar(tmp_path / "c100.bin", 3, 2)  # not a standard name: told apart by its size
    assert open_dataset(str(tmp_path / "c100.bin"), Preprocess()).n_classes == 100
    r = tmp_path / "data_batch_1.bin"
    r.write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(DseError, match="label 12 in a CIFAR-10 file"):
        open_dataset(str(r), Preprocess())


def _mapped(a) -> bool:
    import mmap

    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None)
    return a is not None


@pytest.mark.parametrize("dtype,order", [(np.uint8, "C"), (np.float32, "F"), (np.float64, "C")])
def test_npz_uncompressed_images_are_memory_mapped(tmp_path, dtype, order):
    """numpy.savez keeps members uncompressed: the images are memory-mapped (a data set larger than memory, shared
    between a search's processes), with the same values as numpy.savez_compressed's copy, which is loaded."""
    x = np.asarray(np.random.default_rng(3).integers(0, 256, (40, 3, 6, 5)), dtype=dtype, order=order)
    y = np.arange(40) % 4
    np.savez(tmp_path / "s.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    s, c = (load_dataset(str(tmp_path / f), Preprocess()) for f in ("s.npz", "c.npz"))
    assert _mapped(s.source.x) and not _mapped(c.source.x)
    assert np.array_equal(s.images(3, 29), c.images(3, 29)) and np.array_equal(s.y, c.y)
    assert np.array_equal(s.subset([7, 2, 39]).images(), c.subset([7, 2, 39]).images())
    # non-finite values are still found, in whichever check block they are
    bad = x.astype(np.float32)
    bad[37, 1, 2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=y)
    with pytest.raises(DseError, match="nan.npz: images contain NaN"):
        import dse.data as data

        data._Arrays.CHECK_IMAGES, before = 16, data._Arrays.CHECK_IMAGES
        try:
            load_dataset(str(tmp_path / "nan.npz"), Preprocess())
        finally:
            data._Arrays.CHECK_IMAGES = before


def test_large_npz_is_read_batch_by_batch(tmp_path):
    """A 192 MiB uncompressed .npz: opening it and reading a 64-image batch adds far less than the file to the
    process's peak memory (a fresh process, ru_maxrss)."""
    import subprocess
    import sys

    n = 192 * 4
    np.savez(tmp_path / "big.npz", x=np.zeros((n, 1, 512, 512), np.uint8), y=np.zeros(n, np.int64))
    code = ("import resource, numpy as np; from dse.data import load_dataset, Preprocess;"
            "r = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
            f"a = r(); d = load_dataset({str(tmp_path / 'big.npz')!r}, Preprocess()); x = d.images(0, 64);"
            "print(r() - a)")
    grown_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grown_kib < 160 * 1024, grown_kib  # the batch: 16 MiB of bytes, 64 MiB as float32; loaded: 290 MiB


def _gray_pngs(root, n, shape=(9, 11)):
    from PIL import Image

    rng = np.random.default_rng(5)
    for i in range(n):
        (root / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / f"c{i % 3}" / f"{i:03d}.png")


def test_materialized_folder_decodes_once(tmp_path, monkeypatch):
    """An image folder's subset read into memory: every file decoded once, then reads decode nothing; the same
    images, labels and name; more bytes than allowed, or a source that does not decode (arrays), stays as it is."""
    import dse.data as data

    _gray_pngs(tmp_path / "imgs", 40)
    pre = Preprocess(mean=(0.3,), std=(0.2,))
    ds = data.open_dataset(str(tmp_path / "imgs"), pre, (1, 9, 11)).subset(np.arange(3, 37)[::-1])
    ref = ds.images()
    calls, decode = [], data._Folder._decode
    monkeypatch.setattr(data._Folder, "_decode", lambda self, p: calls.append(p) or decode(self, p))
    monkeypatch.setattr(data.Dataset, "MATERIALIZE_BLOCK", 8)
    seen = []
    m = ds.materialized(34 * 99, lambda done, total: seen.append((done, total)))
    assert len(calls) == 34 and len(set(calls)) == 34 and seen == [(8, 34), (16, 34), (24, 34), (32, 34), (34, 34)]
    assert np.array_equal(m.images(), ref) and np.array_equal(m.y, ds.y) and m.name == ds.name
    assert np.array_equal(m.subset([5, 0]).images(), ref[[5, 0]])
    list(m.batches(7))
    assert len(calls) == 34
    assert ds.materialized(34 * 99 - 1) is ds  # one byte short
    arrays = load_dataset(str(_npz(tmp_path)), Preprocess())
    assert arrays.materialized(1 << 30) is arrays


def _npz(tmp_path):
    p = tmp_path / "a.npz"
    np.savez(p, x=np.zeros((4, 5, 5), np.uint8), y=np.zeros(4, np.int64))
    return p


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_folder_reads_on_threads_keep_order_and_first_error(tmp_path, threads):
    """An image folder's batch decoded on the kernels' threads: the images in ``idx`` order, and of two unreadable
    files the first in that order is the one named."""
    from dse import kernels

    import dse.data as data

    _gray_pngs(tmp_path / "imgs", 30)
    ds = data.open_dataset(str(tmp_path / "imgs"), Preprocess(), (1, 9, 11))
    with kernels.using_threads(1):
        ref = ds.images()
    order = np.random.default_rng(threads).permutation(30)
    with kernels.using_threads(threads):
        assert np.array_equal(ds.subset(order).images(), ref[order])
        files = ds.source.files
        bad = [files[int(order[4])], files[int(order[17])]]
        for f in bad:
            f.write_bytes(b"\x89PNG junk")
        with pytest.raises(DseError, match=f"{bad[0].name}: cannot read image"):
            ds.subset(order).images()
