"""Layer states for the integer-kernel tests, and the fake-quantized reference built from torch's own kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pcr.quant.affine import params_from_range, quantize
from pcr.quant.bits import qrange

STEP_BITS = (8, 10, 6)  # a relaxed 10-bit step between two ordinary ones


def weight_state(w: torch.Tensor, bits: int, symmetric: bool):
    """(codes, scale [C_out], zero_point [C_out]) per output channel, as the quantized layers hold them."""
    flat = w.flatten(1)
    scale, zp = params_from_range(flat.amin(1), flat.amax(1), bits, symmetric)
    return quantize(w, scale, zp, bits, symmetric, axis=0), scale, zp


def act_state(bits=STEP_BITS, symmetric: bool = False, seed: int = 0):
    """Per-step (scale [T], zero_point [T] int32, bits [T] int32) from a different range per step."""
    g = torch.Generator().manual_seed(seed)
    scales, zps = [], []
    for b in bits:
        lo, hi = -1 - 3 * torch.rand((), generator=g), 1 + 3 * torch.rand((), generator=g)
        s, z = params_from_range(lo, hi, b, symmetric)
        scales.append(s)
        zps.append(z)
    return torch.stack(scales), torch.stack(zps), torch.tensor(bits, dtype=torch.int32)


def fake_inputs(x, w, w_scale, w_zp, w_bits, w_sym, a_scale, a_zp, a_bits, a_sym, k):
    """(x_hat, W_hat) of step k through torch.fake_quantize_per_tensor_affine / _per_channel_affine."""
    x_hat = torch.fake_quantize_per_tensor_affine(x, a_scale[k:k + 1], a_zp[k:k + 1], *qrange(int(a_bits[k]), a_sym))
    w_hat = torch.fake_quantize_per_channel_affine(w, w_scale, w_zp, 0, *qrange(w_bits, w_sym))
    return x_hat, w_hat


def assert_agrees(y: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal up to float accumulation order: 1e-5 of the output's magnitude (one code off is ~1e-3)."""
    assert y.shape == ref.shape and y.dtype == ref.dtype
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def linear_ref(x, w, b, **q):
    x_hat, w_hat = fake_inputs(x, w, **q)
    return F.linear(x_hat, w_hat, b)
