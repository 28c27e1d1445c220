"""Run a QuantModel with a per-layer multiplier configuration (the FxP8 emulator).

Contract:
* ``LayerConfig(multiplier="exact", cv=False)``; a network configuration is ``dict[str, LayerConfig]`` keyed by MAC
  layer name; missing layers are exact.
* ``Emulator(qmodel).run(x, config=None, batch_size=256) -> float32 logits``; ``x`` preprocessed float32 NCHW.
* ``Emulator(qmodel).predict(x, config)`` -> int labels; ``accuracy(x, y, config)`` -> float in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerConfig:
    multiplier: str = "exact"
    cv: bool = False
