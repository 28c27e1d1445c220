"""Whole-network speed and memory of the dse emulator next to onnxruntime, measured side by side in one run.

    python benchmarks/bench_e2e.py [--quick] [--skip-rss] [--nets mobilenetv2-32 ...] [--families drum6 LUT ...]
                                   [--cpu-time] [--int16] [--rss-nets resnet18-224 resnet50-224]

Models are built here with onnx.helper (no downloads), see below. Per model: onnxruntime fp32 and onnxruntime int8
(static QDQ quantization of the same model, per-channel int8 weights, uint8 activations, calibrated on the same
images) against dse FxP8-exact and dse with one multiplier of every table family on all layers; images/s are medians
over rounds on one thread (dse.kernels.set_threads(1), onnxruntime intra/inter-op 1), every engine timed once per
round in a rotating order after a whole-batch warm-up, so the box's noisy spells fall on all of them alike. Every engine gets the same images
as one batch: 64 (ResNet-18) or 128 (MobileNetV2) at 32x32, and at 224x224 the emulator's own streaming batch
(dse.quant.stream_batch_size, 26 images for ResNet-18 and ResNet-50), the batch `dse evaluate` and a search run it with. Then 1 vs 2
threads for onnxruntime fp32 and int8 and dse exact and Mitch-w6, the two alternating round by round (a noisy spell of
a shared box falls on both; the speedup is the median of the rounds' ratios), then the
peak RSS of calibrating ResNet-18 (--rss-nets: also or instead ResNet-50) at 224 on 256 images and evaluating 1,000
images (a fresh subprocess; images are generated batch by batch, as a lazy data set delivers them).

Random He-scaled weights with BatchNormalization folded into conv weights/biases (as an exporter would fold it), so
activations keep a sensible scale through the depth. Architectures follow torchvision: ResNet-18 (BasicBlock x
[2, 2, 2, 2], 7x7/2 stem + 3x3/2 max pool at 224x224; a 3x3/1 stem without pool at 32x32, as CIFAR ResNets do),
ResNet-50 at 224x224 (v1.5 bottlenecks x [3, 4, 6, 3], the stride in the 3x3, 1x1 downsample convs) and
MobileNetV2 (inverted residuals with 1x1 expand, 3x3 depthwise, 1x1 project, ReLU6; width 1.0; CIFAR strides at
32x32).
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.n = 0

    def _name(self, kind):
        self.n += 1
        return f"{kind}{self.n}"

    def _const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def conv(self, x, cin, cout, k, stride=1, groups=1, act="relu", gain=1.0):
        name = self._name("conv")
        fan_in = cin // groups * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k)) * gain * np.sqrt(2.0 / fan_in)
        b = self.rng.standard_normal(cout) * 0.05
        self._const(name + ".w", w)
        self._const(name + ".b", b)
        p = k // 2
        self.nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name], name=name,
                                           kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p],
                                           group=groups))
        return self.act(name, act)

    def act(self, x, act):
        if act is None:
            return x
        y = self._name(act)
        if act == "relu":
            self.nodes.append(helper.make_node("Relu", [x], [y], name=y))
        else:  # relu6
            lo, hi = self._const(y + ".lo", 0.0), self._const(y + ".hi", 6.0)
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y], name=y))
        return y

    def add(self, a, b, act=None):
        y = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y], name=y))
        return self.act(y, act)

    def head(self, x, c, classes):
        gap, flat, fc = self._name("gap"), self._name("flatten"), self._name("fc")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [gap], name=gap))
        self.nodes.append(helper.make_node("Flatten", [gap], [flat], name=flat, axis=1))
        self._const(fc + ".w", self.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c))
        self._const(fc + ".b", np.zeros(classes))
        self.nodes.append(helper.make_node("Gemm", [flat, fc + ".w", fc + ".b"], ["logits"], name=fc, transB=1))

    def model(self, name, shape, classes):
        g = helper.make_graph(self.nodes, name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def resnet18(size: int, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (torchvision layout) for size x size RGB input; size 224 uses the ImageNet stem, else CIFAR's."""
    b = _Builder(seed)
    if size >= 64:
        x = b.conv("input", 3, 64, 7, stride=2)
        pool = b._name("maxpool")
        b.nodes.append(helper.make_node("MaxPool", [x], [pool], name=pool, kernel_shape=[3, 3], strides=[2, 2],
                                        pads=[1, 1, 1, 1]))
        x = pool
    else:
        x = b.conv("input", 3, 64, 3)
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for blk in range(2):
            stride = 2 if stage > 0 and blk == 0 else 1
            y = b.conv(x, cin, cout, 3, stride)
            y = b.conv(y, cout, cout, 3, 1, act=None, gain=0.5)
            short = b.conv(x, cin, cout, 1, stride, act=None) if (stride != 1 or cin != cout) else x
            x = b.add(y, short, act="relu")
            cin = cout
    b.head(x, cin, classes)
    return b.model(f"resnet18_{size}", (3, size, size), classes)


def resnet50(size: int = 224, classes: int = 1000, seed: int = 0, blocks=(3, 4, 6, 3)) -> onnx.ModelProto:
    """ResNet-50 (torchvision v1.5 layout) for size x size RGB input: the 7x7/2 stem + 3x3/2 max pool, then stages of
    1x1-3x3-1x1 bottlenecks (widths 64-512, outputs 4x that: 256-2048) with the stride in the 3x3 and a 1x1 conv
    (strided where the stage is) on the shortcut of each stage's first block; ``blocks``: bottlenecks per stage
    ((1, 1, 1, 1) is the smallest network with every layer shape kind, for tests)."""
    b = _Builder(seed)
    x = b.conv("input", 3, 64, 7, stride=2)
    pool = b._name("maxpool")
    b.nodes.append(helper.make_node("MaxPool", [x], [pool], name=pool, kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1]))
    x, cin = pool, 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        cout = 4 * width
        for blk in range(n):
            stride = 2 if stage > 0 and blk == 0 else 1
            y = b.conv(x, cin, width, 1)
            y = b.conv(y, width, width, 3, stride)
            y = b.conv(y, width, cout, 1, act=None, gain=0.5)
            short = b.conv(x, cin, cout, 1, stride, act=None) if blk == 0 else x
            x = b.add(y, short, act="relu")
            cin = cout
    b.head(x, cin, classes)
    return b.model(f"resnet50_{size}", (3, size, size), classes)


# (expansion t, channels c, repeats n, stride s) of torchvision's MobileNetV2; CIFAR variant: strides of the first
# two stages set to 1 and a stride-1 stem.
_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenetv2(size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    x = b.conv("input", 3, 32, 3, stride=1 if size <= 64 else 2, act="relu6")
    cin = 32
    for t, c, n, s in _MBV2:
        for i in range(n):
            stride = s if i == 0 else 1
            hid = cin * t
            y = b.conv(x, cin, hid, 1, act="relu6") if t != 1 else x
            y = b.conv(y, hid, hid, 3, stride, groups=hid, act="relu6")
            y = b.conv(y, hid, c, 1, act=None, gain=0.5)
            x = b.add(y, x) if stride == 1 and cin == c else y
            cin = c
    x = b.conv(x, cin, 1280, 1, act="relu6")
    b.head(x, 1280, classes)
    return b.model(f"mobilenetv2_{size}", (3, size, size), classes)


def images(n: int, size: int, seed: int = 1) -> np.ndarray:
    """Smooth random images (low-pass noise, per-channel standardised) so activations are not white noise."""
    rng = np.random.default_rng(seed)
    small = rng.standard_normal((n, 3, max(2, size // 8), max(2, size // 8))).astype(np.float32)
    x = small.repeat(8, axis=2).repeat(8, axis=3)[:, :, :size, :size]
    return (x + 0.3 * rng.standard_normal(x.shape).astype(np.float32)).astype(np.float32)


def image_batches(n: int, size: int, batch: int, seed: int):
    """A re-iterable of generated image batches (what a lazy data set yields); never all n images at once."""
    class _Batches:
        def __iter__(self):
            for i in range(0, n, batch):
                yield images(min(batch, n - i), size, seed + i)
    return _Batches()


# ------------------------------------------------------------------------------------------------------ measuring
CLOCK = time.perf_counter  # --cpu-time: time.process_time (this process's CPU seconds, all its threads)


def _interleaved_rates(fns: dict, x: np.ndarray, repeats: int) -> dict:
    """Images/s of every engine's fn(x), their runs interleaved round by round (each round in another order, so a
    noisy spell of a shared box falls on every engine rather than on whichever was timed then): after a one-image
    warm-up (table preparation) and one whole-batch warm-up (first allocations of the batch's buffers) of each, the
    median over ``repeats`` rounds per engine."""
    for fn in fns.values():
        fn(x[:1])
        fn(x)
    labels = list(fns)
    times = {label: [] for label in labels}
    for r in range(repeats):
        k = r % len(labels)
        for label in (labels[k:] + labels[:k])[::1 if r % 2 == 0 else -1]:
            t = CLOCK()
            fns[label](x)
            times[label].append(CLOCK() - t)
    return {label: len(x) / statistics.median(ts) for label, ts in times.items()}


def _paired_rates(fn, x: np.ndarray, rounds: int, t: int) -> tuple:
    """fn(k, x) run with 1 and ``t`` threads alternating (the order flipped every round, after a one-image warm-up
    of each), so that a noisy spell of a shared box falls on both: (images/s at 1 and at ``t`` threads, the median
    of the rounds' speedups). Each rate is the median over the rounds."""
    fn(1, x[:1])
    fn(t, x[:1])
    times = {1: [], t: []}
    for r in range(rounds):
        for k in ((1, t) if r % 2 == 0 else (t, 1)):
            c = CLOCK()
            fn(k, x)
            times[k].append(CLOCK() - c)
    return (len(x) / statistics.median(times[1]), len(x) / statistics.median(times[t]),
            statistics.median(a / b for a, b in zip(times[1], times[t])))


def _ort_session(path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_int8(path: Path, calib: np.ndarray, input_name: str = "input", out_dir: Path | None = None) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{input_name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    out = (out_dir or path.parent) / (path.stem + "_int8.onnx")
    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def imported_lut(tmpdir: Path) -> str:
    """An imported 256x256 table (lut:PATH.npy): the signed product with its 3 low bits cleared (full rank)."""
    v = np.arange(256)
    v = np.where(v >= 128, v - 256, v).astype(np.int64)
    t = np.multiply.outer(v, v)
    t = t - (t & 7)
    p = tmpdir / "imported_lut.npy"
    np.save(p, t)
    return f"lut:{p}?signed=any"


FAMILIES = [("mitch_w6", "mitch_w6"), ("drum6", "drum6"), ("perforation", "perf_j1_k2"),
            ("Ax-BxP", "axbxp_k2_w2_a2_dynamic")]


def bench_model(name, model, size, n_img: int | None, repeats, tmpdir, lut_name, threads_list=(1,), families=None,
                int16=False):
    """Images/s of every engine on ``n_img`` images, run as one batch (None: the emulator's streaming batch for this
    network, ``stream_batch_size``, what ``dse evaluate`` and a search run it with); ``int16``: every 1-thread dse
    row also with DSE_KERNEL_VNNI=0 (the integer GEMM's int16 kernel instead of its VNNI one). Returns (GMAC per
    image, images per run, {(engine, 1): images/s, (engine, t): (images/s at 1 and t threads, speedup)}) for the
    t > 1 of ``threads_list`` (:func:`_paired_rates`)."""
    from dse import kernels
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate, stream_batch_size

    if isinstance(model, onnx.ModelProto):
        path = tmpdir / f"{name}.onnx"
        onnx.save(model, str(path))
    else:  # an ONNX file (--onnx): read in place
        path, model = Path(model), onnx.load(str(model))
    inp = input_name(model)
    graph = load_onnx(path)
    n_img = stream_batch_size(graph) if n_img is None else n_img
    x = images(n_img, size, seed=11)
    calib = images(16, size, seed=3)
    kernels.set_threads(1)
    qm = calibrate(graph, calib)
    emu = Emulator(qm)
    gmac = sum(l.macs for l in qm.layers) / 1e9
    i8_path = _ort_int8(path, calib, inp, tmpdir)  # quantized once, for the 1- and t-thread sessions
    fp, i8 = _ort_session(path, 1), _ort_session(i8_path, 1)
    tables = [(f"dse {fam} ({m})", m) for fam, m in FAMILIES] + [("dse imported LUT", lut_name)]
    tables = [c for c in tables if families is None or _family(c[0]) in families]
    configs = {label: {l.name: LayerConfig(mult) for l in qm.layers}
               for label, mult in [("dse FxP8 exact", "exact")] + tables}

    def dse_run(cfg, vnni=True):
        def run(xb):
            if vnni:
                return emu.run(xb, cfg, batch_size=n_img)
            os.environ["DSE_KERNEL_VNNI"] = "0"  # the integer GEMM's int16 kernel instead of its VNNI one
            try:
                return emu.run(xb, cfg, batch_size=n_img)
            finally:
                del os.environ["DSE_KERNEL_VNNI"]
        return run

    fns = {"ort fp32": lambda xb: fp.run(None, {inp: xb}), "ort int8 (QDQ)": lambda xb: i8.run(None, {inp: xb})}
    for label, cfg in configs.items():
        fns[label] = dse_run(cfg)
        if int16:
            fns[label + " [int16 GEMM]"] = dse_run(cfg, vnni=False)
    rows = {(label, 1): rate for label, rate in _interleaved_rates(fns, x, repeats).items()}
    for t in (t for t in threads_list if t > 1):
        # the thread rows: onnxruntime's sessions and the exact and Mitch-w6 emulation, 1 and t threads alternating
        ort_t = {"ort fp32": (fp, _ort_session(path, t)),
                 "ort int8 (QDQ)": (i8, _ort_session(i8_path, t))}
        for label, (s1, st) in ort_t.items():
            rows[(label, t)] = _paired_rates(lambda k, xb: (s1 if k == 1 else st).run(None, {inp: xb}), x,
                                             repeats + 2, t)
        for label in [c for c in configs if c == "dse FxP8 exact" or c.endswith("(mitch_w6)")]:
            def run(k, xb, cfg=configs[label]):
                kernels.set_threads(k)
                emu.run(xb, cfg, batch_size=n_img)
            rows[(label, t)] = _paired_rates(run, x, repeats + 2, t)
    kernels.set_threads(None)
    return gmac, n_img, rows


def input_name(model: onnx.ModelProto) -> str:
    """The name of the model's one graph input that is not an initializer (the images)."""
    inits = {i.name for i in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in inits)


def onnx_file(spec: str) -> tuple:
    """--onnx PATH[:N]: (title, path, image size, images per run or None for the streaming batch). The image size is
    the model's fixed input height (the batch axis may be symbolic)."""
    path, _, n = spec.partition(":")
    model = onnx.load(path, load_external_data=False)
    dims = next(i for i in model.graph.input if i.name == input_name(model)).type.tensor_type.shape.dim
    size = dims[2].dim_value
    if not size or dims[3].dim_value != size:
        raise SystemExit(f"--onnx {path}: the input needs fixed, equal height and width (got {dims})")
    return f"{Path(path).stem} {size}x{size}", path, size, int(n) if n else None


def _family(label: str) -> str:
    """The --families name of a table row: "dse drum6 (drum6)" -> "drum6", "dse imported LUT" -> "LUT"."""
    return label.split()[1] if "(" in label else "LUT"


def _evaluate_batches(n: int, size: int, batch: int, seed: int):
    """Batches of ``batch`` generated images as a data set's reader yields them (float32, built 32 images at a time,
    so the generator's float64 noise does not count in the peak)."""
    for i in range(0, n, batch):
        k = min(batch, n - i)
        xb = np.empty((k, 3, size, size), np.float32)
        for j in range(0, k, 32):
            xb[j:j + 32] = images(min(32, k - j), size, seed + i + j)
        yield xb


NETS = ("resnet18-224", "resnet18-32", "mobilenetv2-32", "resnet50-224")


RSS_NETS = {"resnet18-224": ("ResNet-18", resnet18), "resnet50-224": ("ResNet-50", resnet50)}


def rss_child(net: str, n_calib: int, n_eval: int) -> None:
    """Calibrate ``net`` (a RSS_NETS key, 224x224) on n_calib generated images, then evaluate n_eval as `dse evaluate`
    does (batches of 256 images: float32 and FxP8 accuracy of each); print peak RSS (MiB) and timings."""
    from dse.emulate import Emulator, float_hits
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate, stream_batch_size

    size = 224
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "net.onnx"
        onnx.save(RSS_NETS[net][1](size), str(p))
        graph = load_onnx(p)
    b = stream_batch_size(graph)
    t0 = time.perf_counter()
    qm = calibrate(graph, image_batches(n_calib, size, b, seed=100))
    t1 = time.perf_counter()
    emu = Emulator(qm)
    n = 0
    for xb in _evaluate_batches(n_eval, size, 256, seed=10_000):
        float_hits(graph, xb, np.zeros(len(xb), np.int64), 256)
        n += len(emu.predict(xb, None, 256))
    t2 = time.perf_counter()
    print(f"{peak_rss_mib():.0f} {t1 - t0:.1f} {t2 - t1:.1f} {b} {n}")


def peak_rss_mib() -> float:
    """Peak resident memory of this process's own address space (MiB): /proc/self/status VmHWM where Linux has it.
    Not getrusage's ru_maxrss: Linux carries it over an exec from the address space the process had before, and a
    child started by subprocess (vfork) had its parent's, so the child reported the benchmark process's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    try:
        model = next(l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                     .stdout.splitlines() if l.startswith("Model name"))
    except StopIteration:
        model = platform.processor()
    from dse import _kernels

    flags = open("/proc/cpuinfo").read()
    isa = sorted({w for w in flags.split() if w.startswith("avx512") or w in ("avx2", "avx_vnni")})
    return (f"{model}, {os.cpu_count()} cpus, dse kernel ISA {_kernels.hardware_isa()}, flags {' '.join(isa)}, "
            f"numpy BLAS {blas_core()}, load average {os.getloadavg()[0]:.2f} at start")


def blas_core() -> str:
    """numpy's BLAS and the kernels it runs (the float32 path's GEMMs: calibration, float baselines), and an
    OPENBLAS_CORETYPE pin from the environment (which this benchmark leaves as it finds it)."""
    from threadpoolctl import threadpool_info

    libs = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')}" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    pin = os.environ.get("OPENBLAS_CORETYPE")
    return (", ".join(libs) or "none found") + (f" (OPENBLAS_CORETYPE={pin} set)" if pin else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run)")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-nets", nargs="+", choices=list(RSS_NETS), default=["resnet18-224"],
                    help="networks of the memory row (default ResNet-18; ResNet-50's row takes ~15 min on 2 cores)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="rate from this process's CPU time instead of wall time (a loaded box; 1-thread rows only)")
    ap.add_argument("--nets", nargs="*", choices=NETS, help="built-in networks to run (default: all, none with --onnx)")
    ap.add_argument("--onnx", nargs="+", default=[], metavar="PATH[:N]",
                    help="ONNX files to run as well (fixed square input, symbolic batch; e.g. scripts/export_models.py "
                         "--size 224), N images per run (default: the emulator's streaming batch)")
    ap.add_argument("--families", nargs="+", choices=[f for f, _ in FAMILIES] + ["LUT"],
                    help="table multipliers to run on all layers besides FxP8 exact (default: all)")
    ap.add_argument("--int16", action="store_true",
                    help="also run every 1-thread dse row with DSE_KERNEL_VNNI=0 (the integer GEMM's int16 kernel)")
    ap.add_argument("--rss-child", nargs=3, metavar=("NET", "CALIB", "EVAL"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        rss_child(a.rss_child[0], int(a.rss_child[1]), int(a.rss_child[2]))
        return
    global CLOCK
    if a.cpu_time:
        CLOCK = time.process_time
    print(machine() + (", rates from CPU time" if a.cpu_time else ""))
    reps = 2 if a.quick else 3
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lut = imported_lut(tmp)
        # 224: one streaming batch (26 images; 4 images, as runs before 2026-11-26 17:00 used, left each per-k table
        # build of the full-table kernels to ~200 positions in the last layers, a call size dse never makes itself)
        nets = {"resnet18-224": ("ResNet-18 224x224", lambda: resnet18(224), 224, 2 if a.quick else None, (1,)),
                "resnet18-32": ("ResNet-18 32x32", lambda: resnet18(32, classes=10), 32, 16 if a.quick else 64, (1, 2)),
                "mobilenetv2-32": ("MobileNetV2 32x32", lambda: mobilenetv2(32), 32, 32 if a.quick else 128, (1, 2)),
                "resnet50-224": ("ResNet-50 224x224", lambda: resnet50(224), 224, 2 if a.quick else None, (1,))}
        chosen = [nets[k] for k in (a.nets if a.nets is not None else [] if a.onnx else NETS)]
        for spec in a.onnx:
            title, path, size, n = onnx_file(spec)
            chosen.append((title, lambda path=path: path, size, 2 if a.quick else n, (1,)))
        for title, build, size, n, tl in chosen:
            tl = (1,) if a.cpu_time else tl
            gmac, n, rows = bench_model(title.split()[0].lower(), build(), size, n, reps, tmp, lut, tl, a.families,
                                       a.int16)
            fp, i8 = rows[("ort fp32", 1)], rows[("ort int8 (QDQ)", 1)]
            print(f"\n### {title} ({gmac:.3f} GMAC/image, {n} images per run, median of {reps}, 1 thread)\n")
            print("| engine | img/s | vs ort fp32 | vs ort int8 |")
            print("|---|---|---|---|")
            for (label, t), r in rows.items():
                if t == 1:
                    print(f"| {label} | {r:.2f} | {r / fp:.2f}x | {r / i8:.2f}x |")
            if 2 in tl:
                print(f"\n| engine | 1 thread img/s | 2 threads img/s | speedup (median of {reps + 2} rounds, 1 and 2 "
                      "threads alternating) |")
                print("|---|---|---|---|")
                for (label, t), r in rows.items():
                    if t == 2:
                        print(f"| {label} | {r[0]:.2f} | {r[1]:.2f} | {r[2]:.2f}x |")
    if not a.skip_rss:
        n_cal, n_ev = (16, 32) if a.quick else (256, 1000)
        for net in a.rss_nets:
            out = subprocess.run([sys.executable, __file__, "--rss-child", net, str(n_cal), str(n_ev)],
                                 capture_output=True, text=True, check=True).stdout.split()
            print(f"\n### Memory: {RSS_NETS[net][0]} 224x224, calibrate {n_cal} images + evaluate {n_ev} images "
                  f"(all threads, batch {out[3]})\n")
            print(f"peak RSS {out[0]} MiB (goal < 1536 MiB); calibration {out[1]} s, evaluation {out[2]} s")

if __name__ == "__main__":
    main()
