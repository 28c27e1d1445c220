"""Terminal presentation: every table, line and progress bar dse prints goes through here, in one style (rich).

The library returns plain results (dicts of numbers and names); ``dse.cli`` hands them to one function here per
command: ``multipliers``, ``evaluation``, ``prediction``, ``search_result``, ``report``, ``wrote``, ``as_json``; the
search driver takes a ``SearchProgress`` callback, its set-up a ``SetupProgress`` one. Formats: accuracies in %,
losses in pp (percentage points), relative energies with 4 decimals, "-" for a missing value.
"""
from __future__ import annotations

import json
import math

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

MIN_WIDTH = 140


def console() -> Console:
    """The console every table is printed on (at least MIN_WIDTH columns so wide tables are not wrapped)."""
    return Console(width=max(Console().width, MIN_WIDTH))


def table(title: str | None, columns: list[str], rows: list[list[str]], left: int = 1) -> Table:
    """A rich table: the first ``left`` columns left-aligned (names), the others right-aligned (numbers)."""
    tab = Table(title=title)
    for i, c in enumerate(columns):
        tab.add_column(c, justify="left" if i < left else "right", no_wrap=i < left)
    for r in rows:
        tab.add_row(*r)
    return tab


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def pp(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} pp"


def num(x, fmt: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def yes_no(b: bool) -> str:
    return "yes" if b else "no"


def as_json(obj, allow_nan: bool = True) -> None:
    """Print ``obj`` as indented JSON (non-JSON values as strings; ``allow_nan=False``: NaN/inf raise)."""
    click.echo(json.dumps(obj, indent=2, allow_nan=allow_nan, default=str))


def wrote(path, what: str = "", err: bool = False) -> None:
    """The "wrote FILE" line of commands that write files (on stderr with ``err``, e.g. beside JSON on stdout)."""
    click.echo(f"wrote {path}" + (f" ({what})" if what else ""), err=err)


# ----------------------------------------------------------------------------------------------- dse multipliers
def multipliers(rows: list[dict], operands: str) -> None:
    """``dse multipliers``: one row per multiplier with relative power and (integer multipliers) error metrics."""
    out = []
    for r in rows:
        if r["domain"] == "int":
            vals = [num(r["ME"], ".1f"), num(r["MED"], ".1f"), num(100 * r["NMED"], ".3f"), num(100 * r["MRED"], ".2f"),
                    num(r["WCE"], ".0f"), num(100 * r["EP"], ".1f")]
        else:
            vals = ["-"] * 6
        out.append([r["name"], r["family"], num(r["rel_power"], ".3f"), *vals])
    console().print(table(f"multipliers ({operands}; rel. power: int vs exact 8x8, float vs exact FP32)",
                          ["name", "family", "rel. power", "ME", "MED", "NMED %", "MRED %", "WCE", "EP %"], out,
                          left=2))


# ----------------------------------------------------------------------------------------------- dse evaluate
def evaluation(res: dict) -> None:
    """``dse evaluate``: float, FxP8 exact and configured top-1 accuracy, each vs float."""
    rows = [("float32", res["float"]), ("FxP8 exact", res["fxp8"])]
    if "configured" in res:
        rows.append((f"configured ({res['config']})", res["configured"]))
    console().print(table(f"{res['model']} on {res['data']} ({res['images']} images, calibrated on {res['calib']})",
                          ["arithmetic", "top-1 accuracy", "vs float"],
                          [[name, pct(acc), f"{100 * (acc - res['float']):+.2f} pp"] for name, acc in rows]))
    console().print("preprocessing: " + _preprocessing(res["preprocess"]), markup=False, highlight=False)
    if "calibration_check" in res:
        console().print(calibration_line(res["calibration_check"], res["calib"]), markup=False, highlight=False)


def calibration_line(c: dict, calib: str) -> str:
    """``dse evaluate --config``: whether this run's calibration is the one the search used (dse.emulate.evaluate's
    ``calibration_check``); ``calib``: the calibration data of this run."""
    if c["matches"]:
        return (f"calibration: the same as the search's ({c['here'][:12]}), so the FxP8 figures are measured on its "
                "network")
    used = c.get("search_calib")
    return (f"calibration: differs from the one the search used ({c['search'][:12]} there, {c['here'][:12]} here, "
            f"calibrated on {calib}), so these figures can differ from the search's; calibrate on the search's "
            f"calibration data{f' (--calib {used})' if used and used != calib else ''} with the same model file, dse "
            "and numpy as the search")


def _preprocessing(d: dict) -> str:
    from dse.data import Preprocess

    return Preprocess.from_dict(d).describe()


# ----------------------------------------------------------------------------------------------- dse predict
def prediction(r: dict) -> None:
    """``dse predict``: per-layer AME terms and, after a validation, the accuracy model and its held-out check."""
    con = console()
    con.print(f"{r['model']} calibrated on {r['calib']}; preprocessing: " + _preprocessing(r["preprocess"]),
              markup=False, highlight=False)
    model_std = any(t["acc_std_source"] != "calibration" for t in r["layers"])
    rows = [[t["layer"], t["multiplier"], yes_no(t["cv"]), str(t["K"]), num(t["ME"], ".3g"), num(t["VE"], ".4g"),
             num(t["bias"], ".4g"), num(t["noise"], ".4g"),
             num(t["acc_std"], ".4g") + ("" if t["acc_std_source"] == "calibration" else " *"), num(t["contrib"], ".4g")]
            for t in r["layers"]]
    con.print(table(f"AME = {r['ame']:.6g}" + ("  (* acc_std from the i.i.d. model)" if model_std else ""),
                    ["layer", "multiplier", "cv", "K", "ME", "VE", "bias", "noise", "acc_std", "contrib"], rows,
                    left=3))
    v = r.get("validation")
    if not v:
        return
    m = r["accuracy_model"]
    con.print(f"accuracy ~ {m['b0']:.4f} + {m['b1']:.4g} AME + {m['b2']:.4g} AME^2 (fit on {v['n_fit']} emulated "
              f"configurations incl. all-exact, {v['images']} images)")
    con.print(f"predicted accuracy {pct(r['predicted_accuracy'])}, loss {pp(r['predicted_loss'])}")
    con.print(table(f"held-out configurations: Spearman {v['spearman']:.3f}, MAE {pp(v['mae'])} "
                    f"({v['n_holdout']} configurations)", ["held-out", "AME", "predicted", "emulated"],
                    [[str(i), num(h["ame"], ".4g"), pct(h["predicted"]), pct(h["emulated"])]
                     for i, h in enumerate(v["holdout"])]))
    con.print(f"time per configuration: predictor {1e6 * v['predict_seconds']:.1f} us, emulation "
              f"{1e3 * v['emulate_seconds']:.1f} ms, speedup {v['speedup']:.3g}x")
    g = r.get("surrogate")
    if g:
        con.print(table(f"logit surrogate on the same held-out configurations: Spearman "
                        f"{g['spearman']:.3f}, MAE {pp(g['mae'])}; up to {pp(g['near_budget'])} emulated loss ({g['n_near']}): "
                        f"MAE {pp(g['mae_near'])}", ["held-out", "raw loss", "predicted loss", "emulated loss"],
                        [[str(i), pp(h["raw"]), pp(h["predicted"]), pp(h["emulated"])]
                         for i, h in enumerate(g["holdout"])]))
        con.print(f"surrogate: {g['measured']} single-layer runs on {g['images']} images ({g['setup_seconds']:.1f} s "
                  f"once), then {1e6 * g['predict_seconds']:.1f} us per configuration; calibration c = "
                  f"{g['calibration_c']:.3g}; leave-one-out on the fit set: Spearman {g['loo_spearman']:.3f}, mean "
                  f"error {pp(g['loo_mean_error'])}")


# ----------------------------------------------------------------------------------------------- dse search
def predictor_line(p: dict, trials: dict) -> str:
    """Which predictor the search started with (info["predictor"] of dse.search.context: the gate's state after the
    set-up's fit configurations) or why it was off, every switch of the gate as trials refitted it, and the trials
    it skipped."""
    if not p:
        return ""
    if p.get("disabled"):
        start = p["disabled"]
    else:
        start = (f"predictor: {p['kind']} (leave-one-out Spearman {p['loo_spearman']:.2f}, mean error "
                 f"{pp(p['loo_mean_error'])} on {p['points']} points)")
    switches = "".join(f"; before trial {n}: {line}" for n, line in trials.get("predictor_switches", []))
    record = record_line(trials.get("predictor_record"))
    return f"{start}{switches}; skipped {trials['skipped_predictor']} trials{record}"


def record_line(r: dict | None) -> str:
    """The predictor's record on the search's trials (dse.search.objective.predictor_record), or nothing."""
    if not r or not r["used"]:
        return ""
    used = ", ".join(f"{k} {n}" for k, n in r["used"].items())
    head = f"; predicted trials: {used} (gate on for {r['on']})"
    if r["spearman"] is None:
        return f"{head}, {r['measured']} of them measured at full fidelity (too few to score){cost_line(r)}"
    from dse.predict import MAX_MEAN_ERROR, MIN_SPEARMAN

    verdict = "passes" if r["passes"] else "below"
    return (f"{head}; against the {r['measured']} measured at full fidelity afterwards: Spearman {r['spearman']:.2f}, "
            f"mean error {pp(r['mean_error'])} ({verdict} the bar: Spearman >= {MIN_SPEARMAN}, mean error <= "
            f"{pp(MAX_MEAN_ERROR)}){cost_line(r)}")


def cost_line(r: dict) -> str:
    """The gate's time over the trials it ran before, as a share of theirs (absent on runs from before it was kept)."""
    if not r.get("trial_seconds"):
        return ""
    paused = (f", and sat out {r['paused']} trials to keep within [search] predictor_max_share of their time"
              if r.get("paused") else "")
    return f"; the predictor took {r['seconds']:.1f} s of the trials' {r['trial_seconds']:.0f} s{paused}"


def _notes(con, res: dict) -> None:
    """The final check's notes of a search result or run summary (what was left unchecked, what the confidence margin
    cost, the baseline), each on its own lines."""
    for note in ("check_note", "margin_note", "baseline_note"):
        if res.get(note):
            con.print(escape(res[note]))


def search_result(res: dict) -> None:
    """``dse search``: the best trial (search and hold-out loss) and where the run lives; or the one line saying the
    run's deadline stopped it in its set-up."""
    con = console()
    if res.get("stopped"):
        con.print(res["stopped"], markup=False, highlight=False, soft_wrap=True)
        return
    b = res.get("best")
    if b:
        h, c = b.get("holdout") or {}, b.get("confirm")
        confirm = f"{pp(c['loss'])} (confirmation, {c['images']} images), " if c else ""
        con.print(f"best trial {b['trial']}: energy system {num(b['energy'].get('system'))} multiplier "
                  f"{num(b['energy'].get('multiplier'))}, loss {pp(b['loss'])} (search), {confirm}"
                  f"{pp(h.get('loss'))} (holdout)")
    else:
        con.print(escape(res.get("no_best") or "no configuration passed the hold-out check"))
    _notes(con, res)
    line = predictor_line(res.get("info", {}).get("predictor") or {}, res.get("trials", {}))
    if line:
        con.print(escape(line), highlight=False)
    con.print(f"run directory: {res['run_dir']} (dse report {res['run_dir']})")


class SetupProgress:
    """Set-up display of a search (``progress(stage, done, total, note)``, see dse.search.context.build_context): a
    transient bar while a stage of several steps runs, then one line per finished stage with its time and note."""

    def __init__(self):
        self.stage, self.bar, self.task, self.t0 = None, None, None, 0.0

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        import time

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if stage != self.stage:
            self._stop()
            self.stage, self.t0 = stage, time.monotonic()
            if total > 1:
                self.bar = Progress(TextColumn(f"set-up: {stage}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), transient=True, console=console())
                self.bar.start()
                self.task = self.bar.add_task(stage, total=total)
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
        if done >= total:
            self._stop()
            line = f"set-up: {stage} ({time.monotonic() - self.t0:.1f} s)" + (f"; {note}" if note else "")
            console().print(line, markup=False, highlight=False)
            self.stage = None

    def _stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def close(self) -> None:
        """Take down a stage's bar left running (the run's deadline stopped the set-up in that stage)."""
        self._stop()


class SearchProgress:
    """Progress bar of a running search (trials done, best feasible energy, feasible count): a context manager and an
    Optuna callback, built by the search driver as ``SearchProgress(total, done)``."""

    def __init__(self, total: int, done: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                          TimeElapsedColumn(), transient=False)
        self.task = self.p.add_task("search", total=total, completed=done, info="")
        self.last_switch = -1  # the trial number of the last predictor-gate switch shown

    def __enter__(self):
        self.p.__enter__()
        return self

    def __exit__(self, *exc):
        self.p.__exit__(*exc)

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        from dse.search.objective import ATTR_VERIFIED, predictor_switches
        from dse.search.study import is_feasible

        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        # the study's predictor-gate switches after the last one shown (once each, whichever process recorded it)
        for number, line in predictor_switches(trials):
            if number > self.last_switch:
                self.last_switch = number
                self.p.console.print(f"trial {number}: {line}", markup=False, highlight=False)
        feas = [t for t in trials if is_feasible(t)]
        best = min((t.user_attrs["energy"]["system"] for t in feas if t.user_attrs.get(ATTR_VERIFIED)), default=None)
        self.p.update(self.task, completed=len(trials),
                      info=f"best energy {num(best)} (hold-out verified)  feasible {len(feas)}")


# ----------------------------------------------------------------------------------------------- dse report
def studies(rows: list[dict]) -> None:
    """``dse report --list``: one row per study in a storage."""
    tab = Table(title="studies")
    for c in ("study", "mode", "complete", "running", "processes", "budget"):
        tab.add_column(c, justify="right" if c in ("complete", "running", "processes") else "left")
    for r in rows:
        tab.add_row(r["study"], str(r["mode"]), f"{r['complete']}/{r['n_trials']}", str(r["running"]),
                    str(r["processes"]), str(r["budget"]))
    console().print(tab)


def report(summary: dict) -> None:
    """``dse report``: run line, baseline vs best, Pareto front, per-layer configuration and energy breakdown."""
    con = console()
    s, t = summary, summary["trials"]
    con.print(f"[bold]run[/bold] {s['run']}  mode {s['mode']}  budget {pp(s['budget_loss'])}  "
              f"trials {t['complete']}/{s['n_trials']} (feasible {t['feasible']}, stopped by racing "
              f"{t['stopped_racing']}, skipped {t['skipped_predictor']}, failed {t['failed']})"
              + ("" if s["finished"] else "  [yellow]search not finished: no hold-out check yet[/yellow]"))
    pre = s["info"].get("preprocess")
    if pre:
        con.print(f"[bold]preprocessing[/bold] {escape(_preprocessing(pre))}", highlight=False)
    if s["irreproducible"]:
        con.print(escape(s["irreproducible"]), highlight=False)
    if s.get("context"):
        con.print(escape(context_line(s["context"])), highlight=False)
    line = predictor_line(s["info"].get("predictor") or {}, t)
    if line:
        con.print(escape(line), highlight=False)
    con.print(_baseline_table(s["baseline"], s["best"]))
    if s["pareto_front"]:
        con.print(_pareto_table(s["pareto_front"]))
    b = s["best"]
    _notes(con, s)
    if not b:
        con.print(escape(s["no_best"] or "no hold-out verified configuration yet"))
        return
    con.print(_layers_table(b))
    comps = b["energy"].get("components")
    if comps:
        con.print(table("energy breakdown per component (best vs all-exact FxP8)", ["component", "config", "exact"],
                        [[name, num(v["config"]), num(v["exact"])] for name, v in comps.items()]))


def context_line(c: dict) -> str:
    """The report's line on the study's context identity (dse.report.context_summary)."""
    n, hosts = c["confirmed"], c["hosts"]
    procs, on = f"{n} process{'es' if n != 1 else ''}", f"{len(hosts)} host{'s' if len(hosts) != 1 else ''}"
    return (f"context {c['digest'][:12]} (FxP8 calibration, search and hold-out data, float32 baselines) computed on "
            f"host {c['host']}; {procs} on {on} ({', '.join(hosts)}) had the same")


def _baseline_table(base: dict, b: dict | None) -> Table:
    fl, fx = base.get("float", {}), base.get("fxp8", {})
    rows = [["float", pct(fl.get("search")), "", "", pct(fl.get("holdout")), "", "", "", ""],
            ["FxP8 exact", pct(fx.get("search")), pp(0.0), "", pct(fx.get("holdout")),
             pp(0.0 if fx.get("holdout") is not None else None), "1.0000", "1.0000", "1.0000"]]
    if b:
        h, e = b.get("holdout") or {}, b["energy"]
        rows.append([f"best (trial {b['trial']})", pct(b["accuracy"]), pp(b["loss"]), _confirm_cell(b),
                     pct(h.get("accuracy")), pp(h.get("loss")), num(e.get("system")), num(e.get("multiplier")),
                     num(e.get("latency"))])
    return table("baseline vs best", ["", "accuracy (search)", "loss (search)", "loss (confirm)",
                                      "accuracy (holdout)", "loss (holdout)", "energy system", "energy multiplier",
                                      "latency"], rows)


def _confirm_cell(d: dict) -> str:
    """A trial summary's loss on the confirmation images (dse.search.objective), or why there is none."""
    c = d.get("confirm")
    return pp(c["loss"]) if c else "not run"


def _approx_layers(config: dict) -> str:
    return ", ".join(f"{n}={v['multiplier']}{'+cv' if v['cv'] else ''}" for n, v in config.items()
                     if v["multiplier"] != "exact") or "(all exact)"


def _pareto_table(front: list[dict]) -> Table:
    rows = [[str(d["trial"]), num(d["energy"].get("system")), num(d["energy"].get("multiplier")), pp(d["loss"]),
             yes_no(d["feasible"]), _confirm_cell(d), _holdout_cell(d), _approx_layers(d["config"])] for d in front]
    return table("Pareto front (search split, full fidelity)",
                 ["trial", "energy system", "energy multiplier", "loss", "feasible", "confirm", "hold-out",
                  "approximate layers"], rows)


def _holdout_cell(d: dict) -> str:
    if d["verified"] is None:
        return "not checked"
    return f"{'passed' if d['verified'] else 'failed'} {pp(d['holdout']['loss'])}"


def _layers_table(b: dict) -> Table:
    per_layer = b["energy"].get("layers") or {}
    rows = []
    for n, v in b["config"].items():
        e = per_layer.get(n, {})
        rows.append([n, v["multiplier"], yes_no(v["cv"]), num(e.get("exact")), num(e.get("config")),
                     num(e.get("multiplier")), str(e.get("cycles", "-"))])
    return table(f"per-layer configuration and energy (trial {b['trial']}; energy as a fraction of the all-exact "
                 "network)", ["layer", "multiplier", "cv", "energy exact", "energy config", "multiplier vs exact",
                              "cycles"], rows, left=3)
