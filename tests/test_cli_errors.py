"""Bad input through the CLI: exit status 2, one `error: ...` line on stderr naming the culprit, never a traceback.

Each case here was found broken (traceback, several lines, silent exit 0 or a message naming the wrong thing).
"""
import json
import shutil

import numpy as np
import pytest

from dse.cli import main
from tests.budgets import TINY_BUDGET


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def assert_one_line(rc, err, *needles):
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


# ----------------------------------------------------------------------------------------------------- click usage
@pytest.mark.parametrize("argv, needles", [
    (["multipliers", "--bogus"], ["--bogus", "dse multipliers --help"]),
    (["bogus"], ["bogus", "dse --help"]),
    (["evaluate", "lenet5", "--images", "many"], ["--images", "dse evaluate --help"]),
])
def test_click_usage_errors_are_one_line(capsys, argv, needles):
    assert_one_line(*run(capsys, *argv), *needles)


def test_setting_errors_name_the_flag():
    from dse.cli import _message
    from dse.errors import SettingError

    assert _message(SettingError("run_dir", "x", "bad")) == "--run-dir x: bad"
    assert _message(SettingError("resume", False, "holds a study")) == "--no-resume: holds a study"
    assert str(SettingError("resume", False, "holds a study")) == "resume False: holds a study"
    assert _message(SettingError("search.workers", 0, "must be >= 1")) == "search.workers 0: must be >= 1"
    from dse.predict import predict_report
    with pytest.raises(SettingError, match="^seed -1: must be a non-negative integer$"):  # the library's own words
        predict_report("lenet5", seed=-1)


def test_output_is_a_directory_one_line(capsys, tmp_path):
    assert_one_line(*run(capsys, "multipliers", "export", "exact", "-o", tmp_path), str(tmp_path), "--output")


# ----------------------------------------------------------------------------------------------------- data sets
@pytest.fixture
def npz(tmp_path):
    def make(name, x, y):
        p = tmp_path / name
        np.savez(p, x=x, y=y)
        return p
    return make


def test_empty_dataset_no_warnings(capsys, npz):
    p = npz("empty.npz", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--data", p, "--images", 5), "empty.npz", "no images")


def test_empty_calibration_set_names_file(capsys, npz):
    p = npz("emptycal.npz", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64))
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--calib", p, "--images", 5), "emptycal.npz")


def test_nan_images_rejected(capsys, npz):
    p = npz("nan.npz", np.full((5, 28, 28), np.nan, np.float32), np.zeros(5, np.int64))
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--data", p, "--images", 5), "nan.npz", "NaN")


def test_negative_label_rejected(capsys, npz):
    p = npz("neg.npz", np.zeros((5, 28, 28), np.uint8), np.array([-1, 0, 1, 2, 3]))
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--data", p, "--images", 5), "neg.npz", "label -1")


def test_label_beyond_model_classes_rejected(capsys, npz):
    p = npz("big.npz", np.zeros((5, 28, 28), np.uint8), np.array([0, 1, 2, 3, 10]))
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--data", p, "--images", 5), "big.npz", "label 10",
                    "10 classes")


def test_npz_that_is_not_a_zip(capsys, tmp_path):
    p = tmp_path / "garbage.npz"
    p.write_bytes(b"garbage")
    rc, err = run(capsys, "evaluate", "lenet5", "--data", p, "--images", 5)
    assert_one_line(rc, err, "garbage.npz", "numpy.savez")
    assert "allow_pickle" not in err


def test_idx_pair_missing_names_fix(capsys, tmp_path):
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--data", f"{tmp_path}/a.gz,{tmp_path}/b.gz"), "a.gz",
                    "give an existing")


# ----------------------------------------------------------------------------------------------------- ONNX metadata
def test_bad_preprocess_metadata_names_model(capsys, tmp_path):
    import onnx

    from dse.model.onnx_import import resolve_model
    m = onnx.load(str(resolve_model("lenet5")))
    for p in list(m.metadata_props):
        if p.key == "dse.preprocess":
            m.metadata_props.remove(p)
    m.metadata_props.add(key="dse.preprocess", value=json.dumps({"scale": "x"}))
    path = tmp_path / "meta.onnx"
    onnx.save(m, str(path))
    rc, err = run(capsys, "evaluate", path, "--images", 5)
    assert_one_line(rc, err, "meta.onnx", "dse.preprocess", "'scale'")
    assert "fashion-mnist" not in err


# ----------------------------------------------------------------------------------------------------- C models
@pytest.mark.parametrize("fname, source, needles", [
    ("model.c", "int mul(int a, int b) { return a * b; }\n", ["'mul8'", "?fn=NAME"]),       # no such function
    ("bad.c", "int mul8(int a, int b) { return a * ; }\n", ["does not compile", "fix the C source"]),  # syntax
])
def test_cmodel_compile_errors_name_file_and_fix(capsys, tmp_path, monkeypatch, fname, source, needles):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DSE_ALLOW_CMODEL", "0")  # restored after the test; --allow-cmodel sets it to 1
    c = tmp_path / fname
    c.write_text(source)
    assert_one_line(*run(capsys, "--allow-cmodel", "multipliers", "export", f"cmodel:{c}", "-o", tmp_path / "t.npy"),
                    fname, *needles)


# ----------------------------------------------------------------------------------------------------- predict
@pytest.mark.parametrize("argv, needles", [
    (["--validate", 6, "--images", 0], ["--images 0"]),
    (["--validate", 6, "--images", -1], ["--images -1"]),
    (["--validate", 6, "--images", 20, "--seed", -1], ["--seed -1"]),
    (["--validate", 6, "--images", 20, "--calib", "fashion-mnist:search"], ["--calib fashion-mnist:search", "overlap"]),
])
def test_predict_bad_options(capsys, argv, needles):
    assert_one_line(*run(capsys, "predict", "lenet5", *argv), *needles)


def test_predict_config_unknown_layer_names_file(capsys, tmp_path):
    c = tmp_path / "cfg.toml"
    c.write_text('[layers."nolayer"]\nmultiplier = "drum4"\n')
    assert_one_line(*run(capsys, "predict", "lenet5", "--config", c), "cfg.toml", "nolayer")


# ----------------------------------------------------------------------------------------------------- search
@pytest.fixture
def budget(tmp_path):
    def make(extra=""):
        p = tmp_path / "b.toml"
        p.write_text(TINY_BUDGET + extra)
        return p
    return make


@pytest.mark.parametrize("url", ["foo://bar", "garbage", "sqlite:////nonexistent-dir/x.db",
                                 "journal:///nonexistent-dir/x.log"])
def test_search_bad_storage_url(capsys, tmp_path, budget, url):
    rd = tmp_path / "run"
    assert_one_line(*run(capsys, "search", budget(), "--run-dir", rd, "--storage", url, "--quiet"), url,
                    "postgresql://")
    assert not (rd / "storage.txt").exists()  # a bad URL is not recorded (a corrected re-run is not refused)


def test_search_bad_storage_in_budget(capsys, tmp_path, budget):
    b = budget('storage = "foo://bar"\n')  # appended to [search]
    assert_one_line(*run(capsys, "search", b, "--run-dir", tmp_path / "run", "--quiet"), "foo://bar")


def test_report_run_dir_with_bad_recorded_storage(capsys, tmp_path):
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "storage.txt").write_text("foo://bar\n")
    assert_one_line(*run(capsys, "report", rd), "foo://bar")


def test_search_uncreatable_run_dir(capsys, tmp_path, budget):
    f = tmp_path / "file"
    f.write_text("")
    assert_one_line(*run(capsys, "search", budget(), "--run-dir", f / "sub", "--quiet"), str(f / "sub"),
                    "--run-dir")


def test_search_unknown_layer_override_names_budget_key(capsys, tmp_path, budget):
    b = budget("[space.layers.nosuchlayer]\npin = true\n")
    assert_one_line(*run(capsys, "search", b, "--run-dir", tmp_path / "run", "--quiet"), "b.toml",
                    "space.layers.nosuchlayer", "/conv1/Conv")


# ----------------------------------------------------------------------------------------------------- report/export
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinyrun")
    b = d / "b.toml"
    b.write_text(TINY_BUDGET)
    assert main(["search", str(b), "--run-dir", str(d / "run"), "--quiet"]) == 0
    return d / "run"


@pytest.mark.parametrize("content", ["[1, 2]", '"text"'])
def test_report_results_json_not_an_object(capsys, tmp_path, tiny_run, content):
    rd = tmp_path / "run"
    shutil.copytree(tiny_run, rd)
    (rd / "results.json").write_text(content)
    assert_one_line(*run(capsys, "report", rd), "results.json", "JSON object")
    assert_one_line(*run(capsys, "export", rd, "-o", tmp_path / "c.toml"), "results.json")


def test_export_unwritable_path_names_fix(capsys, tmp_path, tiny_run):
    out = tmp_path / "missing-dir" / "c.toml"
    assert_one_line(*run(capsys, "export", tiny_run, "--trial", 0, "-o", out), str(out), "writable")


# ----------------------------------------------------------------------------------------------------- data vs model
def test_evaluate_image_shape_mismatch_names_data(capsys, npz):
    p = npz("size32.npz", np.zeros((5, 32, 32), np.uint8), np.zeros(5, np.int64))
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--data", p, "--images", 5), "--data", "size32.npz",
                    "[1, 28, 28]")


@pytest.mark.parametrize("x, y, needles", [
    (np.zeros((5, 32, 32), np.uint8), np.zeros(5, np.int64), ["[1, 28, 28]"]),
    (np.zeros((5, 28, 28), np.uint8), np.array([0, 1, 2, 3, 10]), ["label 10", "10 classes"]),
])
def test_search_data_not_matching_model_names_budget_key(capsys, tmp_path, budget, npz, x, y, needles):
    p = npz("s.npz", x, y)
    b = tmp_path / "m.toml"
    b.write_text(budget().read_text().replace("[data]\n", f'[data]\nsearch = "{p}"\n'))
    assert_one_line(*run(capsys, "search", b, "--run-dir", tmp_path / "run", "--quiet"), "m.toml", "data.search",
                    "s.npz", *needles)


def test_data_path_that_is_a_directory(capsys, tmp_path):
    d = tmp_path / "images.npz"
    d.mkdir()
    assert_one_line(*run(capsys, "evaluate", "lenet5", "--data", d, "--images", 5), "images.npz", "no images found")
