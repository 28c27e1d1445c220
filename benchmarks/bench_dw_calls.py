"""The direct depthwise kernel on the calls MobileNetV2 makes: capture every ``dw_conv`` call of bench_e2e's
MobileNetV2 (32x32, 128 images, the layers' real inputs, weights, tables and fused scaling), then time builds of the
extension on them side by side.

    python benchmarks/bench_dw_calls.py capture calls.pkl [--families exact drum6 mitch_w6 LUT Ax-BxP]
    python benchmarks/bench_dw_calls.py replay calls.pkl OLD.so NEW.so [--rounds 7] [--filter exact] [--isa avx2]

``replay`` loads each given build of ``dse._kernels`` (a copy of its .so file) into one process, checks that all of
them give the same bits on every call, and then times every call with each build in interleaved rounds (order
alternating per round), one thread, process CPU time; it prints per family and per layer shape the median total in ms
per build and the first build's time over each other's (> 1: the other is faster).
"""
import argparse
import importlib.util
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MULTS = {"exact": "exact", "drum6": "drum6", "perforation": "perf_j1_k2", "Ax-BxP": "axbxp_k2_w2_a2_dynamic",
         "mitch_w6": "mitch_w6"}


def capture(path: Path, families, size: int = 32, n: int = 128) -> None:
    import onnx

    import bench_e2e as B
    from dse import kernels
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    calls, where = [], {}
    orig = kernels._kernels.dw_conv

    def recording(*args):
        if where:
            calls.append(dict(**where, args=tuple(np.array(a) if isinstance(a, np.ndarray) else a for a in args)))
        return orig(*args)

    kernels._kernels.dw_conv = recording
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lut = B.imported_lut(tmp)
        kernels.set_threads(1)
        onnx.save(B.mobilenetv2(size), str(tmp / "m.onnx"))
        qm = calibrate(load_onnx(tmp / "m.onnx"), B.images(16, size, seed=3))
        emu, x = Emulator(qm), B.images(n, size, seed=11)
        for fam in families:
            cfg = {layer.name: LayerConfig(lut if fam == "LUT" else MULTS[fam]) for layer in qm.layers}
            where.update(fam=fam)
            emu.run(x, cfg, batch_size=n)
            where.clear()
            print(f"{fam}: {sum(c['fam'] == fam for c in calls)} calls", flush=True)
    kernels._kernels.dw_conv = orig
    with open(path, "wb") as f:
        pickle.dump(calls, f)


def _load(so: str, i: int):
    spec = importlib.util.spec_from_file_location(f"build{i}._kernels", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _call(mod, c, isa):
    a = list(c["args"])
    a[12] = isa if isa is not None else a[12]  # (x, wp, mode, lutT, ftab, gtab, bound, stride, pads, dilation,
    a[13] = 1  # out_hw, a_signed, isa, threads, scaling, xtab)
    return mod.dw_conv(*a)


def _shape(c) -> str:
    x, wp, mode = c["args"][:3]
    return f"{c['fam']}  {mode:7s} C={x.shape[1]:4d} {x.shape[2]:2d}x{x.shape[3]:<2d} s{c['args'][7][0]}"


def replay(path: Path, sos, rounds: int, filt: str | None, isa: str | None) -> None:
    mods = [_load(so, i) for i, so in enumerate(sos)]
    with open(path, "rb") as f:
        calls = [c for c in pickle.load(f) if filt is None or filt == c["fam"]]
    for c in calls:
        ref = _call(mods[0], c, isa).view(np.uint8)
        for m in mods[1:]:
            assert np.array_equal(_call(m, c, isa).view(np.uint8), ref), "the builds disagree"
    times = {}
    for r in range(rounds):
        order = range(len(mods)) if r % 2 == 0 else reversed(range(len(mods)))
        for i in order:
            tot = {}
            for c in calls:
                t = time.process_time()
                _call(mods[i], c, isa)
                dt = time.process_time() - t
                tot[c["fam"]] = tot.get(c["fam"], 0.0) + dt
                tot[_shape(c)] = tot.get(_shape(c), 0.0) + dt
            for k, v in tot.items():
                times.setdefault(k, [[] for _ in mods])[i].append(v)
    print(f"{len(calls)} calls, {rounds} rounds, isa {isa or 'default'}, medians of the summed CPU time (ms): "
          + " | ".join(sos))
    for k in sorted(times, key=lambda k: (k.split()[0], "  " in k, k)):
        med = [statistics.median(v) for v in times[k]]
        print(f"{k:44s} " + " ".join(f"{m * 1e3:8.2f}" for m in med) + "  " +
              " ".join(f"{med[0] / m:5.2f}x" for m in med[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("file", type=Path)
    c.add_argument("--families", nargs="+", default=["exact", "drum6", "Ax-BxP", "mitch_w6", "LUT"],
                   choices=list(MULTS) + ["LUT"])
    r = sub.add_parser("replay")
    r.add_argument("file", type=Path)
    r.add_argument("so", nargs="+", help="copies of dse/_kernels*.so to compare (the first is the baseline)")
    r.add_argument("--rounds", type=int, default=7)
    r.add_argument("--filter", help="only this family's calls")
    r.add_argument("--isa", choices=["avx512", "avx2", "scalar"], help="cap the kernels' ISA level")
    a = ap.parse_args()
    if a.cmd == "capture":
        capture(a.file, a.families)
    else:
        replay(a.file, a.so, a.rounds, a.filter, a.isa)


if __name__ == "__main__":
    main()
