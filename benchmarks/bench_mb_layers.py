"""Where MobileNetV2's (or any ONNX CNN's) exact FxP8 run loses to onnxruntime int8, per layer kind, and builds of the
extension compared on the same layers.

    python benchmarks/bench_mb_layers.py [OLD.so NEW.so ...] [--rounds 7] [--size 32] [--no-ort]
    python benchmarks/bench_mb_layers.py [OLD.so NEW.so ...] --onnx m224/efficientnet_b0_style.onnx [--images 19]

Captures every ``conv2d_scaled`` call of one streaming batch (128 images) of bench_e2e's MobileNetV2 (FxP8 exact,
the layers' real inputs, weights and fused scaling: Clip, next layer's quantization, residual Add), then times them
per layer kind (stem, 1x1 expand, depthwise 3x3 by plane size and stride, 1x1 project with or without the fused Add,
the 1x1 head) with each given build of ``dse._kernels`` (each loaded as its own module and installed as
``dse.kernels``'s extension in turn; none given: the worktree's own build), in interleaved rounds with the order
alternating, one thread, process CPU time, medians of the per-kind sums; every build's outputs are asserted
bit-identical to the first's. Beside them, onnxruntime's own int8 model (bench_e2e's static QDQ quantization, run as
QLinearConv etc.) on the same images with its per-node profiler (SessionOptions.enable_profiling), the kernel time of
its nodes summed per the same kinds (medians over the rounds' runs; the profiler's wall times scaled by each run's
CPU time over its wall time, so that a loaded box's preemption does not count); its node kinds after graph optimisation are
printed so the comparison can be checked (QLinearConv, not a float fallback). ``--ort-fp32``: onnxruntime's float32
model instead (its Conv / FusedConv nodes, with the activations it fuses into them). Prints ms per kind per engine and the
ratio of each build to the first and to onnxruntime.

With ``--onnx`` (a file with a fixed square input, as bench_e2e.py --onnx takes) the network is that file, the kinds
are by shape (depthwise k x k by plane and stride, 1x1 by plane, the squeeze-and-excitation 1x1 convs on 1x1 planes,
other convs) and onnxruntime's non-conv nodes are summed per op type beside them.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import _ort_int8, images, input_name, mobilenetv2  # noqa: E402
from call_replay import load_builds  # noqa: E402


def _kind(x_shape, w_shape, stride, add) -> str:
    """The layer kind of a conv2d_scaled call (input [B, C, H, W], weights [Cout, Cg, kh, kw])."""
    _, C, H, _ = x_shape
    Cout, Cg, kh, _ = w_shape
    if kh > 1 and Cg == 1:
        return f"depthwise 3x3 {H}x{H} s{stride[0]}"
    if kh > 1:
        return "stem 3x3"
    if Cout == 1280:
        return "head 1x1"
    if Cout > C:
        return "expand 1x1"
    return "project 1x1 + Add" if add else "project 1x1"


def _shape_kind(x_shape, w_shape, stride, add) -> str:
    """The layer kind of a conv2d_scaled call of any CNN, by shape."""
    _, C, H, _ = x_shape
    Cout, Cg, kh, kw = w_shape
    if Cg == 1 and C > 1:
        return f"depthwise {kh}x{kw} {H}x{H} s{stride[0]}"
    if kh == kw == 1 and H == 1:
        return "SE 1x1 on 1x1 planes"
    if kh == kw == 1:
        return f"1x1 {H}x{H}" + (" + Add" if add else "")
    return f"conv {kh}x{kw} {H}x{H} s{stride[0]}"


def capture(size: int, onnx_path: str | None = None, n_images: int = 128, multiplier: str = "exact"):
    """(calls, images, onnx path): every conv2d_scaled call of one FxP8 batch (every layer on ``multiplier``), in
    network order, as (kind, args, kwargs) with the arrays copied."""
    from dse import kernels
    from dse.emulate import Emulator
    from dse.layer_config import LayerConfig
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate

    d = Path(tempfile.mkdtemp())
    kind = _kind
    if onnx_path is None:
        path = d / "mobilenetv2.onnx"
        onnx.save(mobilenetv2(size), str(path))
    else:
        path = d / Path(onnx_path).name
        path.write_bytes(Path(onnx_path).read_bytes())
        kind = _shape_kind
    graph = load_onnx(path)
    x = images(n_images, size, seed=11)
    kernels.set_threads(1)
    qm = calibrate(graph, images(16, size, seed=3))
    emu = Emulator(qm)
    calls = []
    orig = kernels.conv2d_scaled

    def recording(xq, w, mult, a_signed, scaling, *a, **k):
        stride = k.get("stride", a[0] if a else (1, 1))
        calls.append((kind(xq.shape, w.shape, stride, scaling.add is not None),
                      (np.array(xq), np.array(w), mult, a_signed, scaling) + a, dict(k)))
        return orig(xq, w, mult, a_signed, scaling, *a, **k)

    kernels.conv2d_scaled = recording
    try:
        emu.run(x, {l.name: LayerConfig(multiplier) for l in qm.layers}, batch_size=len(x))
    finally:
        kernels.conv2d_scaled = orig
    return calls, x, path


def ort_profile(path: Path, x: np.ndarray, rounds: int, kinds: list[str], by_op: bool = False,
                fp32: bool = False) -> dict:
    """onnxruntime int8 (QDQ) on x, one thread, its per-node kernel time summed by the captured calls' kinds (the
    model's Conv nodes in order are the dse layers in order; QLinearAdd is counted with "project 1x1 + Add"); the
    median over ``rounds`` runs per kind, plus "whole run" (the run's CPU time); ``by_op``: the other nodes also
    per op type ("ort <op>"). ``fp32``: onnxruntime's float32 model instead (its Conv / FusedConv nodes, NCHWc or
    not, in order are the dse layers; its layout reorders and activations that it did not fuse go to "ort <op>")."""
    import onnxruntime as ort

    groups = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1)
              for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"}
    inp = input_name(onnx.load(str(path)))
    q = path if fp32 else _ort_int8(path, images(16, x.shape[-1], seed=3), inp)
    conv_ops = ("Conv", "FusedConv") if fp32 else ("QLinearConv",)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opt = path.with_name("opt.onnx")
    so.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    print(f"onnxruntime {'fp32' if fp32 else 'int8'} nodes after optimisation:", dict(ops))
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_profiling = True
    so.profile_file_prefix = str(path.with_name("ort_profile"))  # the model's temporary directory
    s = ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
    for _ in range(2):
        s.run(None, {inp: x})
    cpu = []
    for _ in range(rounds):
        t = time.process_time()
        s.run(None, {inp: x})
        cpu.append(time.process_time() - t)
    with open(s.end_profiling()) as f:
        ev = json.load(f)
    runs = [e for e in ev if e.get("cat") == "Session" and e["name"] == "model_run"][-rounds:]
    out = collections.defaultdict(list)
    out["whole run"] = cpu
    for r, c in zip(runs, cpu):
        scale = min(1.0, c / (r["dur"] / 1e6))  # the profiler's times are wall time: scaled to the run's CPU time
        nodes = sorted((e for e in ev if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                        and r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), key=lambda e: e["ts"])
        convs = [e for e in nodes if e["args"].get("op_name") in conv_ops]
        # the float model's Conv nodes, by name: depthwise (group > 1) or not, matched against the dse call's kind
        # (the float32 model's nodes are renamed after their fused outputs: their number is checked)
        dw = [groups[e["name"].split("_token")[0]] > 1 for e in convs] if not fp32 else None
        if (dw != [k.startswith("depthwise") for k in kinds]) if not fp32 else len(convs) != len(kinds):
            raise RuntimeError("onnxruntime's conv nodes do not run in the order of dse's conv calls")
        tot = collections.defaultdict(float)
        for e, k in zip(convs, kinds):
            tot[k] += e["dur"] / 1e6 * scale
        if not by_op:
            tot["project 1x1 + Add"] += sum(e["dur"] / 1e6 * scale for e in nodes
                                            if e["args"].get("op_name") == "QLinearAdd")
        else:
            for e in nodes:
                if e["args"].get("op_name") not in conv_ops:
                    tot["ort " + e["args"]["op_name"]] += e["dur"] / 1e6 * scale
        tot["other nodes"] = sum(e["dur"] / 1e6 * scale for e in nodes
                                 if e["args"].get("op_name") not in conv_ops + ("QLinearAdd",))
        for k, v in tot.items():
            out[k].append(v)
    return {k: statistics.median(v) for k, v in out.items()}


def time_builds(calls, mods, rounds: int) -> list[dict]:
    """Per build, the median over rounds of each kind's summed CPU time (s) and of all calls ("convs, all")."""
    from dse import kernels

    orig = kernels._kernels
    times = [collections.defaultdict(list) for _ in mods]
    try:
        ref = None
        for i, m in enumerate(mods):
            kernels._kernels = m
            outs = [kernels.conv2d_scaled(*a, **k) for _, a, k in calls]
            flat = [np.asarray(o).view(np.uint8) for r in outs for o in (r if isinstance(r, tuple) else (r,))
                    if o is not None]  # a fused Add's unstored sum (keep_sum=False) is None
            if ref is None:
                ref = flat
            else:
                assert all(np.array_equal(a, b) for a, b in zip(ref, flat)), f"build {i} disagrees with build 0"
        for r in range(rounds):
            for i in (range(len(mods)) if r % 2 == 0 else reversed(range(len(mods)))):
                kernels._kernels = mods[i]
                tot = collections.defaultdict(float)
                for kind, a, k in calls:
                    t = time.process_time()
                    kernels.conv2d_scaled(*a, **k)
                    dt = time.process_time() - t
                    tot[kind] += dt
                    tot["convs, all"] += dt
                for k, v in tot.items():
                    times[i][k].append(v)
    finally:
        kernels._kernels = orig
    return [{k: statistics.median(v) for k, v in t.items()} for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("so", nargs="*", help="copies of dse/_kernels*.so to compare (the first is the baseline)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--ort-fp32", action="store_true", help="onnxruntime's float32 model beside dse instead of its "
                    "int8 one")
    ap.add_argument("--onnx", help="an ONNX CNN with a fixed square input instead of MobileNetV2 (--size: its size)")
    ap.add_argument("--multiplier", default="exact", help="every layer's multiplier (e.g. mitch_w6; LUT: bench_e2e's "
                    "imported 256x256 table)")
    ap.add_argument("--images", type=int, default=128, help="images per batch (the emulator's streaming batch "
                    "of a 224x224 EfficientNet-B0-style is 19)")
    a = ap.parse_args()
    from dse import kernels

    kernels.set_threads(1)
    if a.onnx:
        a.size = onnx.load(a.onnx).graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    mult = a.multiplier
    if mult == "LUT":
        from bench_e2e import imported_lut

        mult = imported_lut(Path(tempfile.mkdtemp()))
    calls, x, path = capture(a.size, a.onnx, a.images, mult)
    mods = load_builds(a.so) if a.so else [kernels._kernels]
    names = [Path(s).name for s in a.so] if a.so else ["this build"]
    dse_t = time_builds(calls, mods, a.rounds)
    ort_t = None if a.no_ort else ort_profile(path, x, a.rounds, [k for k, _, _ in calls], by_op=bool(a.onnx),
                                  fp32=a.ort_fp32)
    count = collections.Counter(k for k, _, _ in calls)
    kinds = sorted(count, key=lambda k: -dse_t[0][k]) + ["convs, all"]
    net = Path(a.onnx).stem if a.onnx else "MobileNetV2"
    print(f"{net} {a.size}x{a.size}, {len(x)} images, FxP8 {a.multiplier}, one thread, {a.rounds} rounds, median ms")
    head = f"{'layer kind (calls)':34s}" + "".join(f"{n[:14]:>15s}" for n in names)
    head += "".join(f"{'/ ' + n[:10]:>13s}" for n in names[1:])
    if ort_t:
        head += f"{'ort fp32' if a.ort_fp32 else 'ort int8':>10s}" + "".join(f"{'vs ort':>8s}" for _ in names)
    print(head)
    for k in kinds:
        row = f"{k + (f' ({count[k]})' if k in count else ''):34s}"
        row += "".join(f"{t[k] * 1e3:15.2f}" for t in dse_t)
        row += "".join(f"{dse_t[0][k] / t[k]:12.2f}x" for t in dse_t[1:])
        if ort_t:
            o = ort_t.get(k, sum(v for kk, v in ort_t.items() if kk in count) if k == "convs, all" else 0.0)
            row += f"{o * 1e3:10.2f}" + "".join(f"{o / t[k]:7.2f}x" for t in dse_t)
        print(row)
    if ort_t:
        print(f"onnxruntime {'fp32' if a.ort_fp32 else 'int8'} whole run {ort_t['whole run'] * 1e3:.2f} CPU ms "
              f"(other nodes "
              f"{ort_t.get('other nodes', 0.0) * 1e3:.2f} ms); 'vs ort' > 1: dse faster")
        for k, v in sorted(((k, v) for k, v in ort_t.items() if k.startswith("ort ")), key=lambda kv: -kv[1]):
            print(f"  {k[4:]:30s} {v * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
