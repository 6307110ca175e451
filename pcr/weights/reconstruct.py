"""BRECQ-style reconstruction units, their calibration data, and AdaRound on one unit.

Units (`granularity: block`): each diffusers ResnetBlock2D and BasicTransformerBlock holding a quantized
layer is one unit, its quantized layers learned jointly against the block's output; every other
quantized layer is a unit of its own (the official recon_model). `granularity: layer`: every layer alone.

Data: the FLOAT UNet runs on stored trajectory inputs (x_t, t, conditioning at chosen steps and samples);
a forward pre-hook keeps the unit's inputs (positional and keyword: temb, encoder_hidden_states, ...) and a
forward hook its float output, the target, then stops the UNet (nothing after the unit is computed).
Every unit sees float inputs, as in the official code, so units are independent of each other's rounding.
Activations stay float throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from torch import Tensor, nn
from torch.func import functional_call

from pcr.weights.adaround import AdaRound, learn_rounding, reconstruction_loss
from pcr.weights.codes import WeightCodes
from pcr.weights.rtn import rtn, weight_params

BLOCK_TYPES = (ResnetBlock2D, BasicTransformerBlock)


@dataclass(frozen=True)
class Unit:
    module: str  # qualified name of the block (or of the layer itself)
    kind: str  # "block" | "layer"
    layers: tuple[str, ...]  # qualified names of its quantized layers

    def relative(self, layer: str) -> str:
        """The layer's name inside the unit's module ("" for a layer unit)."""
        return layer[len(self.module) + 1:] if layer != self.module else ""


def units(model: nn.Module, layers: Iterable[str], granularity: str) -> list[Unit]:
    """Reconstruction units covering `layers` once each, in module order."""
    layers = list(layers)
    if granularity == "layer":
        return [Unit(n, "layer", (n,)) for n in layers]
    blocks = [n for n, m in model.named_modules() if isinstance(m, BLOCK_TYPES)]
    grouped: dict[str, list[str]] = {}
    for n in layers:
        owner = max((b for b in blocks if n.startswith(b + ".")), key=len, default=None)
        grouped.setdefault(owner or n, []).append(n)
    return [Unit(m, "layer" if m in layers else "block", tuple(ls)) for m, ls in grouped.items()]


class _Stop(Exception):
    pass


@dataclass
class UnitData:
    """A unit's calibration rows: inputs as the UNet passed them, float outputs [rows, ...] (on the CPU)."""

    args: list[Any]  # tensors with a row axis are concatenated over calls; anything else is the first call's
    kwargs: dict[str, Any]
    batched: set[str]  # "arg<i>" / kwarg names of the row-indexed tensors
    target: Tensor

    @property
    def num_rows(self) -> int:
        return self.target.shape[0]

    def inputs(self, idx: Tensor, device) -> tuple[list[Any], dict[str, Any]]:
        def pick(key: str, v):
            return v[idx].to(device) if key in self.batched else (v.to(device) if isinstance(v, Tensor) else v)

        return [pick(f"arg{i}", a) for i, a in enumerate(self.args)], {k: pick(k, v) for k, v in self.kwargs.items()}


@torch.no_grad()
def capture(model: nn.Module, module: nn.Module, calls: Iterable[Callable[[], Any]]) -> UnitData:
    """Run each call of the float `model` until `module` has run; keep its inputs and output per row."""
    args_seen, kwargs_seen, outs = [], [], []

    def pre(mod, args, kwargs):
        args_seen.append(args)
        kwargs_seen.append(kwargs)

    def post(mod, args, kwargs, out):
        outs.append(out.detach().cpu())
        raise _Stop

    handles = [module.register_forward_pre_hook(pre, with_kwargs=True), module.register_forward_hook(post, with_kwargs=True)]
    try:
        for call in calls:
            try:
                call()
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    if not outs:
        raise ValueError("the unit never ran during the UNet calls: is it part of the UNet?")
    rows = [o.shape[0] for o in outs]
    named = [{**{f"arg{i}": a for i, a in enumerate(args)}, **kw} for args, kw in zip(args_seen, kwargs_seen, strict=True)]
    batched = {k for k, v in named[0].items() if all(isinstance(d.get(k), Tensor) and d[k].shape[0] == r for d, r in zip(named, rows, strict=True))}
    merged = {k: torch.cat([d[k].detach().cpu() for d in named]) if k in batched else v for k, v in named[0].items()}
    n_args = len(args_seen[0])
    return UnitData([merged[f"arg{i}"] for i in range(n_args)], {k: merged[k] for k in kwargs_seen[0]}, batched, torch.cat(outs))


@dataclass(frozen=True)
class UnitResult:
    codes: dict[str, WeightCodes]  # by qualified layer name
    mse_rtn: float  # mean squared error of the unit's output on all its rows, round to nearest
    mse_adaround: float  # the same with the learned rounding
    loss: float  # last reconstruction loss of the optimisation


@torch.no_grad()
def output_mse(module: nn.Module, weights: dict[str, Tensor], data: UnitData, device, chunk: int) -> float:
    """Mean squared error of `module` with `weights` (parameter name -> tensor) against the float targets."""
    total, count = 0.0, 0
    for start in range(0, data.num_rows, chunk):
        idx = torch.arange(start, min(start + chunk, data.num_rows))
        args, kwargs = data.inputs(idx, device)
        pred = functional_call(module, weights, tuple(args), kwargs).float()
        total += float((pred - data.target[idx].to(device).float()).pow(2).sum())
        count += pred.numel()
    return total / count


def reconstruct_unit(model: nn.Module, unit: Unit, data: UnitData, quant, generator: torch.Generator,
                     progress: Callable[[int], None] | None = None) -> UnitResult:
    """AdaRound on one unit's quantized layers (quant: a `QuantConfig`; its recon settings drive the optimisation)."""
    cfg = quant.recon
    module = model.get_submodule(unit.module).requires_grad_(False)  # gradients for V only
    dev, dtype = next(module.parameters()).device, next(module.parameters()).dtype

    def key(layer: str) -> str:
        rel = unit.relative(layer)
        return f"{rel}.weight" if rel else "weight"

    rounders, rtn_weights = {}, {}
    for layer in unit.layers:
        w = model.get_submodule(layer).weight
        scale, zero_point = weight_params(w.detach().float(), quant.weight_bits, quant.weight_symmetric, quant.weight_observer)
        rounders[layer] = AdaRound(w, scale, zero_point, quant.weight_bits, quant.weight_symmetric)
        rtn_weights[key(layer)] = rtn(w, quant.weight_bits, quant.weight_symmetric, quant.weight_observer).dequantize().to(dev, dtype)

    def loss_fn(soft: dict[str, Tensor], idx: Tensor) -> Tensor:
        args, kwargs = data.inputs(idx, dev)
        pred = functional_call(module, {key(n): w.to(dtype) for n, w in soft.items()}, tuple(args), kwargs)
        return reconstruction_loss(pred, data.target[idx].to(dev))

    reg_weight = cfg.reg_weight if unit.kind == "block" else cfg.layer_reg_weight
    with torch.enable_grad():
        loss = learn_rounding(rounders, loss_fn, data.num_rows, cfg, reg_weight, generator, progress)
    hard = {key(n): r.hard_weight().to(dev, dtype) for n, r in rounders.items()}
    return UnitResult(
        {n: r.weight_codes() for n, r in rounders.items()},
        output_mse(module, rtn_weights, data, dev, cfg.batch_size),
        output_mse(module, hard, data, dev, cfg.batch_size),
        loss,
    )
