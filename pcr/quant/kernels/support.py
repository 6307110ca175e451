"""Which layers the integer kernels can run, and why not: `int_supported(...) -> (ok, reason)`.

The caller names the layer: `ok, why = int_supported(...); if not ok: fallback[name] = why`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from pcr.quant.kernels import common
from pcr.quant.kernels.common import MAX_REDUCTION, WIDE_MAX_BITS


def int_supported(*, weight_bits: int, act_bits: Tensor | Sequence[int], reduction: int, kind: str = "linear",
                  groups: int = 1, out_channels: int | None = None, padding=0, kernel_size=(1, 1),
                  dilation=(1, 1), device: str = "cpu") -> tuple[bool, str]:
    """(True, "") when int_linear / int_conv2d runs the layer exactly; else (False, why).

    reduction: K of one output, in_features (Linear) or C_in/groups * kh * kw (Conv2d).
    act_bits: the quantizer's bits per step [T] (relaxed steps included).
    """
    if kind not in ("linear", "conv2d"):
        return False, f"{kind} layers have no integer kernel (Linear and Conv2d only)"
    if weight_bits > 8:
        return False, f"weight_bits={weight_bits}: integer kernels need weight codes that fit int8 (<= 8 bits)"
    bits = [int(b) for b in (act_bits.tolist() if isinstance(act_bits, Tensor) else act_bits)]
    if max(bits) > WIDE_MAX_BITS:
        k = bits.index(max(bits))
        return False, f"step {k} runs {max(bits)}-bit activations: the split int8 kernel goes to {WIDE_MAX_BITS} bits"
    if reduction > MAX_REDUCTION:
        return False, f"reduction K={reduction} > {MAX_REDUCTION}: the int32 accumulator could overflow"
    if kind == "conv2d":
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        if padding == "same" and (dh * (kh - 1) % 2 or dw * (kw - 1) % 2):
            return False, "padding='same' with an even effective kernel pads asymmetrically"
        if (device.startswith("cuda") or common.CUDA_ROUTES) and groups > 1 and out_channels is not None and (out_channels // groups) % 8:
            return False, f"CUDA torch._int_mm needs C_out/groups a multiple of 8, got {out_channels // groups}"
    return True, ""
