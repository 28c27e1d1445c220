"""dse.present: what the commands print (values, missing values, the search progress bar)."""
from __future__ import annotations

import optuna
import pytest

from dse import present


def _term(layer, mult, cv, source="calibration"):
    return {"layer": layer, "multiplier": mult, "cv": cv, "K": 75, "ME": -1.5, "VE": 12.25, "bias": -112.5,
            "noise": 30.3, "acc_std": 410.0, "acc_std_source": source, "contrib": 0.285}


def test_prediction_table_and_validation(capsys):
    from dse.data import BUNDLED_PREPROCESS

    r = {"model": "lenet5", "calib": "fashion-mnist:calib", "preprocess": BUNDLED_PREPROCESS.to_dict(), "ame": 0.5123,
         "layers": [_term("/conv1/Conv", "drum4", True), _term("/fc1/Gemm", "exact", False, "model")],
         "accuracy_model": {"b0": 0.9, "b1": -0.1, "b2": -0.01}, "predicted_accuracy": 0.8512,
         "predicted_loss": 0.0123,
         "validation": {"images": 200, "n_fit": 4, "n_holdout": 2, "spearman": 0.9, "mae": 0.004,
                        "holdout": [{"ame": 0.1, "predicted": 0.88, "emulated": 0.875}],
                        "predict_seconds": 2e-5, "emulate_seconds": 0.3, "speedup": 15000.0}}
    present.prediction(r)
    out = capsys.readouterr().out
    for s in ("lenet5 calibrated on fashion-mnist:calib; preprocessing: scale 1/255, mean [0.286]", "/conv1/Conv",
              "drum4", "AME = 0.5123", "410 *", "i.i.d. model", "85.12 %", "1.23 pp", "Spearman 0.900", "87.50 %", "speedup 1.5e+04x"):
        assert s in out, s


def test_missing_values_print_as_dash(capsys):
    present.search_result({"best": {"trial": 3, "energy": {"system": 0.81234}, "loss": 0.004, "holdout": None},
                           "run_dir": "runs/x"})
    out = capsys.readouterr().out
    assert "best trial 3: energy system 0.8123 multiplier -, loss 0.40 pp (search), - (holdout)" in out
    assert "dse report runs/x" in out
    assert present.num(float("nan")) == "-" and present.pct(None) == "-"
    present.search_result({"best": {"trial": 3, "energy": {"system": 0.5}, "loss": 0.004, "holdout": {"loss": 0.006},
                                    "confirm": {"loss": 0.003, "images": 1000}}, "run_dir": "runs/x"})
    assert "0.40 pp (search), 0.30 pp (confirmation, 1000 images), 0.60 pp (holdout)" in capsys.readouterr().out


def test_search_progress_counts_complete_and_feasible(capsys):
    study = optuna.create_study()
    with present.SearchProgress(total=3, done=0) as bar:
        def objective(trial):
            trial.set_constraint("accuracy_loss", -0.01 if trial.number == 0 else 0.02)
            trial.set_user_attr("energy", {"system": 0.5 + trial.number})
            trial.set_user_attr("holdout_verified", trial.number == 0)
            return 0.5 + trial.number
        study.optimize(objective, n_trials=2, callbacks=[bar])
    task = bar.p.tasks[0]
    assert task.completed == 2 and task.total == 3
    assert task.fields["info"] == "best energy 0.5000 (hold-out verified)  feasible 1"


@pytest.mark.parametrize("allow_nan", [True, False])
def test_as_json_nan(capsys, allow_nan):
    if allow_nan:
        present.as_json({"x": float("nan")})
        assert "NaN" in capsys.readouterr().out
    else:
        with pytest.raises(ValueError):
            present.as_json({"x": float("nan")}, allow_nan=False)


def test_predictor_line_keeps_its_setting_names(capsys):
    """The gate's line names "[search] predictor_max_share"; printed as rich markup, "[search]" vanished."""
    rec = {"used": {"AME": 3}, "on": 0, "measured": 2, "spearman": None, "mean_error": None, "passes": None,
           "seconds": 1.0, "trial_seconds": 10.0, "paused": 4}
    present.search_result({"best": None, "no_best": "none", "run_dir": "runs/x", "info": {"predictor": {"disabled": "predictor off"}},
                           "trials": {"skipped_predictor": 0, "predictor_record": rec}})
    assert "sat out 4 trials to keep within [search] predictor_max_share" in capsys.readouterr().out
