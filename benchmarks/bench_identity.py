"""What the search context's identity (dse.search.identity) costs a process: the data digests hashed in the float32
baseline pass, against that pass itself, and the calibration's digest, against the calibration.

Run:  python benchmarks/bench_identity.py [--onnx MODEL.onnx ...] [--images 64] [--rounds 5]

Per model (the bundled lenet5 and resnet8, and each ``--onnx``): ``--images`` random images of the model's input
shape; in each round, interleaved, the float32 top-1 pass of the search set-up (dse.emulate.float_hits, 256-image
batches) and dse.search.identity.data_digest over the same images and labels; CPU time, medians over ``--rounds``.
Then one FxP8 calibration on the same images and ``QuantModel.state().digest()`` of it (median over the rounds).
"""
import argparse
import statistics
import time

import numpy as np


def _cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def rows(models: list[str], images: int, rounds: int) -> list[tuple]:
    from dse.emulate import float_hits
    from dse.model.onnx_import import load_onnx, resolve_model
    from dse.quant import calibrate
    from dse.search.identity import DATA_START, data_digest

    out = []
    for name in models:
        graph = load_onnx(resolve_model(name))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((images,) + tuple(graph.input_shape), dtype=np.float32)
        y = rng.integers(0, graph.n_classes, images)
        fwd, dig = [], []
        for _ in range(rounds):
            fwd.append(_cpu(lambda: float_hits(graph, x, y, 256)))
            dig.append(_cpu(lambda: data_digest(DATA_START, x, y)))
        t0 = time.process_time()
        q = calibrate(graph, x)
        cal = time.process_time() - t0
        state = q.state()
        cdig = statistics.median(_cpu(lambda: state.digest()) for _ in range(rounds))
        nbytes = sum(a.nbytes for a in state.arrays.values())
        out.append((name, images, statistics.median(fwd), statistics.median(dig), cal, cdig, nbytes))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", nargs="*", default=[])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    print(f"{'model':<40} {'images':>6} {'float pass s':>12} {'data digest s':>13} {'ratio':>7} "
          f"{'calibrate s':>11} {'calib digest s':>14} {'ratio':>7} {'calib MiB':>9}")
    for name, n, fwd, dig, cal, cdig, nbytes in rows(["lenet5", "resnet8"] + a.onnx, a.images, a.rounds):
        print(f"{name:<40} {n:>6} {fwd:>12.4f} {dig:>13.4f} {dig / fwd:>7.3f} {cal:>11.3f} {cdig:>14.4f} "
              f"{cdig / cal:>7.4f} {nbytes / 2**20:>9.1f}")


if __name__ == "__main__":
    main()
