"""The quantization map (qconfig.json): which layers are quantized, how, and for how many steps.

Plain Python and JSON, so stages that only read it (relax) import neither torch nor diffusers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pcr.errors import StoreError

FORMAT_VERSION = 3  # 3: layers name their format (int | fp8) and the map may name a corrected output layer
READS = (2, 3)  # 2: int layers, no output correction (read as version 3)


@dataclass(frozen=True)
class LayerQuant:
    kind: str  # "QConv2d" | "QLinear"
    weight_bits: int
    weight_symmetric: bool
    act_bits: int
    act_symmetric: bool
    format: str = "int"  # int | fp8 (pcr.quant.float8); version 2 maps have int layers only

    @property
    def fp8_weights(self) -> bool:
        """Weights stored as E4M3 codes: 8-bit weights of the fp8 format (fewer bits stay integer codes)."""
        return self.format == "fp8" and self.weight_bits == 8


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
        if version not in READS:
            raise StoreError(f"quantization map format_version={version!r} is not supported: this pcr reads {list(READS)}")
        try:
            d["layers"] = {k: LayerQuant(**v) for k, v in d["layers"].items()}
            return cls(**{**d, "format_version": FORMAT_VERSION})  # read as the current version
        except TypeError as e:
            raise StoreError(f"quantization map does not fit format_version={version}: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> QuantMap:
        return cls.from_json(Path(path).read_text())
