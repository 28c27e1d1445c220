"""The integer GEMM's two conv operands on ResNet-18's convs (exact FxP8, unsigned activations, quantized output as
between layers, VNNI at the avx512 level): "im2col" (main's: im2col rows built per task in cache and packed into
position panels; 1x1 convs without padding read their input as the matrix) vs "bcast" (the broadcast conv kernel:
channels-last images, output channels in the lanes), forced with DSE_KERNEL_CONV, interleaved rounds, CPU time,
medians; outputs asserted equal. Usage: python benchmarks/bench_bcast_conv.py [32|224] [rounds] [threads]."""
import os
import sys
import time

import numpy as np

from dse import kernels as K
from dse.arith.multipliers import EXACT


def shapes(size: int):
    """(label, batch, Cin, H, Cout, k, stride, pad) of ResNet-18's convs at input size (one entry per shape)."""
    if size >= 64:
        B, s = 26, size // 4
        out = [("stem 7x7 s2", B, 3, size, 64, 7, 2, 3)]
    else:
        B, s = 64, size
        out = [("stem 3x3", B, 3, size, 64, 3, 1, 1)]
    cin = 64
    for cout in (64, 128, 256, 512):
        if cout != 64:
            out.append((f"{cin}->{cout} 3x3 s2", B, cin, s, cout, 3, 2, 1))
            out.append((f"{cin}->{cout} 1x1 s2", B, cin, s, cout, 1, 2, 0))
            s //= 2
        out.append((f"{cout}->{cout} 3x3", B, cout, s, cout, 3, 1, 1))
        cin = cout
    return out


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = np.random.default_rng(0)
    cases = []
    for label, B, C, H, N, k, st, p in shapes(size):
        x = rng.integers(0, 200, (B, C, H, H)).astype(np.uint8)
        w = rng.integers(-60, 61, (N, C, k, k)).astype(np.int8)
        sc = K.Scaling(0.01, rng.uniform(1e-4, 1e-3, N).astype(np.float32), rng.normal(0, 1, N).astype(np.float32),
                       K.OutputAct("relu"), quant=K.OutputQuant(0.05, False))
        cases.append((label, B, C, H, N, k, x, w, sc, (st, st), (p, p, p, p)))
    times = {}
    with K.using_threads(threads):
        for r in range(rounds):
            for label, B, C, H, N, k, x, w, sc, st, pads in cases:
                outs = []
                for ck in (("im2col", "bcast") if r % 2 == 0 else ("bcast", "im2col")):
                    os.environ["DSE_KERNEL_CONV"] = ck
                    t = time.process_time()
                    y = K.conv2d_scaled(x, w, EXACT, False, sc, st, pads, isa="avx512")
                    times.setdefault((label, ck), []).append(time.process_time() - t)
                    outs.append(y)
                assert np.array_equal(outs[0], outs[1]), label
    os.environ.pop("DSE_KERNEL_CONV")
    print(f"ResNet-18 {size} convs, exact, quantized output, {threads} thread(s), CPU time, medians of {rounds}")
    print(f"{'conv':22s} {'batch':>5s} {'im2col ms':>10s} {'bcast ms':>10s} {'ratio':>6s} {'bcast GMAC/s':>12s}")
    tot = [0.0, 0.0]
    for label, B, C, H, N, k, x, w, sc, st, pads in cases:
        a, b = (np.median(times[(label, ck)]) for ck in ("im2col", "bcast"))
        Ho = (H + 2 * pads[0] - k) // st[0] + 1
        macs = B * Ho * Ho * N * C * k * k
        tot[0] += a
        tot[1] += b
        print(f"{label:22s} {B:5d} {a * 1e3:10.2f} {b * 1e3:10.2f} {a / b:6.3f} {macs / b * 1e-9:12.0f}")
    print(f"{'sum of shapes':22s} {'':5s} {tot[0] * 1e3:10.2f} {tot[1] * 1e3:10.2f} {tot[0] / tot[1]:6.3f}")


if __name__ == "__main__":
    main()
