"""The float32 forward (calibration's and the float baselines' arithmetic): dse's own convolution / GEMM
(cy/float_gemm.h, machine-independent bits) vs the OpenBLAS path it replaced (im2col + np.matmul, run here through
dse.model.nn.reference_conv2d and numpy's matmul) vs onnxruntime fp32, side by side in one run.

Each round starts one child process per path (interleaved, so a noisy spell of the shared box falls on all):
``ours`` and ``blas`` with the environment's OPENBLAS_CORETYPE (the box pins Haswell) and with it unset, and
onnxruntime. A child builds the network (bench_e2e's generators), times ``run_float`` (or the onnxruntime session) on
``--images`` images at 1 and 2 threads (alternating, medians of ``--repeats``; at 1 thread the process's CPU time
too, robust on a loaded box), times ``calibrate`` on ``--calib`` images at 1 thread (dse paths), and prints SHA-256
digests of the float logits and of the calibration (QuantModel.state()). Prints images/s per path (medians over
rounds), the ratios ours / blas and ours / onnxruntime, and which digests agree: ``ours`` must give one digest under
every core type and thread count, ``blas`` need not.

    python benchmarks/bench_float.py --nets r18 r50 mbv2 --rounds 2
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
NETS = {"r18": ("ResNet-18 224", 224), "r50": ("ResNet-50 224", 224), "mbv2": ("MobileNetV2 32", 32)}


def _build(net: str):
    from bench_e2e import mobilenetv2, resnet18, resnet50

    return {"r18": lambda: resnet18(224), "r50": lambda: resnet50(), "mbv2": lambda: mobilenetv2(32)}[net]()


def _state_digest(qm) -> str:
    import numpy as np

    st = qm.state()
    h = hashlib.sha256(json.dumps(st.meta, sort_keys=True).encode())
    for k in sorted(st.arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(st.arrays[k]).tobytes())
    return h.hexdigest()[:16]


def _use_blas() -> None:
    """The executor's Conv / Gemm / MatMul as before cy/float_gemm.h: im2col + np.matmul, x @ W.T + b, np.matmul."""
    import numpy as np
    from dse.model import nn, ops

    ops.conv2d = nn.reference_conv2d
    ops.gemm = lambda x, W, b: x @ W.T + b
    ops.matmul = np.matmul


def child(net: str, path: str, n_img: int, n_calib: int, repeats: int) -> None:
    import numpy as np
    import onnx
    from bench_e2e import images

    model = _build(net)
    size = NETS[net][1]
    x = images(n_img, size, seed=7)
    out = {"path": path, "blas": os.environ.get("OPENBLAS_CORETYPE", "unset")}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        onnx.save(model, str(p))
        if path == "ort":
            from bench_e2e import _ort_session, input_name

            sess = {t: _ort_session(p, t) for t in (1, 2)}
            name = input_name(model)
            run = {t: (lambda v, s=sess[t]: s.run(None, {name: v})[0]) for t in (1, 2)}
        else:
            from dse.model.float_exec import run_float
            from dse.model.onnx_import import load_onnx
            from dse.quant import calibrate
            from dse.threads import set_threads

            g = load_onnx(p)
            if path == "blas":
                _use_blas()

            def make(t):
                def f(v):
                    set_threads(t)
                    return run_float(g, v)
                return f
            run = {t: make(t) for t in (1, 2)}
    logits = {}
    times, cpu1 = {1: [], 2: []}, []
    for t in (1, 2):
        logits[t] = run[t](x[:1])  # warm-up
    for r in range(repeats):
        for t in ((1, 2) if r % 2 == 0 else (2, 1)):
            c, p = time.perf_counter(), time.process_time()
            logits[t] = run[t](x)
            times[t].append(time.perf_counter() - c)
            if t == 1:
                cpu1.append(time.process_time() - p)
    out.update({f"ips{t}": n_img / statistics.median(times[t]) for t in (1, 2)})
    out["cpu1"] = n_img / statistics.median(cpu1)  # images per CPU second at 1 thread: robust to a loaded box
    out["logits"] = {t: hashlib.sha256(np.ascontiguousarray(logits[t], np.float32).tobytes()).hexdigest()[:16]
                     for t in (1, 2)}
    if path != "ort" and n_calib:
        set_threads(1)
        xc = images(n_calib, size, seed=100)
        c = time.perf_counter()
        qm = calibrate(g, xc)
        out["calib_s"] = time.perf_counter() - c
        out["calib"] = _state_digest(qm)
    print(json.dumps(out))


def run_child(net: str, path: str, blas: str | None, args) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{HERE.parent}{os.pathsep}{HERE}")
    env.pop("OPENBLAS_CORETYPE", None)
    if blas:
        env["OPENBLAS_CORETYPE"] = blas
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", net, path, str(args.images),
                        str(args.calib), str(args.repeats)], env=env, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs=5)
    args = ap.parse_args()
    if args.child:
        net, path, n_img, n_calib, repeats = args.child
        child(net, path, int(n_img), int(n_calib), int(repeats))
        return
    sys.path.insert(0, str(HERE))
    from bench_e2e import machine

    pin = os.environ.get("OPENBLAS_CORETYPE")
    paths = [("ours", pin), ("blas", pin), ("ours", None), ("blas", None), ("ort", pin)]
    print(machine())
    print(f"images {args.images} per timing (median of {args.repeats}), calibrate {args.calib} images at 1 thread, "
          f"{args.rounds} rounds interleaved; pinned = OPENBLAS_CORETYPE={pin}, unset = OpenBLAS picks its kernel")
    for net in args.nets:
        res: dict = {}
        for _ in range(args.rounds):
            for path, blas in paths:
                res.setdefault((path, blas), []).append(run_child(net, path, blas, args))
        med = {k: {f: statistics.median(r[f] for r in v) for f in ("ips1", "cpu1", "ips2") +
                   (("calib_s",) if k[0] != "ort" else ())} for k, v in res.items()}
        print(f"\n{NETS[net][0]}")
        for (path, blas), m in med.items():
            cal = f"  calibrate {m['calib_s']:6.2f} s" if "calib_s" in m else ""
            print(f"  {path:4s} OpenBLAS {blas or 'unset':8s}: 1 thread {m['ips1']:7.2f} img/s ({m['cpu1']:7.2f} per "
                  f"CPU s), 2 threads {m['ips2']:7.2f} img/s{cal}")
        o = med[("ours", pin)]
        for (path, blas), m in med.items():
            if path == "ours":
                continue
            calr = f", calibrate {m['calib_s'] / o['calib_s']:.2f}x" if "calib_s" in m else ""
            print(f"  ours (pinned) vs {path} {blas or 'unset'}: {o['ips1'] / m['ips1']:.2f}x at 1 thread "
                  f"({o['cpu1'] / m['cpu1']:.2f}x per CPU s), {o['ips2'] / m['ips2']:.2f}x at 2{calr}")
        for path in ("ours", "blas"):
            runs = [r for (p, _), v in res.items() if p == path for r in v]
            logits = {d for r in runs for d in r["logits"].values()}
            calib = {r["calib"] for r in runs if "calib" in r}
            print(f"  {path} digests over core types, threads and rounds: logits "
                  f"{'identical ' + next(iter(logits)) if len(logits) == 1 else f'{len(logits)} different'}, "
                  f"calibration {'identical ' + next(iter(calib)) if len(calib) == 1 else f'{len(calib)} different'}")


if __name__ == "__main__":
    main()
