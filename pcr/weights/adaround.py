"""AdaRound (Nagel et al. 2020) as the official PCR code runs it (BRECQ's loss): learn, per weight, to round down or up.

    h(V)   = clamp(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)        rectified sigmoid, zeta = 1.1, gamma = -0.1
    W_soft = (clamp(floor(W / s) + h(V) + z, q_min, q_max) - z) * s  per output channel s [C_out], z [C_out]
    loss   = sum_c (f(W_soft; x) - f(W; x))^2 averaged over the rest   (f: the block or layer; sum over dim 1)
           + lambda * sum (1 - |2 h(V) - 1|^b)                          (rounding regulariser, after a warm-up)

V starts where h(V) = W / s - floor(W / s), so W_soft = W at the start; b falls linearly from b_start to b_end
over the iterations after the warm-up (the regulariser is off during the warm-up); Adam on V only. The final
codes are q = clamp(floor(W / s) + [V >= 0] + z, q_min, q_max): every weight rounded down or up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pcr.quant.affine import code_dtype, qrange
from pcr.weights.codes import WeightCodes

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: Tensor) -> Tensor:
    """h(V) in [0, 1]; exactly 0 or 1 on a finite range of V, so rounding can settle."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def inverse_rectified_sigmoid(h: Tensor) -> Tensor:
    """V with h(V) = h, for h in [0, 1)."""
    return -torch.log((ZETA - GAMMA) / (h - GAMMA) - 1)


def b_schedule(it: int, iterations: int, b_start: float, b_end: float, warmup: float) -> float | None:
    """The regulariser's exponent b at iteration `it`; None during the warm-up (no regulariser)."""
    start = warmup * iterations
    if it < start:
        return None
    return b_end + (b_start - b_end) * max(0.0, 1 - (it - start) / (iterations - start))


def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """BRECQ's ||pred - target||^2: squares summed over dim 1 (channels), averaged over everything else."""
    return (pred.float() - target.float()).pow(2).sum(1).mean()


class AdaRound(nn.Module):
    """One layer's learned rounding. w [C_out, ...] float; scale [C_out]; zero_point [C_out] int."""

    def __init__(self, w: Tensor, scale: Tensor, zero_point: Tensor, bits: int, symmetric: bool):
        super().__init__()
        self.bits, self.symmetric = bits, symmetric
        self.q_min, self.q_max = qrange(bits, symmetric)
        shape = (-1,) + (1,) * (w.dim() - 1)
        w = w.detach().float()
        self.register_buffer("scale", scale.float().reshape(shape).to(w.device))  # [C_out, 1, ...]
        self.register_buffer("zero_point", zero_point.float().reshape(shape).to(w.device))
        w_div = w / self.scale
        self.register_buffer("w_floor", torch.floor(w_div))
        self.v = nn.Parameter(inverse_rectified_sigmoid(w_div - self.w_floor))  # h(V) = fractional part

    def soft_weight(self) -> Tensor:
        q = torch.clamp(self.w_floor + rectified_sigmoid(self.v) + self.zero_point, self.q_min, self.q_max)
        return (q - self.zero_point) * self.scale

    def hard_weight(self) -> Tensor:
        return self.weight_codes().dequantize().to(self.scale.device)

    def regulariser(self, b: float) -> Tensor:
        return (1 - (2 * rectified_sigmoid(self.v) - 1).abs().pow(b)).sum()

    @torch.no_grad()
    def weight_codes(self) -> WeightCodes:
        q = torch.clamp(self.w_floor + (self.v >= 0).float() + self.zero_point, self.q_min, self.q_max)
        dtype = code_dtype(self.bits, self.symmetric)
        return WeightCodes(q.to(dtype).cpu(), self.scale.flatten().cpu(), self.zero_point.flatten().to(torch.int32).cpu(),
                           self.bits, self.symmetric)


def learn_rounding(rounders: dict[str, AdaRound], loss_fn: Callable[[dict[str, Tensor], Tensor], Tensor], num_rows: int,
                   cfg, reg_weight: float, generator: torch.Generator, progress: Callable[[int], None] | None = None) -> float:
    """Adam on every rounder's V for cfg.iterations steps (cfg: a `ReconConfig`).

    loss_fn(soft weights by rounder name, row indices [batch]) -> reconstruction loss of those rows.
    Mini-batches are cfg.batch_size rows drawn without replacement from `num_rows` each step.
    Returns the last step's reconstruction loss.
    """
    opt = torch.optim.Adam([r.v for r in rounders.values()], lr=cfg.lr)
    rec = torch.tensor(float("nan"))
    for it in range(cfg.iterations):
        idx = torch.randperm(num_rows, generator=generator)[: cfg.batch_size]
        rec = loss_fn({n: r.soft_weight() for n, r in rounders.items()}, idx)
        b = b_schedule(it, cfg.iterations, cfg.b_start, cfg.b_end, cfg.warmup)
        loss = rec if b is None else rec + reg_weight * sum(r.regulariser(b) for r in rounders.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(it)
    return float(rec.detach())
