"""What a search trial pays besides emulation: pricing one network configuration with the energy model, and building
a multiplier's 256x256 table. (Timing claims live here, not in tests: a timed test fails under machine load.)

Run:  python benchmarks/bench_overheads.py [--configs 200] [--repeats 5]

Energy: the bundled LeNet-5 and ResNet-8 layer shapes, ``--configs`` random per-layer configurations (multiplier and
CV), priced with ``EnergyModel.relative``: cold (a fresh model per pass: mapping, residency plan, counts and pricing)
and warm (the same configurations again on the same model: cache hits); per network, median over ``--repeats``.
Tables: every built-in integer multiplier, the table for unsigned activations x signed weights built from scratch
(family cache cleared); median over repeats, then median and max over the multipliers, beside numpy's exact table.
CLI: ``python -m dse.cli multipliers`` in a fresh process (start-up, import, tables and error metrics of every
built-in), median over repeats.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nets import mac_layers  # noqa: E402

MULTS = ("exact", "drum4", "drum6", "perf_j0_k2", "mitch_w6", "trunc_col10", "axbxp_k2_w2_a2_static",
         "axbxp_k2_w3_a3_dynamic", "axbxp_k4_w1_a2_dynamic")


def energy_rows(configs: int, repeats: int) -> list:
    from dse.energy import EnergyModel
    from dse.layer_config import LayerConfig

    rows = []
    rng = np.random.default_rng(0)
    for net in ("lenet5", "resnet8"):
        layers = mac_layers(net)
        cfgs = [{l.name: LayerConfig(str(rng.choice(MULTS)), bool(rng.integers(2))) for l in layers}
                for _ in range(configs)]
        cold, warm = [], []
        for _ in range(repeats):
            m = EnergyModel()
            t0 = time.perf_counter()
            for c in cfgs:
                m.relative(layers, c)
            t1 = time.perf_counter()
            for c in cfgs:
                m.relative(layers, c)
            t2 = time.perf_counter()
            cold.append((t1 - t0) / configs)
            warm.append((t2 - t1) / configs)
        rows.append((net, len(layers), statistics.median(cold), statistics.median(warm)))
    return rows


def table_rows(repeats: int) -> tuple:
    from dse.arith import multipliers as M

    per = {}
    for name in M.list_multipliers():
        if M.get_multiplier(name).domain != "int":
            continue
        ts = []
        for _ in range(repeats):
            M._builtin.cache_clear()
            m = M.get_multiplier(name)
            t0 = time.perf_counter()
            m.table(False, True)
            ts.append(time.perf_counter() - t0)
        per[name] = statistics.median(ts)
    base = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = np.arange(256, dtype=np.int64)
        np.outer(a, a.astype(np.int8).astype(np.int64)).astype(np.int32)
        base.append(time.perf_counter() - t0)
    return per, statistics.median(base)


def cli_table_seconds(repeats: int) -> float:
    """Median wall time of ``python -m dse.cli multipliers`` in a fresh process (start-up, import, every table and
    its error metrics), output discarded."""
    import subprocess

    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dse.cli", "multipliers"], check=True, stdout=subprocess.DEVNULL)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"energy model, {args.configs} random configurations, median of {args.repeats} passes (per network)")
    print(f"  {'network':10s} {'layers':>6s} {'cold ms':>9s} {'warm ms':>9s} {'cold/warm':>9s}")
    for net, n, cold, warm in energy_rows(args.configs, args.repeats):
        print(f"  {net:10s} {n:6d} {1e3 * cold:9.3f} {1e3 * warm:9.4f} {cold / warm:9.1f}")
    per, base = table_rows(args.repeats)
    worst = max(per, key=per.get)
    print(f"\nmultiplier tables (unsigned x signed, from scratch), median of {args.repeats}, {len(per)} multipliers")
    print(f"  median {1e3 * statistics.median(per.values()):.2f} ms, max {1e3 * per[worst]:.2f} ms ({worst}); "
          f"numpy exact outer product {1e3 * base:.3f} ms")
    print(f"\n`dse multipliers` in a fresh process (tables and error metrics), median of {args.repeats}: "
          f"{cli_table_seconds(args.repeats):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
