"""C behavioural models of 8-bit multipliers (``cmodel:PATH.c``) -> full 256x256 tables.

The C file defines ``int32_t mul8(int32_t a, int32_t b)`` (or another function named with ``?fn=NAME``; any integer
parameter/return types work, e.g. EvoApprox ``uint16_t mul8u_1JFF(uint8_t A, uint8_t B)``, because the driver
includes the file and calls the function with its own prototype in scope). The driver calls it for every pattern
pair with the operand VALUES (``a`` = pattern, or pattern - 256 for patterns >= 128 when that operand is declared
signed) and writes the results as int64; values must fit int32. A ``main`` in the model file is renamed away.
Compiled with the system ``cc`` (env ``CC`` overrides); tables are cached as .npy under ``$DSE_CACHE_DIR`` or
``~/.cache/dse/cmodel``, keyed by the SHA-256 of the file, function, signedness and driver.

A C model is code run as the calling user, so it must be trusted, and it is used only with an explicit opt-in: the
budget key ``[space] allow_cmodel = true`` or the flag ``dse --allow-cmodel``; both call :func:`opt_in`, which sets
``DSE_ALLOW_CMODEL=1`` in the environment (spawned search workers inherit it), and :func:`allowed` is the one check.
Compiler and table driver run in child processes with CPU, address-space, file-size and core-dump limits
(``LIMITS``), in a temporary directory, with an environment of PATH and LC_ALL only (no inherited secrets).
"""
from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from dse.errors import DseError

DRIVER_VERSION = "1"
ALLOW_ENV = "DSE_ALLOW_CMODEL"
# child-process limits: CPU seconds (compile, run), address space and file size in bytes
LIMITS = {"cpu_compile": 120, "cpu_run": 60, "memory": 2 << 30, "file_size": 64 << 20}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#define main dse_user_main_
#include "model.c"
#undef main
int main(int argc, char **argv) {
    static int64_t t[65536];
    for (int i = 0; i < 256; ++i) {
        for (int j = 0; j < 256; ++j) {
            int32_t a = (DSE_A_SIGNED && i >= 128) ? i - 256 : i;
            int32_t b = (DSE_W_SIGNED && j >= 128) ? j - 256 : j;
            t[i * 256 + j] = (int64_t)(DSE_FN(a, b));
        }
    }
    FILE *f = fopen(argv[1], "wb");
    if (!f || fwrite(t, sizeof t[0], 65536, f) != 65536 || fclose(f) != 0) return 3;
    return 0;
}
"""


OPT_IN = "[space] allow_cmodel = true in the budget, or 'dse --allow-cmodel ...'"


def opt_in() -> None:
    """Allow ``cmodel:`` multipliers in this process and the processes it starts."""
    os.environ[ALLOW_ENV] = "1"


def allowed() -> bool:
    return os.environ.get(ALLOW_ENV) == "1"


def _sandboxed(cmd: list[str], cwd: str, cpu_s: int, text: bool) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a child with resource limits and a minimal environment (wall-clock timeout 2x the CPU limit)."""
    def limit():  # runs in the child between fork and exec
        for res, v in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, LIMITS["memory"]),
                       (resource.RLIMIT_FSIZE, LIMITS["file_size"]), (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(res, (v, v))
    env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "TMPDIR": cwd}
    return subprocess.run(cmd, capture_output=True, text=text, timeout=2 * cpu_s, cwd=cwd, env=env,
                          preexec_fn=limit)


def cache_dir() -> Path:
    d = os.environ.get("DSE_CACHE_DIR")
    return Path(d) if d else Path.home() / ".cache" / "dse" / "cmodel"


def _first_error(stderr: str, tmp: str, src: Path) -> str:
    lines = [ln.replace(os.path.join(tmp, "model.c"), str(src)) for ln in stderr.splitlines()]
    for ln in lines:
        if "error" in ln or "undefined reference" in ln:
            return ln.strip()
    return next((ln.strip() for ln in lines if ln.strip()), "compiler failed without a message")


def cmodel_table(path, fn: str = "mul8", a_signed: bool = False, w_signed: bool = False) -> np.ndarray:
    """int64[256, 256] table LUT[a_pattern, b_pattern] = fn(a_value, b_value) of the C file at ``path``."""
    path = Path(path)
    if path.suffix != ".c" or not path.is_file():
        raise DseError(f"C model {path}: not an existing .c file; give cmodel:PATH.c")
    if not _IDENT.fullmatch(fn):
        raise DseError(f"C model {path}: fn={fn!r} is not a C identifier; give ?fn=NAME of the multiply function")
    if not allowed():
        raise DseError(f"C model {path}: cmodel: multipliers compile and run the C file as code; if you trust it, "
                       f"opt in with {OPT_IN} (environment {ALLOW_ENV}=1)")
    src = path.read_bytes()
    cc = os.environ.get("CC", "cc")
    key = hashlib.sha256(b"\0".join([src, fn.encode(), str((bool(a_signed), bool(w_signed))).encode(),
                                     DRIVER_VERSION.encode(), cc.encode()])).hexdigest()[:32]
    out = cache_dir() / f"{key}.npy"
    if out.is_file():
        try:
            t = np.load(out, allow_pickle=False)
            if t.shape == (256, 256):
                return t.astype(np.int64)
        except (ValueError, OSError):
            pass  # corrupt cache entry: rebuild
    if shutil.which(cc) is None:
        raise DseError(f"C model {path}: no C compiler '{cc}' on PATH; install gcc/cc or set CC")
    with tempfile.TemporaryDirectory(prefix="dse-cmodel-") as tmp:
        Path(tmp, "model.c").write_bytes(src)
        Path(tmp, "driver.c").write_text(_DRIVER)
        exe = os.path.join(tmp, "driver")
        cmd = [cc, "-std=gnu11", "-O1", "-Werror=implicit-function-declaration", f"-I{path.parent.resolve()}",
               f"-DDSE_FN={fn}", f"-DDSE_A_SIGNED={int(bool(a_signed))}", f"-DDSE_W_SIGNED={int(bool(w_signed))}",
               "-o", exe, os.path.join(tmp, "driver.c")]
        try:
            r = _sandboxed(cmd, tmp, LIMITS["cpu_compile"], text=True)
        except subprocess.TimeoutExpired:
            raise DseError(f"C model {path}: compilation timed out after {2 * LIMITS['cpu_compile']} s") from None
        if r.returncode != 0:
            first = _first_error(r.stderr, tmp, path)
            if re.search(rf"implicit declaration of function .{fn}\W", first):
                raise DseError(f"C model {path}: defines no function '{fn}'; define it or name yours with "
                               f"cmodel:{path}?fn=NAME")
            raise DseError(f"C model {path} does not compile: {first}; fix the C source")
        tbl = os.path.join(tmp, "table.bin")
        try:
            r = _sandboxed([exe, tbl], tmp, LIMITS["cpu_run"], text=False)
        except subprocess.TimeoutExpired:
            raise DseError(f"C model {path}: {fn} did not finish 65536 calls within {2 * LIMITS['cpu_run']} s") \
                from None
        if r.returncode != 0 or not os.path.isfile(tbl):
            why = (f"killed by signal {-r.returncode}, e.g. a crash or a CPU/memory/file-size limit"
                   if r.returncode < 0 else f"exit {r.returncode}")
            raise DseError(f"C model {path}: the table driver failed ({why}); check {fn}")
        t = np.fromfile(tbl, dtype="<i8").reshape(256, 256)
    if t.min() < -2 ** 31 or t.max() >= 2 ** 31:
        raise DseError(f"C model {path}: {fn} returns values outside int32")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmpf = out.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmpf, t)
        os.replace(tmpf, out)
    except OSError:
        pass  # cache is best effort
    return t.astype(np.int64)
