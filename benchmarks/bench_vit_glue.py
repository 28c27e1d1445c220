"""The small ViT, main against this checkout: one process per checkout (each imports its own ``dse``), alternating,
CPU time of a one-thread Emulator.run of 256 images per multiplier (default exact and mitch_w6; "LUT": bench_e2e's
imported table), medians of 5, and a checksum of the logits' bits (equal checksums: the same logits).

    python benchmarks/bench_vit_glue.py VIT.onnx BASELINE_CHECKOUT [ROUNDS [MULTIPLIER ...]]

VIT.onnx: ``python scripts/export_models.py -o m64 --size 64 --models vit_small``."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def child(model: str, mults: list[str]) -> None:
    import dse  # the checkout on PYTHONPATH, bound before bench_e2e puts its own parent on sys.path

    sys.path.insert(0, str(HERE))
    import bench_e2e as be
    from dse.emulate import Emulator
    from dse.kernels import using_threads
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    g = load_onnx(model)
    qm = calibrate(g, be.image_batches(64, 64, 64, seed=100))
    x = be.images(256, 64, 7)
    emu = Emulator(qm)
    out = []
    lut = be.imported_lut(Path(tempfile.mkdtemp())) if "LUT" in mults else None
    with using_threads(1):
        for name in mults:
            mult = lut if name == "LUT" else name
            cfg = None if name == "exact" else {l.name: LayerConfig(mult) for l in qm.layers}
            y = emu.run(x, cfg)
            ts = []
            for _ in range(5):
                t0 = time.process_time()
                emu.run(x, cfg)
                ts.append(time.process_time() - t0)
            out.append(f"{np.median(ts) * 1e3:.1f} {int(y.view(np.uint32).sum(dtype=np.uint64))}")
    print(" ".join(out), dse.__file__)


def main() -> None:
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    model, base, rounds = sys.argv[1], Path(sys.argv[2]).resolve(), int(sys.argv[3]) if len(sys.argv) > 3 else 3
    mults = sys.argv[4:] or ["exact", "mitch_w6"]
    ours = HERE.parent
    t = {"base": [], "ours": []}
    for _ in range(rounds):
        for tag, root in (("base", base), ("ours", ours)):
            env = dict(os.environ, PYTHONPATH=str(root))
            # this script in both children (each imports the dse of its PYTHONPATH first)
            r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", model, *mults], env=env,
                               capture_output=True, text=True, check=True, cwd=root)
            t[tag].append(r.stdout.split())
    for k, name in enumerate(mults):
        b = np.median([float(v[2 * k]) for v in t["base"]])
        o = np.median([float(v[2 * k]) for v in t["ours"]])
        same = {v[2 * k + 1] for v in t["base"] + t["ours"]}
        if k == 0:
            print("baseline", t["base"][0][-1], "ours", t["ours"][0][-1])
        print(f"ViT {name}: baseline {b:.1f} ms, ours {o:.1f} ms, {b / o:.2f}x "
              f"({256 / b * 1e3:.0f} -> {256 / o * 1e3:.0f} img/s), logits {'the same' if len(same) == 1 else 'DIFFER'}")


if __name__ == "__main__":
    main()
