"""ResNet's 7x7/2 stem conv (3 -> 64 channels, 224 x 224 input, Relu) and its 3x3/2 max pool with the next conv's
input quantization, exact FxP8, 26 images (a streaming batch): the three steps one after another (conv2d_scaled's
float32 output, dse.model.nn.max_pool, quantize_patterns) vs the fused step (conv2d_scaled_max_pool: on the
broadcast conv kernel each task's images pooled from the cache). Interleaved rounds, process CPU time, medians;
outputs asserted equal. Usage: python benchmarks/bench_stem_pool.py [rounds] [threads]."""
import sys
import time

import numpy as np

from dse import kernels as K
from dse.arith.multipliers import EXACT
from dse.model.nn import max_pool


def main(rounds: int = 9, threads: int = 1) -> None:
    rng = np.random.default_rng(5)
    B, N = 26, 64
    x = rng.integers(0, 256, (B, 3, 224, 224)).astype(np.uint8)
    w = rng.integers(-128, 128, (N, 3, 7, 7)).astype(np.int8)
    sc = K.Scaling(2e-5, rng.uniform(0.5, 1.5, N).astype(np.float32), rng.normal(0, 0.3, N).astype(np.float32),
                   K.OutputAct("relu"))
    pool = K.MaxPoolStep((3, 3), (2, 2), (1, 1, 1, 1), quant=K.OutputQuant(0.05, False))
    geo = dict(stride=(2, 2), pads=(3, 3, 3, 3))

    def steps():
        y = K.conv2d_scaled(x, w, EXACT, False, sc, **geo)
        z = max_pool(y, pool.kernel, pool.stride, pool.pads, pool.dilation, pool.ceil)
        return z, K.quantize_patterns(z, pool.quant.scale, pool.quant.signed)

    def fused():
        return K.conv2d_scaled_max_pool(x, w, EXACT, False, sc, pool, **geo)

    with K.using_threads(threads):
        a, b = steps(), fused()
        assert np.array_equal(a[0].view(np.uint32), b[0].view(np.uint32)) and np.array_equal(a[1], b[1])
        ts = {"steps": [], "fused": []}
        for r in range(rounds):
            for name, f in ((("steps", steps), ("fused", fused)) if r % 2 == 0 else (("fused", fused), ("steps", steps))):
                t = time.process_time()
                f()
                ts[name].append(time.process_time() - t)
    s, f = np.median(ts["steps"]), np.median(ts["fused"])
    print(f"stem 7x7/2 + max pool 3x3/2 + quantize, {B} images, {threads} thread(s), CPU time, median of {rounds}: "
          f"three steps {1e3 * s:.2f} ms, fused {1e3 * f:.2f} ms, steps / fused {s / f:.3f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
