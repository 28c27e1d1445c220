"""Built-in energy model on three networks: per-component shares of the all-exact FxP8 system energy and the relative
system / multiplier-unit energy of network-uniform configurations.

Run:  python benchmarks/bench_energy.py [--rows 16] [--cols 16] [--glb-kib 64] [--batch 1] [--zigzag]
      [--nets lenet5 resnet8 vgg]
``--zigzag`` adds the cross-check: the ZigZag backend (``pip install 'dse[zigzag]'``) on the same networks, array and
constants, per component and per layer beside the built-in model (all-exact FxP8 and network-uniform
axbxp_k2_w2_a2_static), with ZigZag's mapping time (cold cache: ``DSE_CACHE_DIR`` is a fresh temporary directory).
Networks: the bundled LeNet-5 and ResNet-8 and a VGG-style CIFAR-size net (6 3x3 convs 32-128 channels + Gemm,
built with onnx.helper, random weights: only the layer shapes matter here).
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nets import mac_layers, vgg_onnx  # noqa: E402

CONFIGS = ("drum4", "mitch_w6", "perf_j0_k2", "axbxp_k2_w2_a2_static", "axbxp_k2_w3_a3_static")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--glb-kib", type=float, default=64.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--zigzag", action="store_true", help="cross-check against the ZigZag backend")
    ap.add_argument("--nets", nargs="+", choices=("lenet5", "resnet8", "vgg"), default=["lenet5", "resnet8", "vgg"])
    args = ap.parse_args(argv)

    from dse.layer_config import LayerConfig
    from dse.energy import COMPONENTS, ArrayConfig, EnergyModel

    array = ArrayConfig(rows=args.rows, cols=args.cols, glb_kib=args.glb_kib, batch=args.batch)
    model = EnergyModel(array=array)
    tmp = Path(tempfile.mkdtemp())
    paths = {"lenet5": ("LeNet-5", lambda: "lenet5"), "resnet8": ("ResNet-8", lambda: "resnet8"),
             "vgg": ("VGG-style", lambda: str(vgg_onnx(tmp / "vgg.onnx")))}
    nets = {paths[n][0]: paths[n][1]() for n in args.nets}
    print(f"array {array.rows}x{array.cols}, GLB {array.glb_kib:g} KiB, batch {array.batch}")
    print(f"{'network':10s} {'layers':>6s} {'exact uJ':>9s} " + " ".join(f"{c[:8]:>8s}" for c in COMPONENTS))
    layers = {}
    for label, path in nets.items():
        layers[label] = mac_layers(path)
        net = model.network(layers[label])
        shares = " ".join(f"{100 * net.components[c] / net.total:7.1f}%" for c in COMPONENTS)
        print(f"{label:10s} {len(layers[label]):6d} {net.total / 1e6:9.2f} {shares}")
    print("\nrelative to all-exact FxP8 (system / multiplier unit), every layer the same multiplier:")
    print(f"{'multiplier':24s} " + " ".join(f"{n:>17s}" for n in nets))
    for name in CONFIGS:
        cells = []
        for label in nets:
            r = model.relative(layers[label], {l.name: LayerConfig(name) for l in layers[label]})
            cells.append(f"{r['system']:.3f} / {r['multiplier']:.3f}")
        print(f"{name:24s} " + " ".join(f"{c:>17s}" for c in cells))
    if args.zigzag:
        cross_check(array, layers, tmp)


def cross_check(array, layers: dict, tmp: Path) -> None:
    """Both backends side by side per component (uJ per image) and per layer (uJ, cycles)."""
    import os
    import time

    os.environ["DSE_CACHE_DIR"] = str(tmp / "cache")
    from dse.layer_config import LayerConfig
    from dse.energy import COMPONENTS, EnergyModel
    from dse.energy.zigzag_backend import ZigZagEnergyModel

    b, z = EnergyModel(array=array), ZigZagEnergyModel(array=array)
    for label, ls in layers.items():
        for cname, cfg in (("all exact", {}), ("axbxp_k2_w2_a2_static", {l.name: LayerConfig("axbxp_k2_w2_a2_static")
                                                                         for l in ls})):
            t0 = time.perf_counter()
            nz = z.network(ls, cfg)
            dt = time.perf_counter() - t0
            nb = b.network(ls, cfg)
            print(f"\n{label}, {cname}: built-in {nb.total / 1e6:.2f} uJ, ZigZag {nz.total / 1e6:.2f} uJ "
                  f"(ratio {nz.total / nb.total:.2f}); cycles {nb.cycles} vs {nz.cycles}; ZigZag mapping {dt:.1f} s")
            print(f"  {'component':12s} {'built-in uJ':>12s} {'ZigZag uJ':>10s} {'ratio':>6s}")
            for c in COMPONENTS:
                vb, vz = nb.components[c] / 1e6, nz.components[c] / 1e6
                ratio = f"{vz / vb:6.2f}" if vb else "     -"
                print(f"  {c:12s} {vb:12.3f} {vz:10.3f} {ratio}")
            if cfg:
                continue
            print(f"  {'layer':28s} {'built-in uJ':>12s} {'ZigZag uJ':>10s} {'reg b/z':>13s} {'glb b/z':>13s} "
                  f"{'cycles b/z':>13s}")
            for lb, lz in zip(nb.layers, nz.layers):
                cb, cz = lb.components, lz.components
                print(f"  {lb.name[:28]:28s} {lb.total / 1e6:12.3f} {lz.total / 1e6:10.3f} "
                      f"{cb['registers'] / 1e6:6.3f}/{cz['registers'] / 1e6:6.3f} "
                      f"{cb['glb'] / 1e6:6.3f}/{cz['glb'] / 1e6:6.3f} {lb.cycles:6d}/{lz.cycles:6d}")


if __name__ == "__main__":
    main()
