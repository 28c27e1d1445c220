"""The SiLU pairs computed in the producing conv's output step (dse.emulate's ``_fused_conv_silus``) vs after it,
whole networks (EfficientNet-B0-style), one run.

    python benchmarks/bench_silu_conv.py MODEL.onnx [--mults exact drum6 mitch_w6] [--rounds 7]
    python benchmarks/bench_silu_conv.py MODEL.onnx --base BASELINE_CHECKOUT [--rounds 5] [--reps 5]

Without ``--base``: one process, the same Emulator run with the fusion and without it (the table emptied: the conv
writes its float32 output, the compiled SiLU pass reads it back), one streaming batch of the model's 224x224 (or its
own fixed) input per run, rounds interleaved with the order alternating, one thread, process CPU time, medians; the
logits are asserted bit-identical. With ``--base``: one child process per checkout and round (each imports its own
``dse`` and calibrates; one untimed batch, then ``--reps`` timed ones per multiplier, the median), alternating
checkouts with the order flipped every round; medians over the rounds, the ratio base / ours (> 1: ours faster), a
checksum of the logits' bits (equal: the same logits) and each child's peak RSS (VmHWM, calibration included).
MODEL.onnx: ``python scripts/export_models.py -o m224 --size 224 --models efficientnet_b0_style``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _setup(model: str):
    import dse  # the checkout on PYTHONPATH, bound before bench_e2e puts its own parent on sys.path

    sys.path.insert(0, str(HERE))
    from bench_e2e import images

    from dse.emulate import Emulator
    from dse.kernels import set_threads
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate, stream_batch_size

    g = load_onnx(model)
    size = g.shapes[g.input_name][-1] if g.shapes.get(g.input_name) else 224
    n = stream_batch_size(g)
    set_threads(1)
    qm = calibrate(g, images(16, size, seed=3))
    return qm, images(n, size, seed=11), Emulator, dse.__file__


def _cfg(qm, mult: str) -> dict:
    from dse.layer_config import LayerConfig

    return {l.name: LayerConfig(mult) for l in qm.layers}


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024


def child(model: str, mults: list[str], reps: int) -> None:
    qm, x, Emulator, where = _setup(model)
    emu, out = Emulator(qm), []
    for m in mults:
        cfg = _cfg(qm, m)
        y = emu.run(x, cfg, batch_size=len(x))
        ts = []
        for _ in range(reps):
            t0 = time.process_time()
            emu.run(x, cfg, batch_size=len(x))
            ts.append(time.process_time() - t0)
        out.append(f"{statistics.median(ts) * 1e3:.2f} {int(y.view(np.uint32).sum(dtype=np.uint64))}")
    print(" ".join(out), f"{_peak_mib():.0f}", len(x), where)


def against_base(model: str, base: Path, mults: list[str], rounds: int, reps: int) -> None:
    ours = HERE.parent
    res = {"base": [], "ours": []}
    for r in range(rounds):
        for tag, root in (("base", base), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("base", base)):
            env = dict(os.environ, PYTHONPATH=str(root))
            p = subprocess.run([sys.executable, str(Path(__file__).resolve()), model, "--child", "--mults", *mults,
                                "--reps", str(reps)], env=env, capture_output=True, text=True, check=True, cwd=root)
            res[tag].append(p.stdout.split())
    n = res["ours"][0][-2]
    print("base", res["base"][0][-1], "ours", res["ours"][0][-1])
    print(f"{Path(model).name}, {n} images per batch, one thread, {rounds} rounds x {reps} batches, CPU time medians")
    for k, m in enumerate(mults):
        b = statistics.median(float(v[2 * k]) for v in res["base"])
        o = statistics.median(float(v[2 * k]) for v in res["ours"])
        same = len({v[2 * k + 1] for v in res["base"] + res["ours"]}) == 1
        print(f"{m:10s} base {b:8.1f} ms  ours {o:8.1f} ms  base/ours {b / o:.3f}x  logits "
              f"{'the same' if same else 'DIFFER'}")
    for tag in ("base", "ours"):
        print(f"peak RSS {tag}: " + ", ".join(v[2 * len(mults)] for v in res[tag]) + " MiB")


def in_process(model: str, mults: list[str], rounds: int) -> None:
    qm, x, Emulator, _ = _setup(model)
    fused, plain = Emulator(qm), Emulator(qm)
    plain._plan["conv_silus"] = {}
    print(f"{Path(model).name}, {len(x)} images per batch, {len(fused._plan['conv_silus'])} convs with their SiLU, one "
          f"thread, {rounds} rounds, CPU time medians")
    for m in mults:
        cfg = _cfg(qm, m)
        a, b = fused.run(x, cfg, batch_size=len(x)), plain.run(x, cfg, batch_size=len(x))
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), m
        t = {"fused": [], "unfused": []}
        for r in range(rounds):
            order = (("fused", fused), ("unfused", plain)) if r % 2 == 0 else (("unfused", plain), ("fused", fused))
            for name, e in order:
                t0 = time.process_time()
                e.run(x, cfg, batch_size=len(x))
                t[name].append(time.process_time() - t0)
        f, u = statistics.median(t["fused"]) * 1e3, statistics.median(t["unfused"]) * 1e3
        print(f"{m:10s} unfused {u:8.1f} ms  fused {f:8.1f} ms  unfused/fused {u / f:.3f}x  logits the same")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--mults", nargs="+", default=["exact", "drum6", "mitch_w6"])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--base", type=Path, help="a baseline checkout (built) to compare whole runs against")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    model = str(Path(a.model).resolve())
    if a.child:
        child(model, a.mults, a.reps)
    elif a.base is not None:
        against_base(model, a.base.resolve(), a.mults, a.rounds, a.reps)
    else:
        in_process(model, a.mults, a.rounds)


if __name__ == "__main__":
    main()
