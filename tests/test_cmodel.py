"""C models are code: opt-in only, compiled and run in limited child processes without the caller's environment."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import dse.arith.cmodel as C
from dse.arith.multipliers import get_multiplier
from dse.cli import main
from dse.errors import DseError

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(C.ALLOW_ENV, "1")
    return tmp_path


def test_no_opt_in_compiles_nothing(tmp_path, monkeypatch, capsys):
    """Without the opt-in, neither get_multiplier nor loading a budget that names a C model runs the compiler."""
    marker = tmp_path / "compiler-ran"
    fake_cc = tmp_path / "cc"
    fake_cc.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake_cc.chmod(0o755)
    monkeypatch.setenv("CC", str(fake_cc))
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(C.ALLOW_ENV, raising=False)
    c = tmp_path / "m.c"
    c.write_text("int mul8(int a, int b) { return a * b; }\n")
    with pytest.raises(DseError, match=r"\[space\] allow_cmodel = true in the budget, or 'dse --allow-cmodel"):
        get_multiplier(f"cmodel:{c}")
    b = tmp_path / "b.toml"
    b.write_text(f'[space]\nmultipliers = ["cmodel:{c}"]\n')
    assert main(["search", str(b), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-cmodel" in err and "allow_cmodel = true" in err and "m.c" in err
    b.write_text(f'[space]\nallow_cmodel = false\nmultipliers = ["cmodel:{c}"]\n')
    assert main(["search", str(b), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    assert "allow_cmodel = true" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "cache").exists()


def test_opt_in_budget_key(tmp_path, monkeypatch, capsys):
    """`[space] allow_cmodel = true` is the budget's opt-in: the budget's C model compiles when it is loaded."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(C.ALLOW_ENV, raising=False)  # restored (removed) after the test
    c = tmp_path / "m.c"
    c.write_text("int mul8(int a, int b) { return a * b + 2; }\n")
    b = tmp_path / "b.toml"
    b.write_text(f'[space]\nallow_cmodel = true\nmultipliers = ["cmodel:{c}"]\n')
    from dse.budget import load_budget

    assert load_budget(b).space.multipliers == (f"cmodel:{c}",)
    assert C.allowed() and get_multiplier(f"cmodel:{c}").table(False, False)[3, 5] == 17
    monkeypatch.delenv(C.ALLOW_ENV)
    b.write_text(f'[space]\nallow_cmodel = "yes"\nmultipliers = ["cmodel:{c}"]\n')
    assert main(["search", str(b), "--run-dir", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "space.allow_cmodel" in err and not C.allowed()


def test_opt_in_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(C.ALLOW_ENV, "0")  # restored after the test
    c = tmp_path / "m.c"
    c.write_text("int mul8(int a, int b) { return a * b + 1; }\n")
    out = tmp_path / "t.npy"
    assert main(["--allow-cmodel", "multipliers", "export", f"cmodel:{c}", "-o", str(out)]) == 0
    assert np.load(out)[3, 5] == 16


def test_child_gets_no_inherited_secrets(env, monkeypatch):
    monkeypatch.setenv("DSE_TEST_SECRET", "hunter2")
    c = env / "spy.c"
    c.write_text('#include <stdlib.h>\nint mul8(int a, int b) { const char *s = getenv("DSE_TEST_SECRET");\n'
                 '  const char *h = getenv("HOME"); return (s != 0) * 2 + (h != 0); }\n')
    assert not get_multiplier(f"cmodel:{c}").table(False, False).any()


def test_cpu_limit_kills_a_runaway_model(env, monkeypatch):
    monkeypatch.setitem(C.LIMITS, "cpu_run", 1)
    c = env / "loop.c"
    c.write_text("int mul8(int a, int b) { volatile unsigned long x = 0; for (;;) x++; return a * b; }\n")
    with pytest.raises(DseError, match="signal|did not finish"):
        get_multiplier(f"cmodel:{c}")


def test_memory_and_file_size_limits(env, monkeypatch):
    monkeypatch.setitem(C.LIMITS, "memory", 256 << 20)
    c = env / "big.c"
    c.write_text("#include <stdlib.h>\nint mul8(int a, int b) { return malloc((size_t)1 << 30) == 0 ? -1 : 1; }\n")
    assert (get_multiplier(f"cmodel:{c}").table(False, False) == -1).all()  # 1 GiB refused under the limit
    monkeypatch.setitem(C.LIMITS, "file_size", 1 << 20)
    c = env / "writer.c"
    c.write_text('#include <stdio.h>\nstatic int done;\nint mul8(int a, int b) {\n  if (!done) { done = 1;\n'
                 '    FILE *f = fopen("junk.bin", "wb"); static char buf[1 << 16];\n'
                 '    for (int i = 0; i < 64; ++i) fwrite(buf, 1, sizeof buf, f); fclose(f); }\n  return a * b; }\n')
    with pytest.raises(DseError, match="signal"):
        get_multiplier(f"cmodel:{c}")  # SIGXFSZ at 1 MiB


def test_values_that_overflow_the_accumulator_are_refused(env, capsys):
    c = env / "scaled.c"
    c.write_text("int mul8(int a, int b) { return a * b * 2; }\n")  # 255 * 255 * 2 = 130050: not an 8x8 product
    with pytest.raises(DseError, match=r"scaled.c \(mul8\): LUT\[\d+, \d+\] = \d+ is not an 8x8 product"):
        get_multiplier(f"cmodel:{c}")
    assert main(["multipliers", "export", f"cmodel:{c}", "-o", str(env / "t.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scaled.c" in err and "fix the table" in err
