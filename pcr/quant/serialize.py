"""Save and load quantized UNets. Everything goes through `state_dict`: no hand-kept parallel dict.

Two forms:
- the calibration state (calibrate's outs): the quantized layers' entries of the UNet's state_dict
  (integer weight codes, per-channel weight scale/zero point, per-step activation buffers) and the
  step counter's timesteps, + the quantization map. Applied onto the float UNet: `load_quant_state`.
- the artifact (export's out, what users ship): a folder holding the *whole* quantized UNet

      config.json                      the UNet's diffusers config
      quantization.json                the quantization map (format_version), relax schedule, scheduler
      quantized_unet.safetensors       the UNet's state_dict: float layers, biases, integer codes, per-step
                                       activation scale / zero point / bits
      scheduler/scheduler_config.json  the calibrated scheduler

  `load_quantized(folder)` builds the UNet on the meta device and assigns the stored tensors: the
  float UNet's weight files are never read. A damaged artifact fails naming the file and the tensor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pcr.errors import StoreError
from pcr.files import atomic_path
from pcr.quant.correction import StepAffineConv2d
from pcr.quant.quantize import QuantMap, apply_quant_map, qmodules
from pcr.quant.step import STEP_COUNTER, step_counter

CONFIG = "config.json"
QUANT_CONFIG = "quantization.json"
WEIGHTS = "quantized_unet.safetensors"
SCHEDULER_DIR = "scheduler"
SCHEDULER_CONFIG = "scheduler_config.json"
ARTIFACT_FILES = (CONFIG, QUANT_CONFIG, WEIGHTS)


def quant_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The quantized layers', the corrected output layer's and the step counter's entries of the model's state_dict."""
    corrected = tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, StepAffineConv2d))
    prefixes = tuple(f"{n}." for n in qmodules(model)) + corrected + (f"{STEP_COUNTER}.",)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise StoreError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise StoreError(f"{path} is damaged or truncated and cannot be read ({e})") from None


def _check_tensors(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], strict: bool) -> None:
    """Every expected tensor present with its shape and dtype; with strict, nothing else."""
    for key, ref in expected.items():
        if key not in state:
            raise StoreError(f"{path} lacks tensor {key!r} (shape {tuple(ref.shape)}) that this model needs")
        got = state[key]
        if got.shape != ref.shape:
            raise StoreError(f"{path}: tensor {key!r} has shape {tuple(got.shape)}, this model's is {tuple(ref.shape)}: "
                             "the file belongs to another model or quantization")
        if got.dtype != ref.dtype and not (got.is_floating_point() and ref.is_floating_point()):
            raise StoreError(f"{path}: tensor {key!r} is {got.dtype}, this model expects {ref.dtype}")
    extra = sorted(set(state) - set(expected))
    if strict and extra:
        raise StoreError(f"{path} holds tensor {extra[0]!r} ({len(extra)} in all) that this model does not have")


def _metadata(kind: str, qmap: QuantMap) -> dict[str, str]:
    """One metadata entry: safetensors writes several in hash order, so the same model would get other bytes."""
    return {"pcr": json.dumps({"format": kind, "format_version": qmap.format_version}, sort_keys=True)}


def save_quant_state(model: nn.Module, qmap: QuantMap, params_path: str | Path, map_path: str | Path) -> None:
    meta = _metadata("pcr-quant-state", qmap)
    with atomic_path(params_path) as tmp:
        save_file(quant_state(model), str(tmp), metadata=meta)
    with atomic_path(map_path) as tmp:
        qmap.save(tmp)


@torch.no_grad()
def load_quant_state(model: nn.Module, params_path: str | Path, map_path: str | Path) -> QuantMap:
    """Quantize the float UNet in place from a calibration state: its quantized layers and step counter."""
    qmap = QuantMap.load(map_path)
    apply_quant_map(model, qmap)
    state = _read_tensors(Path(params_path))
    _check_tensors(Path(params_path), state, quant_state(model), strict=True)
    model.load_state_dict(state, strict=False)
    return qmap


def save_quantized(unet: nn.Module, qmap: QuantMap, out: str | Path, scheduler=None) -> None:
    """The whole quantized UNet as one artifact folder, written at `<out>.partial` and renamed into place."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unet.save_config(tmp)  # config.json
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS), metadata=_metadata("pcr-quantized-unet", qmap))
    qmap.save(tmp / QUANT_CONFIG)
    if scheduler is not None:
        scheduler.save_pretrained(tmp / SCHEDULER_DIR)
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)


def _unet_class(config: dict):
    import diffusers

    name = config.get("_class_name", "UNet2DConditionModel")
    cls = getattr(diffusers, name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise StoreError(f"config.json names model class {name!r}, which diffusers does not have")
    return cls


@torch.no_grad()
def load_quantized(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """The quantized UNet of an artifact folder, built on the meta device, tensors assigned from the file.

    dtype casts the float layers (activation and weight scales stay float32). Nothing is returned, and
    nothing is left allocated, unless every tensor is present and fits.
    """
    root = Path(path)
    for name in ARTIFACT_FILES:
        if not (root / name).is_file():
            raise StoreError(f"{root} is not a pcr quantized-model folder: {name} is missing (it holds {', '.join(ARTIFACT_FILES)})")
    try:
        qmap = QuantMap.load(root / QUANT_CONFIG)
        config = json.loads((root / CONFIG).read_text())
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(f"{root}: {e}") from None
    cls = _unet_class(config)
    with torch.device("meta"):
        unet = cls.from_config(config)
    apply_quant_map(unet, qmap, scheduler=qmap.meta.get("scheduler", {}).get("_class_name", "unknown"),
                    num_inference_steps=qmap.meta.get("num_inference_steps"))
    state = _read_tensors(root / WEIGHTS)
    _check_tensors(root / WEIGHTS, state, unet.state_dict(), strict=True)
    unet.load_state_dict(state, strict=True, assign=True)
    counter = step_counter(unet)
    counter.index = torch.zeros(1, dtype=torch.long)  # not saved: the step of the call in flight
    left = [n for n, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
    if left:
        raise StoreError(f"{root / WEIGHTS}: tensor {left[0]!r} was not restored ({len(left)} in all)")
    unet = unet.to(device) if dtype is None else unet.to(device=device, dtype=dtype)
    return unet.eval()
