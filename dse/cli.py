"""Command-line interface. Thin: parse arguments, call the modules, print.

Every command catches :class:`dse.errors.DseError` through :func:`main` and exits 2 with a one-line message.
Each command group lives between its own BEGIN/END markers; edit only your own block.
"""
from __future__ import annotations

import sys

import click

from dse import __version__
from dse.errors import DseError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dse")
def cli() -> None:
    """Design-space exploration of approximate-arithmetic DNN accelerators."""


# BEGIN multipliers
@cli.group("multipliers", invoke_without_command=True)
@click.option("--signed", is_flag=True, help="metrics for int8 x int8 operands (default uint8 activations x int8 weights)")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
@click.pass_context
def multipliers_cmd(ctx, signed, as_json) -> None:
    """List the built-in multipliers with relative power and error metrics (names: see 'dse multipliers --help')."""
    if ctx.invoked_subcommand is not None:
        return
    import json as _json
    import math

    from dse.arith.metrics import error_metrics
    from dse.arith.multipliers import get_multiplier, list_multipliers

    rows = []
    for name in list_multipliers():
        m = get_multiplier(name)
        row = {"name": name, "family": m.family, "domain": m.domain, "rel_power": m.rel_power,
               "power_source": m.params["power_source"], "description": m.description}
        if m.domain == "int":
            row.update(error_metrics(m, a_signed=signed, w_signed=True))
        rows.append(row)
    if as_json:
        click.echo(_json.dumps({"operands": "int8 x int8" if signed else "uint8 x int8", "multipliers": rows},
                               indent=2, allow_nan=False, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    tab = Table(title=f"multipliers ({'int8 x int8' if signed else 'uint8 x int8'}; "
                      "rel. power: int vs exact 8x8, float vs exact FP32)")
    for col in ("name", "family", "rel. power", "ME", "MED", "NMED %", "MRED %", "WCE", "EP %"):
        tab.add_column(col, justify="left" if col in ("name", "family") else "right", no_wrap=True)
    for r in rows:
        rp = "-" if math.isnan(r["rel_power"]) else f"{r['rel_power']:.3f}"
        if r["domain"] == "int":
            vals = [f"{r['ME']:.1f}", f"{r['MED']:.1f}", f"{100 * r['NMED']:.3f}", f"{100 * r['MRED']:.2f}",
                    f"{r['WCE']:.0f}", f"{100 * r['EP']:.1f}"]
        else:
            vals = ["-"] * 6
        tab.add_row(r["name"], r["family"], rp, *vals)
    Console(width=max(Console().width, 120)).print(tab)


@multipliers_cmd.command("export")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="FILE.npz (every operand pair + metadata; 'lut:FILE.npz' reproduces NAME) or FILE.npy (one pair)")
@click.option("--signed", is_flag=True, help=".npy only: signed x signed table (default unsigned x unsigned)")
def multipliers_export_cmd(name, output, signed) -> None:
    """Write the tables LUT[a, b] (int32, indexed by the 8-bit patterns value & 0xFF) of multiplier NAME."""
    from dse.arith.multipliers import export_table, export_tables, get_multiplier

    mult = get_multiplier(name)
    if output.lower().endswith(".npz"):
        export_tables(mult, output)
        click.echo(f"wrote {output} ({name}, every operand pair; use it as lut:{output})")
        return
    export_table(mult, output, signed, signed)
    kind = "signed" if signed else "unsigned"
    click.echo(f"wrote {output} and {output}.json ({kind} x {kind} {name})")
# END multipliers

# BEGIN evaluate
def _number_list(flag: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise DseError(f"{flag} {text}: give a number or comma-separated numbers per channel (e.g. 0.485,0.456,0.406)") \
            from None


def _preprocess_flags(mean, std, scale, size):
    """The run's preprocessing from --mean/--std/--scale/--size (None when none is given)."""
    from dse.data import SOURCE_FLAGS, Preprocess

    if mean is None and std is None and scale is None and size is None:
        return None
    if mean is None or std is None:
        raise DseError("--mean and --std go together (with optional --scale, --size): give both, e.g. "
                       "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225")
    d = {"mean": _number_list("--mean", mean), "std": _number_list("--std", std), "size": size}
    if scale is not None:
        d["scale"] = scale
    return Preprocess.from_mapping(d, SOURCE_FLAGS, "--mean/--std/--scale/--size")


def preprocess_options(f):
    """--mean/--std/--scale/--size: the run's preprocessing (wins over a budget, a configuration and the model)."""
    for opt in reversed([
            click.option("--mean", help="per-channel mean after scaling, e.g. 0.485,0.456,0.406 (with --std); "
                         "default: the model's dse.preprocess metadata"),
            click.option("--std", help="per-channel standard deviation, e.g. 0.229,0.224,0.225 (with --mean)"),
            click.option("--scale", type=float, help="pixel scale before mean/std (default 1/255)"),
            click.option("--size", type=click.IntRange(min=1),
                         help="image folders: shorter side in pixels before the center crop to the model input "
                              "(default: the model input size)")]):
        f = opt(f)
    return f


@cli.command("evaluate")
@click.argument("model")
@click.option("--data", default="fashion-mnist:holdout", show_default=True,
              help="data spec: fashion-mnist:calib|search|holdout|all, a .npz (x, y), IDX images file, CIFAR .bin "
              "file/directory or image folder DIR/<class>/*.png|jpg")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="per-layer configuration (.toml/.json, [layers.<name>] multiplier, cv)")
@click.option("--calib", default=None, help="calibration data spec (default fashion-mnist:calib; disjoint from --data)")
@click.option("--images", type=int, default=None, help="evaluate only the first N images")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="kernel threads (default: every available core)")
@preprocess_options
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def evaluate_cmd(model, data, config_path, calib, images, batch_size, threads, mean, std, scale, size, as_json) -> None:
    """Float, FxP8 exact and configured top-1 accuracy of MODEL (a path or lenet5, resnet8) on DATA."""
    import json as _json

    from dse.data import Preprocess
    from dse.emulate import evaluate

    res = evaluate(model, data, config_path, calib, images, batch_size, threads,
                   _preprocess_flags(mean, std, scale, size))
    if as_json:
        click.echo(_json.dumps(res, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{res['model']} on {res['data']} ({res['images']} images, calibrated on {res['calib']})")
    t.add_column("arithmetic")
    t.add_column("top-1 accuracy", justify="right")
    t.add_column("vs float", justify="right")
    rows = [("float32", res["float"]), ("FxP8 exact", res["fxp8"])]
    if "configured" in res:
        rows.append((f"configured ({res['config']})", res["configured"]))
    for name, acc in rows:
        t.add_row(name, f"{100 * acc:.2f} %", f"{100 * (acc - res['float']):+.2f} pp")
    Console().print(t)
    click.echo("preprocessing: " + Preprocess.from_dict(res["preprocess"]).describe())
# END evaluate

# BEGIN search
@cli.command("search")
@click.argument("budget", required=False, type=click.Path(dir_okay=False))
@click.option("--run-dir", type=click.Path(file_okay=False), help="run directory (default runs/<budget-stem>-<seed>)")
@click.option("--storage", help="Optuna storage URL (default: journal.log in the run directory; PostgreSQL for many "
              "machines; not SQLite with --workers > 1)")
@click.option("--n-trials", type=int, help="total trials of the study (overrides [search] n_trials)")
@click.option("--workers", type=int, help="processes optimising the same study (overrides [search] workers)")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="continue the study in the run directory (--no-resume refuses a non-empty run directory)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--threads", type=click.IntRange(min=1), help="kernel threads per worker process (overrides [search] "
              "threads; default: the cores divided among the workers)")
def search_cmd(budget, run_dir, storage, n_trials, workers, resume, quiet, threads) -> None:
    """Optuna search under the accuracy-loss budget in BUDGET (default: the bundled default.toml)."""
    from dse.search.context import search_from_budget

    res = search_from_budget(budget, run_dir=run_dir, storage=storage, n_trials=n_trials, workers=workers,
                             resume=resume, progress=not quiet, threads=threads)
    b = res.get("best")
    if b:
        h = b.get("holdout") or {}
        click.echo(f"best trial {b['trial']}: energy system {b['energy']['system']:.4f} multiplier "
                   f"{b['energy'].get('multiplier', float('nan')):.4f}, loss {100 * b['loss']:.2f} pp (search), "
                   f"{100 * h.get('loss', float('nan')):.2f} pp (holdout)")
    else:
        click.echo("no feasible configuration found")
    click.echo(f"run directory: {res['run_dir']} (dse report {res['run_dir']})")
# END search

# BEGIN report
@cli.command("report")
@click.argument("run", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="also write pareto.png/.html and layers.png/.html into this directory (pip install 'dse[plots]')")
def report_cmd(run, as_json, plot_dir) -> None:
    """Baseline vs best, Pareto front, per-layer configuration and energy breakdown of a search run."""
    import json as _json

    from dse.report import load_run, plot_points, render, summarize

    loaded = load_run(run)
    summary = summarize(loaded)
    if as_json:
        click.echo(_json.dumps(summary, indent=2))
    else:
        render(summary)
    if plot_dir is not None:
        from dse.plots import write_plots

        for p in write_plots(summary, plot_points(loaded), plot_dir):
            click.echo(f"wrote {p}", err=as_json)


@cli.command("export")
@click.argument("run", type=click.Path())
@click.option("--trial", type=int, default=None, help="trial number (default: the reported best)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="config.toml or config.json")
def export_cmd(run, trial, output) -> None:
    """Write the per-layer configuration of a trial for 'dse evaluate --config'."""
    from dse.report import export_config, load_run

    path = export_config(load_run(run), output, trial)
    click.echo(f"wrote {path}")
# END report

# BEGIN predict
@cli.command("predict")
@click.argument("model")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="per-layer configuration (TOML/JSON, [layers.<name>] multiplier, cv); default all exact")
@click.option("--data", default="fashion-mnist:search", show_default=True, help="data set for --validate")
@click.option("--calib", default="fashion-mnist:calib", show_default=True, help="calibration data set")
@click.option("--validate", "validate_n", type=int, default=0,
              help="fit accuracy ~ AME on N random emulated configurations (half fit, half held out) and report")
@click.option("--images", type=int, default=2000, show_default=True, help="images of --data used by --validate")
@click.option("--seed", type=int, default=0, show_default=True)
@preprocess_options
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def predict_cmd(model, config_path, data, calib, validate_n, images, seed, mean, std, scale, size, as_json) -> None:
    """AME accuracy predictor: per-layer error statistics of a configuration and (--validate) its accuracy check."""
    import json as _json

    from dse.data import Preprocess
    from dse.predict import predict_report

    r = predict_report(model, config_path, data=data, calib=calib, validate_n=validate_n, seed=seed, images=images,
                       preprocess=_preprocess_flags(mean, std, scale, size))
    if as_json:
        click.echo(_json.dumps(r, indent=2))
        return
    click.echo(f"{r['model']} calibrated on {r['calib']}; preprocessing: "
               + Preprocess.from_dict(r["preprocess"]).describe())
    click.echo(f"{'layer':<16} {'multiplier':<24} {'cv':<3} {'K':>5} {'ME':>10} {'VE':>11} {'bias':>10} "
               f"{'noise':>10} {'acc_std':>10} {'contrib':>9}")
    for t in r["layers"]:
        click.echo(f"{t['layer']:<16} {t['multiplier']:<24} {'y' if t['cv'] else 'n':<3} {t['K']:>5} {t['ME']:>10.3g} "
                   f"{t['VE']:>11.4g} {t['bias']:>10.4g} {t['noise']:>10.4g} {t['acc_std']:>10.4g} "
                   f"{t['contrib']:>9.4g}" + ("" if t["acc_std_source"] == "calibration" else " *"))
    click.echo(f"AME = {r['ame']:.6g}" + ("  (* acc_std from the i.i.d. model)" if any(
        t["acc_std_source"] != "calibration" for t in r["layers"]) else ""))
    v = r.get("validation")
    if v:
        m = r["accuracy_model"]
        click.echo(f"accuracy ~ {m['b0']:.4f} + {m['b1']:.4g} AME + {m['b2']:.4g} AME^2 (fit on {v['n_fit']} "
                   f"emulated configurations incl. all-exact, {v['images']} images)")
        click.echo(f"predicted accuracy {100 * r['predicted_accuracy']:.2f} %, loss {100 * r['predicted_loss']:.2f} pp")
        click.echo(f"{'held-out':>8} {'AME':>9} {'predicted':>10} {'emulated':>9}")
        for i, h in enumerate(v["holdout"]):
            click.echo(f"{i:>8} {h['ame']:>9.4g} {100 * h['predicted']:>9.2f}% {100 * h['emulated']:>8.2f}%")
        click.echo(f"Spearman {v['spearman']:.3f}, held-out MAE {100 * v['mae']:.2f} pp ({v['n_holdout']} configs)")
        click.echo(f"time per configuration: predictor {1e6 * v['predict_seconds']:.1f} us, emulation "
                   f"{1e3 * v['emulate_seconds']:.1f} ms, speedup {v['speedup']:.3g}x")
# END predict


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dse", standalone_mode=False)
    except DseError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
        click.echo(f"error: {DseError(exc.format_message().rstrip('.'))}{hint}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
