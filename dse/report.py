"""``dse report`` and ``dse export``: read a run directory (the study itself, so interrupted runs work too).

``load_run(dir) -> Run``; ``summarize(run) -> dict`` (JSON-friendly); ``render(summary, console)`` (rich tables);
``export_config(run, out, trial=None) -> Path`` writes the per-layer configuration via ``dse.config.save_config``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from dse.errors import DseError
from dse.layer_config import config_from_dict
from dse.search import rundir
from dse.search.study import is_feasible, pareto_front, trial_summary


@dataclass
class Run:
    path: Path
    study: object            # optuna.Study
    results: dict | None     # results.json (None while the search has not finished)


def load_run(path: str | Path) -> Run:
    path = Path(path)
    study = rundir.load_study(path)
    return Run(path, study, rundir.read_results(path))


def _complete(run: Run):
    return [t for t in run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "loss" in t.user_attrs]


def best_trial(run: Run):
    """The reported best trial: results.json's (hold-out checked) best, else the lowest-energy feasible trial that
    saw the whole search split (None if there is none yet)."""
    if run.results and run.results.get("best"):
        return run.study.trials[run.results["best"]["trial"]]
    feas = [t for t in _complete(run) if is_feasible(t) and t.user_attrs.get("full")]
    return min(feas, key=lambda t: (t.user_attrs["energy"]["system"], t.user_attrs["loss"]), default=None)


def plot_points(run: Run) -> list[dict]:
    """Trial summaries of every complete trial that saw the whole search split (what the Pareto plot shows)."""
    return [trial_summary(t) for t in _complete(run) if t.user_attrs.get("full") and "duplicate_of" not in t.user_attrs]


def summarize(run: Run) -> dict:
    """Baseline vs best, Pareto front, per-layer configuration and energy breakdown of the best trial."""
    ua = run.study.user_attrs
    settings = ua.get("settings", {})
    trials = _complete(run)
    res = run.results or {}
    base = dict(res.get("baseline", {}))
    if "fxp8" not in base:
        exact = next((t.user_attrs.get("accuracy_exact") for t in trials if t.user_attrs.get("full")), None)
        base["fxp8"] = {"search": exact, "holdout": None}
    bt = best_trial(run)
    best = None
    if bt is not None:
        best = trial_summary(bt)
        checked = {d["trial"]: d for d in res.get("checked", [])}
        best["holdout"] = checked.get(bt.number, {}).get("holdout")
    front = pareto_front([trial_summary(t) for t in trials
                          if t.user_attrs.get("full") and "duplicate_of" not in t.user_attrs])
    states = [t.state for t in run.study.get_trials(deepcopy=False)]
    return {
        "run": str(run.path), "finished": run.results is not None, "mode": settings.get("mode"),
        "budget_loss": settings.get("budget_loss"), "n_trials": settings.get("n_trials"), "info": ua.get("info", {}),
        "trials": {"complete": states.count(TrialState.COMPLETE), "feasible": sum(is_feasible(t) for t in trials),
                   "running": states.count(TrialState.RUNNING), "failed": states.count(TrialState.FAIL),
                   "stopped_racing": sum(t.user_attrs.get("skipped") == "racing" for t in trials),
                   "skipped_predictor": sum(t.user_attrs.get("skipped") == "predictor" for t in trials)},
        "elapsed_s": res.get("elapsed_s"), "baseline": base, "best": best, "pareto_front": front,
    }


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _pp(x) -> str:
    return "-" if x is None else f"{100 * x:.2f} pp"


def _num(x, fmt=".4f") -> str:
    return "-" if x is None else format(x, fmt)


def render(summary: dict, console=None) -> None:
    """Print the summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 140))
    s = summary
    t = s["trials"]
    console.print(f"[bold]run[/bold] {s['run']}  mode {s['mode']}  budget {_pp(s['budget_loss'])}  "
                  f"trials {t['complete']}/{s['n_trials']} (feasible {t['feasible']}, stopped by racing "
                  f"{t['stopped_racing']}, skipped {t['skipped_predictor']}, failed {t['failed']})"
                  + ("" if s["finished"] else "  [yellow]search not finished: no hold-out check yet[/yellow]"))
    pre = s["info"].get("preprocess")
    if pre:
        from rich.markup import escape

        from dse.data import Preprocess
        console.print(f"[bold]preprocessing[/bold] {escape(Preprocess.from_dict(pre).describe())}", highlight=False)
    b, base = s["best"], s["baseline"]
    tab = Table(title="baseline vs best")
    for c in ("", "accuracy (search)", "loss (search)", "accuracy (holdout)", "loss (holdout)",
              "energy system", "energy multiplier", "latency"):
        tab.add_column(c, justify="right" if c else "left")
    fl = base.get("float", {})
    tab.add_row("float", _pct(fl.get("search")), "", _pct(fl.get("holdout")), "", "", "", "")
    fx = base.get("fxp8", {})
    tab.add_row("FxP8 exact", _pct(fx.get("search")), _pp(0.0), _pct(fx.get("holdout")),
                _pp(0.0 if fx.get("holdout") is not None else None), "1.0000", "1.0000", "1.0000")
    if b:
        h = b.get("holdout") or {}
        e = b["energy"]
        tab.add_row(f"best (trial {b['trial']})", _pct(b["accuracy"]), _pp(b["loss"]), _pct(h.get("accuracy")),
                    _pp(h.get("loss")), _num(e.get("system")), _num(e.get("multiplier")), _num(e.get("latency")))
    console.print(tab)
    if s["pareto_front"]:
        tab = Table(title="Pareto front (search split, full fidelity)")
        for c in ("trial", "energy system", "energy multiplier", "loss", "feasible", "approximate layers"):
            tab.add_column(c)
        for d in s["pareto_front"]:
            approx = ", ".join(f"{n}={v['multiplier']}{'+cv' if v['cv'] else ''}" for n, v in d["config"].items()
                               if v["multiplier"] != "exact")
            tab.add_row(str(d["trial"]), _num(d["energy"].get("system")), _num(d["energy"].get("multiplier")),
                        _pp(d["loss"]), "yes" if d["feasible"] else "no", approx or "(all exact)")
        console.print(tab)
    if b:
        per_layer = b["energy"].get("layers") or {}
        tab = Table(title=f"per-layer configuration and energy (trial {b['trial']}; energy as a fraction of the "
                          "all-exact network)")
        for c in ("layer", "multiplier", "cv"):
            tab.add_column(c)
        for c in ("energy exact", "energy config", "multiplier vs exact", "cycles"):
            tab.add_column(c, justify="right")
        for n, v in b["config"].items():
            e = per_layer.get(n, {})
            tab.add_row(n, v["multiplier"], "yes" if v["cv"] else "no", _num(e.get("exact")), _num(e.get("config")),
                        _num(e.get("multiplier")), str(e.get("cycles", "-")))
        console.print(tab)
        comps = b["energy"].get("components")
        if comps:
            tab = Table(title="energy breakdown per component (best vs all-exact FxP8)")
            tab.add_column("component")
            cols = sorted({k for v in comps.values() if isinstance(v, dict) for k in v}) or ["value"]
            for c in cols:
                tab.add_column(c, justify="right")
            for name, v in comps.items():
                vals = [v.get(c) for c in cols] if isinstance(v, dict) else [v]
                tab.add_row(name, *[_num(x) if isinstance(x, (int, float)) else str(x) for x in vals])
            console.print(tab)
    else:
        console.print("no feasible configuration yet")


def export_config(run: Run, out: str | Path, trial: int | None = None) -> Path:
    """Write the per-layer configuration of ``trial`` (default: the reported best) with ``dse.config.save_config``."""
    if trial is None:
        t = best_trial(run)
        if t is None:
            raise DseError(f"{run.path}: no feasible trial yet; pass --trial N to export a specific trial")
    else:
        if not 0 <= trial < len(run.study.trials):
            raise DseError(f"--trial {trial}: {run.path} has trials 0..{len(run.study.trials) - 1}; "
                           "run 'dse report' to see them")
        t = run.study.trials[trial]
        if t.state != TrialState.COMPLETE or "config" not in t.user_attrs:
            raise DseError(f"--trial {trial}: trial is {t.state.name.lower()}, not complete; pick a complete trial "
                           "from 'dse report'")
    out = Path(out)
    if out.suffix.lower() not in (".toml", ".json"):
        raise DseError(f"-o {out}: unsupported extension; use .toml or .json")
    ua = t.user_attrs
    config = config_from_dict(ua["config"])
    info = run.study.user_attrs.get("info", {})
    meta = {"model": str(info.get("model", "")), "run": str(run.path), "trial": t.number,
            "accuracy": ua.get("accuracy"), "loss": ua.get("loss"),
            "energy_system": ua.get("energy", {}).get("system"),
            "energy_multiplier": ua.get("energy", {}).get("multiplier")}
    meta = {k: v for k, v in meta.items() if v is not None}
    if info.get("preprocess"):  # the run's preprocessing travels with the configuration ([model] preprocess)
        from dse.data import Preprocess
        meta.update(Preprocess.from_dict(info["preprocess"]).to_meta())
    from dse.config import save_config
    save_config(config, out, meta=meta)
    return out
