"""Uniform affine quantization: integer codes plus (scale, zero point).

    q     = clamp(round(x / s) + z, q_min, q_max)        (codes)
    x_hat = (q - z) * s                                  (dequantized)

Asymmetric b-bit codes live in [0, 2^b - 1]; symmetric codes in [-2^(b-1), 2^(b-1) - 1] with z = 0.
Rounding is half-to-even and 1/s is taken in float32 first, exactly as torch's own
`fake_quantize_per_*_affine` kernels do, so both agree bit for bit.
Per-tensor parameters are 0-d tensors; per-channel parameters have shape [C] along `axis`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pcr.quant.bits import MAX_BITS, MIN_BITS, check_bits, qrange  # noqa: F401 (re-exported)

SCALE_EPS = 1e-8  # smallest scale: keeps a constant (all-zero) tensor from dividing by zero


def code_dtype(bits: int, symmetric: bool) -> torch.dtype:
    """Smallest integer dtype that holds every code (uint8/int8 up to 8 bits, int32/int16 above)."""
    check_bits(bits)
    if bits <= 8:
        return torch.int8 if symmetric else torch.uint8
    return torch.int16 if symmetric else torch.int32  # torch has no uint16 arithmetic on every backend


def _expand(p: Tensor, x: Tensor, axis: int | None) -> Tensor:
    if axis is None or p.dim() == 0:
        return p
    shape = [1] * x.dim()
    shape[axis] = -1
    return p.reshape(shape)


def params_from_range(lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """(scale, zero_point) covering [lo, hi]; the range is widened to hold 0 so that 0 is exact.

    lo, hi: float tensors of one shape ([] per tensor or [C] per channel). zero_point is int32.
    """
    q_min, q_max = qrange(bits, symmetric)
    lo = torch.minimum(lo.float(), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.float(), torch.zeros_like(hi, dtype=torch.float32))
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = (amax / ((q_max - q_min) / 2)).clamp_min(SCALE_EPS)
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    scale = ((hi - lo) / (q_max - q_min)).clamp_min(SCALE_EPS)
    zero_point = (q_min - torch.round(lo / scale)).clamp(q_min, q_max).to(torch.int32)
    return scale, zero_point


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, bits: int, symmetric: bool, axis: int | None = None) -> Tensor:
    """Integer codes of x, in `code_dtype(bits, symmetric)`."""
    q_min, q_max = qrange(bits, symmetric)
    inv_scale = 1.0 / _expand(scale.float(), x, axis)
    q = torch.round(x.float() * inv_scale) + _expand(zero_point, x, axis).float()
    return q.clamp_(q_min, q_max).to(code_dtype(bits, symmetric))


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None = None) -> Tensor:
    """x_hat = (q - z) * s, in float32."""
    return (q.float() - _expand(zero_point, q, axis).float()) * _expand(scale.float(), q, axis)


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, bits: int, symmetric: bool, axis: int | None = None) -> Tensor:
    """dequantize(quantize(x)), through torch's fused kernels; same dtype as x."""
    q_min, q_max = qrange(bits, symmetric)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(1).float(), zero_point.reshape(1).int(), q_min, q_max)
    return torch.fake_quantize_per_channel_affine(x, scale.float(), zero_point.int(), axis, q_min, q_max)


def fake_quantize_at(x: Tensor, s: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """x_hat = clamp(round(x / s), q_min - z, q_max - z) * s, in float32: four vectorised ops.

    Equal to (clamp(round(x/s) + z, q_min, q_max) - z) * s for codes below 2^24, and bit for bit what
    torch's fake_quantize_per_tensor_affine gives (the same float32 1/s, the same half-to-even rounding).
    s: [1]; lo, hi: [1] tensors or Python ints.
    """
    return torch.mul(x.float(), 1.0 / s).round_().clamp_(lo, hi).mul_(s)
