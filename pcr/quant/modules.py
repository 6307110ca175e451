"""Quantized layers: small subclasses of the float layers with one-line forwards.

    QLinear(x) = linear(Q_k(x), W_hat, b)      QConv2d(x) = conv2d(Q_k(x), W_hat, b)

The weight is kept as integer codes per output channel (`weight_codes`, packed two per byte at 4 bits
or fewer) with `weight_scale`/`weight_zero_point [C_out]`; the float weight is gone once `from_module`
has quantized it. W_hat = (q_w - z_w) * s_w is dequantized on the fly by the `fake` kernel (the
reference). Q_k is the activation quantizer of sampling step k: per tensor, one (scale, zero point,
bits) row per step, the row picked by the UNet's step counter (`pcr.quant.step`). All of it is
buffers with final shapes, so `state_dict` / `load_state_dict` carry the whole quantized layer.

Format `fp8` (pcr.quant.float8): Q_k is E4M3 with one scale per step (zero point 0; steps relaxed past
8 bits run unquantized), and 8-bit weights are E4M3 codes (`weight_codes` float8_e4m3fn, 1 byte each)
with a scale per output channel; weights of fewer bits stay integer codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcr.quant import float8
from pcr.quant.affine import check_bits, dequantize, fake_quantize_at, params_from_range, qrange, quantize
from pcr.quant.observers import Observer
from pcr.quant.packing import pack, storage_dtype, storage_shape, unpack
from pcr.quant.step import StepCounter

SCALE_BUFFERS = ("scale", "weight_scale", "out_gain", "out_shift")  # stay float32 whatever dtype the model is cast to


def code_bounds(bits: Tensor, symmetric: bool) -> tuple[Tensor, Tensor]:
    """(q_min, q_max) of b-bit codes, as tensors of bits' shape (no host sync)."""
    top = torch.bitwise_left_shift(torch.ones_like(bits), bits - 1 if symmetric else bits)  # 2^(b-1) or 2^b
    return (-top, top - 1) if symmetric else (torch.zeros_like(bits), top - 1)


def act_params(lo: Tensor, hi: Tensor, bits: int, symmetric: bool, fmt: str = "int") -> tuple[Tensor, Tensor]:
    """(scale, zero point) of an activation range [lo, hi] at `bits` in format `fmt` (fp8: E4M3, zero point 0)."""
    if fmt == "fp8":
        return float8.params_from_range(lo, hi)
    return params_from_range(lo, hi, bits, symmetric)


def keep_scales_float32(module: nn.Module) -> None:
    for name in SCALE_BUFFERS:
        t = module._buffers.get(name)
        if t is not None and t.is_floating_point() and t.dtype != torch.float32:
            module._buffers[name] = t.float()


class ActQuantizer(nn.Module):
    """Per-step activation fake-quantizer. Buffers: scale [T], zero_point [T] int32, bits [T] int32, calibrated [T] bool.

    fmt "fp8": E4M3 at steps of 8 bits (zero point 0), unquantized at relaxed steps (bits > 8)."""

    def __init__(self, num_steps: int, bits: int, symmetric: bool, counter: StepCounter | None = None, fmt: str = "int"):
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps} must be at least 1")
        check_bits(bits, "act_bits")
        self.format = float8.check_format(fmt, "act format")
        if fmt == "fp8" and bits != float8.FP8_BITS:
            raise ValueError(f"act_bits={bits} is not allowed in the fp8 format: E4M3 activations are {float8.FP8_BITS} bits")
        self.symmetric = symmetric
        self.enabled = True
        self.register_buffer("scale", torch.ones(num_steps))
        self.register_buffer("zero_point", torch.zeros(num_steps, dtype=torch.int32))
        self.register_buffer("bits", torch.full((num_steps,), bits, dtype=torch.int32))
        self.register_buffer("calibrated", torch.zeros(num_steps, dtype=torch.bool))
        self.attach(counter)

    def attach(self, counter: StepCounter | None) -> None:
        """Read the step index from `counter` (held by reference: the UNet owns it, not every quantizer)."""
        object.__setattr__(self, "_counter", counter)

    @property
    def num_steps(self) -> int:
        return self.scale.numel()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        keep_scales_float32(self)
        return self

    @torch.no_grad()
    def set_step(self, k: int, lo: Tensor, hi: Tensor, bits: int | None = None) -> None:
        """Fix step k's parameters from the range [lo, hi] at `bits` (default: the step's bits)."""
        b = int(self.bits[k]) if bits is None else check_bits(bits, "act_bits")
        self.set_step_params(k, *act_params(lo, hi, b, self.symmetric, self.format), b)

    @torch.no_grad()
    def set_step_params(self, k: int, scale: Tensor, zero_point: Tensor, bits: int) -> None:
        """Fix step k's (scale, zero point, bits) as given."""
        self.scale[k], self.zero_point[k], self.bits[k] = scale, zero_point, bits
        self.calibrated[k] = True

    def step_params(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(s, z, q_min, q_max) of the current step, each [1]: read by index, so one graph serves every step."""
        if self._counter is None:
            raise RuntimeError("this quantizer has no step counter: build quantized layers with pcr.quant.quantize_model")
        k = self._counter.index  # [1] int64
        s, z, b = self.scale.index_select(0, k), self.zero_point.index_select(0, k), self.bits.index_select(0, k)
        q_min, q_max = code_bounds(b, self.symmetric)
        return s, z, q_min, q_max

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        if self._counter is None:
            raise RuntimeError("this quantizer has no step counter: build quantized layers with pcr.quant.quantize_model")
        if self.format == "fp8":
            return self._fp8(x)
        if x.is_cuda or torch.compiler.is_compiling():  # tensors all the way: no host sync, one graph for all steps
            s, z, q_min, q_max = self.step_params()
            return fake_quantize_at(x, s, q_min - z, q_max - z).to(x.dtype)
        # eager on the CPU: reading k, z and b is free, and scalar bounds save the small tensor ops per layer
        k = int(self._counter.index)
        z, (q_min, q_max) = int(self.zero_point[k]), qrange(int(self.bits[k]), self.symmetric)
        return fake_quantize_at(x, self.scale[k : k + 1], q_min - z, q_max - z).to(x.dtype)

    def _fp8(self, x: Tensor) -> Tensor:
        """E4M3 fake quantization at step k; x itself at relaxed steps (bits > 8)."""
        if x.is_cuda or torch.compiler.is_compiling():  # tensors only: one graph for all steps
            k = self._counter.index
            s, b = self.scale.index_select(0, k), self.bits.index_select(0, k)
            return torch.where(b > float8.FP8_BITS, x, float8.fake_quantize(x, s))
        k = int(self._counter.index)
        return x if int(self.bits[k]) > float8.FP8_BITS else float8.fake_quantize(x, self.scale[k])

    def extra_repr(self) -> str:
        fmt = "" if self.format == "int" else f", format={self.format}"
        return f"steps={self.num_steps}, bits={sorted(set(self.bits.tolist()))}, symmetric={self.symmetric}{fmt}"


class QModuleMixin:
    """Weight codes (integer, or E4M3 for 8-bit fp8 weights) with per-channel scale/zero point [C_out], and the input quantizer."""

    weight_bits: int
    weight_symmetric: bool
    weight_shape: tuple[int, ...]
    fp8_weights: bool = False

    @classmethod
    def from_module(cls, module: nn.Module, *, num_steps: int, weight_bits: int, act_bits: int,
                    weight_symmetric: bool = False, act_symmetric: bool = False,
                    observer: Observer | None = None, counter: StepCounter | None = None, fmt: str = "int"):
        """The quantized twin of `module`, sharing its bias; the weight quantized with `observer` if given.

        Without an observer the codes are left empty (zeros on `module`'s device, e.g. meta) for
        `load_state_dict` to fill.
        """
        q = cls._empty_like(module)
        del q.weight  # the layer keeps integer codes, not a float weight
        q.bias = module.bias
        q.weight_bits, q.weight_symmetric = check_bits(weight_bits, "weight_bits"), weight_symmetric
        q.weight_shape = tuple(module.weight.shape)
        q.fp8_weights = float8.check_format(fmt) == "fp8" and weight_bits == float8.FP8_BITS
        dev, c_out = module.weight.device, module.weight.shape[0]
        if q.fp8_weights:
            codes = torch.zeros(q.weight_shape, dtype=float8.E4M3, device=dev)
        else:
            codes = torch.zeros(storage_shape(q.weight_shape, weight_bits), dtype=storage_dtype(weight_bits, weight_symmetric),
                                device=dev)
        q.register_buffer("weight_codes", codes)
        q.register_buffer("weight_scale", torch.ones(c_out, device=dev))
        q.register_buffer("weight_zero_point", torch.zeros(c_out, dtype=torch.int32, device=dev))
        q.register_buffer("weight_hat", None, persistent=False)  # derived: W_hat for the fake kernel, see refresh_weight_hat
        q.input_quant = ActQuantizer(num_steps, act_bits, act_symmetric, counter, fmt).to(dev)
        if observer is not None:
            q.set_weight(module.weight.detach(), observer)
        q.train(module.training)
        return q

    @torch.no_grad()
    def set_weight(self, w: Tensor, observer: Observer) -> None:
        """Codes of the float weight w, per output channel, with the observer's range."""
        w = w.float()
        lo, hi = observer.weight_range(w, self.weight_bits, self.weight_symmetric)
        if self.fp8_weights:
            scale, zero_point = float8.params_from_range(lo, hi)
            self.set_codes(float8.quantize(w, scale, axis=0), scale, zero_point)
            return
        scale, zero_point = params_from_range(lo, hi, self.weight_bits, self.weight_symmetric)
        self.set_codes(quantize(w, scale, zero_point, self.weight_bits, self.weight_symmetric, axis=0), scale, zero_point)

    @torch.no_grad()
    def set_codes(self, codes: Tensor, scale: Tensor, zero_point: Tensor) -> None:
        """Store codes [C_out, ...] (integer unpacked, or E4M3) with their per-channel scale and zero point."""
        if tuple(codes.shape) != self.weight_shape:
            raise ValueError(f"weight codes of shape {tuple(codes.shape)} do not fit this layer's weight {self.weight_shape}")
        if (codes.dtype == float8.E4M3) != self.fp8_weights:
            raise ValueError(f"{codes.dtype} weight codes do not fit this layer's "
                             f"{'E4M3' if self.fp8_weights else 'integer'} weights")
        self.weight_codes.copy_(codes if self.fp8_weights else pack(codes, self.weight_bits, self.weight_symmetric))
        self.weight_scale.copy_(scale)
        self.weight_zero_point.copy_(zero_point)
        self.refresh_weight_hat()

    @torch.no_grad()
    def refresh_weight_hat(self) -> None:
        """Derive W_hat from the codes once (a non-persistent buffer), so the fake kernel does not dequantize
        the weight on every call (calibration runs it twice per step). Called whenever the codes change:
        `set_codes`, `load_state_dict`; the int kernels drop it (their int8 weights hold the codes)."""
        stored = self._buffers.get("weight_codes")
        if stored is None or stored.is_meta:
            self._buffers["weight_hat"] = None
            return
        codes = QModuleMixin.codes(self)
        dtype = self.bias.dtype if self.bias is not None else torch.float32
        self._buffers["weight_hat"] = dequantize(codes, self.weight_scale, self.weight_zero_point, axis=0).to(dtype)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh_weight_hat()

    def fake_weight(self, dtype: torch.dtype) -> Tensor:
        w = self._buffers.get("weight_hat")
        return (w if w is not None else self.dequantized_weight()).to(dtype)

    def codes(self) -> Tensor:
        """Weight codes in the weight's shape: integer (unpacked), or E4M3 (fp8 weights)."""
        if self.fp8_weights:
            return self.weight_codes
        return unpack(self.weight_codes, self.weight_bits, self.weight_symmetric, self.weight_shape)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """W_hat = (q_w - z_w) * s_w, [C_out, ...], in `dtype` (default: the bias's, else float32)."""
        dtype = dtype or (self.bias.dtype if self.bias is not None else torch.float32)
        return dequantize(self.codes(), self.weight_scale, self.weight_zero_point, axis=0).to(dtype)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        keep_scales_float32(self)
        codes = self._buffers.get("weight_codes")
        if self.fp8_weights and codes is not None and codes.dtype != float8.E4M3:  # a dtype cast: the codes stay E4M3 (exact)
            self._buffers["weight_codes"] = codes.to(float8.E4M3)
        return self


class QLinear(QModuleMixin, nn.Linear):
    @classmethod
    def _empty_like(cls, m: nn.Linear) -> QLinear:
        return cls(m.in_features, m.out_features, bias=m.bias is not None, device="meta")

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quant(x), self.fake_weight(x.dtype), self.bias)


class QConv2d(QModuleMixin, nn.Conv2d):
    @classmethod
    def _empty_like(cls, m: nn.Conv2d) -> QConv2d:
        return cls(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                   dilation=m.dilation, groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode, device="meta")

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.input_quant(x), self.fake_weight(x.dtype), self.bias)


QMODULES: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: QLinear, nn.Conv2d: QConv2d}
