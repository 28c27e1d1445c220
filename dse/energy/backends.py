"""Energy backends behind one interface: ``make_energy_model(constants, array, backend) -> EnergyModel``.

* ``builtin``: the analytic weight-stationary model (``dse.energy.model.EnergyModel``).
* ``zigzag``: ZigZag (``pip install 'dse[zigzag]'``) maps every layer once per operand-width combination onto the
  architecture (generated from ``[accelerator]``, or a user ZigZag YAML) and costs its memory traffic; dse adds the
  chosen multiplier's MAC energy, the control-variate column and leakage (``dse.energy.zigzag_backend``).
"""
from __future__ import annotations

from dataclasses import dataclass

from dse.energy.arch import ArrayConfig
from dse.energy.model import EnergyModel
from dse.errors import DseError

BACKENDS = ("builtin", "zigzag")


@dataclass(frozen=True)
class BackendConfig:
    """``[accelerator] backend``, and for ZigZag an optional user architecture / mapping YAML (absolute paths)."""

    name: str = "builtin"
    architecture: str | None = None
    mapping: str | None = None

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise DseError(f"key 'accelerator.backend' must be one of {', '.join(BACKENDS)}, got {self.name!r}")
        if self.name == "builtin" and (self.architecture or self.mapping):
            raise DseError("keys 'accelerator.zigzag_architecture' / 'accelerator.zigzag_mapping' need "
                           "'accelerator.backend = \"zigzag\"'")


def make_energy_model(constants: dict | None, array: ArrayConfig, backend: BackendConfig = BackendConfig()
                      ) -> EnergyModel:
    """The energy model of ``backend`` on ``array`` with constant overrides ``constants``."""
    if backend.name == "zigzag":
        from dse.energy.zigzag_backend import ZigZagEnergyModel

        return ZigZagEnergyModel(constants, array, architecture=backend.architecture, mapping=backend.mapping)
    return EnergyModel(constants=constants, array=array)
