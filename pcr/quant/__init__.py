"""The quantization core: affine codes, observers, quantized layers, quantize/save/load."""

from pcr.quant.affine import dequantize, fake_quantize, params_from_range, qrange, quantize
from pcr.quant.modules import ActQuantizer, QConv2d, QLinear, QModuleMixin
from pcr.quant.observers import OBSERVERS, RunningStats, get_observer
from pcr.quant.quantize import QuantMap, apply_quant_map, qmodules, quantize_model, select_layers
from pcr.quant.serialize import load_quantized, save_quantized
from pcr.quant.step import current_step, timestep

__all__ = [
    "OBSERVERS", "ActQuantizer", "QConv2d", "QLinear", "QModuleMixin", "QuantMap", "RunningStats", "apply_quant_map",
    "current_step", "dequantize", "fake_quantize", "get_observer", "load_quantized", "params_from_range", "qmodules",
    "qrange", "quantize", "quantize_model", "save_quantized", "select_layers", "timestep",
]
