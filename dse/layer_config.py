"""Per-layer configuration: ``LayerConfig``, its dict form, and the one "layer is not in the model" check.

A network configuration is ``dict[str, LayerConfig]`` keyed by MAC layer name (ONNX node name); missing layers are
exact. Its dict form (config files, study attributes, results.json) is ``{name: {"multiplier": str, "cv": bool}}``.
This module sits just above ``dse.errors`` so every layer above (emulate, config, predict, search, report) imports it
downward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from dse.errors import DseError

LAYER_KEYS = ("multiplier", "cv")


@dataclass(frozen=True)
class LayerConfig:
    multiplier: str = "exact"
    cv: bool = False

    def to_dict(self) -> dict:
        return {"multiplier": self.multiplier, "cv": self.cv}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LayerConfig":
        """From ``{"multiplier": str, "cv": bool}`` (both optional: exact, no correction)."""
        return cls(str(d.get("multiplier", "exact")), bool(d.get("cv", False)))


def config_to_dict(config: Mapping[str, LayerConfig]) -> dict[str, dict]:
    """``{name: LayerConfig}`` -> ``{name: {"multiplier", "cv"}}`` (JSON-friendly)."""
    return {str(n): lc.to_dict() for n, lc in config.items()}


def config_from_dict(d: Mapping[str, Mapping]) -> dict[str, LayerConfig]:
    """``{name: {"multiplier", "cv"}}`` -> ``{name: LayerConfig}``."""
    return {str(n): LayerConfig.from_dict(v) for n, v in d.items()}


def check_layers(names: Iterable[str], valid: Sequence[str], where: str, key: str = "") -> None:
    """Raise DseError if a name in ``names`` is not one of the model's MAC layer names ``valid`` (in order).

    ``where`` names the source (a file, "configuration"); ``key`` the key prefix the name came from (e.g.
    ``layers`` -> "key 'layers.conv9'"). One wording everywhere: "WHERE: key 'layers.conv9' is not a layer of the
    model; valid layers: a, b" (without ``key``: "WHERE: 'conv9' is not a layer ...").
    """
    valid = list(valid)
    known = set(valid)
    for name in names:
        if name not in known:
            what = f"key '{key}.{name}'" if key else f"'{name}'"
            raise DseError(f"{where}: {what} is not a layer of the model; valid layers: " + ", ".join(valid))
