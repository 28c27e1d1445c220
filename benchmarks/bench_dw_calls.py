"""The direct depthwise kernel on the calls MobileNetV2 makes: capture every ``dw_conv`` call of bench_e2e's
MobileNetV2 (32x32, 128 images, the layers' real inputs, weights, tables and fused scaling; ``--nets``: other
networks, bench_e2e's or ONNX files as its --onnx takes them), then time builds of the extension on them side by
side.

    python benchmarks/bench_dw_calls.py capture calls.pkl [--families exact drum6 mitch_w6 LUT Ax-BxP] [--nets NET|F.onnx[:N] ...]
    python benchmarks/bench_dw_calls.py replay calls.pkl OLD.so NEW.so [--rounds 7] [--filter exact] [--isa avx2]

``replay`` loads each given build of ``dse._kernels`` (a copy of its .so file) into one process, checks that all of
them give the same bits on every call, and then times every call with each build in interleaved rounds (order
alternating per round), one thread, process CPU time; it prints per family and per layer shape the median total in ms
per build and the first build's time over each other's (> 1: the other is faster).
"""
import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from call_replay import MULTS, capture_calls, fresh_add_outputs, load_builds, time_builds  # noqa: E402


def _record(*args, out=None) -> dict:
    """What a replay needs of a ``dw_conv`` call: its positional arguments, arrays copied (``out`` is made anew by
    the replay)."""
    return dict(args=tuple(np.array(a) if isinstance(a, np.ndarray) else a for a in args))


def _call(mod, c, isa):
    a = list(c["args"])
    a[12] = isa if isa is not None else a[12]  # (x, wp, mode, lutT, ftab, gtab, bound, stride, pads, dilation,
    a[13] = 1  # out_hw, a_signed, isa, threads, scaling, xtab, block)
    a[14], base = fresh_add_outputs(a[14])  # a fused Add writes into its own base array
    return mod.dw_conv(*a, out=base)


def _shape(c) -> str:
    x, wp, mode = c["args"][:3]
    return (f"{c['fam']}  {Path(c['net'].partition(':')[0]).stem[:16]:16s} {mode:7s} {wp.shape[1]}x{wp.shape[2]} C={x.shape[1]:4d} {x.shape[2]:3d}x{x.shape[3]:<3d} "
            f"s{c['args'][7][0]}")


def replay(path: Path, sos, rounds: int, filt: str | None, isa: str | None) -> None:
    with open(path, "rb") as f:
        calls = [c for c in pickle.load(f) if filt is None or filt == c["fam"]]
    time_builds(calls, load_builds(sos), lambda mod, c: _call(mod, c, isa), lambda c: (c["fam"], _shape(c)), rounds,
                f"one thread, isa {isa or 'default'}", sos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("file", type=Path)
    c.add_argument("--families", nargs="+", default=["exact", "drum6", "Ax-BxP", "mitch_w6", "LUT"],
                   choices=list(MULTS) + ["LUT"])
    c.add_argument("--nets", nargs="+", default=["mobilenetv2-32"],
                   help="bench_e2e's network names or ONNX files (PATH[:N])")
    r = sub.add_parser("replay")
    r.add_argument("file", type=Path)
    r.add_argument("so", nargs="+", help="copies of dse/_kernels*.so to compare (the first is the baseline)")
    r.add_argument("--rounds", type=int, default=7)
    r.add_argument("--filter", help="only this family's calls")
    r.add_argument("--isa", choices=["avx512", "avx2", "scalar"], help="cap the kernels' ISA level")
    a = ap.parse_args()
    if a.cmd == "capture":
        capture_calls("dw_conv", _record, a.nets, a.families, a.file)
    else:
        replay(a.file, a.so, a.rounds, a.filter, a.isa)


if __name__ == "__main__":
    main()
