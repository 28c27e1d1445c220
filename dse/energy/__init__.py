"""Energy/latency of the PE array, in three stages (the Accelergy/Timeloop split).

* ``mapping``: layer -> tiles and cycles on the weight-stationary array; which tensors go through DRAM.
* ``formats`` + ``counts``: per-image action counts in the layer's operand format (multiplies, adds, register,
  global-buffer and DRAM bits, PE and buffer cycles).
* ``table``: energy per action built once from the sourced ``constants`` and the ``arch``itecture.
* ``model``: ``EnergyModel`` ties them together; ``NetworkEnergy`` / ``LayerEnergy`` are its results.
"""
from dse.energy.arch import ARRAY_LIMITS, ArrayConfig
from dse.energy.constants import DEFAULT_CONSTANTS, HOROWITZ, Constant, resolve_constants
from dse.energy.formats import OperandFormat, index_bits, multiplier_cost, operand_format
from dse.energy.mapping import Mapping, Residency, map_layer, plan_residency
from dse.energy.model import EnergyModel, LayerEnergy, NetworkEnergy
from dse.energy.table import COMPONENTS, MULTIPLIER_COMPONENTS, EnergyTable

__all__ = ["ARRAY_LIMITS", "ArrayConfig", "COMPONENTS", "Constant", "DEFAULT_CONSTANTS", "EnergyModel", "EnergyTable",
           "HOROWITZ", "LayerEnergy", "Mapping", "MULTIPLIER_COMPONENTS", "NetworkEnergy", "OperandFormat",
           "Residency", "index_bits", "map_layer", "multiplier_cost", "operand_format", "plan_residency",
           "resolve_constants"]
