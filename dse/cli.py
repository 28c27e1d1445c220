"""Command-line interface. Thin: parse arguments, call the modules, print.

Every command hands its result to :mod:`dse.present` (or prints it as JSON). :func:`main` catches
:class:`dse.errors.DseError` and click's usage errors and exits 2 with a one-line message.
"""
from __future__ import annotations

import sys

import click

from dse import __version__, present
from dse.errors import DseError, SettingError


# Library settings named by SettingError -> the flag that sets them ("FLAG VALUE: problem"); switches print without
# the value ("--no-resume: problem").
FLAGS = {"trial": "--trial", "output": "-o", "run_dir": "--run-dir", "images": "--images", "seed": "--seed",
         "validate_n": "--validate", "batch_size": "--batch-size", "calib": "--calib", "data": "--data"}
SWITCHES = {"resume": "--no-resume"}
# Where a run's preprocessing came from when the --mean/--std/--scale/--size flags gave it (Preprocess.source), and
# how the 'nothing says how to normalise' error names them.
SOURCE_FLAGS = "--mean/--std/--size flags"
PREPROCESS_FLAGS_HINT = "--mean and --std (and --scale, --size) on the command line"


def _message(exc: DseError) -> str:
    """The one-line message of ``exc`` in command-line terms (a setting named by the flag that sets it)."""
    if isinstance(exc, SettingError):
        if exc.setting in SWITCHES:
            return f"{SWITCHES[exc.setting]}: {exc.problem}"
        if exc.setting in FLAGS:
            return f"{FLAGS[exc.setting]} {exc.value}: {exc.problem}"
    return str(exc)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dse")
@click.option("--allow-cmodel", is_flag=True,
              help="allow cmodel:FILE.c multipliers (the C file is compiled and run: use only trusted files)")
def cli(allow_cmodel) -> None:
    """Design-space exploration of approximate-arithmetic DNN accelerators."""
    if allow_cmodel:
        from dse.arith.cmodel import opt_in
        opt_in()


@cli.group("multipliers", invoke_without_command=True)
@click.option("--signed", is_flag=True, help="metrics for int8 x int8 operands (default uint8 activations x int8 weights)")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
@click.pass_context
def multipliers_cmd(ctx, signed, as_json) -> None:
    """List the built-in multipliers with relative power and error metrics (names: see 'dse multipliers --help')."""
    if ctx.invoked_subcommand is not None:
        return
    from dse.arith.metrics import catalogue

    rows = catalogue(a_signed=signed)
    operands = "int8 x int8" if signed else "uint8 x int8"
    if as_json:
        present.as_json({"operands": operands, "multipliers": rows}, allow_nan=False)
    else:
        present.multipliers(rows, operands)


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
        present.wrote(output, f"{name}, every operand pair; use it as lut:{output}")
        return
    export_table(mult, output, signed, signed)
    kind = "signed" if signed else "unsigned"
    present.wrote(f"{output} and {output}.json", f"{kind} x {kind} {name}")

def _number_list(flag: str, text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise DseError(f"{flag} {text}: give a number or comma-separated numbers per channel (e.g. 0.485,0.456,0.406)") \
            from None


def _preprocess_flags(mean, std, scale, size):
    """The run's preprocessing from --mean/--std/--scale/--size (None when none is given)."""
    from dse.data import Preprocess

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
    from dse.emulate import evaluate

    from dse.session import DataRef

    res = evaluate(model, DataRef(data, f"--data {data}"), config_path,
                   DataRef(calib, f"--calib {calib}") if calib else None, images, batch_size, threads,
                   _preprocess_flags(mean, std, scale, size), PREPROCESS_FLAGS_HINT)
    if as_json:
        present.as_json(res)
    else:
        present.evaluation(res)


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

    setup = None if quiet else present.SetupProgress()
    try:
        res = search_from_budget(budget, run_dir=run_dir, storage=storage, n_trials=n_trials, workers=workers,
                                 resume=resume, progress=None if quiet else present.SearchProgress, threads=threads,
                                 setup_progress=setup)
    finally:
        if setup is not None:
            setup.close()
    present.search_result(res)


@cli.command("report")
@click.argument("run", required=False, type=click.Path())
@click.option("--storage", help="read a study from this storage URL instead of a run directory")
@click.option("--study", "study_name", help="study name in --storage (see --list; optional if it holds one)")
@click.option("--list", "list_only", is_flag=True, help="list the studies in the storage of RUN or --storage")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="also write pareto.png/.html and layers.png/.html into this directory (pip install 'dse[plots]')")
def report_cmd(run, storage, study_name, list_only, as_json, plot_dir) -> None:
    """Baseline vs best, Pareto front, per-layer configuration and energy breakdown of a search run."""
    from dse.report import list_studies, load_run, plot_points, summarize

    if list_only:
        rows = list_studies(run, storage)
        if as_json:
            present.as_json(rows)
        else:
            present.studies(rows)
        return
    loaded = load_run(run, storage, study_name)
    summary = summarize(loaded)
    if as_json:
        present.as_json(summary)
    else:
        present.report(summary)
    if plot_dir is not None:
        from dse.plots import write_plots

        for p in write_plots(summary, plot_points(loaded), plot_dir):
            present.wrote(p, err=as_json)


@cli.command("export")
@click.argument("run", type=click.Path())
@click.option("--trial", type=int, default=None, help="trial number (default: the reported best)")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="config.toml or config.json")
def export_cmd(run, trial, output) -> None:
    """Write the per-layer configuration of a trial for 'dse evaluate --config'."""
    from dse.report import export_config, load_run

    present.wrote(export_config(load_run(run), output, trial))

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
    from dse.predict import predict_report

    from dse.session import DataRef

    r = predict_report(model, config_path, data=DataRef(data, f"--data {data}"),
                       calib=DataRef(calib, f"--calib {calib}"), validate_n=validate_n, seed=seed, images=images,
                       preprocess=_preprocess_flags(mean, std, scale, size), preprocess_hint=PREPROCESS_FLAGS_HINT)
    if as_json:
        present.as_json(r)
    else:
        present.prediction(r)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dse", standalone_mode=False)
    except DseError as exc:
        click.echo(f"error: {_message(exc)}", err=True)
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
