"""quantize_model(unet, cfg): swap the chosen Conv2d/Linear layers for their quantized twins.

Layers are chosen by fnmatch patterns on qualified names (`down_blocks.0.attentions.0.*`),
never by index: a layer is quantized when it matches some `include` pattern, no `exclude`
pattern and no `keep_float` pattern. The returned `QuantMap` is what rebuilds the model later.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch
from torch import Tensor, nn

from pcr.errors import ConfigError, StoreError
from pcr.models.layers import candidate_layers, match_layers
from pcr.quant.correction import OUTPUT_LAYER, StepAffineConv2d
from pcr.quant.modules import QMODULES, QModuleMixin, act_params
from pcr.quant.observers import Observer, get_observer
from pcr.quant.qmap import FORMAT_VERSION, LayerQuant, QuantMap  # noqa: F401 (re-exported)
from pcr.quant.step import attach_step_counter
from pcr.stats.running import RunningStats


def select_layers(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...], keep_float: tuple[str, ...]) -> list[str]:
    """Qualified names to quantize. Every include and keep_float pattern must match some layer."""
    names = candidate_layers(model)
    included = match_layers(names, include, "quant.include")
    kept = set(match_layers(names, keep_float, "quant.keep_float"))
    chosen = [n for n in included if n not in kept and not any(fnmatchcase(n, p) for p in exclude)]
    if not chosen:
        raise ConfigError(f"quant.include={list(include)} with exclude={list(exclude)} leaves no layer to quantize")
    return chosen


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def apply_quant_map(model: nn.Module, qmap: QuantMap, observer: Observer | None = None,
                    timesteps: Tensor | list[float] | None = None, scheduler: str = "unknown",
                    num_inference_steps: int | None = None) -> dict[str, QModuleMixin]:
    """Swap in the quantized layers the map names and give the model its step counter. Returns the layers.

    With an observer the float weights are quantized now; without, the codes stay empty for
    `load_state_dict` (on a meta model: nothing is allocated). `timesteps` default: placeholders, to be loaded.
    """
    if timesteps is None:
        timesteps = torch.zeros(qmap.num_steps)
    if len(timesteps) != qmap.num_steps:
        raise ValueError(f"{len(timesteps)} timesteps given for a quantization map of {qmap.num_steps} steps")
    counter = attach_step_counter(model, timesteps, scheduler, num_inference_steps)
    out = {}
    for name, spec in qmap.layers.items():
        try:
            float_layer = model.get_submodule(name)
        except AttributeError:
            raise StoreError(f"quantization map names layer {name!r}, which this UNet does not have") from None
        qcls = QMODULES.get(type(float_layer))
        if qcls is None or qcls.__name__ != spec.kind:
            raise StoreError(f"layer {name!r} is {type(float_layer).__name__}, the quantization map expects the float twin of {spec.kind}")
        q = qcls.from_module(float_layer, num_steps=qmap.num_steps, weight_bits=spec.weight_bits, act_bits=spec.act_bits,
                             weight_symmetric=spec.weight_symmetric, act_symmetric=spec.act_symmetric,
                             observer=observer, counter=counter, fmt=spec.format)
        _swap(model, name, q)
        out[name] = q
    if qmap.output_correction is not None:
        try:
            layer = model.get_submodule(qmap.output_correction)
        except AttributeError:
            raise StoreError(f"quantization map corrects layer {qmap.output_correction!r}, which this UNet does not have") from None
        try:
            _swap(model, qmap.output_correction, StepAffineConv2d.from_module(layer, num_steps=qmap.num_steps, counter=counter))
        except ValueError as e:
            raise StoreError(f"layer {qmap.output_correction!r}: {e}") from None
    return out


def quantize_model(model: nn.Module, cfg, timesteps: Tensor | list[float], scheduler: str = "unknown",
                   num_inference_steps: int | None = None, output_correction: bool = False) -> QuantMap:
    """Quantize `model` in place per `cfg` (a `pcr.config.QuantConfig`): weights now, activations later.

    timesteps: the diffusers timesteps t_0..t_{T-1} of the T sampling steps the activations are calibrated for.
    output_correction: turn the float output layer (conv_out) into a StepAffineConv2d, identity until calibrated.
    """
    names = select_layers(model, cfg.include, cfg.exclude, cfg.keep_float)
    layers = {
        n: LayerQuant(QMODULES[type(model.get_submodule(n))].__name__, cfg.weight_bits, cfg.weight_symmetric,
                      cfg.act_bits, cfg.act_symmetric, cfg.format)
        for n in names
    }
    if output_correction and OUTPUT_LAYER in names:
        raise ConfigError(f"the output correction needs {OUTPUT_LAYER} in float: add it to quant.keep_float or exclude it, "
                          "or set calibrate.objective: ranges")
    qmap = QuantMap(len(timesteps), cfg.weight_observer, cfg.act_observer, layers,
                    output_correction=OUTPUT_LAYER if output_correction else None)
    apply_quant_map(model, qmap, get_observer(cfg.weight_observer), timesteps, scheduler, num_inference_steps)
    return qmap


@torch.no_grad()
def set_activation_step(qlayers: dict[str, QModuleMixin], observer: Observer, stats: dict[str, RunningStats], k: int,
                        bits: int) -> None:
    """Step k's activation parameters of every layer at `bits`, from that step's statistics (the observer's range).

    (scale, zero point) of all layers come from one vectorised `act_params` over [L] ranges per
    format and symmetry, not one small computation per layer: calibration sets every step twice.
    """
    by_kind: dict[tuple[str, bool], list[str]] = {}
    for name, q in qlayers.items():
        by_kind.setdefault((q.input_quant.format, q.input_quant.symmetric), []).append(name)
    for (fmt, symmetric), names in by_kind.items():
        ranges = [observer.activation_range(stats[n], bits, symmetric) for n in names]
        lo = torch.stack([r[0].reshape(()) for r in ranges])  # [L]
        hi = torch.stack([r[1].reshape(()) for r in ranges])  # [L]
        scale, zero_point = act_params(lo, hi, bits, symmetric, fmt)
        for i, n in enumerate(names):
            qlayers[n].input_quant.set_step_params(k, scale[i], zero_point[i], bits)


def qmodules(model: nn.Module) -> dict[str, QModuleMixin]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QModuleMixin)}


def corrected_output(model: nn.Module) -> StepAffineConv2d | None:
    """The model's corrected output layer, if its quantization has one."""
    return next((m for m in model.modules() if isinstance(m, StepAffineConv2d)), None)
