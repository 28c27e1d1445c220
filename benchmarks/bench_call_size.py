"""Per-image cost of one emulator call size vs another on ResNet-18 at 224x224 (bench_e2e.resnet18(224)), one thread.

Runs the same 26 images (dse.quant.stream_batch_size of this network) as calls of 4 images and as one call of 26, and
the 26-image call with the integer GEMM's image slices (dse.kernels._FUSED_SLICE_BYTES, default 4 MiB of operand) at
1 MiB and unsliced; interleaved rounds in one process (the order rotated each round), medians of ms per image: process CPU time (one thread: the
work, not the waits of a loaded box) and wall time. Usage (from the repository root):

    PYTHONPATH=.:benchmarks python benchmarks/bench_call_size.py [multiplier, default exact] [rounds, default 7]
"""
from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile
import time

import onnx

import bench_e2e as b
from dse import kernels
from dse.emulate import Emulator
from dse.layer_config import LayerConfig
from dse.model.onnx_import import load_onnx
from dse.quant import calibrate

N_IMAGES = 26
VARIANTS = [("4 img/call", 4, kernels._FUSED_SLICE_BYTES), ("26 img/call", N_IMAGES, kernels._FUSED_SLICE_BYTES),
            ("26, 1 MiB slices", N_IMAGES, 1 << 20), ("26, unsliced", N_IMAGES, 1 << 40)]


def main(mult: str, rounds: int) -> None:
    kernels.set_threads(1)
    path = pathlib.Path(tempfile.mkdtemp()) / "r224.onnx"
    onnx.save(b.resnet18(224), str(path))
    qm = calibrate(load_onnx(path), b.images(16, 224, seed=3))
    emu = Emulator(qm)
    cfg = {l.name: LayerConfig(mult) for l in qm.layers}
    x = b.images(N_IMAGES, 224, seed=11)
    ms = {name: [] for name, _, _ in VARIANTS}
    wall = {name: [] for name, _, _ in VARIANTS}
    default = kernels._FUSED_SLICE_BYTES
    for r in range(rounds + 1):  # round 0 warms up
        for name, n, slice_bytes in VARIANTS[r % 4:] + VARIANTS[:r % 4]:  # each variant in every position
            kernels._FUSED_SLICE_BYTES = slice_bytes
            t, c = time.perf_counter(), time.process_time()
            for b0 in range(0, N_IMAGES, n):
                emu.run(x[b0:b0 + n], cfg, batch_size=n)
            if r:
                ms[name].append((time.process_time() - c) / N_IMAGES * 1e3)
                wall[name].append((time.perf_counter() - t) / N_IMAGES * 1e3)
    kernels._FUSED_SLICE_BYTES = default
    base = statistics.median(ms[VARIANTS[0][0]])
    wbase = statistics.median(wall[VARIANTS[0][0]])
    print(f"| {mult} | CPU ms/image (median of {rounds}) | of 4 img/call | min | max | wall ms/image | of 4 img/call |")
    print("|---|---|---|---|---|---|---|")
    for name, v in ms.items():
        med, wmed = statistics.median(v), statistics.median(wall[name])
        print(f"| {name} | {med:.1f} | {med / base:.3f} | {min(v):.1f} | {max(v):.1f} | {wmed:.1f} | {wmed / wbase:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "exact", int(sys.argv[2]) if len(sys.argv) > 2 else 7)
