"""Data sets: lazily read, preprocessed batch by batch.

``open_dataset(spec, preprocess, input_shape) -> Dataset``. A spec is one of

* ``fashion-mnist:calib|search|holdout|all``: the bundled Fashion-MNIST TEST set (1000/5000/4000 disjoint splits);
* a ``.npz`` file (keys ``x`` [N,H,W] or [N,C,H,W] uint8/float and ``y`` [N], no pickle);
* an IDX images file (labels beside it by the standard naming ``*-images-idx3-ubyte[.gz]`` ->
  ``*-labels-idx1-ubyte[.gz]``) or ``"images,labels"``;
* an image folder ``DIR/<class>/*.png|jpg|jpeg`` (class index = position of the class folder name in sorted order,
  or in ``"DIR,LABELS.txt"``, one class folder name per line), decoded with Pillow, converted to the model's channels
  (L or RGB), shorter side resized to ``Preprocess.size`` (default: the larger model input side) and center-cropped
  to the model's input size;
* CIFAR-10/100 binary batches (plain bytes, never the pickled python version): a ``.bin`` file (CIFAR-10 records of
  1 label byte + 3072 pixel bytes, CIFAR-100 records of coarse + fine label bytes + 3072; the fine label is used) or
  the ``cifar-10-batches-bin`` / ``cifar-100-binary`` directory, which means its test file.

Nothing large is held preprocessed: ``Dataset`` keeps the raw source (arrays for IDX, bundled and compressed .npz
files, memory maps for CIFAR and uncompressed .npz files (numpy.savez), file names for image folders) and its labels,
and ``batches(n)`` yields preprocessed float32 NCHW batches ``x = (raw * scale - mean[c]) / std[c]``
(:class:`Preprocess`). ``subset``/``head`` select images without reading.
"""
from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from dse.errors import DseError, SettingError

DATA_DIR = Path(__file__).resolve().parent / "data"
BUNDLED_FILE = DATA_DIR / "fashion_mnist_test.npz"
BUNDLED_NAME = "fashion-mnist"
SPLITS = ("calib", "search", "holdout", "all")
SPLIT_SIZES = {"calib": 1000, "search": 5000, "holdout": 4000}
SPLIT_SEED = 20240229
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_SCALE = 1.0 / 255.0

# Where a run's preprocessing came from (highest precedence first; see dse.session.resolve_preprocess; the CLI's
# flags, the highest, are named by dse.cli.SOURCE_FLAGS).
SOURCE_BUDGET = "budget [model] preprocess"
SOURCE_METADATA = "model metadata dse.preprocess"
SOURCE_BUNDLED = "bundled data set default"


@dataclass(frozen=True)
class Preprocess:
    """``x = (raw * scale - mean[c]) / std[c]``; image folders: shorter side resized to ``size`` (None = the larger
    model input side), then center-cropped to the model input. ``source`` says where the values came from."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = DEFAULT_SCALE
    size: int | None = None
    source: str = ""

    KEYS = ("scale", "mean", "std", "size")

    @classmethod
    def from_mapping(cls, d: dict, source: str, where: str) -> "Preprocess":
        """From ``{scale, mean, std, size}`` (all optional; mean/std a number or a list); DseError names ``where``."""
        unknown = sorted(set(d) - set(cls.KEYS))
        if unknown:
            raise DseError(f"{where}: unknown preprocessing key '{unknown[0]}'; use {', '.join(cls.KEYS)}")

        def nums(k, default):
            v = d.get(k, default)
            vals = list(v) if isinstance(v, (list, tuple)) else [v]
            if not vals or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in vals):
                raise DseError(f"{where}: preprocessing '{k}' = {v!r} must be a number or a list of numbers")
            return tuple(float(e) for e in vals)

        mean, std = nums("mean", 0.0), nums("std", 1.0)
        scale = nums("scale", DEFAULT_SCALE)
        if len(scale) != 1:
            raise DseError(f"{where}: preprocessing 'scale' must be one number")
        if 0.0 in std:
            raise DseError(f"{where}: preprocessing 'std' contains 0; give non-zero standard deviations")
        size = d.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise DseError(f"{where}: preprocessing 'size' = {size!r} must be a positive integer (pixels)")
        return cls(mean=mean, std=std, scale=scale[0], size=size, source=source)

    def to_dict(self) -> dict:
        return {"scale": self.scale, "mean": list(self.mean), "std": list(self.std), "size": self.size,
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        """Inverse of :meth:`to_dict`."""
        return cls.from_mapping({k: d[k] for k in cls.KEYS if d.get(k) is not None}, d["source"], "preprocessing")

    def describe(self) -> str:
        """One line for reports: values and source."""
        sc = "1/255" if self.scale == DEFAULT_SCALE else f"{self.scale:g}"
        size = f", resize {self.size}" if self.size else ""
        fmt = ", ".join(f"{v:g}" for v in self.mean), ", ".join(f"{v:g}" for v in self.std)
        return f"scale {sc}, mean [{fmt[0]}], std [{fmt[1]}]{size} ({self.source})"

    # Exported configurations carry the run's preprocessing as flat [meta] keys (scalars and lists).
    META_PREFIX = "preprocess_"

    def to_meta(self) -> dict:
        return {self.META_PREFIX + k: v for k, v in self.to_dict().items() if v is not None}

    @classmethod
    def from_meta(cls, meta: dict, where: str) -> "Preprocess | None":
        """The preprocessing recorded by :meth:`to_meta` in a configuration's [meta] table, or None."""
        vals = {k[len(cls.META_PREFIX):]: v for k, v in meta.items() if k.startswith(cls.META_PREFIX)}
        if not vals:
            return None
        origin = vals.pop("source", "")
        return cls.from_mapping(vals, f"{where} [meta] preprocess" + (f" (from {origin})" if origin else ""),
                                f"{where}: [meta] preprocess")

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """raw [N, C, H, W] -> float32 ``(raw * scale - mean[c]) / std[c]``."""
        sh = (1, -1, 1, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(sh)
        std = np.asarray(self.std, dtype=np.float32).reshape(sh)
        out = np.array(raw, dtype=np.float32, order="C")  # a fresh array: the same float32 steps done in place
        out *= np.float32(self.scale)
        out -= mean
        out /= std
        return out

    def check_channels(self, channels: int, where: str) -> None:
        for k, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, channels):
                raise DseError(f"{where}: preprocessing '{k}' has {len(v)} values for {channels} channel(s) "
                               f"({self.source}); give 1 or {channels}")


BUNDLED_PREPROCESS = Preprocess(mean=(0.2860,), std=(0.3530,), scale=DEFAULT_SCALE, source=SOURCE_BUNDLED)


# ----------------------------------------------------------------------------------------------------- sources
class _Arrays:
    """Raw images as an array (bundled split, .npz, IDX): uint8 or float [N, C, H, W], in memory or memory-mapped."""

    CHECK_IMAGES = 1024  # images checked for non-finite values at a time (a memory map is not read whole)
    decodes = False  # read() indexes an array: as cheap as a copy of the images

    def __init__(self, x: np.ndarray, where: str):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise DseError(f"{where}: images have shape {list(x.shape)}; expected [N, H, W] or [N, C, H, W]")
        if x.dtype.kind == "f" and not all(np.isfinite(x[i:i + self.CHECK_IMAGES]).all()
                                            for i in range(0, len(x), self.CHECK_IMAGES)):
            raise DseError(f"{where}: images contain NaN or infinite values; give finite pixel values")
        self.x = x
        self.shape = tuple(int(s) for s in x.shape[1:])

    def read(self, idx: np.ndarray) -> np.ndarray:
        return self.x[idx]


class _Cifar:
    """CIFAR-10/100 binary records, memory-mapped: ``label bytes + 3072 pixel bytes (R, G, B planes of 32x32)``."""

    PIXELS = 3 * 32 * 32
    decodes = False  # read() indexes a memory map

    def __init__(self, path: Path, label_bytes: int):
        rec = label_bytes + self.PIXELS
        size = path.stat().st_size
        if size == 0 or size % rec:
            kind = "CIFAR-10" if label_bytes == 1 else "CIFAR-100"
            raise DseError(f"{path}: {size} bytes is not a whole number of {kind} records ({rec} bytes each); the "
                           "file is truncated or not a CIFAR binary batch (use the binary version, not python)")
        self.mm = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, rec)
        self.label_bytes = label_bytes
        self.shape = (3, 32, 32)
        self.n_classes = 10 if label_bytes == 1 else 100

    def labels(self) -> np.ndarray:
        return np.asarray(self.mm[:, self.label_bytes - 1], dtype=np.int64)

    def read(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.mm[idx, self.label_bytes:]).reshape(-1, *self.shape)


class _Folder:
    """Image files decoded on demand: converted to ``shape[0]`` channels, shorter side resized to ``size``, center
    crop ``shape[1:]`` (the torchvision Resize + CenterCrop convention)."""

    MODES = {1: "L", 3: "RGB"}
    decodes = True  # read() decodes, converts, resizes and crops every file again (~2 ms per 224x224 JPEG)

    def __init__(self, files: list[Path], shape: tuple, size: int | None, where: str):
        C, H, W = (int(s) for s in shape)
        if C not in self.MODES:
            raise DseError(f"{where}: the model takes {C}-channel images; image folders give 1 (L) or 3 (RGB)")
        self.files, self.shape, self.size = files, (C, H, W), int(size or max(H, W))

    def _decode(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        C, H, W = self.shape
        try:
            with Image.open(path) as im:
                im = im.convert(self.MODES[C])
                w, h = im.size
                s = self.size / min(w, h)
                nw, nh = max(W, round(w * s)), max(H, round(h * s))
                if (nw, nh) != (w, h):
                    im = im.resize((nw, nh), Image.BILINEAR)
                top, left = int(round((nh - H) / 2.0)), int(round((nw - W) / 2.0))
                a = np.asarray(im.crop((left, top, left + W, top + H)), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DseError(f"{path}: cannot read image ({exc}); replace or remove the file") from None
        return a.reshape(H, W, C).transpose(2, 0, 1)

    def read(self, idx: np.ndarray) -> np.ndarray:
        """The images at ``idx``, decoded on the kernels' threads (Pillow decodes and resizes without the GIL); the
        first unreadable file in ``idx`` order raises, as a plain loop would."""
        from concurrent.futures import ThreadPoolExecutor

        from dse.kernels import get_threads

        out = np.empty((len(idx),) + self.shape, np.uint8)

        def one(i: int) -> None:
            out[i] = self._decode(self.files[int(idx[i])])
        n = min(len(idx), get_threads())
        if n <= 1:
            for i in range(len(idx)):
                one(i)
        else:
            with ThreadPoolExecutor(n) as pool:
                for _ in pool.map(one, range(len(idx))):
                    pass
        return out


@dataclass(frozen=True)
class Dataset:
    """Labels plus a lazily read, preprocessed view of a data source (see module docstring)."""

    name: str
    source: object = field(repr=False)   # _Arrays | _Cifar | _Folder: .shape, .decodes, .read(indices) -> raw [n, C, H, W]
    index: np.ndarray = field(repr=False)  # int64: source positions of this data set's images, in order
    y: np.ndarray = field(repr=False)      # int64 labels, aligned with index
    preprocess: Preprocess = Preprocess()
    n_classes: int | None = None  # classes the source declares (folder / CIFAR), None for plain arrays
    MATERIALIZE_BLOCK: ClassVar[int] = 256  # images read at a time by materialized()

    def __len__(self) -> int:
        return len(self.y)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.source.shape)

    @property
    def raw_nbytes(self) -> int:
        """Bytes of its raw images as uint8, what :meth:`materialized` holds in memory."""
        return len(self) * int(np.prod(self.image_shape))

    def subset(self, positions, name: str | None = None) -> "Dataset":
        """The images at ``positions`` (of this data set), in that order; nothing is read."""
        pos = np.asarray(positions, dtype=np.int64)
        return Dataset(name or self.name, self.source, self.index[pos], self.y[pos], self.preprocess, self.n_classes)

    def head(self, n: int | None) -> "Dataset":
        """The first ``n`` images (all when n is None)."""
        if n is None:
            return self
        if n < 1:
            raise SettingError("images", n, "must be a positive number of images")
        return self.subset(np.arange(min(n, len(self))), f"{self.name}[:{n}]" if n < len(self) else self.name)

    def materialized(self, max_bytes: int, progress: Callable[[int, int], None] | None = None) -> "Dataset":
        """This data set with its raw images read once into memory, where its source decodes files on every read
        (image folders) and they take at most ``max_bytes``; else itself. The images, labels and name are the same.
        ``progress(done, total)`` is told after every block of images read."""
        n, shape = len(self), self.image_shape
        if not self.source.decodes or self.raw_nbytes > max_bytes:
            return self
        raw = np.empty((n,) + shape, np.uint8)
        for i in range(0, n, self.MATERIALIZE_BLOCK):
            raw[i:i + self.MATERIALIZE_BLOCK] = self.source.read(self.index[i:i + self.MATERIALIZE_BLOCK])
            if progress is not None:
                progress(min(n, i + self.MATERIALIZE_BLOCK), n)
        return Dataset(self.name, _Arrays(raw, self.name), np.arange(n, dtype=np.int64), self.y, self.preprocess,
                       self.n_classes)

    def images(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Preprocessed float32 [n, C, H, W] images ``start:stop`` (read now: keep the range small)."""
        return self.preprocess.normalize(self.source.read(self.index[start:stop]))

    def batches(self, batch_size: int = 256, start: int = 0, stop: int | None = None) \
            -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(preprocessed images, labels) batches of images ``start:stop``, read one batch at a time."""
        if batch_size < 1:
            raise DseError(f"batch size {batch_size} must be >= 1")
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop, batch_size):
            j = min(i + batch_size, stop)
            yield self.images(i, j), self.y[i:j]

    def image_batches(self, batch_size: int = 256) -> "ImageBatches":
        """A re-iterable of preprocessed image batches (no labels), e.g. for dse.quant.calibrate."""
        return ImageBatches(self, batch_size)

    def check_fits(self, input_shape, n_classes: int | None, where: str, model) -> None:
        """DseError (prefixed ``where``) unless the images have the model's input shape and, when ``n_classes`` is
        given, the labels are class indices of the model (and a folder/CIFAR source has as many classes)."""
        if self.image_shape != tuple(input_shape):
            raise DseError(f"{where}: images have shape {list(self.image_shape)} but model {model} expects "
                           f"{list(input_shape)}; give a data set that matches the model")
        if n_classes is None:
            return
        if self.n_classes is not None and self.n_classes != n_classes:
            raise DseError(f"{where}: the data set has {self.n_classes} classes but model {model} has {n_classes}; "
                           "give data with one class per model output (or a labels file listing them)")
        if len(self.y) and int(self.y.max()) >= n_classes:
            raise DseError(f"{where}: label {int(self.y.max())} but model {model} has {n_classes} classes; "
                           f"labels must be 0..{n_classes - 1}")


@dataclass(frozen=True)
class ImageBatches:
    """Each iteration reads the data set again, one preprocessed batch at a time."""

    data: Dataset
    batch_size: int

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.from_batch(0)

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def from_batch(self, k: int) -> Iterator[np.ndarray]:
        """The batches from batch ``k`` on (those before it are not read): dse.quant.BatchesFrom."""
        return (x for x, _ in self.data.batches(self.batch_size, start=k * self.batch_size))


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


def is_bundled(spec: str) -> bool:
    return str(spec).startswith(BUNDLED_NAME + ":")


# ----------------------------------------------------------------------------------------------------- spec kinds
# Each opener: (spec, path(s), preprocess, model input shape) -> (source, labels, name, declared class count or None).
def _open_bundled(spec: str, paths, pre: Preprocess, shape):
    x, y = bundled_split(spec.split(":", 1)[1])
    return _Arrays(x, spec), y, spec, None


def _open_npz(spec: str, paths, pre: Preprocess, shape):
    p = paths[0]
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
            x = _stored_npy(p, "x.npy")
            x, y = (z["x"] if x is None else x), z["y"]
        except ValueError as exc:
            raise DseError(f"{p}: key 'x' or 'y' holds pickled objects ({exc}); save plain numeric arrays") from None
    if x.dtype.kind not in "uif" or x.ndim not in (3, 4):
        raise DseError(f"{p}: key 'x' has shape {list(x.shape)} dtype {x.dtype}; expected uint8 or float "
                       "[N, H, W] or [N, C, H, W]")
    return _Arrays(x, p.name), _labels(y, len(x), f"{p}: key 'y'"), p.name, None


def _stored_npy(path: Path, member: str) -> np.memmap | None:
    """The array of an .npz member kept uncompressed (numpy.savez), memory-mapped: a data set larger than memory is
    read batch by batch, and the processes of a search share its pages. None where the member is compressed
    (numpy.savez_compressed: then it is loaded whole) or its header is one numpy.lib.format cannot read publicly."""
    import struct
    import zipfile
    from numpy.lib import format as npy

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)  # the member's local file header: name and extra field lengths at bytes 26 and 28
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            return None
        start = info.header_offset + 30 + sum(struct.unpack("<HH", head[26:30]))
        f.seek(start)
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError("object arrays cannot be memory-mapped")
    if 0 in shape or offset - start + int(np.prod(shape)) * dtype.itemsize != info.file_size:
        return None  # a member cut short: numpy's own reader gives its error
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _open_idx(spec: str, paths, pre: Preprocess, shape):
    img = paths[0]
    x = read_idx(img)
    lab = paths[1] if len(paths) > 1 else _labels_beside(img)
    return _Arrays(x, img.name), _labels(read_idx(lab), len(x), str(lab)), img.name, None


CIFAR10_FILES = ("data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
                 "test_batch.bin")
CIFAR100_FILES = ("train.bin", "test.bin")


def _cifar_label_bytes(p: Path) -> int:
    """1 (CIFAR-10) or 2 (CIFAR-100) label bytes per record: by the standard file name, else by the file size."""
    if p.name in CIFAR10_FILES:
        return 1
    if p.name in CIFAR100_FILES:
        return 2
    size = p.stat().st_size
    fits = [b for b in (1, 2) if size and size % (b + _Cifar.PIXELS) == 0]
    if len(fits) != 1:
        raise DseError(f"{p}: {size} bytes is not a whole number of CIFAR-10 (3073-byte) or CIFAR-100 (3074-byte) "
                       "records" + (" (it could be either; name it test_batch.bin or test.bin)" if fits else
                                    "; the file is truncated or not a CIFAR binary batch"))
    return fits[0]


def _open_cifar(spec: str, paths, pre: Preprocess, shape):
    p = paths[0]
    src = _Cifar(p, _cifar_label_bytes(p))
    y = src.labels()
    if len(y) and int(y.max()) >= src.n_classes:
        raise DseError(f"{p}: label {int(y.max())} in a CIFAR-{src.n_classes} file; the file is not a CIFAR-"
                       f"{src.n_classes} binary batch")
    return src, y, p.name, src.n_classes


def _class_names(d: Path, labels_file: Path | None) -> list[str]:
    found = sorted(c.name for c in d.iterdir() if c.is_dir())
    if labels_file is None:
        return found
    try:
        names = [ln.strip() for ln in labels_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DseError(f"{labels_file}: cannot read the labels file ({exc}); give one class folder name per line") \
            from None
    extra = sorted(set(found) - set(names))
    if extra:
        raise DseError(f"{d}: class folder '{extra[0]}' is not listed in {labels_file}; add it (one name per line)")
    if len(set(names)) != len(names):
        raise DseError(f"{labels_file}: a class name is listed twice; list each class folder once")
    return names


def _open_folder(spec: str, paths, pre: Preprocess, shape):
    d = paths[0]
    names = _class_names(d, paths[1] if len(paths) > 1 else None)
    files, labels = [], []
    for k, c in enumerate(names):
        sub = d / c
        if sub.is_dir():
            imgs = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            files += imgs
            labels += [k] * len(imgs)
    if not files:
        raise DseError(f"{d}: no images found (expected {d}/<class>/*.png|jpg|jpeg); give a folder with one "
                       "sub-folder of images per class")
    if shape is None:
        raise DseError(f"{d}: an image folder needs the model's input size to crop to")
    return _Folder(files, shape, pre.size, d.name), np.asarray(labels, np.int64), d.name, len(names)


def _kind(spec: str) -> tuple:
    """(opener, paths) of a spec; DseError for a missing file."""
    if is_bundled(spec):
        return _open_bundled, ()
    parts = [Path(s.strip()) for s in spec.split(",")] if "," in spec else [Path(spec)]
    for p in parts:
        if not p.exists():
            raise DseError(f"{p}: data file not found; give an existing .npz (keys x, y), IDX images file, CIFAR .bin "
                           f"file or image folder DIR/<class>/*.png, or {BUNDLED_NAME}:calib|search|holdout|all")
    p = parts[0]
    if p.is_dir():
        for names, kind in ((CIFAR10_FILES, "test_batch.bin"), (CIFAR100_FILES, "test.bin")):
            if any((p / n).is_file() for n in names):
                if not (p / kind).is_file():
                    raise DseError(f"{p}: CIFAR directory without its test file {kind}; give a .bin file instead")
                return _open_cifar, (p / kind,)
        return _open_folder, tuple(parts)
    if p.suffix == ".npz":
        return _open_npz, (p,)
    if p.suffix == ".bin":
        return _open_cifar, (p,)
    return _open_idx, tuple(parts)


def open_dataset(spec: str, preprocess: Preprocess, input_shape: tuple | None = None) -> Dataset:
    """A lazily read data set for ``spec`` (module docstring). ``input_shape`` (C, H, W) of the model: image
    folders are converted and cropped to it; other sources keep their own shape (see Dataset.check_fits)."""
    spec = str(spec)
    opener, paths = _kind(spec)
    source, y, name, n_classes = opener(spec, paths, preprocess, input_shape)
    if len(y) == 0:
        raise DseError(f"{name}: the data set holds no images; give at least one image")
    preprocess.check_channels(source.shape[0], name)
    return Dataset(name, source, np.arange(len(y), dtype=np.int64), y, preprocess, n_classes)


def load_dataset(spec: str, preprocess: Preprocess | None = None) -> Dataset:
    """``open_dataset`` without a model (bundled splits default to their own preprocessing)."""
    if preprocess is None:
        if not is_bundled(spec):
            raise DseError(f"{spec}: give the preprocessing (scale, mean, std) for a data set that is not bundled")
        preprocess = BUNDLED_PREPROCESS
    return open_dataset(spec, preprocess)


FINGERPRINT_BLOCK = 1 << 20  # bytes hashed at the start, middle and end of a data file


def _file_fingerprint(p: Path, h, local: bool) -> None:
    st = p.stat()
    size = st.st_size
    h.update(f"{p.name}\0{size}\0{st.st_mtime_ns if local else ''}\0".encode())
    with open(p, "rb") as f:
        if size <= 3 * FINGERPRINT_BLOCK:
            h.update(f.read())
            return
        for at in (0, (size - FINGERPRINT_BLOCK) // 2, size - FINGERPRINT_BLOCK):
            f.seek(at)
            h.update(f.read(FINGERPRINT_BLOCK))


def fingerprint(spec: str, local: bool = False) -> str:
    """A cheap fingerprint of the content ``spec`` reads (studies are named with it): a file by its size and the
    SHA-256 of its first, middle and last MiB (all of it when small); an image folder by the sorted relative paths
    and sizes of its files, no image read. Neither times nor where the files are enter it, so copies of the data on
    several machines agree. ``local=True`` (caches kept beside one copy of the data) adds every file's modification
    time, so an in-place edit the sampled bytes miss (an image of the same size) still changes it."""
    h = hashlib.sha256()
    opener, paths = _kind(spec)
    if opener is _open_bundled:
        h.update(spec.encode() + b"\0")
        paths = (BUNDLED_FILE,)
    elif opener is _open_idx and len(paths) == 1:
        paths = (paths[0], _labels_beside(paths[0]))
    for p in paths:
        if not p.is_dir():
            _file_fingerprint(p, h, local)
            continue
        for f in sorted(f for f in p.rglob("*") if f.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns if local else ''}\0".encode())
    return h.hexdigest()


def _spec_files(spec: str) -> set:
    """What a spec reads, for overlap checks: bundled split names, or resolved file/folder paths."""
    if is_bundled(spec):
        split = spec.split(":", 1)[1]
        return {f"{BUNDLED_NAME}:{s}" for s in SPLIT_SIZES} if split == "all" else {spec}
    try:
        return {str(Path(p).resolve()) for p in _kind(spec)[1][:1]}
    except DseError:
        return {spec}


def specs_overlap(a: str, b: str) -> bool:
    """Whether two data set specs may share images: the same source file or folder, or a bundled split and the
    bundled ':all'."""
    return bool(_spec_files(str(a)) & _spec_files(str(b)))
