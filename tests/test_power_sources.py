"""Every multiplier names where its relative power comes from; EvoApproxLib C models use their PDK45 figure."""
import json

import pytest

from dse.arith.multipliers import get_multiplier, list_multipliers
from dse.arith.power import EVOAPPROX_EXACT_MW, GATE_MODEL_SOURCE, published_power
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
        assert m.params["power_source"] == (GATE_MODEL_SOURCE if name != "exact" else
                                           "the reference (1 by definition)")


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
