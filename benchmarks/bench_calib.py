"""Calibration cost on ResNet-18 at 224, this tree vs a baseline tree (e.g. /work/main before a change), in one run.

Each round runs one child process per tree (interleaved: base, ours, base, ours, ...), one thread each
(OPENBLAS_NUM_THREADS=1, kernels.set_threads(1)); a child calibrates ``--calib`` generated images and runs the float32
forward (``run_float``, the search set-up's float baselines) on ``--float`` images, and prints the seconds and a
SHA-256 of everything the calibration stores (act_quant and every MacLayer field) and of the float logits. Prints the
medians per tree, the ratio base/ours, and whether the digests agree (they must: the change is not to move a bit).

    python benchmarks/bench_calib.py --base /work/main --calib 64 --float 64 --rounds 3
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(size: int, n_calib: int, n_float: int) -> None:
    import numpy as np
    import onnx
    from dse import kernels  # the tree's dse, before bench_e2e puts this checkout first on sys.path
    from dse.model.float_exec import run_float
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate
    from bench_e2e import images, resnet18

    kernels.set_threads(1)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r18.onnx"
        onnx.save(resnet18(size), str(p))
        g = load_onnx(p)
    x = images(n_calib, size, seed=100)
    t0 = time.perf_counter()
    qm = calibrate(g, x)
    t_cal = time.perf_counter() - t0
    h = hashlib.sha256(repr(sorted(qm.act_quant.items())).encode())
    for l in qm.layers:
        for f in l.__dataclass_fields__:
            v = getattr(l, f)
            h.update(f.encode())
            h.update(v.dtype.str.encode() + v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
    xf = images(n_float, size, seed=7)
    t0 = time.perf_counter()
    logits = run_float(g, xf)
    t_float = time.perf_counter() - t0
    print(json.dumps({"dse": __import__("dse").__file__, "calib_s": t_cal, "float_s": t_float,
                      "calib": h.hexdigest(), "float": hashlib.sha256(logits.tobytes()).hexdigest()}))


def run_child(tree: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{HERE}", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(args.size), str(args.calib),
                          str(args.float)], env=env, check=True, capture_output=True, text=True, cwd=tree).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert Path(r["dse"]).resolve().is_relative_to(Path(tree).resolve()), (r["dse"], tree)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="/work/main", help="baseline tree (its dse and built extension)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--float", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=3, type=int, metavar=("SIZE", "NCALIB", "NFLOAT"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    ours = str(HERE.parent)
    res: dict = {"base": [], "ours": []}
    for _ in range(args.rounds):
        for name, tree in (("base", args.base), ("ours", ours)):
            res[name].append(run_child(tree, args))
    print(f"ResNet-18 {args.size}, 1 thread, {args.rounds} rounds interleaved; base={args.base} ours={ours}")
    for key, n, what in (("calib_s", args.calib, "calibrate"), ("float_s", args.float, "run_float")):
        b = statistics.median(r[key] for r in res["base"])
        o = statistics.median(r[key] for r in res["ours"])
        print(f"{what:9s} {n:4d} img: base {b:7.2f} s ({n / b:6.1f} img/s)  ours {o:7.2f} s ({n / o:6.1f} img/s)"
              f"  base/ours {b / o:.2f}x")
    for key in ("calib", "float"):
        digests = {r[key] for r in res["base"] + res["ours"]}
        print(f"{key} digest: {'identical' if len(digests) == 1 else 'DIFFERENT'} ({sorted(digests)[0][:16]})")


if __name__ == "__main__":
    main()
