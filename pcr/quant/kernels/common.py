"""Shared pieces of the integer kernels: per-step activation tables, code splitting, int32 GEMMs.

The float reference of one output (per-tensor activation step k, per-channel weight channel c):

    y = s_x s_w[c] sum_i (q_x,i - z_x)(q_w,ci - z_w[c]) + b[c]

The kernels compute the sum exactly in int32 from int8 operands (torch._int_mm, oneDNN):

    a  = q_x - o_x   int8; o_x = 128 for asymmetric codes in [0, 2^b - 1], 0 for symmetric
    w' = q_w - o_w   int8; o_w = z_w where q_w - z_w fits int8 (symmetric, or <= 7 bits), else 128
    d_x = o_x - z_x (per step),  d_w = o_w - z_w (per channel, 0 unless 8-bit asymmetric weights)
    sum_i (a + d_x)(w' + d_w) = GEMM(a, w') + corr[k, c] + d_w[c] rowsum(a)
    corr[k, c] = d_x[k] (rowsum(w')[c] + K d_w[c])               precomputed per step, [T, C_out] int32
GEMM + corr is summed in int32; rowsum(a) comes from an extra row of ones in the GEMM weight.

|sum| <= K 255^2 fits int32 for K <= 33025 (int32 wrap-around of the partial sums cancels).
Wide steps (bits > 8, relaxed steps): centered codes c = q_x - z_x split as c = 128 hi + lo with
lo in [0, 127] and hi in int8 (exact up to 14 bits): two GEMMs, combined in float32.
Centered codes are computed as clamp(round(x * (1/s)), q_min - z, q_max - z): the same integers as
torch's fake_quantize (float32 1/s, half-to-even rounding), see pcr/quant/affine.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pcr.quant.bits import qrange

NARROW_MAX_BITS = 8  # activation codes that fit int8 after the o_x shift
WIDE_MAX_BITS = 14  # hi = floor(c / 128) still fits int8
MAX_REDUCTION = 2**31 // 255**2  # K above this may overflow the int32 accumulator
CUDA_ROUTES = False  # True: take every branch CUDA takes on the CPU too (tests; see cuda_routes)


def on_cuda_route(t: Tensor) -> bool:
    """Whether the kernels take their CUDA branches for tensor t: on CUDA, or anywhere inside `cuda_routes()`."""
    return t.is_cuda or CUDA_ROUTES


@contextmanager
def cuda_routes() -> Iterator[None]:
    """Run the CUDA-only branches on the CPU inside the block (the small-M padding of torch._int_mm, im2col
    convolutions, tensor-indexed step tables, torch._scaled_mm for fp8): how tests execute them without a GPU.
    Prepare the layers inside the block too: the conv route is chosen when preparing."""
    global CUDA_ROUTES
    before, CUDA_ROUTES = CUDA_ROUTES, True
    try:
        yield
    finally:
        CUDA_ROUTES = before


class ActSteps(NamedTuple):
    """Per-step activation quantizer as the kernels read it; every field is [T]."""

    scale: Tensor  # f32  s_x
    inv_scale: Tensor  # f32  1 / s_x, as torch's fake_quantize computes it
    lo: Tensor  # f32  q_min - z_x   (clamp bounds of the centered codes)
    hi: Tensor  # f32  q_max - z_x
    dx: Tensor  # f32  o_x - z_x     (a = c - d_x)
    zero_point: Tensor  # int32 z_x + o_u: zero point of uint8 codes (oneDNN), o_u = 128 if symmetric
    narrow: Tensor  # bool  bits <= 8


def act_steps(scale: Tensor, zero_point: Tensor, bits: Tensor | Sequence[int], symmetric: bool) -> ActSteps:
    """The tables of an activation quantizer with per-step scale/zero point/bits [T]."""
    scale = scale.detach().float().reshape(-1)
    z = zero_point.detach().reshape(-1).to(torch.int64)
    bits_list = [int(b) for b in (bits.tolist() if isinstance(bits, Tensor) else bits)]
    q_min = torch.tensor([qrange(b, symmetric)[0] for b in bits_list], dtype=torch.int64, device=scale.device)
    q_max = torch.tensor([qrange(b, symmetric)[1] for b in bits_list], dtype=torch.int64, device=scale.device)
    o_x = 0 if symmetric else 128
    o_u = 128 if symmetric else 0
    return ActSteps(
        scale=scale,
        inv_scale=1.0 / scale,
        lo=(q_min - z).float(),
        hi=(q_max - z).float(),
        dx=(o_x - z).float(),
        zero_point=(z + o_u).to(torch.int32),
        narrow=torch.tensor([b <= NARROW_MAX_BITS for b in bits_list], device=scale.device),
    )


def at(t: Tensor, k: Tensor) -> Tensor:
    """Row k of a per-step table, k a 0-d integer tensor, without reading k on the host.

    Plain `t[k]` turns a 0-d index into a Python int: torch.compile then specializes on its
    value and recompiles for every step. Eager on the CPU it is what we want: one select instead of
    four ops (reading k costs no device sync there; 12% of an int call of the demo UNet).
    """
    if not torch.compiler.is_compiling() and not on_cuda_route(k):
        return t[int(k)]
    return t.index_select(0, k.reshape(1).to(torch.int64)).squeeze(0)


def clamp_(t: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """In-place clamp to 0-d tensor bounds. Eager on the CPU with Python numbers: torch's clamp with
    tensor bounds is not vectorised there (about 10x slower); compiled, inductor fuses either."""
    if not torch.compiler.is_compiling() and not on_cuda_route(lo):
        return t.clamp_(float(lo), float(hi))
    return t.clamp_(lo, hi)


def centered_codes(x: Tensor, inv_scale: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """c = q_x - z_x, as exact integers in float32 (same shape as x); step k's 0-d inv_scale, lo, hi."""
    return clamp_(torch.mul(x.float(), inv_scale).round_(), lo, hi)  # in place on a fresh tensor


def shifted_codes(x: Tensor, inv_scale: Tensor, lo: Tensor, hi: Tensor, dx: Tensor) -> Tensor:
    """a = q_x - o_x = clamp(round(x / s) - d_x, lo - d_x, hi - d_x) as int8 (narrow steps)."""
    return clamp_(torch.mul(x.float(), inv_scale).round_().sub_(dx), lo - dx, hi - dx).to(torch.int8)


def split_wide(c: Tensor) -> tuple[Tensor, Tensor]:
    """c = 128 hi + lo, lo in [0, 127]: (hi, lo) as int8."""
    hi = torch.floor(c * (1.0 / 128))
    return hi.to(torch.int8), (c - 128 * hi).to(torch.int8)


def weight_int8(codes: Tensor, zero_point: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """(w' int8 same shape as codes, d_w [C_out] int32) from per-output-channel codes (axis 0)."""
    z = zero_point.detach().reshape(-1, *([1] * (codes.dim() - 1))).to(torch.int32)
    q = codes.detach().to(torch.int32)
    if symmetric or bits <= 7:  # q_w - z_w in [-(2^b - 1), 2^b - 1] fits int8: no correction term
        return (q - z).to(torch.int8), torch.zeros(codes.shape[0], dtype=torch.int32, device=codes.device)
    return (q - 128).to(torch.int8), (128 - z).reshape(-1).to(torch.int32)


def step_correction(w: Tensor, dzp: Tensor, act: ActSteps, reduction: int) -> Tensor:
    """corr[k, c] = d_x[k] (rowsum(w')[c] + K d_w[c]): [T, C_out] int32. w: [C_out, K] int8."""
    per_channel = w.to(torch.int64).sum(1) + reduction * dzp.to(torch.int64)  # [C_out]
    return (act.dx.to(torch.int64)[:, None] * per_channel[None, :]).to(torch.int32)


def gemm_weight(w: Tensor, weight_zp: bool) -> Tensor:
    """[C8, K8] int8 GEMM operand: w' [C_out, K], then (weight_zp) one row of ones, whose output
    column is rowsum(a) for the d_w term at no extra pass over the activations; zero-padded to
    multiples of 8 (torch._int_mm's rule on CUDA)."""
    if weight_zp:
        w = torch.cat([w, torch.ones_like(w[:1])])
    return pad_to(pad_to(w, 1, 8), 0, 8).contiguous()


def pad_to(t: Tensor, dim: int, multiple: int) -> Tensor:
    """Zero-pad dim of t up to a multiple (no copy when it is one already)."""
    extra = -t.shape[dim] % multiple
    if extra == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [0, extra]
    return F.pad(t, pad)


def int_mm(a: Tensor, w: Tensor) -> Tensor:
    """a [M, K] int8 @ w[N, K]^T int8 -> [M, N] int32, meeting torch._int_mm's shape rules.

    w is stored [N, K] row-major with K and N padded to multiples of 8 (CUDA's rule; on the CPU
    the transposed view is also the fast layout, 8x faster than a contiguous [K, N]). a's K is
    zero-padded to w's; on CUDA M must exceed 16, so small M is padded and cut.
    """
    if a.shape[1] != w.shape[1]:
        a = F.pad(a, (0, w.shape[1] - a.shape[1]))
    m = a.shape[0]
    if on_cuda_route(a) and m <= 16:
        return torch._int_mm(F.pad(a, (0, 0, 0, 17 - m)), w.t())[:m]
    return torch._int_mm(a, w.t())


def rescale(acc: Tensor, c_out: int, scale: Tensor, offset: Tensor, dzp_scale: Tensor | None) -> Tensor:
    """y = acc[:, :C] * scale + offset (+ rowsum ⊗ d_w scale): [M, C_out] float32 in two passes.

    acc: [M, C8] int32 (with corr[k] added) or float32 (column C_out holds rowsum(a) when
    dzp_scale is given); scale = s_x s_w, offset = b, dzp_scale = s_x s_w d_w, all [C_out].
    """
    y = torch.addcmul(offset, acc[:, :c_out], scale)
    if dzp_scale is not None:
        y = y.addr_(acc[:, c_out].float(), dzp_scale)
    return y


def mm_wide(hi: Tensor, lo: Tensor, w: Tensor) -> Tensor:
    """The GEMM of c = 128 hi + lo with w, [M, C8] float32 (exact terms, float sum: no int32 overflow)."""
    return int_mm(hi, w).float().mul_(128).add_(int_mm(lo, w))


def by_width(narrow: Tensor, wide_layer: bool, narrow_fn: Callable, wide_fn: Callable, operands: tuple) -> Tensor:
    """narrow_fn(*operands) on steps with bits <= 8, wide_fn otherwise.

    Layers whose steps are all narrow never branch. Under torch.compile the choice is torch.cond
    (both branches traced once: no recompile when the step changes); in eager a plain `if`.
    """
    if not wide_layer:
        return narrow_fn(*operands)
    if torch.compiler.is_compiling():
        return torch.cond(narrow, narrow_fn, wide_fn, operands)
    return narrow_fn(*operands) if bool(narrow) else wide_fn(*operands)
