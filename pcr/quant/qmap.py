"""The quantization map (qconfig.json): which layers are quantized, how, and for how many steps.

Plain Python and JSON, so stages that only read it (relax) import neither torch nor diffusers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcr.errors import StoreError

FORMAT_VERSION = 3  # 3: the output layer's per-step correction (output_correction); 2: integer codes, per-step rows
READABLE_VERSIONS = (2, 3)  # a version-2 map is a version-3 map without output correction


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
    output_correction: str | None = None  # the float output layer turned into a StepAffineConv2d (the objective's fit)
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
        if version not in READABLE_VERSIONS:
            raise StoreError(f"quantization map format_version={version!r} is not supported: this pcr reads "
                             f"{list(READABLE_VERSIONS)}")
        try:
            d["layers"] = {k: LayerQuant(**v) for k, v in d["layers"].items()}
            return cls(**{**d, "format_version": FORMAT_VERSION})
        except TypeError as e:
            raise StoreError(f"quantization map does not fit format_version={version}: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> QuantMap:
        return cls.from_json(Path(path).read_text())
