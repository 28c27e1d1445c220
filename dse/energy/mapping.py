"""Mapping of MAC layers onto the weight-stationary PE array and of their tensors onto the memory hierarchy.

Spatial/temporal mapping (``map_layer``). A MAC layer is a per-image GEMM ``M x K x N`` in ``groups`` g
(``N_g = N / g``). The reduction dimension goes onto the ``rows``, the output channels onto the ``cols``:
``tiles = g * ceil(K/rows) * ceil(N_g/cols)``; a tile keeps its weights stationary and streams the ``M`` input rows
through in ``M + rows + cols`` cycles (pipeline fill/drain; ``+1`` with the control-variate column). Weight loading is
double-buffered (hidden behind the previous tile).

Memory residency (``plan_residency``). The MAC layers are taken as a chain in topological order (a residual branch or
concat is treated as the chain: an approximation). A layer *fits* when its activation working set (stored input +
output + one column tile of partial sums when ``K > rows``) fits in the global buffer beside its weights: all the
network's weights when they are resident, else a double-buffered weight tile (``2 * rows * cols`` weights). The
tensor between two consecutive layers stays on chip when both fit, else it is written to and read back from DRAM
(both sides agree by construction). The network input is read from and the last output written to DRAM. The weights
are resident (loaded once, no DRAM traffic per image) when all of them plus the largest activation working set fit;
else every layer fetches its weights from DRAM once per ``batch`` images.
"""
from __future__ import annotations

from dataclasses import dataclass

from dse.energy.arch import ArrayConfig
from dse.energy.formats import OperandFormat
from dse.errors import DseError


@dataclass(frozen=True)
class Mapping:
    """Where one layer runs on the array: tiles, cycles, utilisation."""

    groups: int
    row_tiles: int       # ceil(K / rows)
    col_tiles: int       # ceil(N_g / cols), per group
    tiles: int
    cycles: int
    utilisation: float            # MACs / (cycles * rows * cols)
    spatial_utilisation: float    # used PEs / (tiles * rows * cols)


@dataclass(frozen=True)
class Residency:
    """Which of a layer's tensors go through DRAM (per image)."""

    input_dram: bool = True
    output_dram: bool = True
    weights_dram: bool = True


def check_layer(layer) -> None:
    M, K, N, g = int(layer.M), int(layer.K), int(layer.N), int(layer.groups)
    if min(M, K, N, g) < 1 or N % g:
        raise DseError(f"layer '{layer.name}': GEMM M={M} K={K} N={N} groups={g} is not a valid mapping "
                       f"(all >= 1, N divisible by groups); re-import the model")


def map_layer(layer, array: ArrayConfig, cv: bool) -> Mapping:
    """The weight-stationary mapping of ``layer`` (a ``MacLayer``) on ``array``, with the cv column if ``cv``."""
    check_layer(layer)
    A = array
    M, K, N, g = int(layer.M), int(layer.K), int(layer.N), int(layer.groups)
    Ng = N // g
    rt, ct = -(-K // A.rows), -(-Ng // A.cols)
    tiles = g * rt * ct
    cycles = tiles * (M + A.rows + A.cols + (1 if cv else 0))
    return Mapping(groups=g, row_tiles=rt, col_tiles=ct, tiles=tiles, cycles=cycles,
                   utilisation=M * K * N / (cycles * A.rows * A.cols),
                   spatial_utilisation=(K * Ng) / (rt * A.rows * ct * A.cols))


def in_elems(layer) -> int:
    """Stored elements of the layer's input per image (its ``in_shape``; im2col size if unknown)."""
    if not layer.in_shape:
        return int(layer.M) * int(layer.K) * int(layer.groups)
    out = 1
    for s in layer.in_shape:
        out *= int(s)
    return out


def _working_set(layer, fmt: OperandFormat, array: ArrayConfig) -> float:
    """Activation bits the layer keeps in the global buffer: input, output, one column tile of psums."""
    M, N, g = int(layer.M), int(layer.N), int(layer.groups)
    psums = M * min(N // g, array.cols) * fmt.psum_bits if int(layer.K) > array.rows else 0
    return in_elems(layer) * fmt.act_store_bits + M * N * fmt.out_bits + psums


def plan_residency(layers, fmts: list[OperandFormat], array: ArrayConfig) -> list[Residency]:
    """Per layer, which tensors go through DRAM (see the module docstring); ``layers`` in topological order."""
    if not layers:
        return []
    work = [_working_set(l, f, array) for l, f in zip(layers, fmts)]
    weights = [int(l.K) * int(l.N) * f.weight_bits for l, f in zip(layers, fmts)]
    resident = sum(weights) + max(work) <= array.glb_bits
    fits = [w <= array.glb_bits - (sum(weights) if resident else 2 * array.rows * array.cols * f.weight_bits)
            for w, f in zip(work, fmts)]
    n = len(layers)
    on_chip = [fits[i] and fits[i + 1] for i in range(n - 1)]  # tensor between layer i and i+1
    return [Residency(input_dram=i == 0 or not on_chip[i - 1], output_dram=i == n - 1 or not on_chip[i],
                      weights_dram=not resident) for i in range(n)]
