"""The four papers' headline results reproduced with dse on the bundled models, beside the papers' figures.

Run:  python benchmarks/bench_papers.py [--images 1000] [--resnet-images 300] [--models lenet5 resnet8]
      [--sections cv axbxp mitch ame] [--ame-configs 20]

Sections (accuracy on the bundled Fashion-MNIST hold-out split, calibration on the calibration split, per-layer
choices tuned on the search split; energy from the built-in model, default 16x16 array, 64 KiB buffer, batch 1):

1. Control variate (Zervakis et al., DAC 2021): accuracy loss of aggressive multipliers on every layer without and
   with the CV correction; the multiplier-unit energy includes the CV column.
2. Ax-BxP (Elangovan et al., TODAES 2022): network-uniform block configurations, then a per-layer / per-tensor choice
   (greedy: layers in decreasing exact energy, each takes the cheapest Ax-BxP variant keeping the search-split loss
   within 1 pp); system-energy improvement over FxP8 (= 1 / relative system energy).
3. Mitch-w6 (Kim et al., IEEE TC 2019) on all layers vs FxP8 and float.
4. AME-style predictor (Mrazek et al. style error model): Spearman and mean absolute error on held-out random
   configurations (``dse.predict.fit_and_validate``).
The papers' figures quoted are those recorded in the project's issue 12 (from the papers' abstracts); where none is
recorded the column says so instead of guessing.
"""
import argparse
import statistics
import sys
import time


PAPER = {
    "cv": "about 1.9x lower loss; ~45 % multiplier power saving at < 1 % loss",
    "axbxp_uniform": "1.11-1.34x system energy vs FxP8",
    "axbxp_layer": "1.14-1.67x system energy vs FxP8",
    "mitch_w6": "no figure recorded in the brief",
    "ame": "no figure recorded in the brief",
}
CV_MULTS = ("perf_j1_k4", "perf_j2_k3", "perf_j2_k4", "perf_j3_k3", "trunc_op4", "trunc_col9", "trunc_col10", "drum2",
            "drum3", "mitch_w3", "mitch_w4", "mitchell")
AGGRESSIVE = 0.01  # a CV case counts when the multiplier alone loses at least 1 pp
AXBXP = tuple(f"axbxp_k2_w{w}_a{a}_{m}" for m in ("static", "dynamic") for w, a in ((3, 3), (3, 2), (2, 3), (2, 2))) \
    + ("axbxp_k4_w1_a2_dynamic", "axbxp_k4_w2_a1_dynamic", "axbxp_k4_w1_a1_dynamic")


class Setup:
    """A bundled model, calibrated, with its emulator, evaluation splits (the bundled splits' own preprocessing, the
    one the bundled models were trained with) and energy model (public APIs only)."""

    def __init__(self, model: str, images: int):
        from dse.data import load_dataset
        from dse.emulate import Emulator
        from dse.energy import EnergyModel
        from dse.model.float_exec import run_float
        from dse.model.onnx_import import load_onnx, resolve_model
        from dse.quant import calibrate

        self.name = model
        self.graph = load_onnx(resolve_model(model))
        self.hold = load_dataset("fashion-mnist:holdout").head(images)
        self.search = load_dataset("fashion-mnist:search").head(images)
        self.x = {"hold": self.hold.images(), "search": self.search.images()}
        self.qmodel = calibrate(self.graph, load_dataset("fashion-mnist:calib").image_batches())
        self.layers = self.qmodel.layers
        self.emu = Emulator(self.qmodel)
        self.energy = EnergyModel()
        self.float_acc = float((run_float(self.graph, self.x["hold"]).argmax(axis=1) == self.hold.y).mean())
        self.exact = {"hold": self.acc({}, "hold"), "search": self.acc({}, "search")}

    def acc(self, config: dict, split: str = "hold") -> float:
        ds = self.hold if split == "hold" else self.search
        return self.emu.accuracy(self.x[split], ds.y, config)

    def loss(self, config: dict, split: str = "hold") -> float:
        return self.exact[split] - self.acc(config, split)

    def uniform(self, mult: str, cv: bool = False) -> dict:
        from dse.layer_config import LayerConfig
        return {l.name: LayerConfig(mult, cv) for l in self.layers}


def control_variate(s: Setup, mults) -> list[float]:
    """One approximate layer at a time (the rest exact), with and without CV; cases losing >= 1 pp without CV."""
    from dse.layer_config import LayerConfig
    print(f"\n[{s.name}] 1. control variate, one approximate layer at a time (hold-out, {len(s.hold.y)} images; "
          f"cases losing >= {100 * AGGRESSIVE:.0f} pp without CV)")
    print(f"  {'layer':24s} {'multiplier':12s} {'loss':>8s} {'loss+CV':>8s} {'ratio':>6s} {'mult. unit':>10s} "
          f"{'+CV':>6s}")
    ratios = []
    for layer in s.layers:
        for m in mults:
            plain = {layer.name: LayerConfig(m)}
            lo = s.loss(plain)
            if lo < AGGRESSIVE:
                continue
            with_cv = {layer.name: LayerConfig(m, True)}
            lc = s.loss(with_cv)
            ratio = lo / max(lc, 1.0 / len(s.hold.y))  # a loss of 0 counts as one image
            ratios.append(ratio)
            e, ec = s.energy.relative(s.layers, plain), s.energy.relative(s.layers, with_cv)
            print(f"  {layer.name[:24]:24s} {m:12s} {100 * lo:7.2f}p {100 * lc:7.2f}p {ratio:6.2f} "
                  f"{e['multiplier']:10.3f} {ec['multiplier']:6.3f}")
    return ratios


def axbxp(s: Setup) -> tuple[list, dict]:
    import dse.energy as E
    from dse.layer_config import LayerConfig
    print(f"\n[{s.name}] 2. Ax-BxP network-uniform (hold-out)")
    print(f"  {'configuration':26s} {'loss':>8s} {'system x':>9s} {'mult. x':>8s}")
    rows = []
    for m in AXBXP:
        e = s.energy.relative(s.layers, s.uniform(m))
        lo = s.loss(s.uniform(m))
        rows.append((m, lo, 1 / e["system"]))
        print(f"  {m:26s} {100 * lo:7.2f}p {1 / e['system']:9.3f} {1 / e['multiplier']:8.3f}")
    exact_net = s.energy.network(s.layers, {})
    order = sorted(exact_net.layers, key=lambda le: -le.total)
    cands = sorted(AXBXP, key=lambda m: s.energy.relative(s.layers, s.uniform(m))["system"])
    cfg = {}
    for le in order:
        for m in cands:
            trial = dict(cfg, **{le.name: LayerConfig(m)})
            if s.loss(trial, "search") <= 0.01:
                cfg = trial
                break
    e = s.energy.relative(s.layers, cfg)
    lo = s.loss(cfg)
    print(f"  per-layer greedy (<= 1 pp on search): hold-out loss {100 * lo:.2f} pp, system x{1 / e['system']:.3f}, "
          f"multiplier unit x{1 / e['multiplier']:.3f}")
    print("    " + ", ".join(f"{n}={c.multiplier}" for n, c in cfg.items()))
    def streamed_kbit(config):
        fmts = [E.operand_format(config.get(l.name, LayerConfig()).multiplier, s.energy.array) for l in s.layers]
        plan = E.plan_residency(s.layers, fmts, s.energy.array)
        return sum(r.weights_streamed * l.K * l.N * f.weight_bits for r, l, f in zip(plan, s.layers, fmts)) / 1e3

    print(f"    weights streamed from DRAM per image: {streamed_kbit({}):.1f} kbit (FxP8) -> {streamed_kbit(cfg):.1f} "
          "kbit (the buffer keeps what fits; narrower weights leave more of them resident)")
    return rows, {"loss": lo, "gain": 1 / e["system"]}


def mitch_w6(s: Setup) -> dict:
    acc = s.acc(s.uniform("mitch_w6"))
    acc_cv = s.acc(s.uniform("mitch_w6", True))
    e = s.energy.relative(s.layers, s.uniform("mitch_w6"))
    print(f"\n[{s.name}] 3. Mitch-w6 on all layers: float {100 * s.float_acc:.2f} %, FxP8 {100 * s.exact['hold']:.2f} %, "
          f"Mitch-w6 {100 * acc:.2f} % (+CV {100 * acc_cv:.2f} %); multiplier unit {e['multiplier']:.3f}, system "
          f"{e['system']:.4f} of FxP8")
    return {"float": s.float_acc, "fxp8": s.exact["hold"], "mitch_w6": acc}


def ame(s: Setup, n: int) -> dict:
    from dse.predict import fit_and_validate
    r = fit_and_validate(s.layers, lambda c: s.acc(c, "search"), n, 0)
    v = r["validation"]
    print(f"\n[{s.name}] 4. AME predictor, {n} random configurations (half fit, half held out, search split): "
          f"Spearman {v.spearman:.3f}, mean abs error {100 * v.mae:.2f} pp")
    return {"spearman": v.spearman, "mae": v.mae}


SECTIONS = ("cv", "axbxp", "mitch", "ame")


def run_model(s: "Setup", sections, ame_configs: int) -> dict:
    r = {}
    if "cv" in sections:
        r["cv"] = control_variate(s, CV_MULTS if s.name == "lenet5" else CV_MULTS[::3])
    if "axbxp" in sections:
        r["uniform"], r["layer"] = axbxp(s)
    if "mitch" in sections:
        r["mitch"] = mitch_w6(s)
    if "ame" in sections:
        r["ame"] = ame(s, ame_configs)
    return r


def print_summary(summary: dict) -> None:
    print("\nSummary beside the papers' figures")
    print(f"  {'result':34s} {'paper':48s} dse")
    for model, r in summary.items():
        if "cv" in r:
            cv = r["cv"]
            med = f"median {statistics.median(cv):.2f}x over {len(cv)} cases (min {min(cv):.2f}x)" if cv else "no case"
            print(f"  {model + ': CV loss reduction':34s} {PAPER['cv']:48s} {med}")
        if "uniform" in r:
            ok = [(m, g) for m, lo, g in r["uniform"] if lo <= 0.01]
            uni = (f"{min(g for _, g in ok):.2f}-{max(g for _, g in ok):.2f}x over {len(ok)} configs within 1 pp"
                   if ok else "no configuration within 1 pp")
            print(f"  {model + ': Ax-BxP uniform':34s} {PAPER['axbxp_uniform']:48s} {uni}")
            print(f"  {model + ': Ax-BxP per layer':34s} {PAPER['axbxp_layer']:48s} "
                  f"{r['layer']['gain']:.2f}x at {100 * r['layer']['loss']:.2f} pp")
        if "mitch" in r:
            m = r["mitch"]
            print(f"  {model + ': Mitch-w6 all layers':34s} {PAPER['mitch_w6']:48s} float {100 * m['float']:.2f} / "
                  f"FxP8 {100 * m['fxp8']:.2f} / Mitch-w6 {100 * m['mitch_w6']:.2f} %")
        if "ame" in r:
            print(f"  {model + ': AME prediction':34s} {PAPER['ame']:48s} Spearman {r['ame']['spearman']:.3f}, "
                  f"MAE {100 * r['ame']['mae']:.2f} pp")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="hold-out and search images per model (LeNet-5)")
    ap.add_argument("--resnet-images", type=int, default=300,
                    help="images for ResNet-8 (its LUT-kernel layers make 1000 images per evaluation too slow here)")
    ap.add_argument("--models", nargs="+", default=["lenet5", "resnet8"])
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--ame-configs", type=int, default=20)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    summary = {}
    for model in args.models:
        s = Setup(model, args.resnet_images if model == "resnet8" else args.images)
        summary[model] = run_model(s, args.sections, args.ame_configs)
        print(f"  ({model}: {time.perf_counter() - t0:.0f} s so far)", flush=True)
    print_summary(summary)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
