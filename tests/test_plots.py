"""dse report --plot (Pareto and per-layer PNG/HTML) and the run's storage opened by optuna-dashboard."""
from __future__ import annotations

import dataclasses
import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import matplotlib  # noqa: F401  (test dependency; dse.plots imports it lazily)
import plotly  # noqa: F401
import pytest
from optuna_dashboard import wsgi
from optuna_dashboard._storage_url import guess_storage_from_url

from dse.cli import main
from dse.report import load_run, plot_points, summarize
from dse.search.study import run_search
from tests.fakes import _CTX, LAYERS, ctx_factory, fake_energy, make_ctx, settings_



def energy_with_layers(config):
    e = fake_energy(config)
    n = len(LAYERS)
    e["layers"] = {name: {"exact": 1.0 / n, "config": (0.5 if config.get(name) and config[name].multiplier != "exact"
                                                       else 1.0) / n, "multiplier": 1.0, "cycles": 10}
                   for name in LAYERS}
    return e


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots")
    b = d / "fake.toml"
    b.write_text("[budget]\nmax_loss_pp = 1.0\n")
    _CTX["ctx"] = dataclasses.replace(make_ctx(), energy=energy_with_layers)
    run_search(b, settings_(n_trials=25), ctx_factory, run_dir=d / "run", progress=False)
    return d / "run"


def test_report_plot_writes_png_and_html(run_dir, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "plots"
    assert main(["report", str(run_dir), "--plot", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"pareto.png", "pareto.html", "layers.png", "layers.html"}
    for name in ("pareto.png", "layers.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 400
            assert len(im.getcolors(1 << 20) or []) > 20  # something drawn, not a blank canvas
    html = (out / "pareto.html").read_text()
    points = plot_points(load_run(run_dir))
    assert "plotly" in html and len(points) > 5
    best = summarize(load_run(run_dir))["best"]
    assert f"trial {best['trial']}" in html
    for name in LAYERS:
        assert name in (out / "layers.html").read_text()


def test_plot_bad_directory(run_dir, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["report", str(run_dir), "--plot", str(f / "sub")]) == 2
    err = capsys.readouterr().err
    assert "plot directory" in err and "\n" == err[-1] and err.count("\n") == 1


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_run_storage_opens_in_optuna_dashboard(run_dir):
    # what `optuna-dashboard RUN/journal.log` does: guess the storage from the path, serve the wsgi app

    storage = guess_storage_from_url(str(run_dir / "journal.log"))
    server = make_server("127.0.0.1", 0, wsgi(storage), handler_class=_Quiet)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/studies"
        with urllib.request.urlopen(url, timeout=30) as r:
            studies = json.loads(r.read())["study_summaries"]
    finally:
        server.shutdown()
        server.server_close()
    study = load_run(run_dir).study
    assert [s["study_name"] for s in studies] == [study.study_name]
    assert studies[0]["is_preferential"] is False
