"""Usage: bench_byte_pairs.py ONNX|mbv2 SIZE IMAGES ROUNDS. Captured conv2d_scaled calls of a network timed with DSE_KERNEL_VNNI=0 (int16 kernel) and 1 (byte pairs) in one
process, same build, alternating per round; CPU time medians per kind."""
import os, sys, time, statistics, collections, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from bench_mb_layers import capture
from dse import kernels
onnx_path = None if sys.argv[1] == "mbv2" else sys.argv[1]
size = int(sys.argv[2]); n_img = int(sys.argv[3]); rounds = int(sys.argv[4])
calls, _, _ = capture(size, onnx_path, n_img)
kernels.set_threads(1)
res = {}
for f in ("0", "1"):
    os.environ["DSE_KERNEL_VNNI"] = f
    res[f] = [np.asarray(o).copy() for _, a, k in calls for o in [kernels.conv2d_scaled(*a, **k)] if o is not None and not isinstance(o, tuple)]
assert all(np.array_equal(x, y) for x, y in zip(res["0"], res["1"])), "bits differ"
t = {f: collections.defaultdict(list) for f in "01"}
for r in range(rounds):
    for f in (("0", "1") if r % 2 == 0 else ("1", "0")):
        os.environ["DSE_KERNEL_VNNI"] = f
        tot = collections.defaultdict(float)
        for kind, a, k in calls:
            s = time.process_time(); kernels.conv2d_scaled(*a, **k); d = time.process_time() - s
            tot[kind] += d; tot["convs, all"] += d
        for k, v in tot.items():
            t[f][k].append(v)
print(f"{sys.argv[1]} {size}, {n_img} images, {rounds} rounds, CPU ms medians: int16 (VNNI=0) / byte pairs (VNNI=1)")
for k in sorted(t["0"], key=lambda k: -statistics.median(t["0"][k])):
    a, b = statistics.median(t["0"][k]), statistics.median(t["1"][k])
    print(f"  {k:32s} {a*1e3:9.2f} {b*1e3:9.2f}  {a/b:5.2f}x")
