"""pcr: post-training quantization of text-to-image diffusion models with PCR.

    pipe = pcr.load_pipeline(model_path, "outputs/quantized")   # a stock diffusers pipeline
    unet = pcr.load_quantized("outputs/quantized")               # the quantized UNet alone
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {"load_pipeline": "pcr.pipeline", "load_quantized": "pcr.quant.serialize", "save_quantized": "pcr.quant.serialize"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # lazy (PEP 562): `import pcr` stays light for the stage entry points
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pcr' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
