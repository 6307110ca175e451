"""FP8 E4M3 codes with a scale (no zero point): the `fp8` quantization format.

    q     = e4m3(clamp(x / s, -448, 448))                 (codes, torch.float8_e4m3fn, 1 byte)
    x_hat = float(q) * s                                  (dequantized)
    s     = amax / 448,  amax = max(-lo, hi)              (the range [lo, hi] maps onto E4M3's largest value)

Activations: one s per tensor and sampling step, from the calibrated range (the same observers and
sweep as the integer format). Weights: one s per output channel. The cast rounds to nearest even;
the clamp comes first because E4M3 (`fn`: no infinities) turns anything past 448 into NaN.
x / s is a true division, in float32, in the fake quantizer and in every kernel alike, so both see the
same codes. Relaxed steps (bits > 8) are not quantized in this format: they run at the model's float
precision (float32 here, bf16/fp16 on a GPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pcr.config import QUANT_FORMATS as FORMATS  # noqa: F401 (re-exported: the names params check)
from pcr.quant.affine import _expand

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # largest finite E4M3 value
FP8_BITS = 8  # a step at these bits runs E4M3 activations; relaxed steps (more bits) run unquantized
SCALE_EPS = 1e-8  # as pcr.quant.affine: a constant tensor must not divide by zero
EXACT_INT_BITS = 4  # integer weight codes q - z of at most 4 bits (|q - z| <= 15) are exact E4M3 values


def check_format(fmt: str, what: str = "format") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"{what}={fmt!r} is not allowed: choose one of {list(FORMATS)}")
    return fmt


def params_from_range(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """(scale, zero point = 0 int32) of [lo, hi] ([] or [C]): s = max(-lo, hi) / 448."""
    amax = torch.maximum(-lo.float(), hi.float()).clamp_min(0)
    scale = (amax / E4M3_MAX).clamp_min(SCALE_EPS)
    return scale, torch.zeros_like(scale, dtype=torch.int32)


def quantize(x: Tensor, scale: Tensor, axis: int | None = None) -> Tensor:
    """E4M3 codes of x (float8_e4m3fn, x's shape); scale per tensor or per channel along `axis`."""
    return torch.div(x.float(), _expand(scale.float(), x, axis)).clamp_(-E4M3_MAX, E4M3_MAX).to(E4M3)


def dequantize(q: Tensor, scale: Tensor, axis: int | None = None) -> Tensor:
    """x_hat = q * s, in float32."""
    return q.float() * _expand(scale.float(), q, axis)


def fake_quantize(x: Tensor, scale: Tensor, axis: int | None = None) -> Tensor:
    """dequantize(quantize(x)), in x's dtype."""
    return dequantize(quantize(x, scale, axis), scale, axis).to(x.dtype)

