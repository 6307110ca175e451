"""The quantization map (qconfig.json): which layers are quantized, how, and for how many steps.

Plain Python and JSON, so stages that only read it (relax) import neither torch nor diffusers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcr.errors import StoreError

FORMAT_VERSION = 2  # 2: weights as packed integer codes in state_dict, per-step rows read through the step counter


@dataclass(frozen=True)
class LayerQuant:
    kind: str  # "QConv2d" | "QLinear"
    weight_bits: int
    weight_symmetric: bool
    act_bits: int
    act_symmetric: bool


@dataclass(frozen=True)
class QuantMap:
    """Everything needed to rebuild a quantized UNet from its float twin, as JSON."""

    num_steps: int
    weight_observer: str
    act_observer: str
    layers: dict[str, LayerQuant]
    format_version: int = FORMAT_VERSION
    meta: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> QuantMap:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise StoreError("a quantization map is a JSON object")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(f"quantization map format_version={version!r} is not supported: this pcr reads {FORMAT_VERSION}")
        d["layers"] = {k: LayerQuant(**v) for k, v in d["layers"].items()}
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> QuantMap:
        return cls.from_json(Path(path).read_text())
