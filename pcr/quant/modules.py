"""Quantized layers: small subclasses of the float layers with one-line forwards.

    QLinear(x) = linear(Q_t(x), W_hat, b)      QConv2d(x) = conv2d(Q_t(x), W_hat, b)

W_hat is the per-output-channel fake-quantized weight, computed once by `quantize_weight` and
kept as the layer's `weight` (the float weight is not kept). Q_t is the activation quantizer of
the current sampling step t: per tensor, one (scale, zero point, bits) row per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcr.quant.affine import check_bits, fake_quantize, fake_quantize_tensor, params_from_range, qrange
from pcr.quant.observers import Observer
from pcr.quant.step import current_step


class ActQuantizer(nn.Module):
    """Per-step activation fake-quantizer. Buffers: scale [T], zero_point [T] int32, bits [T] int32."""

    def __init__(self, num_steps: int, bits: int, symmetric: bool):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps} must be at least 1")
        check_bits(bits, "act_bits")
        self.symmetric = symmetric
        self.enabled = True
        self.register_buffer("scale", torch.ones(num_steps))
        self.register_buffer("zero_point", torch.zeros(num_steps, dtype=torch.int32))
        self.register_buffer("bits", torch.full((num_steps,), bits, dtype=torch.int32))
        self.register_buffer("calibrated", torch.zeros(num_steps, dtype=torch.bool))
        self._ranges = [(*qrange(bits, symmetric), 0)] * num_steps  # (q_min, q_max, z) per step: no device sync per call
        self.register_load_state_dict_post_hook(lambda module, _: module._sync_ranges())

    @property
    def num_steps(self) -> int:
        return self.scale.numel()

    def _sync_ranges(self) -> None:
        self._ranges = [(*qrange(b, self.symmetric), z) for b, z in zip(self.bits.tolist(), self.zero_point.tolist(), strict=True)]

    @torch.no_grad()
    def set_step(self, k: int, lo: Tensor, hi: Tensor, bits: int | None = None) -> None:
        """Fix step k's parameters from the range [lo, hi] at `bits` (default: the step's bits)."""
        b = int(self.bits[k]) if bits is None else check_bits(bits, "act_bits")
        scale, zero_point = params_from_range(lo, hi, b, self.symmetric)
        self.scale[k], self.zero_point[k], self.bits[k] = scale, zero_point, b
        self.calibrated[k] = True
        self._ranges[k] = (*qrange(b, self.symmetric), int(zero_point))

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        k = current_step()
        q_min, q_max, z = self._ranges[k]
        return fake_quantize_tensor(x, self.scale[k : k + 1], self.zero_point[k : k + 1], q_min, q_max, z).to(x.dtype)

    def extra_repr(self) -> str:
        return f"steps={self.num_steps}, bits={sorted(set(self.bits.tolist()))}, symmetric={self.symmetric}"


class QModuleMixin:
    """Shared state of quantized layers: weight scale/zero point [C_out] and the input quantizer."""

    weight: nn.Parameter

    def _init_quant(self, num_steps: int, weight_bits: int, weight_symmetric: bool, act_bits: int, act_symmetric: bool) -> None:
        c_out = self.weight.shape[0]
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.weight_symmetric = weight_symmetric
        dev = self.weight.device
        self.register_buffer("weight_scale", torch.ones(c_out, device=dev))
        self.register_buffer("weight_zero_point", torch.zeros(c_out, dtype=torch.int32, device=dev))
        self.input_quant = ActQuantizer(num_steps, act_bits, act_symmetric).to(dev)

    @classmethod
    def from_module(cls, module: nn.Module, *, num_steps: int, weight_bits: int, act_bits: int,
                    weight_symmetric: bool = False, act_symmetric: bool = False):
        """A quantized twin sharing `module`'s parameters (built on the meta device, then adopted)."""
        q = cls._empty_like(module)
        q.weight, q.bias = module.weight, module.bias
        q._init_quant(num_steps, weight_bits, weight_symmetric, act_bits, act_symmetric)
        q.train(module.training)
        return q

    @torch.no_grad()
    def quantize_weight(self, observer: Observer) -> None:
        """W <- W_hat, once: per-output-channel fake quantization with the observer's range."""
        w = self.weight.detach().float()
        lo, hi = observer.weight_range(w, self.weight_bits, self.weight_symmetric)
        scale, zero_point = params_from_range(lo, hi, self.weight_bits, self.weight_symmetric)
        w_hat = fake_quantize(w, scale.to(w.device), zero_point.to(w.device), self.weight_bits, self.weight_symmetric, axis=0)
        self.weight.data.copy_(w_hat.to(self.weight.dtype))
        self.weight_scale.copy_(scale)
        self.weight_zero_point.copy_(zero_point)


class QLinear(QModuleMixin, nn.Linear):
    @classmethod
    def _empty_like(cls, m: nn.Linear) -> QLinear:
        return cls(m.in_features, m.out_features, bias=m.bias is not None, device="meta")

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quant(x), self.weight, self.bias)


class QConv2d(QModuleMixin, nn.Conv2d):
    @classmethod
    def _empty_like(cls, m: nn.Conv2d) -> QConv2d:
        return cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode, device="meta")

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quant(x), self.weight, self.bias)


QMODULES: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: QLinear, nn.Conv2d: QConv2d}
