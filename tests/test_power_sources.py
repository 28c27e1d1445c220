"""Every multiplier names where its relative power comes from; EvoApproxLib C models use their PDK45 figure."""
import json

import pytest

from dse.arith.multipliers import get_multiplier, list_multipliers
from dse.arith.power import EVOAPPROX_EXACT_MW, GATE_MODEL_SOURCE, published_checks, published_power
from dse.cli import main

EVO_HEADER = """/***
* This code is a part of EvoApproxLib library (ehw.fit.vutbr.cz/approxlib) distributed under The MIT License.
***/
// MAE% = 0.23 %
// PDK45_PWR = 0.200 mW
// PDK45_AREA = 411.6 um2
"""


def test_builtins_are_labelled_estimates():
    for name in list_multipliers():
        m = get_multiplier(name)
        if name == "exact":
            assert m.params["power_source"] == "the reference (1 by definition)"
        else:
            assert m.params["power_source"].startswith(GATE_MODEL_SOURCE) and "\n" not in m.params["power_source"]
    assert "ICCAD 2015" in get_multiplier("drum4").params["power_source"]
    assert "IEEE TC" in get_multiplier("mitch_w6").params["power_source"]


@pytest.mark.parametrize("family, tol", [("drum", 0.05), ("mitch_w", 0.10)])
def test_gate_area_model_against_published_figures(family, tol):
    """At the width the papers measured, the gate-area model's saving lies within tol of the published range ends
    (DRUM: power at 16 bits; Mitch-w: the paper's figure is energy at 32 bits, hence the wider tolerance)."""
    (check, (lo, hi)), = [(c, m) for c, m in published_checks() if c.family == family]
    assert abs(lo - check.saving[0]) <= tol and abs(hi - check.saving[1]) <= tol


def test_published_power_parses_the_evoapprox_header():
    rel, src = published_power(EVO_HEADER, True, "mul8s_1L2L.c")
    assert rel == pytest.approx(round(0.200 / 0.425, 4)) and "0.425 mW" in src and "mul8s_1L2L.c" in src
    assert published_power(EVO_HEADER, False, "x.c")[0] == pytest.approx(round(0.200 / 0.391, 4))
    assert published_power("// no figure here", False, "x.c") is None
    assert EVOAPPROX_EXACT_MW[False][0] == 0.391


def test_cmodel_with_evoapprox_header_gets_its_power(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DSE_ALLOW_CMODEL", "1")  # C models are code: compiled only with the opt-in
    c = tmp_path / "mul8u_test.c"
    c.write_text(EVO_HEADER + "#include <stdint.h>\nint32_t mul8(int32_t a, int32_t b) { return (a * b) & ~1; }\n")
    m = get_multiplier(f"cmodel:{c}")
    assert m.rel_power == pytest.approx(round(0.200 / 0.391, 4))
    assert "PDK45_PWR = 0.2 mW" in m.params["power_source"]
    plain = tmp_path / "plain.c"
    plain.write_text("#include <stdint.h>\nint32_t mul8(int32_t a, int32_t b) { return a * b; }\n")
    assert get_multiplier(f"cmodel:{plain}").params["power_source"] == "unknown"
    assert get_multiplier(f"cmodel:{plain}?power=0.5").params["power_source"] == "option power=0.5"


def test_multipliers_json_lists_power_source(capsys):
    assert main(["multipliers", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["multipliers"]
    assert all(r["power_source"] for r in rows)
