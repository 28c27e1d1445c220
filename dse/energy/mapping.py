"""Mapping of MAC layers onto the weight-stationary PE array and of their tensors onto the memory hierarchy.

Spatial/temporal mapping (``map_layer``). A MAC layer is a per-image GEMM ``M x K x N`` in ``groups`` g
(``N_g = N / g``). The reduction dimension goes onto the ``rows``, the output channels onto the ``cols``:
``tiles = g * ceil(K/rows) * ceil(N_g/cols)``; a tile keeps its weights stationary and streams the ``M`` input rows
through in ``M + rows + cols`` cycles (pipeline fill/drain; ``+1`` with the control-variate column). Weight loading is
double-buffered (hidden behind the previous tile).

Memory residency (``plan_residency``). The MAC layers are taken as a chain in topological order (a residual branch or
concat is treated as the chain: an approximation). The global buffer (``C`` bits) is shared greedily by DRAM bits
saved per buffer bit: an activation tensor kept on chip saves a DRAM write and a read per image, a resident weight
saves one read per ``batch`` images, so activations come first. A layer's activation working set is its stored input
+ output + one column tile of partial sums when ``K > rows``; every layer also keeps a double-buffered weight tile
(``2 * rows * cols`` weights) for the weights it streams.

* Weights: ``R = C - max_l(working set_l + tile_l)`` bits are left for resident weights. The first ``R`` weight bits
  in execution order stay resident (loaded once, no DRAM traffic per image); the rest of each layer streams from
  DRAM once per ``batch`` images (``Residency.weights_streamed``, the streamed fraction of the layer's weights). A
  layer may be partly resident. The DRAM weight traffic is ``max(0, sum(weights) - R) / batch``: continuous in every
  layer's weight width, so one layer's format changes the traffic by at most its own weight bits and weight tile
  (no all-or-nothing flip of the whole network).
* Activations: a layer *fits* when its working set, its weight tile and the resident weights fit in ``C`` (always
  when ``R >= 0``; when ``R < 0`` nothing is resident and the test is ``working set + tile <= C``). The tensor between
  two consecutive layers stays on chip when both fit, else it is written to and read back from DRAM (both sides
  agree by construction). The network input is read from and the last output written to DRAM.

A layer with dynamic weights (``MacLayer.dynamic_weights``: attention's activation x activation matmul, ``groups`` =
heads) loads its right operand into the array like weights, but that operand is an activation of the image: it is no
part of the resident weights, it belongs to the layer's working set (stored at the activation width), and it goes
through DRAM, like an input, when the layer does not fit.
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
    """Which of a layer's tensors go through DRAM (per image); ``weights_streamed`` is the fraction of the layer's
    weights fetched from DRAM per ``batch`` images (0 = all resident, 1 = none)."""

    input_dram: bool = True
    output_dram: bool = True
    weights_streamed: float = 1.0


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
    """Activation bits the layer keeps in the global buffer: input (both operands of a dynamic-weight layer), output,
    one column tile of psums."""
    M, N, g = int(layer.M), int(layer.N), int(layer.groups)
    psums = M * min(N // g, array.cols) * fmt.psum_bits if int(layer.K) > array.rows else 0
    dyn = int(layer.K) * N * fmt.act_store_bits if layer.dynamic_weights else 0
    return in_elems(layer) * fmt.act_store_bits + dyn + M * N * fmt.out_bits + psums


def static_weight_bits(layer, fmt: OperandFormat) -> int:
    """Bits of the layer's weights known offline (0 for dynamic weights)."""
    return 0 if layer.dynamic_weights else int(layer.K) * int(layer.N) * fmt.weight_bits


def plan_residency(layers, fmts: list[OperandFormat], array: ArrayConfig) -> list[Residency]:
    """Per layer, which tensors go through DRAM (see the module docstring); ``layers`` in topological order."""
    if not layers:
        return []
    C = array.glb_bits
    need = [_working_set(l, f, array) + 2 * array.rows * array.cols * f.weight_bits for l, f in zip(layers, fmts)]
    weights = [static_weight_bits(l, f) for l, f in zip(layers, fmts)]
    resident = min(max(C - max(need), 0.0), float(sum(weights)))  # resident weight bits
    streamed, free = [], resident
    for wb in weights:
        keep = min(wb, free)
        free -= keep
        streamed.append(1.0 - keep / wb if wb else 0.0)
    fits = [n + resident <= C for n in need]
    n = len(layers)
    on_chip = [fits[i] and fits[i + 1] for i in range(n - 1)]  # tensor between layer i and i+1
    return [Residency(input_dram=i == 0 or not on_chip[i - 1], output_dram=i == n - 1 or not on_chip[i],
                      weights_streamed=streamed[i]) for i in range(n)]
