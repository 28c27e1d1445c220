"""Prefix-activation cache: what a network computed up to a cut, reused by later runs that share that prefix.

Consecutive search trials (and the single-layer perturbations of the set-up) often share the configuration of the
first MAC layers. :class:`dse.emulate.Emulator` cuts the topologically ordered nodes just before each MAC layer; the
state at cut ``j`` (every tensor still live there, residual branches included, plus the FxP8 patterns already computed
for them) depends only on the batch of images and the configuration of MAC layers ``0 .. j-1``. This module stores
such states under ``(batch, prefix key)`` and knows nothing of graphs: the emulator builds the keys (the full tuple of
``(multiplier, cv)`` of the prefix layers, never a hash, so a hit is always the same computation) and the states.

Policy, bounded by ``max_bytes`` of stored arrays:

* lookup: the deepest cut whose prefix key is stored for the batch (a hit refreshes it);
* admission: a run stores, past its hit, every cut whose prefix was requested before for this batch (the second
  request of a prefix shows it is shared), evicting as needed; and, speculatively, the other cuts before the last
  one, but only into free memory below half the budget (never evicting for them): a prefix seen once may still be
  shared by the next trial, and while the cache is not full keeping it costs nothing;
* eviction: least recently used first.

A run's states share their arrays (a tensor live across several cuts is stored once in memory) but each state counts
all of its arrays, so the bound is conservative.

Thread-safe (the emulator runs slices of a batch on several threads).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Sequence

MIB = 1 << 20
MAX_COUNTS = 1 << 21  # admission counters kept before they are reset (a heuristic: forgetting costs only reuse)
SPECULATIVE_FILL = 0.5  # speculative states only while the stored bytes stay below this fraction of the budget


@dataclass(frozen=True)
class CutState:
    """What a run needs to continue from a cut: the live float32 tensors and their FxP8 patterns computed so far."""

    tensors: dict  # tensor name -> float32 array
    quantized: dict  # tensor name -> uint8/int8 patterns (a subset of ``tensors``)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.tensors.values()) + sum(a.nbytes for a in self.quantized.values())


@dataclass(frozen=True)
class Plan:
    """How one run of a batch uses the cache: continue from cut ``hit`` (0 = from the input) with ``state``; store
    the states reached at the cuts ``store`` (prefixes requested before) and ``speculate`` (first requests; stored
    only into free memory), both ascending."""

    hit: int
    state: CutState | None
    store: tuple[int, ...] = ()
    speculate: tuple[int, ...] = ()


@dataclass
class CacheStats:
    runs: int = 0            # batches run with the cache
    hits: int = 0            # ... that continued from a stored cut
    stores: int = 0
    evictions: int = 0
    macs_total: int = 0      # MACs of the runs
    macs_skipped: int = 0    # MACs not recomputed thanks to hits
    bytes: int = 0           # stored now

    @property
    def mac_fraction_skipped(self) -> float:
        return self.macs_skipped / self.macs_total if self.macs_total else 0.0

    def to_dict(self) -> dict:
        return {"runs": self.runs, "hits": self.hits, "stores": self.stores, "evictions": self.evictions,
                "mac_fraction_skipped": round(self.mac_fraction_skipped, 4), "mib": round(self.bytes / MIB, 1)}


class PrefixCache:
    """LRU store of :class:`CutState` per ``(batch, prefix key)`` within ``max_bytes`` (module docstring)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple, CutState] = OrderedDict()
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @classmethod
    def from_mib(cls, mib: float) -> "PrefixCache | None":
        """A cache of ``mib`` MiB, or None when ``mib`` is 0 (caching off)."""
        return cls(int(mib * MIB)) if mib > 0 else None

    def plan(self, batch: Hashable, keys: Sequence[Hashable]) -> Plan:
        """``keys[j - 1]`` identifies the configuration prefix ending at cut ``j`` (1 .. len(keys)). Counts this
        request of every cut and returns the deepest stored cut and the cut to store (module docstring)."""
        with self._lock:
            hit, state = 0, None
            for j in range(len(keys), 0, -1):
                st = self._entries.get((batch, keys[j - 1]))
                if st is not None:
                    self._entries.move_to_end((batch, keys[j - 1]))
                    hit, state = j, st
                    break
            if len(self._counts) > MAX_COUNTS:
                self._counts.clear()
            store, speculate = [], []
            for j in range(1, len(keys) + 1):
                h = hash((batch, keys[j - 1]))
                seen = self._counts.get(h, 0)
                self._counts[h] = seen + 1
                if j > hit and seen:
                    store.append(j)
                elif j > hit and j < len(keys):
                    speculate.append(j)
            self.stats.runs += 1
            self.stats.hits += hit > 0
            return Plan(hit, state, tuple(store), tuple(speculate))

    def store(self, batch: Hashable, key: Hashable, state: CutState, speculative: bool = False) -> None:
        """Keep ``state`` for ``(batch, key)``, evicting least recently used states to stay within max_bytes; a
        ``speculative`` state is kept only if it fits below SPECULATIVE_FILL of the budget without evicting."""
        size = state.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            if speculative and (self.stats.bytes + size > SPECULATIVE_FILL * self.max_bytes
                                or (batch, key) in self._entries):
                return
            k = (batch, key)
            old = self._entries.pop(k, None)
            if old is not None:
                self.stats.bytes -= old.nbytes
            while self._entries and self.stats.bytes + size > self.max_bytes:
                _, ev = self._entries.popitem(last=False)
                self.stats.bytes -= ev.nbytes
                self.stats.evictions += 1
            self._entries[k] = state
            self.stats.bytes += size
            self.stats.stores += 1

    def count_macs(self, total: int, skipped: int) -> None:
        with self._lock:
            self.stats.macs_total += int(total)
            self.stats.macs_skipped += int(skipped)

    def __len__(self) -> int:
        return len(self._entries)


def live_tensors(nodes: list, input_name: str, output_name: str) -> list[frozenset]:
    """``live[p]``: tensors produced by ``nodes[:p]`` (or the graph input) that a node at index >= p reads, plus the
    output once produced: exactly what a run continuing at node ``p`` needs."""
    last = {}
    for i, n in enumerate(nodes):
        for t in n.inputs:
            last[t] = i
    live, out = {input_name} if input_name in last else set(), []
    for p in range(len(nodes) + 1):
        out.append(frozenset(live))
        if p == len(nodes):
            break
        n = nodes[p]
        live = {t for t in live if last.get(t, -1) > p}
        if last.get(n.output, -1) > p or n.output == output_name:
            live.add(n.output)
    return out


def snapshot(env: dict, qcache: dict, live: frozenset) -> CutState:
    """The cut state of a run at a position whose live tensors are ``live`` (arrays shared, not copied: the emulator
    never writes into a tensor once produced)."""
    return CutState({t: env[t] for t in live}, {t: qcache[t] for t in live if t in qcache})

