"""Kernels of the quantized layers: int8 codes with int32 accumulation, or E4M3 codes (fp8.py); per-channel rescale.

    p, spec = prepare_linear(...)  / prepare_conv2d(...)   # once, from the layer's codes and per-step tables
    y = int_linear(x, k, p, spec, bias) / int_conv2d(...)  # k: 0-d int64 step tensor
    ok, why = int_supported(...)                             # layers the int path cannot run
    summary = use_kernels(unet, "int")                       # the quantized layers onto them (layers.py)
    summary = use_kernels(unet, "fp8")                       # fp8-format layers onto E4M3 kernels (fp8.py)
    with cuda_routes(): ...                                  # the CUDA-only branches, forced on the CPU (tests)

Pure functions on plain tensors; `p` is a NamedTuple of tensors (buffers), `spec` a frozen dataclass.
They agree with the fake-quantized float layers up to float accumulation order (tests/quant/kernels).
"""

from pcr.quant.kernels.common import cuda_routes
from pcr.quant.kernels.conv import (
           IntConv2dParams,
           IntConv2dSpec,
           int_conv2d,
           onednn_available,
           prepare_conv2d,
)
from pcr.quant.kernels.fp8 import (
           Fp8QConv2d,
           Fp8QLinear,
           fp8_conv2d,
           fp8_linear,
           prepare_fp8_conv2d,
           prepare_fp8_linear,
)
from pcr.quant.kernels.layers import IntQConv2d, IntQLinear, use_kernels
from pcr.quant.kernels.linear import IntLinearParams, IntLinearSpec, int_linear, prepare_linear
from pcr.quant.kernels.support import int_supported

__all__ = ["Fp8QConv2d", "Fp8QLinear", "IntConv2dParams", "IntConv2dSpec", "IntLinearParams", "IntLinearSpec", "IntQConv2d",
           "IntQLinear", "cuda_routes", "fp8_conv2d", "fp8_linear", "int_conv2d", "int_linear", "int_supported",
           "onednn_available", "prepare_conv2d", "prepare_fp8_conv2d", "prepare_fp8_linear", "prepare_linear", "use_kernels"]
