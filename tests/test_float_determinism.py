"""The float forward and the calibration give the same bits whatever the machine's BLAS kernel, dse's ISA level,
numpy's SIMD dispatch and the thread count: child processes (tests/float_determinism.py) under each setting digest the
test CNN's float logits and calibration (and, marked slow, the bundled resnet8's and lenet5's), and every digest must
equal the first one's. Before the float executor had its own convolution and GEMM, OPENBLAS_CORETYPE alone changed
them (OpenBLAS picks its sgemm kernel, and so the summation order, per CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dse import _kernels

ROOT = Path(__file__).resolve().parents[1]


def settings() -> list:
    """(name, environment changes, threads): OpenBLAS core types this CPU can run, every dse ISA level, numpy's
    dispatch capped at its baseline and at AVX2, 1 and 2 threads."""
    umath = getattr(getattr(np, "_core", None), "_multiarray_umath", None)
    dispatch = list(getattr(umath, "__cpu_dispatch__", []))
    out = [("default", {}, 2), ("1 thread", {}, 1), ("OpenBLAS Prescott", {"OPENBLAS_CORETYPE": "Prescott"}, 2),
           ("OpenBLAS Haswell", {"OPENBLAS_CORETYPE": "Haswell"}, 1)]
    if _kernels.hardware_isa() == "avx512":
        out.append(("OpenBLAS SkylakeX", {"OPENBLAS_CORETYPE": "SkylakeX"}, 2))
    out += [(f"DSE_KERNEL_ISA={isa}", {"DSE_KERNEL_ISA": isa}, 2) for isa in _kernels.isa_levels()[:-1]]
    if dispatch:
        out.append(("numpy baseline only", {"NPY_DISABLE_CPU_FEATURES": " ".join(dispatch)}, 2))
        wide = [f for f in dispatch if "512" in f or f.endswith("V4")]
        if wide:
            out.append(("numpy without AVX-512", {"NPY_DISABLE_CPU_FEATURES": " ".join(wide)}, 1))
    return out


def child(tmp_path, env_changes: dict, threads: int, bundled: bool) -> dict:
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "DSE_KERNEL_ISA", "NPY_DISABLE_CPU_FEATURES"):
        env.pop(k, None)
    env.update(env_changes)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    args = [sys.executable, "-m", "tests.float_determinism", str(tmp_path), str(threads)] + (["bundled"] if bundled
                                                                                              else [])
    r = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check(tmp_path, bundled: bool):
    runs = [(name, child(tmp_path, env, threads, bundled)) for name, env, threads in settings()]
    first_name, first = runs[0]
    assert first["cnn.logits"] == first["cnn.logits_b5"]  # the batch split changes nothing either
    for name, d in runs[1:]:
        assert d == first, f"{name} differs from {first_name}: " + ", ".join(k for k in d if d[k] != first.get(k))


def test_float_forward_and_calibration_bits_do_not_depend_on_blas_isa_numpy_or_threads(tmp_path):
    _check(tmp_path, False)


@pytest.mark.slow
def test_bundled_networks_calibrate_alike_under_every_setting(tmp_path):
    _check(tmp_path, True)
