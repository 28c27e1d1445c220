"""The small ViT's activation matmuls (QK^T and AV, one of each kind as one batch of images captured from an
Emulator.run): CPU time of one thread's ``matmul_scaled`` per multiplier (mitch_w6, bench_e2e's imported LUT),
medians over rounds, on builds of dse._kernels alternated in one process (their output bits asserted equal), or with
``--base CHECKOUT`` this checkout against another one (its own dse and build; where the Python around the kernels
changed too) in alternating child processes (the outputs' checksums compared).

    python benchmarks/bench_vit_matmuls.py VIT.onnx [OLD.so NEW.so ...] [--rounds 7] [--images 256]
    python benchmarks/bench_vit_matmuls.py VIT.onnx --base CHECKOUT [--rounds 3]

VIT.onnx: ``python scripts/export_models.py -o m64 --size 64 --models vit_small``."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def capture(model: str, images: int) -> dict:
    """The first QK^T and AV matmuls' operands and scalings of one mitch_w6 run (every layer on mitch_w6)."""
    sys.path.insert(0, str(HERE))
    import bench_e2e as be
    from dse import kernels
    from dse.emulate import Emulator
    from dse.kernels import using_threads
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    qm = calibrate(load_onnx(model), be.image_batches(64, 64, 64, seed=100))
    got, real = {}, kernels.matmul_scaled

    def spy(a, b, mult, a_signed, scaling, isa=None):
        kind = "QK^T" if a.dtype == np.int8 else "AV"
        got.setdefault(f"{kind} {a.shape[-2]}x{a.shape[-1]}x{b.shape[-1]}", (a.copy(), b.copy(), a_signed, scaling))
        return real(a, b, mult, a_signed, scaling, isa)

    kernels.matmul_scaled = spy
    try:
        with using_threads(1):
            Emulator(qm).run(be.images(images, 64, 7), {l.name: LayerConfig("mitch_w6") for l in qm.layers})
    finally:
        kernels.matmul_scaled = real
    return got


def checkouts(a) -> None:
    """This checkout against ``a.base``: per round one child per checkout (each imports its own dse), alternating."""
    res = {"base": [], "ours": []}
    for _ in range(a.rounds):
        for tag, root in (("base", Path(a.base).resolve()), ("ours", HERE.parent)):
            env = dict(os.environ, PYTHONPATH=str(root))
            r = subprocess.run([sys.executable, str(Path(__file__).resolve()), a.model, "--child", "--rounds", "5",
                                "--images", str(a.images)], env=env, capture_output=True, text=True, check=True)
            res[tag].append(dict((" ".join(w[:2]), (float(w[2]), w[3])) for w in map(str.split, r.stdout.splitlines())))
    for key in res["base"][0]:
        b = np.median([r[key][0] for r in res["base"]])
        o = np.median([r[key][0] for r in res["ours"]])
        same = len({r[key][1] for r in res["base"] + res["ours"]}) == 1
        print(f"{key:24s} base {b:6.1f} ms  ours {o:6.1f} ms  {b / o:.2f}x  outputs {'the same' if same else 'DIFFER'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("so", nargs="*", help="copies of dse/_kernels*.so to compare (the first is the baseline)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--base", help="a checkout to compare this one with (child processes)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    import dse  # noqa: F401  (the checkout on PYTHONPATH, bound before bench_e2e puts its own parent on sys.path)
    if a.base:
        checkouts(a)
        return
    sys.path.insert(0, str(HERE))
    import bench_e2e as be
    from call_replay import load_builds
    from dse import kernels
    from dse.arith.multipliers import get_multiplier
    from dse.kernels import using_threads

    ops = capture(a.model, a.images)
    mods = load_builds(a.so) if a.so else [kernels._kernels]
    names = [Path(s).name for s in a.so] if a.so else ["this build"]
    mults = {"mitch_w6": get_multiplier("mitch_w6"),
             "LUT": get_multiplier(be.imported_lut(Path(tempfile.mkdtemp())))}
    orig = kernels._kernels
    if not a.child:
        print("kernels level", kernels._kernels.hardware_isa(), "| builds:", ", ".join(names))
    try:
        with using_threads(1):
            for mname, m in mults.items():
                for key, (x, y, signed, sc) in ops.items():
                    ref = None
                    for mod in mods:
                        kernels._kernels = mod
                        r = kernels.matmul_scaled(x, y, m, signed, sc).view(np.uint32)
                        assert ref is None or np.array_equal(r, ref), "the builds disagree"
                        ref = r
                    ts = [[] for _ in mods]
                    for _ in range(a.rounds):
                        for i, mod in enumerate(mods):
                            kernels._kernels = mod
                            t0 = time.process_time()
                            kernels.matmul_scaled(x, y, m, signed, sc)
                            ts[i].append(time.process_time() - t0)
                    med = [np.median(t) * 1e3 for t in ts]
                    if a.child:
                        print(mname, key.split()[0], med[0], int(ref.sum(dtype=np.uint64)))
                        continue
                    print(f"{mname:9s} {key:14s} " + "  ".join(
                        f"{n} {v:6.1f} ms" + ("" if i == 0 else f" ({med[0] / v:.2f}x)")
                        for i, (n, v) in enumerate(zip(names, med))))
    finally:
        kernels._kernels = orig


if __name__ == "__main__":
    main()
