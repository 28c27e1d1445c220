"""Kernel throughput (GMAC/s, one thread) on ResNet-like shapes: fp32 BLAS baseline vs our exact / lowrank / LUT paths
(every ISA level) / row-table paths (AVX2 and portable on the Mitchell table, 256 rows per k-step table; at the
highest level on mitch_w6, whose 80 activation classes make 80-row tables) vs the numpy take-gather reference. The exact and lowrank
paths run on the integer GEMM kernel (cy/int_gemm.h); the "float BLAS" columns force the float path they replaced
(float32 BLAS on K-chunks of float-converted operands, float64 chunk sums) for comparison.

Run:  python benchmarks/bench_kernels.py [--repeats 5] [--cpu-time]
      python benchmarks/bench_kernels.py --vnni [--repeats 5] [--cpu-time]
      python benchmarks/bench_kernels.py --tables [--batch 4] [--repeats 5] [--cpu-time]
      python benchmarks/bench_kernels.py --zeros

--tables: the full-table multipliers on the 3x3 convs of ResNet-18 at 224x224 (the batch of bench_e2e.py's ResNet-18
224 runs, so the deep layers have as few positions as there), activations shaped like post-ReLU FxP8 data (half zeros,
a geometric tail): GMAC/s of the exact path, mitch_w6 and bench_e2e.py's imported LUT on each table path that applies
(auto, rows, split), best of --repeats.

--vnni: the integer GEMM kernel's VNNI micro-kernel (byte quads, vpdpbusd; where the CPU has AVX512-VNNI) next to its
int16 kernel at the same ISA level (DSE_KERNEL_VNNI=0) and fp32 BLAS, on the shapes above and ResNet-18 32x32 convs
(batch 64): the exact product on unsigned and signed activations and the separable tables perforation, DRUM6 (weights
in [-127, 127]: its G(-128) does not fit a byte) and truncation on their lowrank path, interleaved rounds (every
column once per round), medians of --repeats. Operands are uint8/int8 arrays (as the emulator passes them); the
level is the hardware's or DSE_KERNEL_ISA's (e.g. avx2: AVX-VNNI next to the AVX2 int16 kernel).

--zeros: how many activation patterns the row-table kernel adds are 0 (what a zero-skipping kernel could leave out) on
bench_e2e.py's networks (its models, calibration and images): per network, over the GEMM operands of the layers on
the GEMM kernels (groups = 1: im2col columns with their padding, Gemm inputs), the MAC-weighted fraction of zero
patterns, the share of MACs in layers with >= 40 % zeros, and the fraction of (position, chunk of 4 k-steps) whose 4
patterns are all 0 (the row kernel's chunk, DSE_RT_KC); in the FxP8-exact run and with mitch_w6 on all layers (its
products are smaller in magnitude, so fewer pre-activations end below 0).
Single thread: OMP/OPENBLAS/MKL thread counts are set to 1 below, before numpy is imported. Each figure is the median
of --repeats timed runs after one warm-up run; wall-clock time, or with --cpu-time the process's CPU time (the
kernels then run on one thread, so this is the time of that thread: steadier on a machine shared with other jobs). The numpy gather reference runs on a batch-2 slice of each conv (same
per-MAC work, it is ~100x slower); GMAC/s always counts the MACs actually computed.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from dse import _kernels  # noqa: E402
from dse import kernels as K  # noqa: E402
from dse.arith.multipliers import EXACT, Multiplier, get_multiplier, pattern_values  # noqa: E402


def mitchell_table(a_signed, w_signed):
    """Mitchell log multiplier (design.md), sign-magnitude for signed operands: high exact rank -> LUT path."""
    a = pattern_values(a_signed)[:, None]
    w = pattern_values(w_signed)[None, :]
    x, y = np.abs(a), np.abs(w)
    k1 = np.floor(np.log2(np.maximum(x, 1))).astype(np.int64)
    k2 = np.floor(np.log2(np.maximum(y, 1))).astype(np.int64)
    r1, r2 = x - (1 << k1), y - (1 << k2)
    s = (r1 << k2) + (r2 << k1)
    p = np.where(s < (1 << (k1 + k2)), (1 << (k1 + k2)) + s, 2 * s)
    return (np.sign(a) * np.sign(w) * np.where((x == 0) | (y == 0), 0, p)).astype(np.int32)


MITCHELL = Multiplier("mitchell_bench", "mitchell", _builder=mitchell_table)
# partial-product perforation j=0, k=2 on the weight: a * (w & ~3) -> error -a * (w & 3), exact rank 1
PERF = Multiplier("perf_j0k2_bench", "perforation", _builder=lambda a_s, w_s: np.multiply.outer(
    pattern_values(a_s), pattern_values(w_s) & ~np.int64(3)).astype(np.int32))

SHAPES = [  # name, kind, (B, C, H, W, Cout, k, pad, groups) or (M, K, N)
    ("conv3x3 64->64 32x32 b32", "conv", (32, 64, 32, 32, 64, 3, 1, 1)),
    ("conv3x3 16->16 28x28 b32", "conv", (32, 16, 28, 28, 16, 3, 1, 1)),
    ("conv1x1 64->128 32x32 b32", "conv", (32, 64, 32, 32, 128, 1, 0, 1)),
    ("dwconv3x3 64 32x32 b32", "conv", (32, 64, 32, 32, 64, 3, 1, 64)),
    ("gemm 1024x1024x256", "gemm", (1024, 1024, 256)),
]


MITCH_W6 = get_multiplier("mitch_w6")  # full rank, truncated operands: 80-row class tables in the rows kernel
DRUM6 = get_multiplier("drum6")  # separable with a table factor F(a): the int kernel's lookup packing


def float_blas(fn):
    """fn run with the integer GEMM kernel disabled: exact/lowrank take the float BLAS factor GEMM (the path before)."""
    def run():
        saved, K._int_plan = K._int_plan, lambda *a: None
        try:
            return fn()
        finally:
            K._int_plan = saved
    return run


CLOCK = time.perf_counter


def timeit(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        ts.append(CLOCK() - t)
    return statistics.median(ts)


# ResNet-18 224x224 3x3 convs: (C, H, Cout, stride)
R18_CONVS = [(64, 56, 64, 1), (64, 56, 128, 2), (128, 28, 128, 1), (128, 28, 256, 2), (256, 14, 256, 1),
             (256, 14, 512, 2), (512, 7, 512, 1)]


def imported_lut() -> Multiplier:
    """bench_e2e.py's imported LUT: the signed product with its 3 low bits cleared, one table for any signedness."""
    v = pattern_values(True)
    t = np.multiply.outer(v, v)
    return Multiplier("imported_lut_bench", "lut", _builder=lambda a_s, w_s: (t - (t & 7)).astype(np.int32))


def table_paths(shapes, batch: int, repeats: int, seed: int = 0) -> list:
    """[(shape name, {column: GMAC/s})]: exact, mitch_w6 and the imported LUT on their table paths (best of repeats;
    a path this code does not have is left out)."""
    rng = np.random.default_rng(seed)
    cases = [("exact", EXACT, ("auto",)), ("mitch_w6", MITCH_W6, ("auto", "rows")),
             ("LUT", imported_lut(), ("auto", "rows", "split"))]
    out = []
    for C, H, Co, s in shapes:
        x = np.clip(rng.geometric(0.08, (batch, C, H, H)) - 8, 0, 255).astype(np.uint8)
        w = np.clip(np.round(rng.standard_normal((Co, C, 3, 3)) * 30), -127, 127).astype(np.int8)
        macs = batch * (-(-H // s)) ** 2 * Co * C * 9
        res = {}
        for label, mult, paths in cases:
            for path in paths:
                if path not in K.PATHS:
                    continue
                fn = lambda: K.conv2d_int(x, w, mult, False, (s, s), (1, 1, 1, 1), path=path)  # noqa: E731
                fn()
                best = min(_timed(fn) for _ in range(repeats))
                res[f"{label} {path}"] = macs / best / 1e9
        out.append((f"{C}->{Co} {H}x{H} s{s} b{batch}", res))
    return out


def _timed(fn) -> float:
    t = CLOCK()
    fn()
    return CLOCK() - t


def zero_fractions(model, size: int, n_images: int, n_calib: int = 16, mult: str = "exact") -> dict:
    """Zero statistics of the GEMM operands of ``model`` (an onnx.ModelProto of bench_e2e.py) on its images: MAC-weighted
    zero fraction, MAC share of layers with >= 40 % zeros, all-zero 4-step chunks, GMAC per image (see --zeros), with
    multiplier ``mult`` on all layers."""
    import tempfile
    from pathlib import Path

    import bench_e2e
    import onnx
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.onnx"
        onnx.save(model, str(path))
        graph = load_onnx(path)
    qm = calibrate(graph, bench_e2e.images(n_calib, size, seed=3))
    stats = []  # (MACs, zero fraction, all-zero chunk fraction) per GEMM layer call

    def hook(call, acc):
        L = call.layer
        if L.groups == 1:
            q = K._u8(call.q)
            AT = K.gemm_operand_T(q, *L.kernel, L.stride, L.pads, L.dilation)[0] if L.op == "conv" else q.reshape(
                q.shape[0], -1).T
            kc = AT.shape[0] - AT.shape[0] % 4
            chunks = float(np.mean(~AT[:kc].reshape(kc // 4, 4, -1).any(axis=1))) if kc else 0.0
            stats.append((AT.size * L.N, 1.0 - np.count_nonzero(AT) / AT.size, chunks))
        return acc

    Emulator(qm).run(bench_e2e.images(n_images, size, seed=11), {l.name: LayerConfig(mult) for l in qm.layers},
                     batch_size=n_images, hook=hook)
    macs = np.array([s[0] for s in stats], dtype=np.float64)
    zero, chunk = np.array([s[1] for s in stats]), np.array([s[2] for s in stats])
    return {"zeros": float(macs @ zero / macs.sum()), "sparse_share": float(macs[zero >= 0.4].sum() / macs.sum()),
            "zero_chunks": float(macs @ chunk / macs.sum()), "gmac": float(macs.sum() / n_images / 1e9)}


def main_zeros():
    import bench_e2e

    nets = [("ResNet-18 224x224", bench_e2e.resnet18(224), 224, 4),
            ("ResNet-18 32x32", bench_e2e.resnet18(32, classes=10), 32, 64),
            ("MobileNetV2 32x32", bench_e2e.mobilenetv2(32), 32, 64)]
    print("\nZero activation patterns in the GEMM operands (groups = 1 layers), MAC-weighted")
    print("| network | multiplier | GEMM GMAC/image | zero patterns | MACs in layers >= 40 % zeros | "
          "all-zero 4-step chunks |")
    print("|---|---|---|---|---|---|")
    for title, model, size, n in nets:
        for mult in ("exact", "mitch_w6"):
            z = zero_fractions(model, size, n, mult=mult)
            print(f"| {title} ({n} images) | {mult} | {z['gmac']:.3f} | {z['zeros']:.1%} | {z['sparse_share']:.1%} | "
                  f"{z['zero_chunks']:.1%} |", flush=True)


def main_tables(args):
    rows = table_paths(R18_CONVS, args.batch, args.repeats)
    cols = list(dict.fromkeys(c for _, r in rows for c in r))
    print(f"\nGMAC/s, one thread (best of {args.repeats}); ResNet-18 224 3x3 convs, batch {args.batch}")
    print(f"| shape | {' | '.join(cols)} |")
    print("|" + "---|" * (len(cols) + 1))
    for name, res in rows:
        print(f"| {name} | {' | '.join(f'{res[c]:.1f}' if c in res else '-' for c in cols)} |")


VNNI_SHAPES = SHAPES[:3] + SHAPES[4:] + [  # ResNet-18 32x32 at batch 64 (bench_e2e.py's call size)
    ("r18-32 conv3x3 64->64 32x32 b64", "conv", (64, 64, 32, 32, 64, 3, 1, 1)),
    ("r18-32 conv3x3 256->256 8x8 b64", "conv", (64, 256, 8, 8, 256, 3, 1, 1)),
    ("r18-32 conv3x3 512->512 4x4 b64", "conv", (64, 512, 4, 4, 512, 3, 1, 1))]


def with_env(fn, name, value):
    """fn run with the environment variable ``name`` set to ``value`` (restored after)."""
    def run():
        before = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            if before is None:
                del os.environ[name]
            else:
                os.environ[name] = before
    return run


def main_vnni(args):
    rng = np.random.default_rng(0)
    isa = _kernels.isa()
    print(f"hardware ISA: {_kernels.hardware_isa()}; VNNI levels: {', '.join(_kernels.vnni_levels()) or 'none'}; "
          f"level run: {isa}; repeats: {args.repeats} (interleaved, median); {'CPU' if args.cpu_time else 'wall'} "
          f"time; load average {os.getloadavg()[0]:.2f} at start")
    cases = [("exact u8", EXACT, False, "exact"), ("exact s8", EXACT, True, "exact"), ("perf", PERF, False, "lowrank"),
             ("drum6", DRUM6, False, "lowrank"), ("trunc_op4", get_multiplier("trunc_op4"), False, "lowrank")]
    rows = []
    for name, kind, p in VNNI_SHAPES:
        B, C, H, W, Co, k, pad, g = p if kind == "conv" else (None,) * 8
        if kind == "conv":
            macs = B * H * W * Co * (C // g) * k * k
            x = rng.integers(0, 256, (B, C, H, W)).astype(np.uint8)
            xs = rng.integers(-128, 128, (B, C, H, W)).astype(np.int8)
            w = rng.integers(-127, 128, (Co, C // g, k, k)).astype(np.int8)
            xf, wf = x.astype(np.float32), w.astype(np.float32)

            def fp32(xf=xf, wf=wf, k=k, pad=pad):
                cols, _, _ = K.im2col_T(xf, k, k, (1, 1), (pad,) * 4, (1, 1))
                return wf.reshape(wf.shape[0], -1) @ cols

            def run(mult, signed, path, x=x, xs=xs, w=w, pad=pad):
                return K.conv2d_int(xs if signed else x, w, mult, signed, pads=(pad,) * 4, path=path, isa=isa)
        else:
            M, Kd, N = p
            macs = M * Kd * N
            x, xs = rng.integers(0, 256, (M, Kd)).astype(np.uint8), rng.integers(-128, 128, (M, Kd)).astype(np.int8)
            w = rng.integers(-127, 128, (N, Kd)).astype(np.int8)
            xf, wf = x.astype(np.float32), w.astype(np.float32)

            def fp32(xf=xf, wf=wf):
                return xf @ wf.T

            def run(mult, signed, path, x=x, xs=xs, w=w):
                return K.gemm_int(xs if signed else x, w, mult, signed, path=path, isa=isa)
        cols = {"fp32 BLAS": fp32}
        for label, mult, signed, path in cases:
            fn = (lambda mult=mult, signed=signed, path=path: run(mult, signed, path))
            cols[f"{label} int16"] = with_env(fn, "DSE_KERNEL_VNNI", "0")
            cols[f"{label} VNNI"] = with_env(fn, "DSE_KERNEL_VNNI", "1")
        for fn in cols.values():
            fn()
        times = {c: [] for c in cols}
        for _ in range(args.repeats):
            for c, fn in cols.items():
                times[c].append(_timed(fn))
        res = {c: macs / statistics.median(t) / 1e9 for c, t in times.items()}
        rows.append((name, res))
        print(f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()), flush=True)
    print(f"\nGMAC/s, one thread (median of {args.repeats}); VNNI cells: (VNNI / int16 kernel, VNNI / fp32 BLAS)")
    head = ["fp32 BLAS"] + [f"{c[0]} {v}" for c in cases for v in ("int16", "VNNI")]
    print(f"| shape | {' | '.join(head)} |")
    print("|" + "---|" * (len(head) + 1))
    for name, res in rows:
        cells = [f"{res['fp32 BLAS']:.1f}"]
        for c in cases:
            i16, v = res[f"{c[0]} int16"], res[f"{c[0]} VNNI"]
            cells += [f"{i16:.1f}", f"{v:.1f} ({v / i16:.2f}x, {v / res['fp32 BLAS']:.2f})"]
        print(f"| {name} | {' | '.join(cells)} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu-time", action="store_true", help="time with the process's CPU time instead of wall time")
    ap.add_argument("--tables", action="store_true", help="full-table multipliers on ResNet-18 224 conv shapes")
    ap.add_argument("--batch", type=int, default=4, help="images per conv call with --tables")
    ap.add_argument("--zeros", action="store_true", help="zero activation patterns on bench_e2e.py's networks")
    ap.add_argument("--vnni", action="store_true", help="the integer GEMM's VNNI kernel vs its int16 kernel")
    args = ap.parse_args()
    if args.zeros:
        main_zeros()
        return
    global CLOCK
    K.set_threads(1)
    if args.cpu_time:
        CLOCK = time.process_time
    if args.vnni:
        main_vnni(args)
        return
    if args.tables:
        print(f"hardware ISA: {_kernels.hardware_isa()}; {'CPU' if args.cpu_time else 'wall'} time; load average "
              f"{os.getloadavg()[0]:.2f} at start")
        main_tables(args)
        return
    rng = np.random.default_rng(0)
    levels = _kernels.isa_levels()
    print(f"hardware ISA: {_kernels.hardware_isa()}; levels run: {', '.join(levels)}; repeats: {args.repeats} (median); "
          f"{'CPU' if args.cpu_time else 'wall'} time; load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    for name, kind, p in SHAPES:
        if kind == "conv":
            B, C, H, W, Co, k, pad, g = p
            x = rng.integers(0, 256, (B, C, H, W))
            w = rng.integers(-127, 128, (Co, C // g, k, k))
            macs = B * H * W * Co * (C // g) * k * k
            pads = (pad,) * 4
            xf, wf = x.astype(np.float32), w.astype(np.float32)

            def fp32(xf=xf, wf=wf, k=k, pads=pads, g=g, Co=Co):
                cols, _, _ = K.im2col_T(xf, k, k, (1, 1), pads, (1, 1))
                kg, og = cols.shape[0] // g, Co // g
                w2 = wf.reshape(Co, kg)
                return [w2[i * og:(i + 1) * og] @ cols[i * kg:(i + 1) * kg] for i in range(g)]

            def run(mult, path, isa=None, x=x, w=w, pads=pads, g=g):
                return K.conv2d_int(x, w, mult, False, pads=pads, groups=g, path=path, isa=isa)

            xs = x[:2]
            ref_macs = macs * 2 // B

            def ref(xs=xs, w=w, pads=pads, g=g):
                return K.reference_conv2d_int(xs, w, MITCHELL, False, pads=pads, groups=g)
        else:
            M, Kd, N = p
            a = rng.integers(0, 256, (M, Kd))
            w = rng.integers(-127, 128, (N, Kd))
            macs = M * Kd * N
            af, wf = a.astype(np.float32), w.astype(np.float32)

            def fp32(af=af, wf=wf):
                return af @ wf.T

            def run(mult, path, isa=None, a=a, w=w):
                return K.gemm_int(a, w, mult, False, path=path, isa=isa)

            ref_macs = macs // 8

            def ref(a=a[: M // 8], w=w):
                return K.reference_gemm_int(a, w, MITCHELL, False)

        res = {"fp32 BLAS": macs / timeit(fp32, args.repeats) / 1e9,
               "exact": macs / timeit(lambda: run(EXACT, "exact"), args.repeats) / 1e9,
               "exact float BLAS": macs / timeit(float_blas(lambda: run(EXACT, "exact")), args.repeats) / 1e9,
               "lowrank(perf r=1)": macs / timeit(lambda: run(PERF, "lowrank"), args.repeats) / 1e9,
               "lowrank(drum6 r=1)": macs / timeit(lambda: run(DRUM6, "lowrank"), args.repeats) / 1e9,
               "drum6 float BLAS": macs / timeit(float_blas(lambda: run(DRUM6, "lowrank")), args.repeats) / 1e9}
        for isa in reversed(levels):
            res[f"lut {isa}"] = macs / timeit(lambda: run(MITCHELL, "lut", isa), args.repeats) / 1e9
        for isa in ("avx2", "scalar") if "avx2" in levels else ("scalar",):
            res[f"rows {isa}"] = macs / timeit(lambda: run(MITCHELL, "rows", isa), args.repeats) / 1e9
        res["rows mitch_w6"] = macs / timeit(lambda: run(MITCH_W6, "rows"), args.repeats) / 1e9
        res["numpy gather"] = ref_macs / timeit(ref, max(1, args.repeats)) / 1e9
        rows.append((name, res))
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)

    cols = list(rows[0][1])
    print("\nGMAC/s, one thread (median); ratios vs numpy gather / vs fp32 BLAS")
    print(f"| shape | {' | '.join(cols)} |")
    print("|" + "---|" * (len(cols) + 1))
    for name, res in rows:
        g, b = res["numpy gather"], res["fp32 BLAS"]
        cells = [f"{v:.2f}" if k in ("fp32 BLAS", "numpy gather") else f"{v:.2f} ({v / g:.0f}x, {v / b:.2f})"
                 for k, v in res.items()]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
