"""The table multipliers' conv calls, this tree vs a baseline tree (e.g. a clone of /work/main before a change), in
one run: every ``conv2d_scaled`` call of bench_e2e's networks with a family on all layers is captured (with this
tree), then each round runs one child process per tree (interleaved, order alternating per round; one thread) that
times every call on each path of ``--paths`` (process CPU time) and hashes its output. Prints per call shape the
medians per tree and the ratio base / ours (> 1: ours faster), the sums, and whether the outputs agree (they must).

    python benchmarks/bench_split.py --base /tmp/main-clone --nets resnet18-224 resnet18-32 --families LUT \\
        --paths auto split --rounds 5
    python benchmarks/bench_split.py --base /tmp/main-clone --networks 3 --rounds 5 --families LUT mitch_w6

``--networks REPS`` times whole streaming batches of the networks instead (bench_e2e's emulator runs: each child
calibrates, runs one untimed batch, then REPS timed ones), medians of the per-child medians; ``--nets`` may then also
name ONNX files (PATH[:N], as bench_e2e.py --onnx takes them). ``--families exact``
times the exact FxP8 path the same way (e.g. a change of the integer GEMM kernel against main's build).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def capture(nets, families, path: Path) -> None:
    """Pickles [(net, family, call kwargs without the multiplier)] of every conv2d_scaled call."""
    from bench_rows_calls import _emulated_convs

    calls = []
    for net, fam, c in _emulated_convs(nets, families):
        c = dict(c)
        c.pop("mult")
        calls.append((net, fam, c))
    with open(path, "wb") as f:
        pickle.dump(calls, f)


def child(path: str, paths: list[str]) -> None:
    """Times every captured call on each path in this tree; prints JSON [[key, path, seconds, digest], ...]."""
    import numpy as np

    import dse
    from dse import kernels  # the tree's dse (PYTHONPATH), before bench_e2e's imports
    from dse.arith.multipliers import get_multiplier
    import bench_e2e as B
    from call_replay import MULTS

    assert Path(dse.__file__).resolve().is_relative_to(Path(os.environ["PYTHONPATH"]).resolve()), dse.__file__
    kernels.set_threads(1)
    with open(path, "rb") as f:
        calls = pickle.load(f)
    res = []
    filt = os.environ.get("BENCH_SPLIT_FILTER")
    if filt:
        calls = [c for c in calls if filt in c[0]]
    with tempfile.TemporaryDirectory() as d:
        lut = B.imported_lut(Path(d))
        mults = {}
        for net, fam, c in calls:
            if fam not in mults:
                mults[fam] = get_multiplier(lut if fam == "LUT" else MULTS.get(fam, fam))
            x, w = c["x"], c["w"]
            key = f"{net} {fam} K={w[0].size} N={w.shape[0]} x={tuple(x.shape)} k={w.shape[2]}x{w.shape[3]} " \
                  f"s={c['stride'][0]} g={c['groups']}"
            for p in paths:
                t = time.process_time()
                out = kernels.conv2d_scaled(x, w, mults[fam], c["a_signed"], c["scaling"], c["stride"], c["pads"],
                                            c["dilation"], c["groups"], path=p)
                dt = time.process_time() - t
                outs = out if isinstance(out, tuple) else (out,)
                h = hashlib.sha256()
                for o in outs:
                    h.update(np.ascontiguousarray(o).view(np.uint8).tobytes())
                res.append([key, p, dt, h.hexdigest()[:16]])
    print(json.dumps(res))


def network_child(nets: list[str], families: list[str], reps: int) -> None:
    """Times ``reps`` streaming batches of every network and family (after one untimed batch) in this tree; prints
    JSON [[key, seconds], ...] (process CPU time per batch)."""
    import dse
    from dse import kernels

    assert Path(dse.__file__).resolve().is_relative_to(Path(os.environ["PYTHONPATH"]).resolve()), dse.__file__
    from call_replay import emulations

    kernels.set_threads(1)
    res = []
    for net, fam, run in emulations(nets, families):
        run()
        for _ in range(reps):
            t = time.process_time()
            run()
            res.append([f"{net} {fam}", time.process_time() - t])
    print(json.dumps(res))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":  # before bench_e2e's imports put this checkout on sys.path
        child(sys.argv[2], sys.argv[3].split(","))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--network-child":
        network_child(sys.argv[2].split(","), sys.argv[3].split(","), int(sys.argv[4]))
        return
    from call_replay import NETS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=Path, help="the baseline tree (built)")
    ap.add_argument("--nets", nargs="+", default=["resnet18-224", "resnet18-32"],
                    help=f"of {', '.join(NETS)}; with --networks also ONNX files as bench_e2e.py --onnx takes them")
    ap.add_argument("--families", nargs="+", default=["LUT"])
    ap.add_argument("--paths", nargs="+", default=["auto", "split"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=Path, help="reuse (or write) this capture file")
    ap.add_argument("--networks", type=int, metavar="REPS",
                    help="time whole streaming batches instead (REPS per child after one untimed batch)")
    a = ap.parse_args()
    for n in a.nets:
        if n not in NETS and not (a.networks and n.partition(":")[0].endswith(".onnx")):
            ap.error(f"--nets {n}: not one of {', '.join(NETS)}" + ("" if a.networks else " (ONNX files: --networks)"))
    ours = HERE.parent
    if a.networks:
        networks(a, ours)
        return
    with tempfile.TemporaryDirectory() as d:
        calls = a.calls or Path(d) / "calls.pkl"
        if not calls.exists():
            capture(a.nets, a.families, calls)
        trees = {"base": a.base.resolve(), "ours": ours}
        runs: dict = {}
        digests: dict = {}
        for r in range(a.rounds):
            for name in (("base", "ours") if r % 2 == 0 else ("ours", "base")):
                env = dict(os.environ, PYTHONPATH=str(trees[name]), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
                out = subprocess.run([sys.executable, str(HERE / "bench_split.py"), "--child", str(calls),
                                      ",".join(a.paths)], env=env, check=True, capture_output=True,
                                     text=True, cwd=str(trees[name])).stdout
                for i, (key, p, dt, dig) in enumerate(json.loads(out.splitlines()[-1])):
                    runs.setdefault((i, key, p), {}).setdefault(name, []).append(dt)
                    digests.setdefault((i, key, p), set()).add(dig)
    same = all(len(v) == 1 for v in digests.values())
    print(f"{'call':78s} {'path':>6s} {'base ms':>8s} {'ours ms':>8s} {'ratio':>6s}")
    tot: dict = {}
    for (i, key, p), v in runs.items():
        b, o = statistics.median(v["base"]) * 1e3, statistics.median(v["ours"]) * 1e3
        print(f"{key:78s} {p:>6s} {b:8.2f} {o:8.2f} {b / o:6.2f}")
        g = tot.setdefault((" ".join(key.split()[:2]), p), [0.0, 0.0])
        g[0] += b
        g[1] += o
    for (net, p), (b, o) in tot.items():
        print(f"{net} path={p}: summed medians base {b:.1f} ms, ours {o:.1f} ms, ratio {b / o:.3f}")
    print("outputs identical across trees and rounds:" if same else "OUTPUTS DIFFER:",
          sum(len(v) == 1 for v in digests.values()), "of", len(digests), "calls")


def networks(a, ours: Path) -> None:
    """--networks: each round one child per tree (alternating order) times whole batches of every network and family;
    prints the medians of the per-child medians, ms per batch, and base / ours."""
    trees = {"base": a.base.resolve(), "ours": ours}
    runs: dict = {}
    for r in range(a.rounds):
        for name in (("base", "ours") if r % 2 == 0 else ("ours", "base")):
            env = dict(os.environ, PYTHONPATH=str(trees[name]), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            out = subprocess.run([sys.executable, str(HERE / "bench_split.py"), "--network-child", ",".join(a.nets),
                                  ",".join(a.families), str(a.networks)], env=env, check=True, capture_output=True,
                                 text=True, cwd=str(trees[name])).stdout
            per: dict = {}
            for key, dt in json.loads(out.splitlines()[-1]):
                per.setdefault(key, []).append(dt)
            for key, v in per.items():
                runs.setdefault(key, {}).setdefault(name, []).append(statistics.median(v))
    print(f"{'network (one streaming batch, 1 thread, CPU time)':52s} {'base ms':>8s} {'ours ms':>8s} {'ratio':>6s}"
          f"  per-round ratios")
    for key, v in runs.items():
        b, o = statistics.median(v["base"]) * 1e3, statistics.median(v["ours"]) * 1e3
        rr = " ".join(f"{x / y:.3f}" for x, y in zip(v["base"], v["ours"]))
        print(f"{key:52s} {b:8.1f} {o:8.1f} {b / o:6.3f}  {rr}")


if __name__ == "__main__":
    main()
