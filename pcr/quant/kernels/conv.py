"""Integer Conv2d: oneDNN's u8 x s8 convolution on the CPU, im2col + torch._int_mm elsewhere.

    p, spec = prepare_conv2d(weight_codes, weight_scale, weight_zero_point, act_scale, act_zero_point,
                             act_bits, weight_bits=8, weight_symmetric=False, act_symmetric=False,
                             stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    y = int_conv2d(x, k, p, spec, bias)          # k: 0-d int64 tensor, the sampling step

Routes (benchmarks/README.md, "Integer kernels", has the measurements behind the choice):
- "onednn": torch.ops.onednn.qconv_pointwise.tensor on a weight prepacked once by
  torch.ops.onednn.qconv_prepack (an opaque mkldnn tensor: register it as a non-persistent buffer
  and prepare after moving the layer to its device). Scale and zero point are tensors, so step k
  is read in the graph; oneDNN pads with the zero point, i.e. with x_hat = 0 as F.conv2d does.
  oneDNN ignores weight zero points: 8-bit asymmetric weights carry s_x s_w d_w * boxsum(c).
- "im2col": windows of int8 codes in NHWC order (kh, kw, C innermost), one torch._int_mm per group;
  padding is applied to the centered codes (c = 0 is x_hat = 0) before the int8 shift.
Wide steps (bits > 8): c = 128 hi + lo, two convolutions (see common.py).
The output is channels_last-strided (both routes produce NHWC); values are those of F.conv2d.
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
    mm_narrow,
    mm_wide,
    pad_to,
    split_wide,
    step_correction,
    weight_int8,
)

Pair = tuple[int, int]


class IntConv2dParams(NamedTuple):
    weight: Tensor  # onednn: prepacked mkldnn tensor; im2col: [C_out, K8] int8, K = (kh, kw, C_in/groups)
    weight_scale: Tensor  # [C_out] f32
    weight_dzp: Tensor  # [C_out] int32 d_w (0 unless 8-bit asymmetric weights)
    corr: Tensor  # [T, C_out] int32 (im2col route; [T, 0] for onednn)
    act_scale: Tensor  # [T] f32
    act_inv_scale: Tensor  # [T] f32
    act_lo: Tensor  # [T] f32
    act_hi: Tensor  # [T] f32
    act_dx: Tensor  # [T] f32 o_x - z_x
    act_zero_point: Tensor  # [T] int32 zero point of the uint8 codes oneDNN reads
    act_narrow: Tensor  # [T] bool


@dataclass(frozen=True)
class IntConv2dSpec:
    route: str  # "onednn" | "im2col"
    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair
    padding: Pair  # applied by the kernel (zeros); 0 when pre_pad is used
    dilation: Pair
    groups: int
    pre_pad: tuple[int, int, int, int] | None  # F.pad of x for padding_mode != "zeros"
    padding_mode: str
    weight_zp: bool
    wide: bool


def _pair(v) -> Pair:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv_prepack")


def prepare_conv2d(weight_codes: Tensor, weight_scale: Tensor, weight_zero_point: Tensor, act_scale: Tensor,
                   act_zero_point: Tensor, act_bits: Tensor, *, weight_bits: int, weight_symmetric: bool,
                   act_symmetric: bool, stride=1, padding=0, dilation=1, groups: int = 1,
                   padding_mode: str = "zeros", route: str | None = None) -> tuple[IntConv2dParams, IntConv2dSpec]:
    """Everything int_conv2d needs, from codes [C_out, C_in/groups, kh, kw] (unpacked) and per-step tables [T]."""
    c_out, cg, kh, kw = weight_codes.shape
    dev = weight_codes.device
    if route is None:
        route = "onednn" if dev.type == "cpu" and onednn_available() else "im2col"
    stride, dilation = _pair(stride), _pair(dilation)
    if isinstance(padding, str):  # "valid" / "same" (odd effective kernels: int_supported checks)
        padding = (0, 0) if padding == "valid" else (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    padding = _pair(padding)
    pre_pad = None
    if padding_mode != "zeros":  # reflect/replicate/circular: pad x itself (codes are elementwise)
        pre_pad, padding = (padding[1], padding[1], padding[0], padding[0]), (0, 0)
    w, dzp = weight_int8(weight_codes, weight_zero_point, weight_bits, weight_symmetric)
    act = act_steps(act_scale.to(dev), act_zero_point.to(dev), act_bits, act_symmetric)
    w_scale = weight_scale.detach().float().reshape(-1).to(dev)
    if route == "onednn":
        packed = torch.ops.onednn.qconv_prepack(w.contiguous(), w_scale, float(act.scale[0]), int(act.zero_point[0]),
                                                list(stride), list(padding), list(dilation), groups,
                                                [1, cg * groups, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1])
        weight, corr = packed, torch.zeros(act.scale.numel(), 0, dtype=torch.int32, device=dev)
    elif route == "im2col":
        weight = pad_to(w.permute(0, 2, 3, 1).reshape(c_out, kh * kw * cg), 1, 8).contiguous()
        corr = step_correction(weight, dzp, act, kh * kw * cg)
    else:
        raise ValueError(f"route={route!r}: use 'onednn' or 'im2col'")
    params = IntConv2dParams(weight, w_scale, dzp, corr, act.scale, act.inv_scale, act.lo, act.hi, act.dx,
                             act.zero_point, act.narrow)
    wide = any(int(b) > NARROW_MAX_BITS for b in act_bits)
    spec = IntConv2dSpec(route, cg * groups, c_out, (kh, kw), stride, padding, dilation, groups, pre_pad,
                         padding_mode, weight_zp=bool(dzp.any()), wide=wide)
    return params, spec


def int_conv2d(x: Tensor, k: Tensor, p: IntConv2dParams, spec: IntConv2dSpec, bias: Tensor | None = None) -> Tensor:
    """F.conv2d(fake-quantized x at step k, W_hat, bias, ...) on integer codes. x: [N, C_in, H, W]."""
    if spec.pre_pad is not None:
        x = F.pad(x, spec.pre_pad, mode=spec.padding_mode)
    c = centered_codes(x, at(p.act_inv_scale, k), at(p.act_lo, k), at(p.act_hi, k))  # [N, C_in, H, W]
    y = (_onednn if spec.route == "onednn" else _im2col)(c, k, p, spec)
    if spec.route == "onednn" and spec.weight_zp:
        y = y + _zero_point_term(c, at(p.act_scale, k) * p.weight_scale * p.weight_dzp, spec)
    if bias is not None:
        y = y + bias.float().reshape(1, -1, 1, 1)
    return y.to(x.dtype)


def _qconv(u: Tensor, scale: Tensor, zp: Tensor, w: Tensor, w_scale: Tensor, stride: list[int],
           padding: list[int], dilation: list[int], groups: int) -> Tensor:
    u = u.contiguous(memory_format=torch.channels_last)  # here, not in the graph: inductor mislays it in cond
    return torch.ops.onednn.qconv_pointwise.tensor(
        u, scale, zp, w, w_scale, torch.zeros_like(w_scale, dtype=torch.int32), None, stride, padding, dilation,
        groups, 1.0, 0, torch.float32, "none", [], "")


@torch.library.custom_op("pcr::onednn_qconv2d", mutates_args=())
def onednn_qconv2d(u: Tensor, scale: Tensor, zp: Tensor, w: Tensor, w_scale: Tensor, stride: list[int],
                   padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """oneDNN u8 x s8 conv with float32 output: s_x s_w sum (u - zp) w'. One opaque op for inductor.

    Called directly, inductor's x86 quantization lowering of onednn.qconv_pointwise fails inside
    torch.cond subgraphs (it asserts a float x_scale); wrapped, it is an extern call in both cases.
    """
    return _qconv(u, scale, zp, w, w_scale, stride, padding, dilation, groups)


onednn_qconv2d.register_fake(_qconv)  # onednn's op has meta kernels: the fake is the same call


def _onednn(c: Tensor, k: Tensor, p: IntConv2dParams, spec: IntConv2dSpec) -> Tensor:
    s = spec

    def conv(u: Tensor, scale: Tensor, zp: Tensor, w: Tensor, w_scale: Tensor) -> Tensor:
        return onednn_qconv2d(u.to(torch.uint8), scale, zp, w, w_scale, list(s.stride), list(s.padding), list(s.dilation), s.groups)

    shape = c.shape  # c enters torch.cond flat: inductor may give a 4-d operand another layout than the branch expects

    def narrow(c, scale, zp, w, w_scale, zp_lo, zp_hi):  # u = q + o_u, zero point z + o_u
        c = c.view(shape)
        return conv(c + zp, scale, zp, w, w_scale)

    def wide(c, scale, zp, w, w_scale, zp_lo, zp_hi):  # lo: zero point 0; hi + 128: zero point 128
        hi, lo = split_wide(c.view(shape))  # (x_scale stays an input: inductor's lowering wants no computed scale)
        return conv(lo, scale, zp_lo, w, w_scale) + 128 * conv(hi + 128, scale, zp_hi, w, w_scale)

    zp_k = at(p.act_zero_point, k)
    operands = (c.reshape(-1), at(p.act_scale, k), zp_k, p.weight, p.weight_scale, zp_k.new_zeros(()), zp_k.new_full((), 128))
    return by_width(at(p.act_narrow, k), s.wide, narrow, wide, operands)


def _zero_point_term(c: Tensor, coef: Tensor, s: IntConv2dSpec) -> Tensor:
    """coef[o] * sum over o's receptive field of the centered codes: [N, C_out, Ho, Wo]."""
    n, _, h, w = c.shape
    g = s.groups
    chan = c.reshape(n, g, -1, h, w).sum(2)  # [N, G, H, W], exact integers (< 2^24)
    if s.dilation == (1, 1):  # a window sum; no conv in the graph (inductor's layout optimization
        box = F.avg_pool2d(chan, s.kernel_size, s.stride, s.padding, divisor_override=1)  # would mislay c)
    else:
        box = F.conv2d(chan, c.new_ones(g, 1, *s.kernel_size), None, s.stride, s.padding, s.dilation, g)
    return (box.unsqueeze(2) * coef.reshape(1, g, -1, 1, 1)).flatten(1, 2)


def _windows(v: Tensor, s: IntConv2dSpec) -> tuple[Tensor, int, int]:
    """[N, C, Hp, Wp] (padded, int8) -> [N, Ho, Wo, kh, kw, C] view of its NHWC copy."""
    (kh, kw), (sh, sw), (dh, dw) = s.kernel_size, s.stride, s.dilation
    v = v.permute(0, 2, 3, 1).contiguous()
    win = v.unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)  # [N, Ho, Wo, C, ekh, ekw]
    win = win[..., ::dh, ::dw].permute(0, 1, 2, 4, 5, 3)
    return win, win.shape[1], win.shape[2]


def _im2col(c: Tensor, k: Tensor, p: IntConv2dParams, s: IntConv2dSpec) -> Tensor:
    ph, pw = s.padding
    c = F.pad(c, (pw, pw, ph, ph))  # centered code 0 = x_hat 0
    n, g = c.shape[0], s.groups
    cg, og = s.in_channels // g, s.out_channels // g

    def cols(v: Tensor):  # int8 [N, C, Hp, Wp] -> per group [M, kh*kw*Cg]
        win, ho, wo = _windows(v, s)
        return [win[..., i * cg:(i + 1) * cg].reshape(n * ho * wo, -1) for i in range(g)], ho, wo

    shape = c.shape  # flat through torch.cond, as in _onednn

    def narrow(c, w, corr_k, dzp, dx):
        a, _, _ = cols((c.view(shape) - dx).to(torch.int8))
        return torch.cat([mm_narrow(a[i], w[i * og:(i + 1) * og], corr_k[i * og:(i + 1) * og],
                                    dzp[i * og:(i + 1) * og], s.weight_zp).float() for i in range(g)], 1)

    def wide(c, w, corr_k, dzp, dx):
        hi, lo = split_wide(c.view(shape))
        h, _, _ = cols(hi.to(torch.int8))
        lo_, _, _ = cols(lo.to(torch.int8))
        return torch.cat([mm_wide(h[i], lo_[i], w[i * og:(i + 1) * og], dzp[i * og:(i + 1) * og], s.weight_zp)
                          for i in range(g)], 1)

    (kh, kw), (sh, sw), (dh, dw) = s.kernel_size, s.stride, s.dilation
    ho = (c.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (c.shape[3] - dw * (kw - 1) - 1) // sw + 1
    acc = by_width(at(p.act_narrow, k), s.wide, narrow, wide, (c.reshape(-1), p.weight, at(p.corr, k), p.weight_dzp, at(p.act_dx, k)))
    y = acc * (at(p.act_scale, k) * p.weight_scale)
    return y.reshape(n, ho, wo, s.out_channels).permute(0, 3, 1, 2)
