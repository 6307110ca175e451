"""Calibration objectives: what a step fits once its activation ranges are fixed (`calibrate.objective`).

The mode decides *which inputs* step k is calibrated on (progressive: the quantized trajectory x̂_k; fp32
and shared: the FP32 trajectory x_k); the objective decides *what* is fitted on them, identically in every
mode, so a comparison of modes is never a comparison of objectives.

- `ranges`: the activation ranges alone (the observer's), nothing more: PCR as published.
- `bias`:   plus a per-step, per-channel shift h_k of the UNet's output (g_k = 1).
- `affine`: plus a per-step, per-channel gain and shift (g_k, h_k), least squares.

The target ε*_k of the corrected output g_k ⊙ ε̂_k + h_k is "the output that puts the next state on the
FP32 trajectory". The scheduler step is affine in the model output at a fixed state (DDIM, Euler, PNDM,
DPM++: linear multistep), x_{k+1} = A_k + B_k ε, so

    ε*_k = (x_{k+1} - A_k) / B_k             A_k, B_k from two scheduler steps on copies (ε = 0, ε = 1)

On the FP32 trajectory (fp32, shared) the input is x_k and ε*_k is FP32's own output there: the fit then
removes the quantized step's error on FP32 inputs (open loop). On the quantized trajectory (progressive)
the input x̂_k has drifted, and ε*_k also pulls x̂ back towards x (closed loop): the part of the fit that
only progressive calibration can make. The fit is per output channel over samples and pixels
(g, h: [C]), stored in the output layer (pcr.quant.correction).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor

OBJECTIVES = ("ranges", "bias", "affine")
AFFINE_RTOL = 1e-4  # how far from affine a scheduler step may be (float rounding) before the objective refuses it
MIN_VARIANCE = 1e-12  # a channel whose ε̂ does not vary gets gain 1 (the fit is undetermined)


def fit_bias(eps: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(g, h) [C] with g = 1 minimising ||ε̂ + h - ε*||² per channel; eps, target [N, C, h, w]."""
    d = (target - eps).transpose(0, 1).flatten(1)  # [C, N h w]
    return torch.ones(d.shape[0], dtype=d.dtype, device=d.device), d.mean(1)


def fit_affine(eps: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(g, h) [C] minimising ||g ε̂ + h - ε*||² per channel (ordinary least squares); eps, target [N, C, h, w]."""
    e, t = eps.transpose(0, 1).flatten(1).double(), target.transpose(0, 1).flatten(1).double()  # [C, M]
    de, dt = e - e.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    var = de.square().mean(1)
    g = torch.where(var > MIN_VARIANCE, (de * dt).mean(1) / var.clamp_min(MIN_VARIANCE), torch.ones_like(var))
    h = t.mean(1) - g * e.mean(1)
    return g.float(), h.float()


FITS: dict[str, Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None] = {
    "ranges": None, "bias": fit_bias, "affine": fit_affine}


def get_fit(objective: str):
    if objective not in FITS:
        raise ValueError(f"calibrate.objective={objective!r} is not allowed: choose one of {list(OBJECTIVES)}")
    return FITS[objective]


def apply_correction(eps: Tensor, gain: Tensor, shift: Tensor) -> Tensor:
    """g ⊙ ε + h for ε [N, C, h, w], g, h [C]: what the corrected output layer does to the guided output."""
    return torch.addcmul(shift.reshape(1, -1, 1, 1), eps, gain.reshape(1, -1, 1, 1))


def step_target(step: Callable[[object, Tensor], Tensor], scheduler, x: Tensor, x_next: Tensor) -> Tensor:
    """ε* with step(scheduler, ε*) = x_next, for a scheduler step affine in ε: two steps on copies of its state.

    step(sched, eps) -> x_{k+1}; x: the state the step starts from (for shapes), x_next [N, C, h, w]: the target state.
    """
    zero = torch.zeros_like(x)
    a = step(copy.deepcopy(scheduler), zero)  # A_k
    b = step(copy.deepcopy(scheduler), zero + 1) - a  # B_k
    c = step(copy.deepcopy(scheduler), zero - 1)  # A_k - B_k if the step is affine in ε
    if not torch.allclose(c, a - b, rtol=AFFINE_RTOL, atol=AFFINE_RTOL * float(b.abs().max())):
        cfg = getattr(scheduler, "config", {})
        raise ValueError(f"{type(scheduler).__name__}'s step is not affine in the model output (clip_sample="
                         f"{cfg.get('clip_sample')}, thresholding={cfg.get('thresholding')}): calibrate.objective needs a "
                         "deterministic, unclipped scheduler step; use calibrate.objective=ranges")
    return (x_next.to(a.device) - a) / b
