"""The residual Add fused into the producing conv's scaling pass vs the Add on its own, whole networks, one run.

    python benchmarks/bench_residual_add.py [--nets resnet18-32 resnet18-224 mobilenetv2-32] [--mults exact mitch_w6]
                                            [--rounds 7] [--threads 1] [--keep-sums]

Per network and multiplier (all layers): the same Emulator run with the fusion (dse.emulate's ``_fused_residuals``:
conv + Add + Relu + quantized emission in one pass) and without it (the table emptied: the conv writes its float32
output, ``dse.kernels.add_act`` reads it back with the skip tensor), on bench_e2e's networks and images (64 / 128 images
at 32x32, the streaming batch at 224), rounds interleaved with the order alternating, process CPU time, medians; the
logits are asserted bit-identical. ``--keep-sums``: instead, the fused run against the fused run that stores every
fused Add's float32 sum (``_AddFusion.macs_only`` cleared: also the sums that only integer convs read, which the
default run leaves unstored, ``dse.kernels.Scaling.keep_sum``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

NETS = ("resnet18-32", "resnet18-224", "mobilenetv2-32")


def _setup(net: str):
    from bench_e2e import images, mobilenetv2, resnet18

    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate, stream_batch_size

    name, size = net.rsplit("-", 1)
    size = int(size)
    model = resnet18(size) if name == "resnet18" else mobilenetv2(size)
    path = Path(tempfile.mkdtemp()) / "m.onnx"
    onnx.save(model, str(path))
    g = load_onnx(path)
    n = stream_batch_size(g) if size >= 224 else (64 if name == "resnet18" else 128)
    return calibrate(g, images(16, size, seed=3)), images(n, size, seed=11)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    ap.add_argument("--mults", nargs="+", default=["exact", "mitch_w6"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep-sums", action="store_true", help="baseline: the fused run storing every sum")
    args = ap.parse_args()

    from dse import kernels
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig

    kernels.set_threads(args.threads)
    base = "sums stored" if args.keep_sums else "unfused"
    print(f"| network, multiplier | fused Adds (sums unstored) | {base} ms | fused ms | {base} / fused |")
    print("|---|---|---|---|---|")
    for net in args.nets:
        qm, x = _setup(net)
        fused = Emulator(qm)
        plain = Emulator(qm)
        plain._plan["residuals"] = {i: replace(f, macs_only=False) for i, f in fused._plan["residuals"].items()} \
            if args.keep_sums else {}
        res = fused._plan["residuals"].values()
        for mult in args.mults:
            cfg = {l.name: LayerConfig(mult) for l in qm.layers}
            ya, yb = fused.run(x, cfg, batch_size=len(x)), plain.run(x, cfg, batch_size=len(x))
            assert np.array_equal(ya.view(np.uint32), yb.view(np.uint32)), (net, mult)
            times = {"fused": [], "plain": []}
            for r in range(args.rounds):
                for key in (("fused", "plain") if r % 2 == 0 else ("plain", "fused")):
                    emu = fused if key == "fused" else plain
                    t = time.process_time()
                    emu.run(x, cfg, batch_size=len(x))
                    times[key].append(time.process_time() - t)
            f, p = statistics.median(times["fused"]) * 1e3, statistics.median(times["plain"]) * 1e3
            print(f"| {net}, {mult} ({len(x)} images) | {len(res)} ({sum(a.macs_only for a in res)}) | {p:.1f} | "
                  f"{f:.1f} | **{p / f:.3f}x** |", flush=True)


if __name__ == "__main__":
    main()
