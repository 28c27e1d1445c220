"""Builds of the extension compared on the FxP8 output step: MobileNetV2's pointwise convs (the integer GEMM with its
int32 tiles scaled in cache; 10 calls per timing) and whole networks, in one process.

    python benchmarks/bench_scale.py OLD.so NEW.so [...] [--rounds 7] [--nets mobilenetv2-32 resnet18-32]
                                     [--families exact] [--no-convs]

Each given copy of the ``dse._kernels`` .so file is loaded as its own module and installed as ``dse.kernels``'s
extension in turn (interleaved rounds, order alternating per round, one thread, process CPU time, medians). Convs:
1x1 convs of 128 images with a Clip(0, 6) and the next layer's quantization fused (MobileNetV2 32's expand and
project shapes), and a 3x3 one; networks: one streaming batch of bench_e2e's network (call_replay.emulations). The
outputs (patterns, logits) of every build are asserted bit-identical to the first's. Prints the median ms per build
and the first build's time over each other's (> 1: the other is faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from call_replay import emulations, load_builds  # noqa: E402

# (images, Cin, H, W, Cout, k): MobileNetV2 32's 1x1 convs at 16x16 / 8x8 / 4x4, and a ResNet-18 32 3x3 conv
CONVS = ((128, 32, 16, 16, 192, 1), (128, 192, 16, 16, 32, 1), (128, 64, 8, 8, 384, 1), (128, 384, 4, 4, 64, 1),
         (64, 64, 32, 32, 64, 3))


def _conv_run(shape):
    from dse import kernels
    from dse.arith.multipliers import EXACT
    from dse.kernels import OutputAct, OutputQuant, Scaling

    B, C, H, W, N, k = shape
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (B, C, H, W), dtype=np.uint8)
    w = rng.integers(-128, 128, (N, C, k, k), dtype=np.int8)
    sc = Scaling(np.float64(0.0123), rng.uniform(0.001, 0.01, N).astype(np.float32),
                 rng.uniform(-1, 1, N).astype(np.float32), OutputAct("clip", 0.0, 6.0), OutputQuant(0.0235, False))
    pads = (k // 2,) * 4

    def run(reps=10):  # ~1-10 ms a call: the median over rounds of 10 calls
        for _ in range(reps):
            y = kernels.conv2d_scaled(x, w, EXACT, False, sc, pads=pads)
        return y
    return run


def _time(runs, mods, rounds: int, title: str, check: bool = True) -> None:
    from dse import kernels

    orig = kernels._kernels
    try:
        ref = None
        for m in mods:
            kernels._kernels = m
            out = np.asarray(runs()).view(np.uint8)
            assert not check or ref is None or np.array_equal(out, ref), f"{title}: the builds disagree"
            ref = out
        t = [[] for _ in mods]
        for r in range(rounds):
            for i in (range(len(mods)) if r % 2 == 0 else reversed(range(len(mods)))):
                kernels._kernels = mods[i]
                t0 = time.process_time()
                runs()
                t[i].append(time.process_time() - t0)
    finally:
        kernels._kernels = orig
    med = [statistics.median(v) for v in t]
    print(f"{title:48s} " + " ".join(f"{m * 1e3:9.2f}" for m in med) + "  " +
          " ".join(f"{med[0] / m:5.2f}x" for m in med[1:]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("so", nargs="+", help="copies of dse/_kernels*.so (the first is the baseline)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--nets", nargs="*", default=["mobilenetv2-32", "resnet18-32"])
    ap.add_argument("--families", nargs="+", default=["exact"])
    ap.add_argument("--no-convs", action="store_true")
    ap.add_argument("--timing-only", action="store_true", help="builds that give other bits (experiments): no check")
    a = ap.parse_args()
    from dse import kernels

    kernels.set_threads(1)
    mods = load_builds(a.so)
    print(f"one thread, {a.rounds} rounds, median CPU ms: " + " | ".join(a.so))
    if not a.no_convs:
        for shape in CONVS:
            B, C, H, W, N, k = shape
            _time(_conv_run(shape), mods, a.rounds, f"conv {k}x{k} {C}->{N} {H}x{W} x{B}, clip+quant",
                  not a.timing_only)
    for net, fam, run in emulations(a.nets, a.families):
        _time(run, mods, a.rounds, f"{net} {fam}", not a.timing_only)


if __name__ == "__main__":
    main()
