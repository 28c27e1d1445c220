"""Per-image action counts of one mapped layer (what Timeloop's model hands to Accelergy).

``w``, ``a``, ``s``, ``o``, ``p`` = weight bits, array-side activation bits, stored activation bits, output bits,
partial-sum bits of the layer's ``OperandFormat``.

* ``mults`` / ``adds``: one multiply and one accumulation add per MAC.
* ``reg_bits``: per MAC the weight register read (``w``), the input pipeline register (``a``) and the psum pipeline
  register (``p``); plus one weight register write per weight (each weight is loaded into one PE once per image).
* ``glb_read_bits``: weights once per tile (``K*N*w``), inputs re-read per column tile (``g*ceil(N_g/cols)*M*K*s``),
  psums read per row tile after the first (``(ceil(K/rows)-1) * M*N * p``), outputs drained to DRAM (``M*N*o``) when
  the output goes to DRAM.
* ``glb_write_bits``: weights filled from DRAM (``K*N*w * weights_streamed / batch``), the input filled from DRAM
  (``prod(in_shape) * s``) when it comes from DRAM, psums per row tile but the last, outputs (``M*N*o``).
* ``dram_bits``: the streamed weights per batch, the input and the output when they go through DRAM.
* dynamic weights (``MacLayer.dynamic_weights``, attention's matmul): the right operand is read from the global
  buffer per tile at the stored activation width (``K*N*s``), never filled per batch; it comes from DRAM
  (``K*N*s`` written to the buffer and read from DRAM) exactly when the layer's input does.
* ``pe_cycles`` = cycles * rows * cols and ``cycles`` (leakage of the array and of the global buffer).
* control-variate column (``cv``): ``g*M*K`` adds of ``X = sum_i a_i`` in a dedicated extra column, each with an input
  and a psum register, its psums through the GLB like the others, ``X`` written once per (group, position) and read
  once per column tile, per output one correction (alpha_f x X multiply and add), and the column's leakage
  (``cv_pe_cycles`` = cycles * rows).
"""
from __future__ import annotations

from dse.energy.arch import ArrayConfig
from dse.energy.formats import OperandFormat
from dse.energy.mapping import Mapping, Residency, in_elems


def count_actions(layer, mp: Mapping, fmt: OperandFormat, res: Residency, array: ArrayConfig, cv: bool) -> dict:
    """Flat ``{count name: number}`` of one layer per image (the names the energy table's components use)."""
    A = array
    M, K, N, g = int(layer.M), int(layer.K), int(layer.N), int(layer.groups)
    w, a, s, o, p = fmt.weight_bits, fmt.act_bits, fmt.act_store_bits, fmt.out_bits, fmt.psum_bits
    macs, outs, w_elems, n_in = M * K * N, M * N, K * N, in_elems(layer)
    rt, ct = mp.row_tiles, mp.col_tiles
    dyn = layer.dynamic_weights
    w_fill = 0.0 if dyn else w_elems * w * res.weights_streamed / A.batch
    in_fill = (n_in + (w_elems if dyn else 0)) * s if res.input_dram else 0
    drain = outs * o if res.output_dram else 0
    psum = (rt - 1) * outs * p
    n = {"macs": macs, "mults": macs, "adds": macs,
         "reg_bits": macs * (w + a + p) + w_elems * w,
         "glb_read_bits": w_elems * (s if dyn else w) + g * ct * M * K * s + psum + drain,
         "glb_write_bits": w_fill + in_fill + psum + outs * o,
         "dram_bits": w_fill + in_fill + drain,
         "pe_cycles": mp.cycles * A.rows * A.cols, "cycles": mp.cycles,
         "weight_bits": w, "act_bits": a, "act_store_bits": s, "out_bits": o,
         "cv_adds": 0, "cv_reg_bits": 0, "cv_glb_read_bits": 0, "cv_glb_write_bits": 0, "cv_corrections": 0,
         "cv_pe_cycles": 0}
    if cv:
        n.update(cv_adds=g * M * K, cv_reg_bits=g * M * K * (a + p),
                 cv_glb_read_bits=g * (rt - 1) * M * p + g * ct * M * p,
                 cv_glb_write_bits=g * (rt - 1) * M * p + g * M * p,
                 cv_corrections=outs, cv_pe_cycles=mp.cycles * A.rows)
    return n
