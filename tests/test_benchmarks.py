"""The benchmark scripts run (a benchmark measures; these tests only check that its code path works end to end on the
smallest input, so an API change cannot silently break a script that CI never runs)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.budgets import TINY_BUDGET

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("variant", ["dse", "optuna-tpe", "optuna-nsga2", "hawq-milp"])
def test_bench_search_variant_runs(tmp_path, variant):
    import bench_search

    budget = tmp_path / "tiny.toml"
    budget.write_text(TINY_BUDGET)
    row = bench_search.run_variant(variant, budget, 0, 3, 1, 0, tmp_path / "run")
    assert row["variant"] == variant and row["seed"] == 0
    if variant != "hawq-milp":
        assert row["trials"] == 3 and row["wall"] > 0


def test_bench_kernels_tables_runs():
    import bench_kernels

    rows = bench_kernels.table_paths([(3, 5, 4, 1), (4, 6, 5, 2)], batch=1, repeats=1)
    assert [r[0] for r in rows] == ["3->4 5x5 s1 b1", "4->5 6x6 s2 b1"]
    assert set(rows[0][1]) == {"exact auto", "mitch_w6 auto", "mitch_w6 rows", "LUT auto", "LUT rows", "LUT split"}
    assert all(v > 0 for _, r in rows for v in r.values())
