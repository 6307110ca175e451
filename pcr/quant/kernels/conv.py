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
  oneDNN ignores weight zero points: for 8-bit asymmetric weights each group gets one more output
  channel of ones, whose output is s_x * (window sum of the centered codes), times s_w d_w.
- "im2col": windows of int8 codes in NHWC order (kh, kw, C innermost), one torch._int_mm per group;
  x is zero-padded before quantization (code of 0 is z_x: x_hat = 0); rows of ones as in Linear.
Wide steps (bits > 8): c = 128 hi + lo, two convolutions (see common.py).
The output is channels_last-strided (both routes produce NHWC); values are those of F.conv2d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pcr.quant.kernels import common
from pcr.quant.kernels.common import (
    NARROW_MAX_BITS,
    act_steps,
    at,
    by_width,
    centered_codes,
    clamp_,
    gemm_weight,
    int_mm,
    mm_wide,
    rescale,
    shifted_codes,
    split_wide,
    step_correction,
    weight_int8,
)

Pair = tuple[int, int]


class IntConv2dParams(NamedTuple):
    weight: Tensor  # onednn: prepacked mkldnn tensor [G (Og + zp), Cg, kh, kw]; im2col: [G, Og8, K8] int8, K = (kh, kw, Cg)
    weight_scale: Tensor  # onednn: [G (Og + zp)] f32 as the op reads it (1 on ones channels); im2col: [C_out]
    zp_scale: Tensor  # [C_out] f32 s_w d_w (0 unless 8-bit asymmetric weights)
    corr: Tensor  # [T, G, Og8] int32, 0 past Og (im2col route; [T, 0] for onednn)
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
    g, og, dev = groups, c_out // groups, weight_codes.device
    if route is None:
        route = "onednn" if dev.type == "cpu" and onednn_available() and not common.CUDA_ROUTES else "im2col"
    stride, dilation = _pair(stride), _pair(dilation)
    if isinstance(padding, str):  # "valid" / "same" (odd effective kernels: int_supported checks)
        padding = (0, 0) if padding == "valid" else (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    padding = _pair(padding)
    pre_pad = None
    if padding_mode != "zeros":  # reflect/replicate/circular: pad x itself (codes are elementwise)
        pre_pad, padding = (padding[1], padding[1], padding[0], padding[0]), (0, 0)
    w, dzp = weight_int8(weight_codes, weight_zero_point, weight_bits, weight_symmetric)
    weight_zp = bool(dzp.any())
    act = act_steps(act_scale.to(dev), act_zero_point.to(dev), act_bits, act_symmetric)
    w_scale = weight_scale.detach().float().reshape(-1).to(dev)
    if route == "onednn":
        w_op, s_op = w, w_scale
        if weight_zp:  # one channel of ones per group: its output is s_x * window sum of the centered codes
            w_op = torch.cat([w.reshape(g, og, cg, kh, kw), torch.ones_like(w[:g]).reshape(g, 1, cg, kh, kw)], 1)
            w_op = w_op.reshape(g * (og + 1), cg, kh, kw)
            s_op = torch.cat([w_scale.reshape(g, og), torch.ones_like(w_scale[:g]).reshape(g, 1)], 1).reshape(-1)
        example = [1, cg * g, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1]  # (a 1-output shape: fast format)
        weight = torch.ops.onednn.qconv_prepack(w_op.contiguous(), s_op, float(act.scale[0]), int(act.zero_point[0]),
                                                list(stride), list(padding), list(dilation), g, example)
        scales, corr = s_op, torch.zeros(act.scale.numel(), 0, device=dev)
    elif route == "im2col":
        w2 = w.permute(0, 2, 3, 1).reshape(c_out, kh * kw * cg)
        weight = torch.stack([gemm_weight(w2[i * og:(i + 1) * og], weight_zp) for i in range(g)])
        corr = step_correction(w2, dzp, act, kh * kw * cg).reshape(-1, g, og)
        scales, corr = w_scale, F.pad(corr, (0, weight.shape[1] - og))  # added in int32: exact
    else:
        raise ValueError(f"route={route!r}: use 'onednn' or 'im2col'")
    params = IntConv2dParams(weight, scales, w_scale * dzp.float(), corr, act.scale, act.inv_scale, act.lo, act.hi,
                             act.dx, act.zero_point, act.narrow)
    wide = any(int(b) > NARROW_MAX_BITS for b in act_bits)
    spec = IntConv2dSpec(route, cg * g, c_out, (kh, kw), stride, padding, dilation, g, pre_pad, padding_mode,
                         weight_zp=weight_zp, wide=wide)
    return params, spec


def int_conv2d(x: Tensor, k: Tensor, p: IntConv2dParams, spec: IntConv2dSpec, bias: Tensor | None = None) -> Tensor:
    """F.conv2d(fake-quantized x at step k, W_hat, bias, ...) on integer codes. x: [N, C_in, H, W]."""
    if spec.pre_pad is not None:
        x = F.pad(x, spec.pre_pad, mode=spec.padding_mode)
    y = (_onednn if spec.route == "onednn" else _im2col)(x, k, p, spec, bias)
    return y.to(x.dtype)


def _qconv(u: Tensor, scale: Tensor, zp: Tensor, w: Tensor, w_scale: Tensor, bias: Tensor | None,
           stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    u = u.contiguous(memory_format=torch.channels_last)  # here, not in the graph: inductor mislays it in cond
    return torch.ops.onednn.qconv_pointwise.tensor(
        u, scale, zp, w, w_scale, torch.zeros_like(w_scale, dtype=torch.int32), bias, stride, padding, dilation,
        groups, 1.0, 0, torch.float32, "none", [], "")


@torch.library.custom_op("pcr::onednn_qconv2d", mutates_args=())
def onednn_qconv2d(u: Tensor, scale: Tensor, zp: Tensor, w: Tensor, w_scale: Tensor, bias: Tensor | None,
                   stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """oneDNN u8 x s8 conv with float32 output: s_x s_w sum (u - zp) w' + bias. One opaque op for inductor.

    Called directly, inductor's x86 quantization lowering of onednn.qconv_pointwise fails inside
    torch.cond subgraphs (it asserts a float x_scale); wrapped, it is an extern call in both cases.
    """
    return _qconv(u, scale, zp, w, w_scale, bias, stride, padding, dilation, groups)


onednn_qconv2d.register_fake(_qconv)  # onednn's op has meta kernels: the fake is the same call


def _onednn(x: Tensor, k: Tensor, p: IntConv2dParams, s: IntConv2dSpec, bias: Tensor | None) -> Tensor:
    g, og = s.groups, s.out_channels // s.groups
    if bias is not None and s.weight_zp:
        bias = F.pad(bias.float().reshape(g, og), (0, 1)).reshape(-1)  # 0 on the ones channels
    elif bias is not None:
        bias = bias.float()
    inv, lo, hi = at(p.act_inv_scale, k), at(p.act_lo, k), at(p.act_hi, k)
    scale, zp = at(p.act_scale, k), at(p.act_zero_point, k)
    shape = x.shape  # x enters torch.cond flat: inductor may give a 4-d operand another layout than a branch expects

    def conv(u: Tensor, zp: Tensor, w: Tensor, w_scale: Tensor, b: Tensor | None) -> Tensor:
        return onednn_qconv2d(u, scale, zp, w, w_scale, b, list(s.stride), list(s.padding), list(s.dilation), g)

    def narrow(x, w, w_scale, zp, b, zp_lo, zp_hi):  # u = q_x + o_u, zero point z_x + o_u
        zf = zp.float()
        u = clamp_(torch.mul(x.view(shape), inv).round_().add_(zf), lo + zf, hi + zf).to(torch.uint8)
        return conv(u, zp, w, w_scale, b)

    def wide(x, w, w_scale, zp, b, zp_lo, zp_hi):  # lo: zero point 0; hi + 128: zero point 128
        hi8, lo8 = split_wide(centered_codes(x.view(shape), inv, lo, hi))
        return conv(lo8.view(torch.uint8), zp_lo, w, w_scale, b) + 128 * conv((hi8 ^ -128).view(torch.uint8), zp_hi, w, w_scale, None)

    b = bias if bias is not None else torch.zeros_like(p.weight_scale)
    operands = (x.reshape(-1), p.weight, p.weight_scale, zp, b, zp.new_zeros(()), zp.new_full((), 128))
    y = by_width(at(p.act_narrow, k), s.wide, narrow, wide, operands)
    if not s.weight_zp:
        return y
    if g == 1:  # 4-d slices: addcmul writes [N, C_out, Ho, Wo] directly (a 5-d result would need a copy)
        return torch.addcmul(y[:, :og], y[:, og:], p.zp_scale.reshape(1, og, 1, 1))
    n, _, ho, wo = y.shape
    y5 = y.view(n, g, og + 1, ho, wo)
    return torch.addcmul(y5[:, :, :og], y5[:, :, og:], p.zp_scale.reshape(1, g, og, 1, 1)).reshape(n, -1, ho, wo)


def _windows(v: Tensor, s: IntConv2dSpec) -> Tensor:
    """[N, C, Hp, Wp] (padded, int8) -> [N, Ho, Wo, kh, kw, C] view of its NHWC copy."""
    (kh, kw), (sh, sw), (dh, dw) = s.kernel_size, s.stride, s.dilation
    v = v.permute(0, 2, 3, 1).contiguous()
    win = v.unfold(1, dh * (kh - 1) + 1, sh).unfold(2, dw * (kw - 1) + 1, sw)  # [N, Ho, Wo, C, ekh, ekw]
    return win[..., ::dh, ::dw].permute(0, 1, 2, 4, 5, 3)


def _im2col(x: Tensor, k: Tensor, p: IntConv2dParams, s: IntConv2dSpec, bias: Tensor | None) -> Tensor:
    ph, pw = s.padding
    x = F.pad(x.float(), (pw, pw, ph, ph))  # x = 0 has code z_x: x_hat = 0, as F.conv2d pads
    g, cg, og = s.groups, s.in_channels // s.groups, s.out_channels // s.groups
    inv, lo, hi, dx = at(p.act_inv_scale, k), at(p.act_lo, k), at(p.act_hi, k), at(p.act_dx, k)
    scale = at(p.act_scale, k) * p.weight_scale  # [C_out]
    b = bias.float() if bias is not None else torch.zeros_like(scale)
    dzp_scale = at(p.act_scale, k) * p.zp_scale if s.weight_zp else None
    (kh, kw), (sh, sw), (dh, dw) = s.kernel_size, s.stride, s.dilation
    n, ho, wo = x.shape[0], (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    shape = x.shape  # flat through torch.cond, as in _onednn

    def cols(v: Tensor) -> list[Tensor]:  # int8 [N, C, Hp, Wp] -> per group [M, kh*kw*Cg]
        wv = _windows(v, s)
        return [wv[..., i * cg:(i + 1) * cg].reshape(n * ho * wo, -1) for i in range(g)]

    def groups_out(accs: list[Tensor], offset: Tensor) -> Tensor:
        sl = [slice(i * og, (i + 1) * og) for i in range(g)]
        return torch.cat([rescale(acc, og, scale[j], offset[j], None if dzp_scale is None else dzp_scale[j])
                          for acc, j in zip(accs, sl, strict=True)], 1)

    def narrow(x, w, scale, b, corr_k):
        a = cols(shifted_codes(x.view(shape), inv, lo, hi, dx))
        return groups_out([int_mm(a[i], w[i]).add_(corr_k[i]) for i in range(g)], b)

    def wide(x, w, scale, b, corr_k):
        hi8, lo8 = split_wide(centered_codes(x.view(shape), inv, lo, hi))
        h, lw = cols(hi8), cols(lo8)
        return groups_out([mm_wide(h[i], lw[i], w[i]) for i in range(g)], b)

    y = by_width(at(p.act_narrow, k), s.wide, narrow, wide, (x.reshape(-1), p.weight, scale, b, at(p.corr, k)))
    return y.reshape(n, ho, wo, s.out_channels).permute(0, 3, 1, 2)
