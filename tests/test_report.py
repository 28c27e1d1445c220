"""dse report / dse export on run directories made with fake evaluators."""
from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState

from dse.cli import main
from dse.config import load_config
from dse.errors import DseError, SettingError
from dse.layer_config import LayerConfig, config_from_dict
from dse.present import pp
from dse.report import export_config, load_run, summarize
from dse.search.study import run_search
from tests.fakes import _CTX, FakeEvaluator, ctx_factory, make_ctx, settings_


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    b = d / "fake.toml"
    b.write_text("[budget]\nmax_loss_pp = 1.0\n")
    ctx = make_ctx()
    ctx.confirm = FakeEvaluator(1000, 2)  # the search split's confirmation images
    _CTX["ctx"] = ctx
    res = run_search(b, settings_(n_trials=30), ctx_factory, run_dir=d / "run", progress=False)
    return d / "run", res


def test_summary_matches_results(run_path):
    path, res = run_path
    s = summarize(load_run(path))
    assert s["finished"] and s["trials"]["complete"] == 30
    assert s["best"]["trial"] == res["best"]["trial"]
    assert s["best"]["holdout"] == res["best"]["holdout"]
    assert s["best"]["loss"] <= 0.01
    assert s["baseline"]["fxp8"] == res["baseline"]["fxp8"]
    assert [d["trial"] for d in s["pareto_front"]] == [d["trial"] for d in res["pareto_front"]]
    json.dumps(s)  # JSON-friendly


def test_report_tables_and_cli_json(run_path, capsys, monkeypatch):
    path, _ = run_path
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that no cell wraps
    capsys.readouterr()
    assert main(["report", str(path)]) == 0
    text = capsys.readouterr().out
    for word in ("baseline vs best", "Pareto front", "per-layer configuration", "energy breakdown", "FxP8 exact"):
        assert word in text
    # the best's loss on the confirmation images it was not chosen on, in the baseline table and on the front
    best = summarize(load_run(path))["best"]
    flat = " ".join(text.split())
    assert "loss (confirm)" in flat and " confirm " in flat.split("Pareto front", 1)[1]
    row = flat.split(f"best (trial {best['trial']})", 1)[1].split("│")
    assert row[3].strip() == pp(best["confirm"]["loss"])  # accuracy, loss (search), loss (confirm)
    capsys.readouterr()
    assert main(["report", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best"]["trial"] == summarize(load_run(path))["best"]["trial"]


def test_report_on_interrupted_run(tmp_path):
    b = tmp_path / "fake.toml"
    b.write_text("x = 1\n")
    _CTX["ctx"] = make_ctx(interrupt_after=30)
    with pytest.raises(KeyboardInterrupt):
        run_search(b, settings_(n_trials=40), ctx_factory, run_dir=tmp_path / "run", progress=False)
    s = summarize(load_run(tmp_path / "run"))
    assert not s["finished"] and 0 < s["trials"]["complete"] < 40
    # before the final check the best is the cheapest trial verified on hold-out during the search
    assert s["best"] is None or (s["best"]["verified"] is True and s["best"]["holdout"]["loss"] <= 0.01)
    assert s["baseline"]["fxp8"]["search"] is not None


def test_export_round_trip(run_path, tmp_path):
    path, res = run_path
    run = load_run(path)
    out = export_config(run, tmp_path / "best.json")
    cfg = load_config(out)
    want = config_from_dict(res["best"]["config"])
    assert {n: c for n, c in cfg.items() if c != LayerConfig()} == {n: c for n, c in want.items() if c != LayerConfig()}
    t = next(t.number for t in run.study.trials if t.state == TrialState.COMPLETE and t.number != res["best"]["trial"])
    assert main(["export", str(path), "--trial", str(t), "-o", str(tmp_path / "t.toml")]) == 0
    cfg = load_config(tmp_path / "t.toml")
    want = run.study.trials[t].user_attrs["config"]
    assert all(cfg.get(n, LayerConfig()) == c for n, c in config_from_dict(want).items())


def test_bad_input(run_path, tmp_path, capsys):
    path, _ = run_path
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["export", str(path), "--trial", "999", "-o", str(tmp_path / "x.toml")]) == 2
    err = capsys.readouterr().err
    assert "--trial 999" in err and "\n" == err[-1] and err.count("\n") == 1
    with pytest.raises(SettingError, match="^trial 999: "):  # the library names the setting, the CLI the flag
        export_config(load_run(path), tmp_path / "x.toml", 999)
    with pytest.raises(DseError, match="extension"):
        export_config(load_run(path), tmp_path / "x.yaml")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "journal.log" in capsys.readouterr().err
    bad = tmp_path / "badres"
    bad.mkdir()
    for f in ("journal.log", "budget.toml"):
        (bad / f).write_bytes((path / f).read_bytes())
    (bad / "results.json").write_text("{")
    with pytest.raises(DseError, match="results.json"):
        load_run(bad)


def _old_format(d: dict, passed: bool | None = None) -> dict:
    """A trial summary as results.json stored it before the hold-out verified best: no ``verified``, the verdict in
    ``holdout.feasible``."""
    d = {k: v for k, v in d.items() if k != "verified"}
    if d.get("holdout") is not None:
        ok = d["holdout"]["loss"] <= 0.01 if passed is None else passed
        d["holdout"] = dict(d["holdout"], feasible=ok)
    return d


@pytest.mark.parametrize("best_passed", [True, False])
def test_report_renders_old_results_without_verified(run_path, tmp_path, capsys, best_passed):
    import shutil

    path, res = run_path
    old = tmp_path / "old"
    shutil.copytree(path, old)
    r = json.loads((old / "results.json").read_text())
    best = r["best"]["trial"]
    r["checked"] = [_old_format(d, best_passed if d["trial"] == best else None) for d in r["checked"]]
    r["pareto_front"] = [_old_format(d) for d in r["pareto_front"]]
    r["best"] = _old_format(r["best"], best_passed)
    # the front shows a hold-out checked point in the old format too
    front_trial = r["pareto_front"][0]["trial"]
    if front_trial not in {d["trial"] for d in r["checked"]}:
        r["checked"].append(_old_format(dict(r["pareto_front"][0], holdout={"accuracy": 0.9, "loss": 0.002,
                                                                              "se": 0.001, "images": 100})))
    (old / "results.json").write_text(json.dumps(r))
    s = summarize(load_run(old))
    assert all(d["verified"] in (True, False, None) for d in s["pareto_front"])
    assert any(d["verified"] is not None for d in s["pareto_front"])
    # an old best that failed hold-out is not named as best
    assert (s["best"] is not None and s["best"]["trial"] == best) if best_passed else s["best"] is None
    capsys.readouterr()
    assert main(["report", str(old)]) == 0
    text = capsys.readouterr().out
    assert "Pareto front" in text and ("passed" in text or "failed" in text)
