"""FP8 kernels of fp8-format layers: E4M3 activations x E4M3 weights through torch._scaled_mm, float32 out.

    p, spec = prepare_fp8_linear(weight_e4m3, weight_scale, act_scale, act_bits)
    y = fp8_linear(x, k, p, spec, bias)                   # k: 0-d int64 tensor, the sampling step
    p, spec = prepare_fp8_conv2d(weight_e4m3, weight_scale, act_scale, act_bits, stride=..., route=None)
    y = fp8_conv2d(x, k, p, spec, bias)
    summary = use_kernels(unet, "fp8")                    # the fp8-format layers onto them (layers.py)

One output (per-tensor activation scale s_x of step k, per-channel weight scale s_w[c]):

    y[c] = s_w[c] * scaled_mm(q_x, q_w^T, scale_a=s_x)[c] + b[c]        q_x = e4m3(clamp(x / s_x, ±448))

Products of E4M3 values are exact in float32, so y is the fake-quantized layer's output up to float
accumulation order (tests/quant/kernels/test_fp8.py). Weights: the layer's E4M3 codes, or integer codes of
<= 4 bits as q_w - z_w (|q_w - z_w| <= 15: exact E4M3 integers; W4A8 with FP8 activations).
torch._scaled_mm's shape rules (CUDA): the reduction K and the output width N multiples of 16, mat2
column-major; the weight is stored [N16, K16] zero-padded (its transpose is the column-major view) and
activations are zero-padded along K (code 0 is x_hat = 0). Relaxed steps (bits > 8) run unquantized:
x times the E4M3 weight in x's float dtype (exact there), chosen per step by torch.cond under compile.

On the CPU torch._scaled_mm exists but is a reference loop (about 25 M multiply-adds/s here, ~1000x below
a float32 GEMM): there the same E4M3 codes are multiplied by a float32 GEMM (every product exact, the same
sums up to order), and torch._scaled_mm runs on CUDA or inside `pcr.quant.kernels.common.cuda_routes()`
(how the tests execute it on the CPU).

Conv2d routes: "1x1" (1x1 kernel, stride 1, no padding, one group: channels-last rows are the GEMM's rows)
and "im2col" (everything else: x padded, quantized once, windows in NHWC order (kh, kw, C innermost),
one GEMM per group). Both give a channels_last-strided output with F.conv2d's values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from pcr.quant import float8
from pcr.quant.kernels.common import at, by_width, on_cuda_route, pad_to
from pcr.quant.kernels.conv import IntConv2dSpec, _pair, _windows
from pcr.quant.kernels.layers import IntKernelMixin, format_support
from pcr.quant.modules import QConv2d, QLinear, QModuleMixin
from pcr.quant.packing import pack

ALIGN = 16  # torch._scaled_mm (CUDA): K and N multiples of 16


class Fp8Params(NamedTuple):
    """Tensors of an fp8 Linear or Conv2d (register them as buffers: `p._asdict()`)."""

    weight: Tensor  # [G, N16, K16] E4M3 q_w (G = 1 for Linear and 1x1), K in (kh, kw, Cg) order for im2col
    weight_scale: Tensor  # [C_out] f32 s_w
    act_scale: Tensor  # [T] f32 s_x
    act_fp8: Tensor  # [T] bool: step k runs E4M3 activations (False: relaxed, unquantized)
    one: Tensor  # [] f32 1.0: scale_b of torch._scaled_mm (s_w is applied per channel after it)


@dataclass(frozen=True)
class Fp8Spec:
    route: str  # "linear" | "1x1" | "im2col"
    in_features: int  # K of one group: in_features (Linear), C_in/groups * kh * kw (conv)
    out_channels: int
    relaxed: bool  # some step runs unquantized: torch.cond per step
    conv: IntConv2dSpec | None = None  # geometry of a conv (its int-only fields unused)


def e4m3_weight(codes: Tensor, zero_point: Tensor, weight_bits: int, fp8_weights: bool) -> Tensor:
    """q_w in E4M3 [C_out, ...]: the codes themselves, or integer codes of <= 4 bits as q_w - z_w (exact)."""
    if fp8_weights:
        return codes
    if weight_bits > float8.EXACT_INT_BITS:
        raise ValueError(f"{weight_bits}-bit integer weight codes are not all E4M3 values: the fp8 kernels take "
                         f"E4M3 weights or integer codes of at most {float8.EXACT_INT_BITS} bits")
    z = zero_point.reshape(-1, *[1] * (codes.dim() - 1)).to(torch.int16)
    return (codes.to(torch.int16) - z).to(torch.float32).to(float8.E4M3)


def _gemm_weight(w2: Tensor) -> Tensor:
    """[N, K] E4M3 -> [N16, K16] zero-padded (through uint8: padding E4M3 tensors directly is not implemented)."""
    return pad_to(pad_to(w2.view(torch.uint8), 1, ALIGN), 0, ALIGN).contiguous().view(float8.E4M3)


def _act_tables(act_scale: Tensor, act_bits: Tensor, device) -> tuple[Tensor, Tensor, Tensor]:
    fp8 = torch.as_tensor(act_bits).reshape(-1).to(device) <= float8.FP8_BITS
    return act_scale.detach().float().reshape(-1).to(device), fp8, torch.ones((), device=device)


def prepare_fp8_linear(weight: Tensor, weight_scale: Tensor, act_scale: Tensor, act_bits: Tensor) -> tuple[Fp8Params, Fp8Spec]:
    """From the E4M3 weight [C_out, K] (e4m3_weight) and the per-step tables [T]."""
    c_out, k_in = weight.shape
    scale, fp8, one = _act_tables(act_scale, act_bits, weight.device)
    p = Fp8Params(_gemm_weight(weight)[None], weight_scale.detach().float().reshape(-1).to(weight.device), scale, fp8, one)
    return p, Fp8Spec("linear", k_in, c_out, relaxed=not bool(fp8.all()))


def prepare_fp8_conv2d(weight: Tensor, weight_scale: Tensor, act_scale: Tensor, act_bits: Tensor, *, stride=1,
                       padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
                       route: str | None = None) -> tuple[Fp8Params, Fp8Spec]:
    """From the E4M3 weight [C_out, C_in/groups, kh, kw] and the per-step tables [T]."""
    c_out, cg, kh, kw = weight.shape
    g, og = groups, c_out // groups
    stride, dilation = _pair(stride), _pair(dilation)
    if isinstance(padding, str):  # "valid" / "same" (odd effective kernels: fp8_support checks)
        padding = (0, 0) if padding == "valid" else (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    padding = _pair(padding)
    pre_pad = None
    if padding_mode != "zeros":
        pre_pad, padding = (padding[1], padding[1], padding[0], padding[0]), (0, 0)
    pointwise = (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0) and g == 1
    route = route or ("1x1" if pointwise else "im2col")
    if route == "1x1" and not pointwise:
        raise ValueError("route='1x1' needs a 1x1 kernel, stride 1, no padding and one group")
    if route not in ("1x1", "im2col"):
        raise ValueError(f"route={route!r}: use '1x1' or 'im2col'")
    w2 = weight.view(torch.uint8).permute(0, 2, 3, 1).reshape(c_out, kh * kw * cg).view(float8.E4M3)  # K = (kh, kw, Cg)
    w = torch.stack([_gemm_weight(w2[i * og:(i + 1) * og]) for i in range(g)])
    scale, fp8, one = _act_tables(act_scale, act_bits, weight.device)
    p = Fp8Params(w, weight_scale.detach().float().reshape(-1).to(weight.device), scale, fp8, one)
    geometry = IntConv2dSpec(route, cg * g, c_out, (kh, kw), stride, padding, dilation, g, pre_pad, padding_mode,
                             weight_zp=False, wide=False)
    return p, Fp8Spec(route, kh * kw * cg, c_out, relaxed=not bool(fp8.all()), conv=geometry)


def _mm(a: Tensor, w: Tensor, s_x: Tensor, one: Tensor, quantized: bool) -> Tensor:
    """[M, K] (float) x w [N16, K16] E4M3 -> [M, N16] float32; quantized: E4M3 activations at scale s_x
    (the product carries s_x), else a relaxed step: a in its own float dtype."""
    if quantized:
        a8 = float8.quantize(pad_to(a, 1, ALIGN), s_x)
        if on_cuda_route(a):
            return torch._scaled_mm(a8, w.t(), scale_a=s_x, scale_b=one, out_dtype=torch.float32)
        return torch.mm(a8.float(), w.float().t()).mul_(s_x)  # the CPU: exact products, float32 sums
    a = pad_to(a, 1, ALIGN)
    return torch.mm(a, w.to(a.dtype).t()).float()


def _gemm_rows(rows: list[Tensor], k: Tensor, p: Fp8Params, spec: Fp8Spec, bias: Tensor | None) -> Tensor:
    """Per group rows [M, K] -> y [M, C_out] float32 = s_w * GEMM + b, the step's branch chosen per step."""
    og = spec.out_channels // len(rows)
    b = bias.float() if bias is not None else torch.zeros_like(p.weight_scale)
    s_x = at(p.act_scale, k)

    def branch(quantized: bool):
        def run(w, s_x, one, w_scale, b, *rows):
            accs = [_mm(r, w[i], s_x, one, quantized)[:, :og] for i, r in enumerate(rows)]
            acc = accs[0] if len(accs) == 1 else torch.cat(accs, 1)
            return torch.addcmul(b, acc, w_scale)
        return run

    operands = (p.weight, s_x, p.one, p.weight_scale, b, *rows)
    return by_width(at(p.act_fp8, k), spec.relaxed, branch(True), branch(False), operands)


def fp8_linear(x: Tensor, k: Tensor, p: Fp8Params, spec: Fp8Spec, bias: Tensor | None = None) -> Tensor:
    """F.linear(fake-quantized x at step k, W_hat, bias) on E4M3 operands. x: [..., K] -> [..., C_out]."""
    lead = x.shape[:-1]
    y = _gemm_rows([x.reshape(-1, spec.in_features)], k, p, spec, bias)
    return y.reshape(*lead, spec.out_channels).to(x.dtype)


def fp8_conv2d(x: Tensor, k: Tensor, p: Fp8Params, spec: Fp8Spec, bias: Tensor | None = None) -> Tensor:
    """F.conv2d(fake-quantized x at step k, W_hat, bias, ...) on E4M3 operands. x: [N, C_in, H, W]."""
    s, dtype = spec.conv, x.dtype
    if s.pre_pad is not None:
        x = F.pad(x, s.pre_pad, mode=s.padding_mode)
    n = x.shape[0]
    if spec.route == "1x1":
        ho, wo = x.shape[2], x.shape[3]
        rows = [x.permute(0, 2, 3, 1).reshape(n * ho * wo, s.in_channels)]
    else:
        ph, pw = s.padding
        x = F.pad(x, (pw, pw, ph, ph))  # zeros: x_hat = 0, as F.conv2d pads (E4M3 code of 0 is 0)
        (kh, kw), (sh, sw), (dh, dw) = s.kernel_size, s.stride, s.dilation
        ho, wo = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
        cg = s.in_channels // s.groups
        win = _windows(x, s)  # [N, Ho, Wo, kh, kw, C]
        rows = [win[..., i * cg:(i + 1) * cg].reshape(n * ho * wo, -1) for i in range(s.groups)]
    y = _gemm_rows(rows, k, p, spec, bias)
    return y.reshape(n, ho, wo, s.out_channels).permute(0, 3, 1, 2).to(dtype)


def fp8_support(m: QModuleMixin) -> tuple[bool, str]:
    """(True, "") when the fp8 kernels run layer m as its fake-quantized self, else (False, why)."""
    ok, why = format_support(m, "fp8", FP8_TWINS)
    if not ok:
        return ok, why
    if not m.fp8_weights and m.weight_bits > float8.EXACT_INT_BITS:
        return False, (f"its {m.weight_bits}-bit integer weight codes are not all E4M3 values "
                       f"(fp8 kernels take E4M3 weights or integer codes of at most {float8.EXACT_INT_BITS} bits)")
    if isinstance(m, QConv2d) and m.padding == "same":
        (kh, kw), (dh, dw) = m.kernel_size, m.dilation
        if dh * (kh - 1) % 2 or dw * (kw - 1) % 2:
            return False, "padding='same' with an even effective kernel pads asymmetrically"
    return True, ""


class Fp8KernelMixin(IntKernelMixin):
    """The fp8 twin's derived state (`fp8_<field>` buffers); the stored codes are rebuilt from the E4M3 weight."""

    params_type = Fp8Params
    prefix = "fp8_"

    def _weight(self, codes: Tensor) -> Tensor:
        return e4m3_weight(codes, self.weight_zero_point, self.weight_bits, self.fp8_weights)

    def _e4m3_weight(self) -> Tensor:
        """q_w [C_out, C_in/groups, kh, kw] or [C_out, K] from the GEMM weight [G, N16, K16]."""
        w = self.fp8_weight.view(torch.uint8)
        if isinstance(self, QLinear):
            return w[0, :self.out_features, :self.in_features].view(float8.E4M3)
        g, og, (kh, kw) = self.groups, self.out_channels // self.groups, self.kernel_size
        cg = self.in_channels // g
        return w[:, :og, :kh * kw * cg].reshape(g * og, kh, kw, cg).permute(0, 3, 1, 2).contiguous().view(float8.E4M3)

    def codes(self) -> Tensor:
        """The stored codes: E4M3, or the integer codes q_w = (q_w - z_w) + z_w."""
        w = self._e4m3_weight()
        if self.fp8_weights:
            return w
        return w.float().to(torch.int16) + self.weight_zero_point.reshape(-1, *[1] * (w.dim() - 1)).to(torch.int16)

    def stored_codes(self) -> Tensor:
        return self.codes() if self.fp8_weights else pack(self.codes(), self.weight_bits, self.weight_symmetric)


class Fp8QLinear(Fp8KernelMixin, QLinear):
    def _prepare(self, codes: Tensor):
        a = self.input_quant
        return prepare_fp8_linear(self._weight(codes), self.weight_scale, a.scale, a.bits)

    def forward(self, x: Tensor) -> Tensor:
        return fp8_linear(x, self.step(), self.int_params(), self.int_spec, self.bias)


class Fp8QConv2d(Fp8KernelMixin, QConv2d):
    def _prepare(self, codes: Tensor):
        a = self.input_quant
        return prepare_fp8_conv2d(self._weight(codes), self.weight_scale, a.scale, a.bits, stride=self.stride,
                                  padding=self.padding, dilation=self.dilation, groups=self.groups,
                                  padding_mode=self.padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        return fp8_conv2d(x, self.step(), self.int_params(), self.int_spec, self.bias)


FP8_TWINS: dict[type, type] = {QLinear: Fp8QLinear, QConv2d: Fp8QConv2d}
