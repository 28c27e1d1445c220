"""dse.config: TOML/JSON round trips (escaping), validation and one-line errors."""
from __future__ import annotations

import json
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dse.config import load_config, load_config_meta, save_config, toml_str, validate_config
from dse.errors import DseError
from dse.layer_config import LayerConfig

NAMES = ["/conv1/Conv", 'we"ird\\name', "tab\tand\nnewline", "ünïcode ✓", "a.b.c", "\x01\x7f"]


@pytest.mark.parametrize("ext", ["toml", "json"])
def test_round_trip_with_awkward_names(tmp_path, ext):
    cfg = {n: LayerConfig(m, cv) for n, m, cv in zip(NAMES, ["drum4", "exact", "mitch_w6", "bf16", "perf_j1_k2",
                                                             "mitchell"], [True, False, False, False, True, False])}
    meta = {"model": 'lenet"5\\', "trial": 3, "accuracy": 0.9125, "loss": float("inf"), "ok": True,
            "list": [1, 2.5, "x"]}
    p = save_config(cfg, tmp_path / f"c.{ext}", meta=meta)
    back, m = load_config_meta(p, layers=NAMES)
    assert back == cfg and list(back) == NAMES
    assert m == meta


def test_toml_written_is_valid_toml(tmp_path):
    p = save_config({"x": LayerConfig("drum5", True)}, tmp_path / "c.toml", meta={"note": "a\nb"})
    doc = tomllib.loads(p.read_text())
    assert doc == {"meta": {"note": "a\nb"}, "layers": {"x": {"multiplier": "drum5", "cv": True}}}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_toml_str_escaping(s):
    assert tomllib.loads(f"k = {toml_str(s)}")["k"] == s


def test_missing_fields_default_and_validation(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[layers."/fc1/Gemm"]\nmultiplier = "drum6"\n[layers.b]\ncv = true\n')
    assert load_config(p) == {"/fc1/Gemm": LayerConfig("drum6", False), "b": LayerConfig("exact", True)}
    with pytest.raises(DseError, match=r"key 'layers.b' is not a layer of the model; valid layers: /fc1/Gemm, c"):
        load_config(p, layers=["/fc1/Gemm", "c"])
    with pytest.raises(DseError, match="valid layers: a"):
        validate_config({"z": LayerConfig()}, ["a"])


@pytest.mark.parametrize("text,msg", [
    ('[layers.a]\nmultiplier = "nosuch"\n', "key 'layers.a.multiplier'"),
    ('[layers.a]\nmultiplier = "drum4"\ncv = "yes"\n', "key 'layers.a.cv' must be true or false"),
    ('[layers.a]\nmultiplier = 4\n', "key 'layers.a.multiplier' must be a string"),
    ('[layers.a]\nmult = "drum4"\n', "unknown key 'layers.a.mult'"),
    ('[layers.a]\nmultiplier = "bf16"\ncv = true\n', "floating-point multiplier"),
    ('[meta]\nx = 1\n', "missing key 'layers'"),
    ('[layer.a]\nmultiplier = "drum4"\n', "unknown top-level key 'layer'"),
    ('layers = 3\n', "key 'layers' must be a table"),
    ('[layers\n', "invalid TOML"),
])
def test_load_errors(tmp_path, text, msg):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(DseError, match="bad.toml") as e:
        load_config(p)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(DseError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "c.yaml").write_text("layers: {}")
    with pytest.raises(DseError, match="unsupported configuration extension '.yaml'"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(DseError, match="unsupported configuration extension"):
        save_config({}, tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(DseError, match="c.json: invalid JSON"):
        load_config(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DseError, match="top level must be"):
        load_config(tmp_path / "d.json")
