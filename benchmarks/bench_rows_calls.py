"""The row-table kernel on the calls a network makes: capture every ``rows_gemm`` call of bench_e2e's networks with a
full table (operands, tables, output layout, scaling), then time builds of the extension on them side by side.

    python benchmarks/bench_rows_calls.py capture calls.pkl [--nets mobilenetv2-32 resnet18-32] [--families mitch_w6 LUT]
    python benchmarks/bench_rows_calls.py replay calls.pkl OLD.so NEW.so [--rounds 5] [--filter mobilenetv2-32]
    python benchmarks/bench_rows_calls.py paths [--nets resnet18-32 resnet18-224] [--families mitch_w6 LUT]

``replay`` loads each given build of ``dse._kernels`` (a copy of its .so file) into one process, checks that all of
them give the same bits on every call, and then times every call with each build in interleaved rounds (order
alternating per round), one thread, process CPU time; it prints per network/table and per call shape the median
total in ms per build and the first build's time over each other's (> 1: the other is faster).

``paths`` times the path choice of the cost model (dse.kernels._table_plan: "rows" or "split", and the rows
orientation): every conv2d_scaled call of the networks run with path="rows" and path="split" forced and with "auto",
interleaved rounds, one thread, process CPU time; it prints per call shape the medians, auto's choice and the faster
forced path.
"""
import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from call_replay import NETS, capture_calls, emulations, fresh_add_outputs, load_builds, time_builds  # noqa: E402


def _record(I, S, D, off, isa=None, threads=1, out=None, offset=0, P=0, ldb=0, sel_is_m=False, add=False,
            scaling=None) -> dict:
    """What a replay needs of a ``rows_gemm`` call: operands and tables copied, the output's rows and dtype."""
    return dict(I=np.array(I), S=np.array(S), D=np.array(D), off=np.array(off),
                out=None if out is None else (out.shape[0], out.dtype.str), offset=offset, P=P, ldb=ldb,
                sel_is_m=sel_is_m, add=add, scaling=scaling)


def _emulated_convs(nets, families):
    """Yields (net, family, kwargs of one kernels.conv2d_scaled call) for every conv of bench_e2e's networks run with
    the table on all layers (the calls are captured during the run, then yielded)."""
    from dse import kernels

    orig, calls = kernels.conv2d_scaled, []

    def recording(x, w, mult, a_signed, scaling, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                  path="auto", isa=None):
        calls.append(dict(x=np.array(x), w=np.array(w), mult=mult, a_signed=a_signed, scaling=scaling, stride=stride,
                          pads=pads, dilation=dilation, groups=groups))
        return orig(x, w, mult, a_signed, scaling, stride, pads, dilation, groups, path, isa)

    for net, fam, run in emulations(nets, families):
        kernels.conv2d_scaled = recording
        try:
            run()
        finally:
            kernels.conv2d_scaled = orig
        for c in calls:
            yield net, fam, c
        calls.clear()


def paths(nets, families, rounds: int) -> None:
    from dse import kernels as K

    print(f"{'call':70s} {'auto plan':>14s} {'rows ms':>8s} {'split ms':>8s} {'auto ms':>8s}  faster")
    tot = {}
    for net, fam, c in _emulated_convs(nets, families):
        x, w = c["x"], c["w"]
        if w.shape[1] * w.shape[2] * w.shape[3] == 0 or c["groups"] != 1:
            continue
        prep = K._prepare(c["mult"], c["a_signed"])
        N, K_ = w.shape[0], w.shape[1] * w.shape[2] * w.shape[3]
        xs = x.shape
        H, W = K.conv_out_hw(xs[2], xs[3], w.shape[2], w.shape[3], c["stride"], c["pads"], c["dilation"])
        kind, by_act = K._table_plan(prep, xs[0] * H * W, N, "auto", K_)
        runs = {p: [] for p in ("rows", "split", "auto")}
        outs = {}
        for r in range(rounds):
            for p in (("rows", "split", "auto") if r % 2 == 0 else ("auto", "split", "rows")):
                t = time.process_time()
                outs[p] = K.conv2d_scaled(x, w, c["mult"], c["a_signed"], c["scaling"], c["stride"], c["pads"],
                                          c["dilation"], c["groups"], path=p)
                runs[p].append(time.process_time() - t)
        as_bytes = {p: [np.ascontiguousarray(a).view(np.uint8) for a in (o if isinstance(o, tuple) else (o,)) if a is not None]
                    for p, o in outs.items()}  # a fused Add returns (sum, patterns or None)
        assert all(len(b) == len(as_bytes["rows"]) and all(map(np.array_equal, b, as_bytes["rows"]))
                   for b in as_bytes.values())
        med = {p: statistics.median(v) * 1e3 for p, v in runs.items()}
        key = f"{net} {fam} K={K_} N={N} M={xs[0] * H * W} ({xs[0]} x {H}x{W})"
        plan = f"{kind}{' by_act' if by_act else ''}"
        print(f"{key:70s} {plan:>14s} {med['rows']:8.2f} {med['split']:8.2f} {med['auto']:8.2f}  "
              f"{'rows' if med['rows'] <= med['split'] else 'split'} {max(med['rows'], med['split']) / min(med['rows'], med['split']):.2f}x",
              flush=True)
        g = tot.setdefault(f"{net} {fam}", {"rows": 0.0, "split": 0.0, "auto": 0.0, "best": 0.0})
        for p in ("rows", "split", "auto"):
            g[p] += med[p]
        g["best"] += min(med["rows"], med["split"])
    for k, g in tot.items():
        print(f"{k}: summed medians (ms) rows {g['rows']:.1f}, split {g['split']:.1f}, auto {g['auto']:.1f}, "
              f"per-call best forced path {g['best']:.1f}")


def _call(mod, c):
    scaling, base = fresh_add_outputs(c["scaling"])  # a fused Add's output buffer is the flat view of its base
    out = base.reshape(-1) if base is not None else \
        None if c["out"] is None else np.zeros(c["out"][0], np.dtype(c["out"][1]))
    res, _ = mod.rows_gemm(c["I"], c["S"], c["D"], c["off"], None, 1, out, c["offset"], c["P"], c["ldb"],
                           sel_is_m=c["sel_is_m"], add=c["add"], scaling=scaling)
    return out if res is None else res


def _keys(c) -> tuple[str, str]:
    group = f"{c['net']} {c['fam']}"
    return group, f"{group}  K={c['I'].shape[0]} sel={c['S'].shape[0]} idx={c['I'].shape[1]}"


def replay(path: Path, sos, rounds: int, filt: str | None) -> None:
    with open(path, "rb") as f:
        calls = [c for c in pickle.load(f) if filt is None or filt in f"{c['net']} {c['fam']}"]
    time_builds(calls, load_builds(sos), _call, _keys, rounds, "one thread", sos, skip_below_s=3e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("file", type=Path)
    c.add_argument("--nets", nargs="+", default=["mobilenetv2-32", "resnet18-32"], choices=NETS)
    c.add_argument("--families", nargs="+", default=["mitch_w6", "LUT"])
    r = sub.add_parser("replay")
    r.add_argument("file", type=Path)
    r.add_argument("so", nargs="+", help="copies of dse/_kernels*.so to compare (the first is the baseline)")
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--filter", help="only calls whose 'net family' contains this")
    p = sub.add_parser("paths")
    p.add_argument("--nets", nargs="+", default=["resnet18-32", "resnet18-224"], choices=NETS)
    p.add_argument("--families", nargs="+", default=["mitch_w6", "LUT"])
    p.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if a.cmd == "capture":
        capture_calls("rows_gemm", _record, a.nets, a.families, a.file)
    elif a.cmd == "paths":
        paths(a.nets, a.families, a.rounds)
    else:
        replay(a.file, a.so, a.rounds, a.filter)


if __name__ == "__main__":
    main()
