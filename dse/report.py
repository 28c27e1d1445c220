"""``dse report`` and ``dse export``: read a run directory (the study itself, so interrupted runs work too).

``load_run(dir) -> Run``; ``summarize(run) -> dict`` (JSON-friendly; ``dse.present.report`` prints it);
``export_config(run, out, trial=None) -> Path`` writes the per-layer configuration via ``dse.config.save_config``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState

from dse.config import META_CALIBRATION, META_CONTEXT, save_config
from dse.errors import DseError, SettingError
from dse.layer_config import config_from_dict
from dse.search import identity, rundir
from dse.search.objective import ATTR_VERIFIED, predictor_record, predictor_switches
from dse.search.study import PROCESS_ATTR, irreproducible, is_feasible, n_processes, pareto_front, trial_summary


@dataclass
class Run:
    path: Path | str         # the run directory, or "<storage URL> <study>" for a study read from a storage
    study: object            # optuna.Study
    results: dict | None     # results.json (None while the search has not finished, or without a run directory)


def load_run(path: str | Path | None = None, storage: str | None = None, study: str | None = None) -> Run:
    """The run in directory ``path``, or study ``study`` of the storage URL ``storage`` (no results.json then; the
    name may be left out when the storage holds one study)."""
    if storage is None:
        if path is None:
            raise DseError("report: give a run directory or a storage URL ([search] storage / --storage)")
        path = Path(path)
        return Run(path, rundir.load_study(path), rundir.read_results(path))
    import optuna

    opened = rundir.open_storage(storage)
    names = rundir.study_names(opened)
    if study is None:
        if len(names) != 1:
            raise DseError(f"storage '{storage}' holds {len(names)} studies; name one with --study (see --list)")
        study = names[0]
    if study not in names:
        raise DseError(f"storage '{storage}': no study '{study}'; see the studies with --list")
    return Run(f"{storage} {study}", optuna.load_study(study_name=study, storage=opened), None)


def list_studies(path: str | Path | None = None, storage: str | None = None) -> list[dict]:
    """The dse studies in a storage (given by URL, or the storage of run directory ``path``): name, budget file,
    mode, n_trials and trial counts."""
    if storage is None:
        if path is None:
            raise DseError("report --list: give a run directory or a storage URL")
        run_dir = Path(path).absolute()
        rundir.load_study(run_dir)  # the run directory's own checks (not found / not a journal)
        storage = rundir.recorded_url(run_dir)
    import optuna

    opened = rundir.open_storage(storage)
    out = []
    for summary in opened.get_all_studies():
        st = optuna.load_study(study_name=summary.study_name, storage=opened)
        states = [t.state for t in st.get_trials(deepcopy=False)]
        settings = st.user_attrs.get("settings", {})
        out.append({"study": summary.study_name, "budget": st.user_attrs.get("budget"),
                    "mode": settings.get("mode"), "n_trials": settings.get("n_trials"),
                    "complete": states.count(TrialState.COMPLETE), "running": states.count(TrialState.RUNNING),
                    "processes": n_processes(st)})
    return out


def _complete(run: Run):
    return [t for t in run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "loss" in t.user_attrs]


def _with_verified(d: dict | None) -> dict | None:
    """A trial summary of results.json with ``verified``: results written before the hold-out verified best carry
    only ``holdout.feasible`` (hold-out loss within budget), which is the same verdict."""
    if d is None or "verified" in d:
        return d
    h = d.get("holdout")
    return dict(d, verified=None if h is None else bool(h.get("feasible")))


def best_trial(run: Run):
    """The reported best trial: results.json's hold-out verified best once the search has finished, before that the
    lowest-energy feasible trial verified on hold-out during the search (None if there is none; older results whose
    best failed the hold-out check have none either)."""
    if run.results is not None:
        b = _with_verified(run.results.get("best"))
        return run.study.trials[b["trial"]] if b and b["verified"] else None
    feas = [t for t in _complete(run) if is_feasible(t) and t.user_attrs.get(ATTR_VERIFIED)]
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
    checked = {d["trial"]: _with_verified(d) for d in res.get("checked", [])}
    if bt is not None:
        best = checked.get(bt.number) or trial_summary(bt)
    front = pareto_front([trial_summary(t) for t in trials
                          if t.user_attrs.get("full") and "duplicate_of" not in t.user_attrs])
    front = [checked.get(d["trial"], d) for d in front]
    states = [t.state for t in run.study.get_trials(deepcopy=False)]
    processes, record = n_processes(run.study), predictor_record(trials)
    why = irreproducible(processes, record["paused"])
    return {
        "run": str(run.path), "study": run.study.study_name, "finished": run.results is not None,
        "mode": settings.get("mode"), "processes": processes, "reproducible": why is None, "irreproducible": why,
        "budget_loss": settings.get("budget_loss"), "n_trials": settings.get("n_trials"), "info": ua.get("info", {}),
        "trials": {"complete": states.count(TrialState.COMPLETE), "feasible": sum(is_feasible(t) for t in trials),
                   "running": states.count(TrialState.RUNNING),
                   "failed": sum(t.state == TrialState.FAIL and not t.user_attrs.get("surplus")
                                 for t in run.study.get_trials(deepcopy=False)),
                   "stopped_racing": sum(t.user_attrs.get("skipped") == "racing" for t in trials),
                   "skipped_predictor": sum(t.user_attrs.get("skipped") == "predictor" for t in trials),
                   "predictor_switches": predictor_switches(trials), "predictor_record": record},
        "elapsed_s": res.get("elapsed_s"), "baseline": base, "best": best, "pareto_front": front,
        "no_best": res.get("no_best"), "check_note": res.get("check_note"), "margin_note": res.get("margin_note"),
        "baseline_note": res.get("baseline_note"), "context": context_summary(run.study),
    }


def context_summary(study) -> dict | None:
    """The study's recorded context identity (dse.search.identity): its digest, where it was computed, and the
    processes and hosts whose own context matched it (None: a study from before identities were recorded)."""
    rec = study.user_attrs.get(identity.ATTR)
    if not rec:
        return None
    ok = [k[len(PROCESS_ATTR):].rsplit(":", 2)[0] for k, v in study.user_attrs.items()  # key: PREFIX host:pid:n
          if k.startswith(PROCESS_ATTR) and isinstance(v, dict) and v.get("context") == rec["digest"]]
    return {"digest": rec["digest"], "host": rec.get("host"), "packages": rec.get("packages"), "confirmed": len(ok),
            "hosts": sorted(set(ok))}


def export_config(run: Run, out: str | Path, trial: int | None = None) -> Path:
    """Write the per-layer configuration of ``trial`` (default: the reported best) with ``dse.config.save_config``."""
    if trial is None:
        t = best_trial(run)
        if t is None:
            raise DseError(f"{run.path}: no configuration passed the hold-out check; export a specific trial by "
                           "its number (see 'dse report')")
    else:
        if not 0 <= trial < len(run.study.trials):
            raise SettingError("trial", trial, f"{run.path} has trials 0..{len(run.study.trials) - 1}; "
                               "run 'dse report' to see them")
        t = run.study.trials[trial]
        if t.state != TrialState.COMPLETE or "config" not in t.user_attrs:
            raise SettingError("trial", trial, f"trial is {t.state.name.lower()}, not complete; pick a complete trial "
                           "from 'dse report'")
    out = Path(out)
    if out.suffix.lower() not in (".toml", ".json"):
        raise SettingError("output", out, "unsupported extension; use .toml or .json")
    ua = t.user_attrs
    config = config_from_dict(ua["config"])
    info = run.study.user_attrs.get("info", {})
    meta = {"model": str(info.get("model", "")), "run": str(run.path), "trial": t.number,
            "accuracy": ua.get("accuracy"), "loss": ua.get("loss"),
            "energy_system": ua.get("energy", {}).get("system"),
            "energy_multiplier": ua.get("energy", {}).get("multiplier")}
    ctx = run.study.user_attrs.get(identity.ATTR)
    if ctx:  # dse evaluate --config compares its own calibration with the search's
        meta.update({META_CALIBRATION: ctx["calibration"], META_CONTEXT: ctx["digest"], "calib": info.get("calib")})
    meta = {k: v for k, v in meta.items() if v is not None}
    if info.get("preprocess"):  # the run's preprocessing travels with the configuration ([model] preprocess)
        from dse.data import Preprocess
        meta.update(Preprocess.from_dict(info["preprocess"]).to_meta())
    save_config(config, out, meta=meta)
    return out
