"""The ZigZag energy backend: same interface as the built-in model, cached mapping, agreement on LeNet-5."""
from __future__ import annotations

import numpy as np
import pytest

from dse.budget import load_budget
from dse.layer_config import LayerConfig
from dse.energy import EnergyModel
from dse.energy.backends import BackendConfig, make_energy_model
from dse.errors import DseError

zz = pytest.importorskip("dse.energy.zigzag_backend")
pytest.importorskip("zigzag")


@pytest.fixture(scope="module")
def lenet_layers():
    from dse.model.onnx_import import load_onnx, resolve_model
    from dse.quant import calibrate

    graph = load_onnx(resolve_model("lenet5"))
    x = np.random.default_rng(0).random((2, *graph.input_shape), dtype=np.float32)
    return calibrate(graph, x).layers


@pytest.fixture(scope="module")
def zz_model(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DSE_CACHE_DIR", str(tmp_path_factory.mktemp("zzcache")))
    yield zz.ZigZagEnergyModel()
    mp.undo()


AX = "axbxp_k2_w2_a2_static"


def test_both_backends_agree_per_component_on_lenet5(lenet_layers, zz_model):
    # bounds per component where both model the same thing (same constants, same residency plan):
    # multiplier / accumulate / cv: identical (the built-in per-action energies in both);
    # DRAM: the same tensors cross once -> within 5 % (ZigZag moves 64-bit words: small tensors round up);
    # global buffer: ZigZag picks its own loop order and 64-bit words -> within a factor 2;
    # registers: ZigZag charges a write and a read per register access, the built-in model one access -> 1x..4x.
    for cfg in ({}, {l.name: LayerConfig(AX) for l in lenet_layers[1:3]}):
        b, z = EnergyModel().network(lenet_layers, cfg), zz_model.network(lenet_layers, cfg)
        for k in ("multiplier", "accumulate", "cv"):
            assert z.components[k] == pytest.approx(b.components[k])
        assert z.components["dram"] == pytest.approx(b.components["dram"], rel=0.05)
        assert 0.5 < z.components["glb"] / b.components["glb"] < 2.0
        assert 1.0 <= z.components["registers"] / b.components["registers"] < 4.0
        assert z.cycles > 0 and z.latency_s == pytest.approx(z.cycles / 500e6)
        assert [l.name for l in z.layers] == [l.name for l in b.layers]
        assert z.total == pytest.approx(sum(z.components.values()))


def test_operand_widths_drive_zigzag_traffic(lenet_layers, zz_model):
    fc1 = next(l for l in lenet_layers if l.op == "gemm")
    exact = zz_model.zigzag_layer(fc1, zz.operand_format("exact", zz_model.array))
    narrow = zz_model.zigzag_layer(fc1, zz.operand_format(AX, zz_model.array))  # 4-bit weights
    assert narrow.dram_w == pytest.approx(exact.dram_w / 2, rel=0.02)
    assert narrow.dram_i == pytest.approx(exact.dram_i)  # activations stay 8-bit in memory


def test_mapped_once_per_width_combination(lenet_layers, zz_model, monkeypatch):
    zz_model.network(lenet_layers, {})
    monkeypatch.setattr(zz, "_run_zigzag", lambda *a: pytest.fail("ZigZag ran again"))
    zz_model.network(lenet_layers, {lenet_layers[1].name: LayerConfig("drum4", cv=True)})  # same widths
    fresh = zz.ZigZagEnergyModel()  # a new process: the disk cache answers
    fresh.network(lenet_layers, {})


def test_search_energy_function_works_with_either_backend(lenet_layers, zz_model):
    from dse.search.context import _energy_fn

    cfg = {lenet_layers[1].name: LayerConfig(AX)}
    b, z = _energy_fn(EnergyModel(), lenet_layers)(cfg), _energy_fn(zz_model, lenet_layers)(cfg)
    assert set(b) == set(z) and set(b["layers"]) == set(z["layers"])
    assert z["system"] < 1.0 and z["multiplier"] == pytest.approx(b["multiplier"])


def test_budget_backend_keys(tmp_path):
    p = tmp_path / "b.toml"
    p.write_text('[accelerator]\nbackend = "zigzag"\nrows = 8\n')
    b = load_budget(p)
    assert b.energy_backend == BackendConfig("zigzag") and b.accelerator.rows == 8
    assert isinstance(b.energy_model(), zz.ZigZagEnergyModel)
    arch = tmp_path / "arch.yaml"
    arch.write_text("name: x\n")
    p.write_text('[accelerator]\nbackend = "zigzag"\nzigzag_architecture = "arch.yaml"\n')
    assert load_budget(p).energy_backend.architecture == str(arch.resolve())
    assert type(make_energy_model(None, b.accelerator)) is EnergyModel


@pytest.mark.parametrize("text, key", [('backend = "timeloop"', "accelerator.backend"),
                                       ('zigzag_architecture = "a.yaml"', "accelerator.zigzag_architecture"),
                                       ('backend = "zigzag"\nzigzag_mapping = "nope.yaml"', "accelerator.zigzag_mapping")])
def test_bad_backend_keys(tmp_path, text, key):
    p = tmp_path / "b.toml"
    p.write_text(f"[accelerator]\n{text}\n")
    with pytest.raises(DseError, match=f"'{key}'") as ei:
        load_budget(p)
    assert "\n" not in str(ei.value)


def test_zigzag_failure_names_the_layer(lenet_layers, tmp_path):
    bad = tmp_path / "arch.yaml"
    bad.write_text("name: broken\nmemories: {}\n")
    m = zz.ZigZagEnergyModel(architecture=str(bad))
    with pytest.raises(DseError, match=f"layer '{lenet_layers[0].name}'"):
        m.network(lenet_layers[:1])
