"""Quantized weights as integer codes: `WeightCodes`, and weights.safetensors, the `weights` stage's output.

    W_hat = (q - z) * s       q [C_out, ...] integer codes, s [C_out] float32, z [C_out] int32
    W_hat = q * s             q [C_out, ...] E4M3 codes (float8_e4m3fn) of 8-bit weights in the fp8 format, z = 0

weights.safetensors holds, per quantized layer, `<name>.weight_codes` (uint8 asymmetric / int8 symmetric up
to 8 bits, code_dtype above), `<name>.weight_scale`, `<name>.weight_zero_point`; its metadata key `pcr_weights`
is JSON: format_version, method, settings, and each layer's bits and symmetry (and "format": "fp8" for E4M3 codes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from pcr.errors import StoreError
from pcr.quant.affine import code_dtype, dequantize, qrange
from pcr.quant.float8 import E4M3

FORMAT_VERSION = 1
META_KEY = "pcr_weights"


@dataclass(frozen=True)
class WeightCodes:
    codes: Tensor  # [C_out, ...] integers in qrange(bits, symmetric), code_dtype(bits, symmetric)
    scale: Tensor  # [C_out] float32
    zero_point: Tensor  # [C_out] int32
    bits: int
    symmetric: bool
    format: str = "int"  # int | fp8 (E4M3 codes, zero point 0)

    def __post_init__(self):
        if self.format == "fp8":
            if self.codes.dtype != E4M3 or self.bits != 8:
                raise ValueError(f"fp8 weight codes are 8-bit {E4M3}, got {self.bits}-bit {self.codes.dtype}")
        elif self.codes.dtype != code_dtype(self.bits, self.symmetric):
            raise ValueError(f"codes are {self.codes.dtype}, {self.bits}-bit {'symmetric' if self.symmetric else 'asymmetric'} codes are {code_dtype(self.bits, self.symmetric)}")
        if self.scale.shape != (self.codes.shape[0],) or self.zero_point.shape != self.scale.shape:
            raise ValueError(f"scale {tuple(self.scale.shape)} and zero point {tuple(self.zero_point.shape)} must be [C_out={self.codes.shape[0]}]")

    def dequantize(self) -> Tensor:
        """W_hat [C_out, ...] float32."""
        return dequantize(self.codes, self.scale, self.zero_point, axis=0)

    def check_range(self) -> None:
        if self.format == "fp8":
            if not bool(self.codes.float().isfinite().all()):
                raise ValueError("E4M3 codes hold NaN")
            return
        q_min, q_max = qrange(self.bits, self.symmetric)
        lo, hi = int(self.codes.min()), int(self.codes.max())
        if lo < q_min or hi > q_max:
            raise ValueError(f"codes span [{lo}, {hi}], outside the {self.bits}-bit range [{q_min}, {q_max}]")


def save_weights(path: str | Path, weights: dict[str, WeightCodes], method: str, settings: dict) -> None:
    tensors, layers = {}, {}
    for name, w in weights.items():
        tensors[f"{name}.weight_codes"] = w.codes.contiguous().cpu()
        tensors[f"{name}.weight_scale"] = w.scale.float().contiguous().cpu()
        tensors[f"{name}.weight_zero_point"] = w.zero_point.to(torch.int32).contiguous().cpu()
        layers[name] = {"bits": w.bits, "symmetric": w.symmetric, **({"format": w.format} if w.format != "int" else {})}
    meta = {"format_version": FORMAT_VERSION, "method": method, "settings": settings, "layers": layers}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def read_metadata(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"weights file {str(p)!r} does not exist: run the weights stage (pcr weights)")
    with safe_open(str(p), framework="pt") as f:
        raw = (f.metadata() or {}).get(META_KEY)
    if raw is None:
        raise StoreError(f"{str(p)!r} is not a pcr weights file (no {META_KEY!r} metadata)")
    meta = json.loads(raw)
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"weights file {str(p)!r} has format_version={meta.get('format_version')!r}; this pcr reads {FORMAT_VERSION}")
    return meta


def load_weights(path: str | Path) -> dict[str, WeightCodes]:
    """Layer name -> its WeightCodes, as the weights stage wrote them (metadata: `read_metadata`)."""
    meta = read_metadata(path)
    t = load_file(str(path))
    return {
        name: WeightCodes(t[f"{name}.weight_codes"], t[f"{name}.weight_scale"], t[f"{name}.weight_zero_point"], spec["bits"],
                          spec["symmetric"], spec.get("format", "int"))
        for name, spec in meta["layers"].items()
    }
