"""A search trial's cost on an image-folder data set: the images decoded on every read (as before) vs read into
memory once (``Dataset.materialized``, what the search set-up now does for the search and confirmation images).

    python benchmarks/bench_folder.py [--images 64] [--rounds 5] [--threads 1]

Writes ``--images`` JPEG files (500x375, smooth noise, quality 90: ImageNet-like sizes) into class folders, opens
them for a 224x224 ResNet-18 (benchmarks/bench_e2e.py's, FxP8 exact, calibrated on 16 generated images), and times
``EmulatorEvaluator.correct`` on all of them both ways, interleaved, CPU time of this process, medians; the
correctness vectors must be equal. Then the wall time of reading the files into memory on 1 and 2 kernel threads.
Prints ms per image for each and the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import images, machine, resnet18  # noqa: E402


def write_folder(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)).resize((500, 375), Image.BILINEAR)
        a = np.asarray(small).astype(np.int16) + rng.integers(-20, 20, (375, 500, 3))
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(d / f"{i:05d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from dse import kernels
    from dse.data import Preprocess, open_dataset
    from dse.emulate import Emulator
    from dse.model.onnx_import import load_onnx
    from dse.quant import calibrate
    from dse.search.context import EmulatorEvaluator

    kernels.set_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        onnx.save(resnet18(224), str(d / "r18.onnx"))
        graph = load_onnx(d / "r18.onnx")
        write_folder(d / "imgs", a.images)
        ds = open_dataset(str(d / "imgs"), Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
                          graph.input_shape)
        emu = Emulator(calibrate(graph, images(16, 224, seed=3)))
        reads = {1: [], 2: []}  # wall time of reading the files into memory on 1 and 2 kernel threads
        for _ in range(a.rounds):
            for t in reads:
                with kernels.using_threads(t):
                    t0 = time.perf_counter()
                    mem = ds.materialized(1 << 30)
                    reads[t].append((time.perf_counter() - t0) / len(ds) * 1e3)
        evs = {"decoded per read": EmulatorEvaluator(emu, ds), "in memory": EmulatorEvaluator(emu, mem)}
        times = {k: [] for k in evs}
        for _ in range(a.rounds):
            got = {}
            for k, ev in evs.items():
                t0 = time.process_time()
                got[k] = ev.correct({}, 0, len(ds))
                times[k].append((time.process_time() - t0) / len(ds) * 1e3)
            assert np.array_equal(*got.values())
    print(f"Machine: {machine()}; threads {a.threads}; {a.images} JPEG images 500x375 -> 224x224, ResNet-18 FxP8 "
          f"exact; medians of {a.rounds} interleaved rounds\n")
    print("| trial's images (CPU time) | ms per image | ratio |\n|---|---|---|")
    base = statistics.median(times["decoded per read"])
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.2f} | {base / statistics.median(v):.2f}x |")
    print("\n| reading the files into memory (wall time) | ms per image | ratio |\n|---|---|---|")
    for t, v in reads.items():
        print(f"| {t} thread{'s' if t > 1 else ''} | {statistics.median(v):.2f} | "
              f"{statistics.median(reads[1]) / statistics.median(v):.2f}x |")


if __name__ == "__main__":
    main()
