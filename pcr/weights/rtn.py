"""Round to nearest: q = clamp(round(W / s) + z), per output channel, s and z from the weight observer's range.

In the fp8 format 8-bit weights are E4M3 codes instead, s = amax / 448 of the same range (pcr.quant.float8).
Exactly what `QModuleMixin.set_weight` applies (dequantize(rtn(...)) equals its W_hat bit for
bit); AdaRound starts from the same s and z.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pcr.quant import float8
from pcr.quant.affine import params_from_range, quantize
from pcr.quant.observers import get_observer
from pcr.weights.codes import WeightCodes


def weight_params(w: Tensor, bits: int, symmetric: bool, observer: str) -> tuple[Tensor, Tensor]:
    """Per-output-channel (scale [C_out], zero point [C_out] int32) of w [C_out, ...]."""
    lo, hi = get_observer(observer).weight_range(w, bits, symmetric)
    return params_from_range(lo, hi, bits, symmetric)


@torch.no_grad()
def rtn(w: Tensor, bits: int, symmetric: bool, observer: str, fmt: str = "int") -> WeightCodes:
    w = w.detach().float()
    if fmt == "fp8" and bits == float8.FP8_BITS:
        scale, zero_point = float8.params_from_range(*get_observer(observer).weight_range(w, bits, symmetric))
        return WeightCodes(float8.quantize(w, scale.to(w.device), axis=0).cpu(), scale.cpu(), zero_point.cpu(), bits, symmetric, "fp8")
    scale, zero_point = weight_params(w, bits, symmetric, observer)
    codes = quantize(w, scale.to(w.device), zero_point.to(w.device), bits, symmetric, axis=0)
    return WeightCodes(codes.cpu(), scale.cpu(), zero_point.cpu(), bits, symmetric)
