"""What the call-replay benchmarks (bench_rows_calls.py, bench_dw_calls.py) share: running bench_e2e's networks with
one multiplier family on all layers while a kernel's calls are captured, loading several builds of
``dse._kernels`` (copies of its .so file) into one process, and timing the builds on the captured calls side by
side (same bits checked first; interleaved rounds, order alternating per round; one thread; process CPU time)."""
from __future__ import annotations

import importlib.util
import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bench_e2e import FAMILIES

# bench_e2e's multiplier families by their --families name, and FxP8 exact (the imported LUT: "LUT")
MULTS = {"exact": "exact", **dict(FAMILIES)}


def _specs(B) -> dict:
    """bench_e2e's networks: name -> (ONNX builder, input size, images per streaming batch)."""
    return {"mobilenetv2-32": (lambda: B.mobilenetv2(32), 32, 128),
            "resnet18-32": (lambda: B.resnet18(32, classes=10), 32, 64),
            "resnet18-224": (lambda: B.resnet18(224), 224, 26),
            "resnet50-224": (lambda: B.resnet50(224), 224, 26)}


NETS = ("mobilenetv2-32", "resnet18-32", "resnet18-224", "resnet50-224")


def emulations(nets, families) -> Iterator[tuple[str, str, Callable[[], None]]]:
    """(network, family, run) for every network of ``nets`` and family of ``families``: ``run()`` emulates one
    streaming batch of the network's images with the family's multiplier on all layers, one thread (the caller
    records what it wants around it). A network is a name of NETS or an ONNX file as bench_e2e.py --onnx takes it
    (PATH[:N], N images per run, else its streaming batch)."""
    import onnx

    import bench_e2e as B
    from dse import kernels
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate, stream_batch_size

    specs = _specs(B)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lut = B.imported_lut(tmp)
        kernels.set_threads(1)
        for net in nets:
            if net in specs:
                build, size, n = specs[net]
                onnx.save(build(), str(tmp / "m.onnx"))
                graph = load_onnx(tmp / "m.onnx")
            else:
                _, path, size, n = B.onnx_file(net)
                graph = load_onnx(path)
                n = stream_batch_size(graph) if n is None else n
            qm = calibrate(graph, B.images(16, size, seed=3))
            emu, x = Emulator(qm), B.images(n, size, seed=11)
            for fam in families:
                cfg = {layer.name: LayerConfig(lut if fam == "LUT" else MULTS.get(fam, fam)) for layer in qm.layers}
                yield net, fam, lambda: emu.run(x, cfg, batch_size=n)


def capture_calls(kernel: str, record: Callable[..., dict], nets, families, path: Path) -> None:
    """Runs :func:`emulations` of ``nets`` x ``families`` with ``dse._kernels.<kernel>`` wrapped, and pickles into
    ``path`` every call made during a run as ``dict(net=..., fam=..., **record(*args, **kwargs))`` (``record``
    copies what a replay needs of the call's arguments); the kernel itself still runs on each call."""
    from dse import kernels

    calls, where = [], {}
    orig = getattr(kernels._kernels, kernel)

    def recording(*args, **kwargs):
        if where:
            calls.append(dict(**where, **record(*args, **kwargs)))
        return orig(*args, **kwargs)

    setattr(kernels._kernels, kernel, recording)
    try:
        for net, fam, run in emulations(nets, families):
            where.update(net=net, fam=fam)
            run()
            where.clear()
            print(f"{net} {fam}: {sum(c['net'] == net and c['fam'] == fam for c in calls)} calls", flush=True)
    finally:
        setattr(kernels._kernels, kernel, orig)
    with open(path, "wb") as f:
        pickle.dump(calls, f)


def fresh_add_outputs(scaling):
    """A captured call's scaling tuple (as dse._kernels takes it) with a fused Add's outputs (its float32 base array
    and patterns) replaced by new zeroed ones, so that a replayed call writes its own and passes the kernel's check
    that it writes within the base (the Add's further entries and the arguments after it kept): (scaling, base), base
    None without an Add."""
    if scaling is None or len(scaling) < 8 or scaling[7] is None:
        return scaling, None
    other, base, q = scaling[7][:3]
    base = np.zeros_like(base)
    return scaling[:7] + ((other, base, None if q is None else np.zeros_like(q)) + tuple(scaling[7][3:]),) \
        + tuple(scaling[8:]), base


def load_builds(sos) -> list:
    """Each given copy of the dse._kernels .so file as its own module, in order."""
    mods = []
    for i, so in enumerate(sos):
        spec = importlib.util.spec_from_file_location(f"build{i}._kernels", so)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods


def time_builds(calls, mods, call: Callable, keys: Callable, rounds: int, title: str, names,
                skip_below_s: float = 0.0) -> None:
    """Checks that every build gives the same bits on every call (``call(mod, c)`` -> array), then times the calls
    with each build in interleaved rounds and prints, per key of ``keys(c)`` (a group, then "group  shape" keys:
    summed over the calls that have it), the median total in ms per build and the first build's time over each
    other's (> 1: the other is faster); shapes whose baseline median is under ``skip_below_s`` are left out."""
    for c in calls:
        ref = call(mods[0], c).view(np.uint8)
        for m in mods[1:]:
            assert np.array_equal(call(m, c).view(np.uint8), ref), "the builds disagree"
    times = {}
    for r in range(rounds):
        order = range(len(mods)) if r % 2 == 0 else reversed(range(len(mods)))
        for i in order:
            tot = {}
            for c in calls:
                t = time.process_time()
                call(mods[i], c)
                dt = time.process_time() - t
                for k in keys(c):
                    tot[k] = tot.get(k, 0.0) + dt
            for k, v in tot.items():
                times.setdefault(k, [[] for _ in mods])[i].append(v)
    print(f"{len(calls)} calls, {rounds} rounds, {title}, medians of the summed CPU time (ms): " + " | ".join(names))
    for k in sorted(times, key=lambda k: (k.split("  ")[0], "  " in k, k)):
        med = [statistics.median(v) for v in times[k]]
        if "  " in k and med[0] < skip_below_s:
            continue
        print(f"{k:64s} " + " ".join(f"{m * 1e3:8.2f}" for m in med) + "  " +
              " ".join(f"{med[0] / m:5.2f}x" for m in med[1:]))
