"""Integer Linear: y = s_x s_w (int32 GEMM of activation and weight codes + correction) + b.

    p, spec = prepare_linear(weight_codes, weight_scale, weight_zero_point, act_scale, act_zero_point,
                             act_bits, weight_bits=8, weight_symmetric=False, act_symmetric=False)
    y = int_linear(x, k, p, spec, bias)          # k: 0-d int64 tensor, the sampling step

`p` holds tensors only (register them as buffers, e.g. `p._asdict()`), `spec` the static facts.
Step k reads row k of every per-step table, so one torch.compile graph serves every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pcr.quant.kernels.common import (
    NARROW_MAX_BITS,
    act_steps,
    at,
    by_width,
    centered_codes,
    gemm_weight,
    int_mm,
    mm_wide,
    rescale,
    shifted_codes,
    split_wide,
    step_correction,
    weight_int8,
)


class IntLinearParams(NamedTuple):
    """Tensors of an integer Linear (C8: C_out (+1 ones row) and K8: in_features padded to multiples of 8)."""

    weight: Tensor  # [C8, K8] int8  w' = q_w - o_w (then a row of ones when spec.weight_zp)
    weight_scale: Tensor  # [C_out] f32  s_w
    weight_dzp: Tensor  # [C_out] f32 d_w = o_w - z_w (0 unless 8-bit asymmetric weights)
    corr: Tensor  # [T, C8] int32 d_x[k] (rowsum(w') + K d_w), 0 past C_out
    act_scale: Tensor  # [T] f32
    act_inv_scale: Tensor  # [T] f32
    act_lo: Tensor  # [T] f32 q_min - z_x
    act_hi: Tensor  # [T] f32 q_max - z_x
    act_dx: Tensor  # [T] f32 o_x - z_x
    act_narrow: Tensor  # [T] bool bits <= 8


@dataclass(frozen=True)
class IntLinearSpec:
    in_features: int
    out_features: int
    weight_zp: bool  # carry the d_w * rowsum(a) term (8-bit asymmetric weights)
    wide: bool  # some step has bits > 8: torch.cond per step


def prepare_linear(weight_codes: Tensor, weight_scale: Tensor, weight_zero_point: Tensor, act_scale: Tensor,
                   act_zero_point: Tensor, act_bits: Tensor, *, weight_bits: int, weight_symmetric: bool,
                   act_symmetric: bool) -> tuple[IntLinearParams, IntLinearSpec]:
    """Everything int_linear needs, from the layer's codes [C_out, K] (unpacked) and per-step tables [T]."""
    c_out, k_in = weight_codes.shape
    w, dzp = weight_int8(weight_codes, weight_zero_point, weight_bits, weight_symmetric)
    weight_zp = bool(dzp.any())
    act = act_steps(act_scale.to(w.device), act_zero_point.to(w.device), act_bits, act_symmetric)
    weight = gemm_weight(w, weight_zp)
    corr = step_correction(w, dzp, act, k_in)
    params = IntLinearParams(
        weight=weight,
        weight_scale=weight_scale.detach().float().reshape(-1).to(w.device),
        weight_dzp=dzp.float(),
        corr=F.pad(corr, (0, weight.shape[0] - c_out)),  # added in int32: exact
        act_scale=act.scale,
        act_inv_scale=act.inv_scale,
        act_lo=act.lo,
        act_hi=act.hi,
        act_dx=act.dx,
        act_narrow=act.narrow,
    )
    wide = any(int(b) > NARROW_MAX_BITS for b in act_bits)
    return params, IntLinearSpec(k_in, c_out, weight_zp=weight_zp, wide=wide)


def int_linear(x: Tensor, k: Tensor, p: IntLinearParams, spec: IntLinearSpec, bias: Tensor | None = None) -> Tensor:
    """F.linear(fake-quantized x at step k, W_hat, bias) on integer codes. x: [..., K] -> [..., C_out]."""
    lead, c_out = x.shape[:-1], spec.out_features
    scale = at(p.act_scale, k) * p.weight_scale  # [C_out] s_x s_w
    b = bias.float() if bias is not None else torch.zeros_like(scale)
    dzp_scale = scale * p.weight_dzp if spec.weight_zp else None
    inv, lo, hi, dx = at(p.act_inv_scale, k), at(p.act_lo, k), at(p.act_hi, k), at(p.act_dx, k)

    def narrow(x2, w, scale, b, corr_k):
        a = shifted_codes(x2, inv, lo, hi, dx)
        return rescale(int_mm(a, w).add_(corr_k), c_out, scale, b, dzp_scale)

    def wide(x2, w, scale, b, corr_k):  # centered codes: no d_x correction
        hi8, lo8 = split_wide(centered_codes(x2, inv, lo, hi))
        return rescale(mm_wide(hi8, lo8, w), c_out, scale, b, dzp_scale)

    operands = (x.reshape(-1, spec.in_features), p.weight, scale, b, at(p.corr, k))
    y = by_width(at(p.act_narrow, k), spec.wide, narrow, wide, operands)
    return y.reshape(*lead, c_out).to(x.dtype)
