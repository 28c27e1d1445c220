"""``dse`` as another machine would run it, for the context-identity tests (tests/test_identity.py):
``python -m tests.other_machine HOST PERTURB DSE-ARGS...`` runs the CLI with ``socket.gethostname()`` returning HOST.
PERTURB ``calibration``: every FxP8 calibration computed in the process comes out with its first activation scale
one float32 step larger (what another BLAS did to the bundled models' scales), and each computed calibration prints
``calibrated`` on stderr; ``none``: nothing changed.
"""
from __future__ import annotations

import socket
import sys

import numpy as np

CALIBRATED = "calibrated (tests.other_machine)"


def perturbed(calibrate):
    """dse.quant.calibrate made to return a calibration whose first activation scale is one float32 step larger."""
    def calibrate_(*args, **kwargs):
        q = calibrate(*args, **kwargs)
        t = next(iter(q.act_quant))
        scale, signed = q.act_quant[t]
        q.act_quant[t] = (float(np.nextafter(np.float32(scale), np.float32(np.inf))), signed)
        print(CALIBRATED, file=sys.stderr)
        return q
    return calibrate_


def main(argv: list[str]) -> int:
    host, perturb, *args = argv
    socket.gethostname = lambda: host
    if perturb == "calibration":
        import dse.quant

        dse.quant.calibrate = perturbed(dse.quant.calibrate)
    from dse.cli import main as dse_main

    return dse_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
