"""Save and load a quantized UNet: safetensors of the quantizer state + the JSON quantization map.

qparams.safetensors holds, per layer, the weight as integer codes (`<name>.weight_codes`) with
its per-channel `weight_scale`/`weight_zero_point`, and the activation quantizer's per-step
buffers (`<name>.input_quant.{scale,zero_point,bits,calibrated}`). Biases and every float layer
come from the float UNet, so loading = float UNet + these two files, with no forward pass.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pcr.files import atomic_path
from pcr.quant.affine import dequantize, quantize
from pcr.quant.quantize import QuantMap, apply_quant_map, qmodules

ACT_BUFFERS = ("scale", "zero_point", "bits", "calibrated")


def quant_state(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, q in qmodules(model).items():
        codes = quantize(q.weight.detach().float(), q.weight_scale, q.weight_zero_point, q.weight_bits, q.weight_symmetric, axis=0)
        out[f"{name}.weight_codes"] = codes
        out[f"{name}.weight_scale"] = q.weight_scale
        out[f"{name}.weight_zero_point"] = q.weight_zero_point
        for b in ACT_BUFFERS:
            out[f"{name}.input_quant.{b}"] = getattr(q.input_quant, b)
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def save_quantized(model: nn.Module, qmap: QuantMap, params_path: str | Path, map_path: str | Path) -> None:
    with atomic_path(params_path) as tmp:
        save_file(quant_state(model), str(tmp), metadata={"format": "pcr", "format_version": str(qmap.format_version)})
    with atomic_path(map_path) as tmp:
        qmap.save(tmp)


@torch.no_grad()
def load_quantized(model: nn.Module, params_path: str | Path, map_path: str | Path) -> QuantMap:
    """Rebuild the quantized UNet in place from its float twin; returns the quantization map."""
    qmap = QuantMap.load(map_path)
    state = load_file(str(params_path))
    for name, q in apply_quant_map(model, qmap).items():
        try:
            codes = state[f"{name}.weight_codes"]
            q.weight_scale.copy_(state[f"{name}.weight_scale"])
            q.weight_zero_point.copy_(state[f"{name}.weight_zero_point"])
            for b in ACT_BUFFERS:
                getattr(q.input_quant, b).copy_(state[f"{name}.input_quant.{b}"])
        except KeyError as e:
            raise ValueError(f"{params_path} lacks tensor {e.args[0]!r} that its quantization map needs") from None
        except RuntimeError as e:
            raise ValueError(f"{params_path}: tensors of layer {name!r} do not fit this UNet ({e})") from None
        if codes.shape != q.weight.shape:
            raise ValueError(f"{params_path}: {name}.weight_codes has shape {tuple(codes.shape)}, the UNet's weight {tuple(q.weight.shape)}")
        w_hat = dequantize(codes.to(q.weight.device), q.weight_scale, q.weight_zero_point, axis=0)
        q.weight.data.copy_(w_hat.to(q.weight.dtype))
        q.input_quant._sync_ranges()
    return qmap
