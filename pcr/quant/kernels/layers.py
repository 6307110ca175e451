"""The kernels phase after convert: `use_kernels(unet, "fake" | "int" | "fp8") -> summary`.

    unet = load_quantized(path)              # or quantize_model + calibration: QLinear / QConv2d (fake)
    summary = use_kernels(unet, "int")       # {"int": n, "fake": m, "fallback": {layer: reason}}

"int" turns each QLinear / QConv2d that `int_supported` accepts into its IntQLinear / IntQConv2d twin
in place (the class is swapped: buffers, bias, step counter and hooks stay) and derives what the
kernels read as non-persistent buffers `int_<field>` (int8 / prepacked weights, per-step activation
tables and zero-point corrections). The stored codes `weight_codes` are then dropped (set to None):
the int8 weights hold the same integers, so the weights are in memory once. `state_dict` rebuilds
the codes from them exactly (`_save_to_state_dict`) and stays the artifact format; `load_state_dict`
re-derives. Layers the kernels cannot run stay fake, by name, with the reason. "fake" turns every
layer back (codes restored). "fp8" does the same for fp8-format layers on E4M3 kernels (kernels/fp8.py:
derived buffers `fp8_<field>`, summary {"fp8": n, "fake": m, "fallback": ...}).

The derived buffers are a function of the layer's state at this call: run the phase after calibration
or loading (after `set_step`, run it again). Moving or casting the model recomputes them for the
new device (the oneDNN conv weight is an opaque prepacked tensor that cannot be cast). The step k
is the layer's `input_quant._counter.index` [1], read in the graph (one compiled graph for all steps).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pcr.quant.kernels.conv import IntConv2dParams, int_conv2d, prepare_conv2d
from pcr.quant.kernels.linear import IntLinearParams, int_linear, prepare_linear
from pcr.quant.kernels.support import int_supported
from pcr.quant.modules import QConv2d, QLinear, QModuleMixin
from pcr.quant.packing import pack

KERNELS = ("fake", "int", "fp8", "openvino")
WHOLE_UNET = ("openvino",)  # backends that compile the whole UNet from its artifact (pcr/quant/kernels/openvino.py)


class IntKernelMixin:
    """Derived int-path state of a quantized layer (non-persistent buffers) and the step index."""

    params_type: type  # IntLinearParams | IntConv2dParams
    prefix = "int_"  # derived buffers: int_weight, int_corr, int_act_scale, ... (fp8 kernels: fp8_)

    def prepare_int(self) -> None:
        """Derive the int state from the stored codes, then drop the codes (the int8 weights hold them)."""
        params, self.int_spec = self._prepare(QModuleMixin.codes(self))
        for field, t in params._asdict().items():
            self.register_buffer(self.prefix + field, t, persistent=False)
        self._buffers["weight_codes"] = None
        self._buffers["weight_hat"] = None  # the fake kernel's float weight: not kept beside the int8 one

    def drop_int(self) -> None:
        """Restore the stored codes from the int8 weights and remove the int state."""
        if self._buffers.get("weight_codes") is None and self.prefix + "weight" in self._buffers:
            self._buffers["weight_codes"] = self.stored_codes()
        for field in self.params_type._fields:
            self._buffers.pop(self.prefix + field, None)
        self.__dict__.pop("int_spec", None)
        self.refresh_weight_hat()

    def codes(self) -> Tensor:
        """Integer weight codes in the weight's shape, from the int8 weights: w' + o_w (see kernels/common.py)."""
        w = self._int8_weight().to(torch.int16)  # [C_out, ...] w' = q - o_w
        if self.weight_symmetric or self.weight_bits <= 7:  # o_w = z_w (common.weight_int8)
            return w + self.weight_zero_point.reshape(-1, *[1] * (w.dim() - 1)).to(torch.int16)
        return w + 128

    def stored_codes(self) -> Tensor:
        return pack(self.codes(), self.weight_bits, self.weight_symmetric)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._buffers.get("weight_codes") is None:
            destination[prefix + "weight_codes"] = self.stored_codes()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.drop_int()  # codes back as a buffer for the load, then derived again from the loaded state
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.prepare_int()

    def int_params(self):
        return self.params_type(*(self._buffers[self.prefix + f] for f in self.params_type._fields))

    def step(self) -> Tensor:
        """k as the 0-d int64 tensor the kernels read (a view of the UNet's step counter)."""
        return self.input_quant._counter.index.view(())

    def _apply(self, fn, recurse=True):
        self.drop_int()  # recomputed from the moved/cast codes and tables
        super()._apply(fn, recurse)
        self.prepare_int()
        return self


class IntQLinear(IntKernelMixin, QLinear):
    params_type = IntLinearParams

    def _prepare(self, codes: Tensor):
        a = self.input_quant
        return prepare_linear(codes, self.weight_scale, self.weight_zero_point, a.scale, a.zero_point, a.bits,
                              weight_bits=self.weight_bits, weight_symmetric=self.weight_symmetric,
                              act_symmetric=a.symmetric)

    def _int8_weight(self) -> Tensor:
        return self.int_weight[:self.out_features, :self.in_features]  # [C8, K8] -> [C_out, K]

    def forward(self, x: Tensor) -> Tensor:
        return int_linear(x, self.step(), self.int_params(), self.int_spec, self.bias)


class IntQConv2d(IntKernelMixin, QConv2d):
    params_type = IntConv2dParams

    def _prepare(self, codes: Tensor):
        a = self.input_quant
        return prepare_conv2d(codes, self.weight_scale, self.weight_zero_point, a.scale, a.zero_point, a.bits,
                              weight_bits=self.weight_bits, weight_symmetric=self.weight_symmetric,
                              act_symmetric=a.symmetric, stride=self.stride, padding=self.padding,
                              dilation=self.dilation, groups=self.groups, padding_mode=self.padding_mode)

    def _int8_weight(self) -> Tensor:
        g, og, (kh, kw) = self.groups, self.out_channels // self.groups, self.kernel_size
        w = self.int_weight
        if self.int_spec.route == "onednn":  # prepacked [G (Og + zp), Cg, kh, kw]; zp: a ones channel per group
            w = w.to_dense()
            return w.reshape(g, -1, *w.shape[1:])[:, :og].reshape(-1, *w.shape[1:])
        cg = self.in_channels // g  # im2col: [G, Og8, K8], K = (kh, kw, Cg)
        return w[:, :og, :kh * kw * cg].reshape(g * og, kh, kw, cg).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return int_conv2d(x, self.step(), self.int_params(), self.int_spec, self.bias)


INT_TWINS: dict[type, type] = {QLinear: IntQLinear, QConv2d: IntQConv2d}
FAKE_TWINS: dict[type, type] = {v: k for k, v in INT_TWINS.items()}


def format_support(m: QModuleMixin, fmt: str, twins: dict) -> tuple[bool, str]:
    """What every backend asks first: quantized inputs of its format (quant.format) and a twin class."""
    a = m.input_quant
    if not a.enabled:
        return False, "its activation quantizer is disabled (float inputs)"
    if a.format != fmt:
        return False, f"its activations are {a.format} codes (quant.format={a.format}): run it with kernels={a.format!r}"
    if type(m) not in twins:
        return False, f"{type(m).__name__} has no {fmt} twin (QLinear and QConv2d only)"
    return True, ""


def int_support(m: QModuleMixin) -> tuple[bool, str]:
    """(True, "") when the int path runs layer m exactly, else (False, why)."""
    ok, why = format_support(m, "int", INT_TWINS)
    if not ok:
        return ok, why
    a = m.input_quant
    device = str(m.weight_codes.device)
    if isinstance(m, QLinear):
        return int_supported(weight_bits=m.weight_bits, act_bits=a.bits, reduction=m.in_features, kind="linear",
                             device=device)
    kh, kw = m.kernel_size
    return int_supported(weight_bits=m.weight_bits, act_bits=a.bits, reduction=m.in_channels // m.groups * kh * kw,
                         kind="conv2d", groups=m.groups, out_channels=m.out_channels, padding=m.padding,
                         kernel_size=m.kernel_size, dilation=m.dilation, device=device)


def _to_fake(m: QModuleMixin) -> None:
    if isinstance(m, IntKernelMixin):  # int and fp8 twins
        m.drop_int()
        m.__class__ = next(c for c in type(m).__mro__ if c in FAKE_TWINS.values())


def use_kernels(model: nn.Module, kernels: str) -> dict:
    """Run every quantized layer of `model` on `kernels` ("fake" | "int" | "fp8"); returns the summary
    {"int" (or "fp8"): layers on those kernels, "fake": the others, "fallback": {layer: why not}}."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r} is not allowed: choose one of {list(KERNELS)}")
    if kernels in WHOLE_UNET:
        raise ValueError(f"kernels={kernels!r} runs the whole UNet from its artifact: pcr.load_pipeline(..., kernels={kernels!r})")
    twins, support = INT_TWINS, int_support
    if kernels == "fp8":  # imported here: kernels/fp8.py builds on IntKernelMixin
        from pcr.quant.kernels.fp8 import FP8_TWINS as twins
        from pcr.quant.kernels.fp8 import fp8_support as support
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QModuleMixin)}
    if not layers:
        raise ValueError("this model has no quantized layers: quantize it or load a quantized artifact first")
    fallback: dict[str, str] = {}
    for name, m in layers.items():
        _to_fake(m)
        if kernels == "fake":
            continue
        ok, why = support(m)
        if not ok:
            fallback[name] = why
            continue
        m.__class__ = twins[type(m)]
        m.prepare_int()
    n_fast = len(layers) - len(fallback) if kernels != "fake" else 0
    return {"fp8" if kernels == "fp8" else "int": n_fast, "fake": len(layers) - n_fast, "fallback": fallback}


def describe(summary: dict, kernels: str) -> str:
    """One line for the load-time log, then one per fallback layer."""
    fast, what = ("fp8", "on fp8 (E4M3) kernels") if "fp8" in summary else ("int", "on integer kernels")
    if kernels == "openvino":
        what = "u8 x i8 in OpenVINO"
    lines = [f"kernels={kernels}: {summary[fast]} quantized layers {what}, {summary['fake']} fake-quantized"]
    lines += [f"  fake: {name}: {why}" for name, why in summary["fallback"].items()]
    return "\n".join(lines)
