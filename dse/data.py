"""Data sets: bundled Fashion-MNIST splits, .npz files (no pickle), IDX files (.gz or raw), preprocessing.

``load_dataset(spec, preprocess=None) -> Dataset(x float32 NCHW preprocessed, y int64, name)``. ``spec`` is
``fashion-mnist:calib|search|holdout|all`` (bundled TEST set, 1000/5000/4000 disjoint splits), a ``.npz`` path (keys
``x`` [N,H,W] or [N,C,H,W] uint8/float and ``y`` [N]), an IDX images path (labels found beside it by the standard
naming, ``*-images-idx3-ubyte[.gz]`` -> ``*-labels-idx1-ubyte[.gz]``), or ``"images,labels"``.

Preprocessing ``{"scale": s, "mean": m, "std": d}`` (mean/std scalars or per-channel lists):
``x = (raw * scale - mean[c]) / std[c]`` in float32. Default (``preprocess=None``): for the bundled splits the
bundled models' preprocessing :data:`FASHION_MNIST_PREPROCESS`; otherwise scale 1/255 for uint8 data (1 for float),
mean 0, std 1. The CLI passes the model's ``dse.preprocess`` metadata when the model has it.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dse.errors import DseError

DATA_DIR = Path(__file__).resolve().parent / "data"
BUNDLED_FILE = DATA_DIR / "fashion_mnist_test.npz"
BUNDLED_NAME = "fashion-mnist"
SPLITS = ("calib", "search", "holdout", "all")
SPLIT_SIZES = {"calib": 1000, "search": 5000, "holdout": 4000}
SPLIT_SEED = 20240229
# What scripts/train_models.py trains the bundled models with (also in their 'dse.preprocess' metadata).
FASHION_MNIST_PREPROCESS = {"scale": 1.0 / 255.0, "mean": [0.2860], "std": [0.3530]}


@dataclass
class Dataset:
    x: np.ndarray  # float32 [N, C, H, W], preprocessed
    y: np.ndarray  # int64 [N]
    name: str

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int | None) -> "Dataset":
        """The first ``n`` samples (all when n is None)."""
        if n is None:
            return self
        if n < 1:
            raise DseError(f"--images {n}: must be a positive number of images")
        return Dataset(self.x[:n], self.y[:n], f"{self.name}[:{n}]" if n < len(self.y) else self.name)

    def check_fits(self, input_shape, n_classes: int | None, where: str, model) -> None:
        """DseError (prefixed ``where``) unless the images have the model's input shape and, when ``n_classes`` is
        given, every label is a class index of the model."""
        if self.x.shape[1:] != tuple(input_shape):
            raise DseError(f"{where}: images have shape {list(self.x.shape[1:])} but model {model} expects "
                           f"{list(input_shape)}; give a data set that matches the model")
        if n_classes is not None and len(self.y) and int(self.y.max()) >= n_classes:
            raise DseError(f"{where}: label {int(self.y.max())} but model {model} has {n_classes} classes; "
                           f"labels must be 0..{n_classes - 1}")


def specs_overlap(a: str, b: str) -> bool:
    """Whether two data set specs may share images: the same spec, or a bundled split and the bundled ':all'."""
    a, b = str(a), str(b)
    if a == b:
        return True
    pre = BUNDLED_NAME + ":"
    return a.startswith(pre) and b.startswith(pre) and "all" in (a[len(pre):], b[len(pre):])


# ----------------------------------------------------------------------------------------------------- IDX
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in .gz or the content is gzip)."""
    path = Path(path)
    if not path.is_file():
        raise DseError(f"{path}: IDX file not found; give an existing IDX file (or 'images,labels' paths)")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DseError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] < 1:
        raise DseError(f"{path}: not an IDX file (bad magic number); give *-images-idx3-ubyte[.gz] files")
    ndim = raw[3]
    dt = np.dtype(_IDX_TYPES[raw[2]])
    hdr = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != hdr + int(np.prod(dims)) * dt.itemsize:
        raise DseError(f"{path}: IDX header says shape {dims} but the file has {len(raw) - hdr} data bytes; the file "
                       "is truncated or corrupt")
    return np.frombuffer(raw, dtype=dt, offset=hdr).reshape(dims).astype(dt.newbyteorder("="))


def _labels_beside(images: Path) -> Path:
    name = images.name
    for a, b in (("images-idx3-ubyte", "labels-idx1-ubyte"), ("images.idx3-ubyte", "labels.idx1-ubyte"),
                 ("images", "labels")):
        if a in name:
            cand = images.with_name(name.replace(a, b))
            if cand.is_file():
                return cand
            raise DseError(f"{images}: labels file {cand} not found; give 'images,labels' explicitly")
    raise DseError(f"{images}: cannot find the labels file by name (expected '*-images-idx3-ubyte*'); "
                   "give 'images,labels' explicitly")


# ----------------------------------------------------------------------------------------------------- preprocessing
def preprocess_images(raw: np.ndarray, preprocess: dict | None, where: str) -> np.ndarray:
    """raw [N,H,W] or [N,C,H,W] -> float32 [N,C,H,W] ``(raw * scale - mean[c]) / std[c]``."""
    x = np.asarray(raw)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DseError(f"{where}: images have shape {list(raw.shape)}; expected [N, H, W] or [N, C, H, W]")
    p = dict(preprocess or {})
    unknown = sorted(set(p) - {"scale", "mean", "std"})
    if unknown:
        raise DseError(f"{where}: unknown preprocessing key(s) {unknown}; use scale, mean, std")
    C = x.shape[1]
    try:
        scale = float(p.get("scale", 1.0 / 255.0 if x.dtype == np.uint8 else 1.0))
        mean = np.asarray(p.get("mean", 0.0), dtype=np.float32).reshape(-1)
        std = np.asarray(p.get("std", 1.0), dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DseError(f"{where}: preprocessing {p} must have a number 'scale' and numbers or lists 'mean', 'std' "
                       f"({exc})") from None
    for k, v in (("mean", mean), ("std", std)):
        if v.size not in (1, C):
            raise DseError(f"{where}: preprocessing '{k}' has {v.size} values for {C} channel(s); give 1 or {C}")
    if np.any(std == 0):
        raise DseError(f"{where}: preprocessing 'std' contains 0")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DseError(f"{where}: images contain NaN or infinite values; give finite pixel values")
    sh = (1, -1, 1, 1)
    out = x.astype(np.float32) * np.float32(scale)
    return np.ascontiguousarray((out - mean.reshape(sh)) / std.reshape(sh), dtype=np.float32)


def _labels(y, n_images: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DseError(f"{where}: labels have shape {list(y.shape)} dtype {y.dtype}; expected integer [N]")
    if len(y) != n_images:
        raise DseError(f"{where}: {len(y)} labels for {n_images} images; the counts must match")
    if len(y) == 0:
        raise DseError(f"{where}: the data set holds no images; give at least one image")
    if y.min() < 0:
        raise DseError(f"{where}: label {int(y.min())} is negative; labels must be class indices 0..C-1")
    return y.astype(np.int64)


# ----------------------------------------------------------------------------------------------------- bundled
def bundled_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images [n, 28, 28] and int64 labels of a bundled Fashion-MNIST split (calib/search/holdout/all)."""
    if split not in SPLITS:
        raise DseError(f"unknown bundled split '{BUNDLED_NAME}:{split}'; use one of "
                       + ", ".join(f"{BUNDLED_NAME}:{s}" for s in SPLITS))
    if not BUNDLED_FILE.is_file():
        raise DseError(f"{BUNDLED_FILE}: bundled data set missing; reinstall dse or run scripts/train_models.py "
                       "--data-only")
    with np.load(BUNDLED_FILE, allow_pickle=False) as z:
        x, y = z["x"], z["y"].astype(np.int64)
        if split == "all":
            return x, y
        idx = z[f"idx_{split}"]
    return x[idx], y[idx]


def build_bundled(src_dir="/usr/share/datasets/fashion-mnist", out=BUNDLED_FILE, seed: int = SPLIT_SEED) -> Path:
    """(dev) Write the bundled .npz from the Fashion-MNIST TEST set: uint8 x, y and disjoint split indices."""
    src = Path(src_dir)
    x = read_idx(src / "t10k-images-idx3-ubyte.gz")
    y = read_idx(src / "t10k-labels-idx1-ubyte.gz")
    perm = np.random.default_rng(seed).permutation(len(y))
    a, b = SPLIT_SIZES["calib"], SPLIT_SIZES["calib"] + SPLIT_SIZES["search"]
    np.savez_compressed(out, x=x, y=y, idx_calib=np.sort(perm[:a]), idx_search=np.sort(perm[a:b]),
                        idx_holdout=np.sort(perm[b:]))
    return Path(out)


# ----------------------------------------------------------------------------------------------------- public
def load_raw(spec: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(raw images, int64 labels, name) for a spec (see module docstring), before preprocessing."""
    spec = str(spec)
    if spec.startswith(BUNDLED_NAME + ":"):
        split = spec.split(":", 1)[1]
        x, y = bundled_split(split)
        return x, y, spec
    if "," in spec:
        img, lab = (Path(s.strip()) for s in spec.split(",", 1))
        x, y = read_idx(img), read_idx(lab)
        return x, _labels(y, len(x), str(lab)), img.name
    p = Path(spec)
    if not p.exists():
        raise DseError(f"{spec}: data file not found; give {BUNDLED_NAME}:calib|search|holdout|all, a .npz file "
                       "(keys x, y) or an IDX images file")
    if p.suffix == ".npz":
        with open(p, "rb") as f:
            if f.read(2) != b"PK":
                raise DseError(f"{p}: cannot read .npz (not a zip archive); save it with "
                               "numpy.savez(path, x=images, y=labels)")
        try:
            z = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - corrupt archive or pickled content
            raise DseError(f"{p}: cannot read .npz ({type(exc).__name__}: {exc}); save it with numpy.savez") from None
        with z:
            for k in ("x", "y"):
                if k not in z.files:
                    raise DseError(f"{p}: missing key '{k}' (found {z.files}); save images as 'x' and labels as 'y'")
            try:
                x, y = z["x"], z["y"]
            except ValueError as exc:
                raise DseError(f"{p}: key 'x' or 'y' holds pickled objects ({exc}); save plain numeric arrays") \
                    from None
        if x.dtype.kind not in "uif" or x.ndim not in (3, 4):
            raise DseError(f"{p}: key 'x' has shape {list(x.shape)} dtype {x.dtype}; expected uint8 or float "
                           "[N, H, W] or [N, C, H, W]")
        return x, _labels(y, len(x), f"{p}: key 'y'"), p.name
    x = read_idx(p)
    lab = _labels_beside(p)
    return x, _labels(read_idx(lab), len(x), str(lab)), p.name


def load_dataset(spec: str, preprocess: dict | None = None) -> Dataset:
    """Load a data set spec and preprocess it to float32 NCHW (see module docstring)."""
    x, y, name = load_raw(spec)
    if preprocess is None and str(spec).startswith(BUNDLED_NAME + ":"):
        preprocess = FASHION_MNIST_PREPROCESS
    return Dataset(preprocess_images(x, preprocess, name), y, name)
