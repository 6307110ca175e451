"""The quantization core: affine codes, observers, quantized layers, quantize/save/load.

Names are imported lazily (PEP 562), so `import pcr.quant.affine` reads no other file: each DVC
stage then depends on exactly the quantization files it uses.
"""

from importlib import import_module

_EXPORTS = {
    "pcr.quant.affine": ("dequantize", "fake_quantize", "params_from_range", "qrange", "quantize"),
    "pcr.quant.modules": ("ActQuantizer", "QConv2d", "QLinear", "QModuleMixin"),
    "pcr.quant.observers": ("OBSERVERS", "RunningStats", "get_observer"),
    "pcr.quant.qmap": ("LayerQuant", "QuantMap"),
    "pcr.quant.quantize": ("apply_quant_map", "qmodules", "quantize_model", "select_layers"),
    "pcr.quant.serialize": ("load_quant_state", "load_quantized", "save_quant_state", "save_quantized"),
    "pcr.quant.step": ("StepCounter", "at_step", "step_counter"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'pcr.quant' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
