"""ZigZag as an energy backend (optional extra ``zigzag``: ``pip install 'dse[zigzag]'``).

ZigZag (KU Leuven, ``zigzag-dse``) maps each MAC layer onto an architecture (spatial unrolling given here, temporal
loop order searched by its LOMA engine for minimum energy) and counts the memory accesses of every operand at every
memory level. dse asks it once per (layer shape, operand widths) and caches the answer in memory and on disk
(``$DSE_CACHE_DIR`` or ``~/.cache/dse``, under ``zigzag/``), so a search pays for each width combination once.

Architecture: generated from ``[accelerator]`` unless a user YAML is given: a ``rows x cols`` array (D1 = rows
unrolls the reduction: input channels, then kernel rows and columns to fill the rows; D2 = cols unrolls output
channels, then groups), one weight, one input and one partial-sum register per PE (widths = the layer's operand
widths), a global buffer of ``glb_kib`` with 64-bit words and DRAM with 64-bit words. Costs per word from the same
sourced constants as the built-in model (``reg_bit`` x width, ``sram`` x sqrt(size / 8 KiB) x 64, ``dram`` x 64).
The workload's operand precisions are the layer's stored widths (weights ``w``, inputs ``s``, outputs ``o``, partial
sums ``p``; ``dse.energy.formats``), so narrower Ax-BxP weights shrink ZigZag's traffic.

Components. ``registers``, ``glb``, ``dram`` come from ZigZag (a user architecture: innermost level of each operand
= registers, outermost = DRAM, the rest = global buffer). ZigZag costs one layer alone, with the input read from and
the output written to DRAM and weights fetched once; dse then applies the network-level residency of the built-in
model (``dse.energy.mapping.plan_residency``): one full read of the input / write of the output / fetch of the weights
at the DRAM word cost is removed when the tensor stays on chip (weights: scaled by ``1/batch`` when not resident).
``multiplier`` and ``accumulate`` are the built-in per-action energies of the chosen multiplier times the MACs (the
operational unit costs 0 inside ZigZag), ``cv`` is the built-in control-variate column (not part of ZigZag's
architecture) and ``leakage`` the built-in leakage over ZigZag's latency (``cycles``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dse.energy.arch import ArrayConfig
from dse.energy.counts import count_actions
from dse.energy.formats import OperandFormat, operand_format
from dse.energy.mapping import Residency, in_elems, map_layer
from dse.energy.model import EnergyModel, LayerEnergy
from dse.energy.table import components
from dse.errors import DseError

LPF_LIMIT = 4  # LOMA's loop prime factor limit: 4 keeps a LeNet-5 layer at a few seconds (ZigZag's default is 6)
WORD_BITS = 64


@dataclass(frozen=True)
class ZigZagLayer:
    """ZigZag's answer for one layer: energy (pJ) per memory class and DRAM energy per operand, latency."""

    registers: float
    glb: float
    dram_w: float
    dram_i: float
    dram_o: float
    cycles: float


def cache_dir() -> Path:
    d = os.environ.get("DSE_CACHE_DIR")
    return (Path(d) if d else Path.home() / ".cache" / "dse") / "zigzag"


def _port(name: str, kind: str, bits: int, allocation: list[str]) -> dict:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits, "allocation": allocation}


def _register(op: str, bits: int, per_bit: float, output: bool) -> dict:
    ports = [_port("r_port_1", "read", bits, [f"{op}, tl"]), _port("w_port_1", "write", bits, [f"{op}, fh"])]
    if output:
        ports += [_port("r_port_2", "read", bits, [f"{op}, th"]), _port("w_port_2", "write", bits, [f"{op}, fl"])]
    return {"size": bits, "r_cost": bits * per_bit, "w_cost": bits * per_bit, "area": 0, "latency": 1,
            "operands": [op], "ports": ports, "served_dimensions": []}


def architecture(array: ArrayConfig, fmt: OperandFormat, energy: dict[str, float]) -> dict:
    """The ZigZag accelerator description of ``array`` for one operand format (costs from the energy table)."""
    word = WORD_BITS
    every = ["I1, tl", "I2, tl", "O, tl", "O, th"]
    glb = {"size": int(array.glb_bits), "r_cost": word * energy["glb_bit"], "w_cost": word * energy["glb_bit"],
           "area": 0, "latency": 1, "operands": ["I1", "I2", "O"],
           "ports": [_port("r_port_1", "read", word, every),
                     _port("w_port_1", "write", word, ["I1, fh", "I2, fh", "O, fh", "O, fl"])],
           "served_dimensions": ["D1", "D2"]}
    dram = {"size": 10 ** 12, "r_cost": word * energy["dram_bit"], "w_cost": word * energy["dram_bit"], "area": 0,
            "latency": 1, "operands": ["I1", "I2", "O"],
            "ports": [_port("rw_port_1", "read_write", word, every + ["I1, fh", "I2, fh", "O, fh", "O, fl"])],
            "served_dimensions": ["D1", "D2"]}
    reg = energy["reg_bit"]
    return {"name": "dse_weight_stationary_array",
            "memories": {"rf_W": _register("I2", fmt.weight_bits, reg, False),
                         "rf_I": _register("I1", fmt.act_store_bits, reg, False),
                         "rf_O": _register("O", fmt.psum_bits, reg, True), "glb": glb, "dram": dram},
            "operational_array": {"unit_energy": 0.0, "unit_area": 1, "dimensions": ["D1", "D2"],
                                  "sizes": [array.rows, array.cols]}}


def _fill(budget: int, dims: list[tuple[str, int]]) -> list[str]:
    """Greedy spatial unrolling: take each (dim, size) in turn while the product fits in ``budget``."""
    out = []
    for name, size in dims:
        take = min(size, budget)
        if take > 1:
            out.append(f"{name}, {take}")
            budget //= take
        if budget <= 1:
            break
    return out or [f"{dims[0][0]}, 1"]


def workload(layer, fmt: OperandFormat) -> tuple[dict, dict]:
    """(ZigZag layer description, spatial candidates ``{"D1": [(dim, size)], "D2": [...]}``) of a ``MacLayer`` in
    operand format ``fmt``."""
    prec = {"W": fmt.weight_bits, "I": fmt.act_store_bits, "O": fmt.psum_bits, "O_final": fmt.out_bits}
    g, N = int(layer.groups), int(layer.N)
    if layer.op == "gemm":
        d = {"id": 0, "name": layer.name, "operator_type": "Gemm", "equation": "O[d][k]+=I[d][c]*W[c][k]",
             "loop_dims": ["C", "D", "K"], "loop_sizes": [int(layer.K), int(layer.M), N], "dimension_relations": [],
             "operand_precision": prec}
        return d, {"D1": [("C", int(layer.K))], "D2": [("K", N)]}
    if layer.dynamic_weights:  # g GEMMs M x K x N/g (attention heads): a grouped 1x1 convolution over M positions
        c_in, h, w, ho, wo = g * int(layer.K), 1, int(layer.M), 1, int(layer.M)
        kh = kw = sh = sw = dh = dw = 1
        top = left = bottom = right = 0
    else:
        c_in, h, w = (int(v) for v in layer.in_shape)
        _, ho, wo = (int(v) for v in layer.out_shape)
        kh, kw = (int(v) for v in layer.kernel)
        sh, sw = (int(v) for v in layer.stride)
        dh, dw = (int(v) for v in layer.dilation)
        top, left, bottom, right = (int(v) for v in layer.pads)
    d = {"id": 0, "name": layer.name, "operator_type": "Conv",
         "equation": "O[b][g][k][oy][ox]+=W[g][k][c][fy][fx]*I[b][g][c][iy][ix]",
         "loop_dims": ["B", "K", "G", "OX", "OY", "C", "FX", "FY"],
         "loop_sizes": [1, N // g, g, wo, ho, c_in // g, kw, kh],
         "dimension_relations": [f"ix={sw}*ox+{dw}*fx", f"iy={sh}*oy+{dh}*fy"],
         "operand_precision": prec, "pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": [w, h],
         "padding": [[left, right], [top, bottom]]}
    return d, {"D1": [("C", c_in // g), ("FY", kh), ("FX", kw)], "D2": [("K", N // g), ("G", g)]}


def _mapping(spatial: dict, array: ArrayConfig) -> list[dict]:
    """ZigZag mapping file: the layer's spatial unrolling filled into the array, temporal order left to LOMA."""
    return [{"name": "default", "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"},
             "spatial_mapping": {"D1": _fill(array.rows, spatial["D1"]), "D2": _fill(array.cols, spatial["D2"])}}]


def _run_zigzag(layer_dict: dict, arch_path: str, map_path: str) -> ZigZagLayer:
    try:
        from zigzag.api import get_hardware_performance_zigzag
    except ImportError:
        raise DseError("[accelerator] backend = \"zigzag\" needs the zigzag extra: pip install 'dse[zigzag]'") from None
    root = logging.getLogger()  # ZigZag's API calls logging.basicConfig(INFO): keep the caller's logging as it was
    saved = (root.level, list(root.handlers), logging.root.manager.disable)
    out = tempfile.mkdtemp(prefix="dse-zigzag-")
    try:
        logging.disable(logging.WARNING)
        _, _, cmes = get_hardware_performance_zigzag([layer_dict], arch_path, map_path, opt="energy",
                                                    dump_folder=out, loma_show_progress_bar=False,
                                                    lpf_limit=LPF_LIMIT)
    except Exception as e:  # ZigZag raises many kinds (no valid loop order, schema errors); name the layer
        raise DseError(f"ZigZag could not map layer '{layer_dict['name']}' ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}); check [accelerator] zigzag_architecture / "
                       f"glb_kib") from None
    finally:
        logging.disable(saved[2])
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        shutil.rmtree(out, ignore_errors=True)
    cme = cmes[0][1][0][0]
    hier = cme.accelerator.memory_hierarchy
    classes = {"registers": 0.0, "glb": 0.0}
    dram = {}
    for op, per_level in cme.mem_energy_breakdown.items():
        levels = hier.get_memory_levels(mem_op=cme.memory_operand_links.layer_to_mem_op(op))
        n = len(per_level)
        for i, (lv, e) in enumerate(zip(levels, per_level)):
            if i == n - 1:
                dram[str(op)] = float(e)
            else:
                classes["registers" if i == 0 else "glb"] += float(e)
    return ZigZagLayer(registers=classes["registers"], glb=classes["glb"], dram_w=dram.get("W", 0.0),
                       dram_i=dram.get("I", 0.0), dram_o=dram.get("O", 0.0), cycles=float(cme.latency_total2))


class ZigZagEnergyModel(EnergyModel):
    """``EnergyModel`` whose mapping-dependent components (registers, global buffer, DRAM, latency) come from
    ZigZag; same interface and result types (``LayerEnergy.counts`` are the built-in counts except ``cycles``).
    ``architecture`` / ``mapping``: user ZigZag YAML files (optional)."""

    def __init__(self, constants: dict | None = None, array: ArrayConfig | None = None,
                 architecture: str | None = None, mapping: str | None = None):
        super().__init__(constants, array)
        self.user_architecture, self.user_mapping = architecture, mapping
        self._zz: dict = {}

    def _files(self, layer, fmt: OperandFormat, tmp: Path) -> tuple[dict, str, str, str]:
        import yaml

        layer_dict, spatial = workload(layer, fmt)
        if self.user_architecture:
            arch_text = Path(self.user_architecture).read_text()
        else:
            arch_text = yaml.safe_dump(architecture(self.array, fmt, self.table.actions(fmt)), sort_keys=False)
        map_text = (Path(self.user_mapping).read_text() if self.user_mapping
                    else yaml.safe_dump(_mapping(spatial, self.array), sort_keys=False))
        (tmp / "arch.yaml").write_text(arch_text)
        (tmp / "mapping.yaml").write_text(map_text)
        key = hashlib.sha256(json.dumps([layer_dict, arch_text, map_text, LPF_LIMIT, _zigzag_version()],
                                        sort_keys=True).encode()).hexdigest()[:32]
        return layer_dict, str(tmp / "arch.yaml"), str(tmp / "mapping.yaml"), key

    def zigzag_layer(self, layer, fmt: OperandFormat) -> ZigZagLayer:
        """ZigZag's mapping of ``layer`` in format ``fmt`` (memory cache, then disk cache, then ZigZag)."""
        mem_key = (layer.name, int(layer.M), int(layer.K), int(layer.N), int(layer.groups), tuple(layer.in_shape),
                   fmt)
        hit = self._zz.get(mem_key)
        if hit is not None:
            return hit
        tmp = Path(tempfile.mkdtemp(prefix="dse-zigzag-in-"))
        try:
            layer_dict, arch_path, map_path, key = self._files(layer, fmt, tmp)
            path = cache_dir() / f"{key}.json"
            try:
                hit = ZigZagLayer(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                hit = _run_zigzag(layer_dict, arch_path, map_path)
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(asdict(hit)))
                except OSError:
                    pass  # the disk cache is best effort
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._zz[mem_key] = hit
        return hit

    def _layer(self, layer, mname: str, cv: bool, residency: Residency) -> LayerEnergy:
        A = self.array
        fmt = operand_format(mname, A)
        mp = map_layer(layer, A, cv)
        zz = self.zigzag_layer(layer, fmt)
        cycles = int(round(zz.cycles)) + (mp.tiles if cv else 0)  # the cv column drains one cycle per tile
        counts = count_actions(layer, mp, fmt, residency, A, cv)
        counts.update(cycles=cycles, pe_cycles=cycles * A.rows * A.cols, cv_pe_cycles=cycles * A.rows if cv else 0)
        energy = self.table.actions(fmt)
        comp = components(counts, energy)
        dram_bit = energy["dram_bit"]
        w_once = int(layer.K) * int(layer.N) * fmt.weight_bits * dram_bit
        if layer.dynamic_weights:  # an activation of this image: through DRAM with the layer's input
            w_keep = 1.0 if residency.input_dram else 0.0
        else:
            w_keep = residency.weights_streamed / A.batch
        dram = (max(zz.dram_w - (1.0 - w_keep) * w_once, 0.0)
                + max(zz.dram_i - (0.0 if residency.input_dram else in_elems(layer) * fmt.act_store_bits * dram_bit),
                      0.0)
                + max(zz.dram_o - (0.0 if residency.output_dram else
                                   int(layer.M) * int(layer.N) * fmt.out_bits * dram_bit), 0.0))
        comp.update(registers=zz.registers, glb=zz.glb, dram=dram)
        macs = int(layer.M) * int(layer.K) * int(layer.N)
        return LayerEnergy(name=layer.name, multiplier=mname, cv=cv, components=comp, counts=counts, tiles=mp.tiles,
                           cycles=cycles, utilisation=macs / (cycles * A.rows * A.cols),
                           spatial_utilisation=mp.spatial_utilisation)


def _zigzag_version() -> str:
    try:
        from importlib.metadata import version
        return version("zigzag-dse")
    except Exception:  # not installed: the run itself reports it
        return "?"
