"""AME predictor vs bit-exact emulation on the bundled LeNet-5: time per configuration, speedup, and accuracy of the
prediction (Spearman rank correlation and mean absolute error on held-out configurations).

Run:  python benchmarks/bench_predict.py [--configs 30] [--images 2000] [--seed 0] [--write-results]
One thread (BLAS thread counts set to 1 before numpy is imported). Calibration on the bundled calibration split, then
``--configs`` random per-layer configurations (library 8-bit multipliers, CV on/off at random, a random fraction of
layers approximate) are emulated on ``--images`` images of the search split: the all-exact network plus the first
``max(3, n // 2)`` fit ``accuracy ~ b0 + b1 AME + b2 AME^2``; the rest are held out. Predictor time is the warm
per-configuration time (per-layer statistics precomputed once; that one-off cost is reported separately).
``--write-results`` replaces the "## Predictor" section of benchmarks/RESULTS.md (other sections are left alone).
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def run(n_configs: int, images: int, seed: int, model: str, data: str, calib: str) -> dict:
    from dse.emulate import Emulator
    from dse.predict import fit_and_validate
    from dse.session import DataRef, RunInputs, open_session

    s = open_session(RunInputs(model, DataRef(calib, f"calibration data {calib}"), (DataRef(data, f"data {data}"),)))
    qmodel, ds = s.qmodel, s.data[0]
    sub = ds.subset(np.random.default_rng(seed).permutation(len(ds))[:images])
    x, y = sub.images(), sub.y
    emu = Emulator(qmodel)
    r = fit_and_validate(qmodel.layers, lambda c: emu.accuracy(x, y, c), n_configs, seed)
    r["images"] = int(len(y))
    r["layers"] = [(l.name, l.M, l.K, l.N) for l in qmodel.layers]
    return r


def table(r: dict) -> str:
    v, m = r["validation"], r["model"]
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| emulation time / configuration ({r['images']} images) | {1e3 * r['emulate_seconds']:.1f} ms |",
        f"| predictor time / configuration (warm) | {1e6 * r['predict_seconds']:.2f} us |",
        f"| speedup predictor vs emulation | {r['speedup']:.3g}x |",
        f"| one-off precompute (all layers x multipliers x cv) | {r['precompute_seconds']:.2f} s |",
        f"| configurations fit / held out | {r['n_fit']} (incl. all-exact) / {r['n_holdout']} |",
        f"| exact accuracy (search split) | {100 * r['exact_accuracy']:.2f} % |",
        f"| Spearman rho (held out) | {v.spearman:.3f} |",
        f"| mean abs error (held out) | {100 * v.mae:.2f} pp |",
        f"| fitted model | acc = {m.b0:.4f} + {m.b1:.4g} AME + {m.b2:.4g} AME^2 (AME <= {m.ame_max:.3g}) |",
    ]
    return "\n".join(lines)


def write_results(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = "## Predictor\n\n" + text.rstrip() + "\n"
    pat = re.compile(r"^## Predictor\n.*?(?=^## |\Z)", re.S | re.M)
    new = pat.sub(lambda _: section + "\n", old, count=1) if pat.search(old) else old.rstrip() + "\n\n" + section
    RESULTS.write_text(new)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=30)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--data", default="fashion-mnist:search")
    ap.add_argument("--calib", default="fashion-mnist:calib")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args()
    try:
        r = run(a.configs, a.images, a.seed, a.model, a.data, a.calib)
    except ImportError as exc:
        print(f"bench_predict: pipeline piece missing ({exc}); needs dse.model.onnx_import, dse.quant.calibrate, "
              "dse.emulate.Emulator, dse.data", file=sys.stderr)
        return 1
    v = r["validation"]
    print(f"model {a.model}: layers (name, M, K, N) {r['layers']}")
    print(f"{'held-out':>8} {'AME':>9} {'predicted':>10} {'emulated':>9}")
    for i, (am, p, e) in enumerate(zip(r["holdout_ame"], v.predicted, v.emulated)):
        print(f"{i:>8} {am:>9.4g} {100 * p:>9.2f}% {100 * e:>8.2f}%")
    t = table(r)
    print(t)
    if a.write_results:
        cpu = platform.processor() or platform.machine()
        write_results(f"`python benchmarks/bench_predict.py --configs {a.configs} --images {a.images} --seed {a.seed}`"
                      f" ({cpu}, one thread, bundled LeNet-5, Fashion-MNIST search split)\n\n" + t)
        print(f"updated {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
