"""MSE observer: search the clipping range that minimises the quantization error.

Candidates shrink the min/max range by a factor alpha in CLIP_GRID; the one with the least
squared error of fake-quantization wins. Activations are searched over the histogram (bin
centres weighted by counts), so the search is exact for the bitwidth asked, after the fact;
weights are searched per output channel on the weight itself.
"""

import torch
from torch import Tensor

from pcr.quant.affine import fake_quantize, params_from_range
from pcr.quant.observers import register_observer
from pcr.stats.running import RunningStats

CLIP_GRID = torch.linspace(0.3, 1.0, 36)


def activation_range(stats: RunningStats, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    x = stats.bin_centers().float()  # [bins]
    weight = stats.hist.float()
    best, best_err = (stats.min.clone(), stats.max.clone()), float("inf")
    for alpha in CLIP_GRID:
        lo, hi = stats.min * alpha, stats.max * alpha
        scale, zp = params_from_range(lo, hi, bits, symmetric)
        err = float((weight * (fake_quantize(x, scale, zp, bits, symmetric) - x) ** 2).sum())
        if err < best_err:
            best, best_err = (lo.clone(), hi.clone()), err
    return best


def weight_range(w: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    flat = w.detach().float().reshape(w.shape[0], -1)  # [C_out, fan_in]
    w_min, w_max = torch.aminmax(flat, dim=1)
    best_lo, best_hi = w_min.clone(), w_max.clone()
    best_err = torch.full_like(w_min, float("inf"))
    for alpha in CLIP_GRID:
        lo, hi = w_min * alpha, w_max * alpha
        scale, zp = params_from_range(lo, hi, bits, symmetric)
        err = ((fake_quantize(flat, scale, zp, bits, symmetric, axis=0) - flat) ** 2).sum(dim=1)
        better = err < best_err
        best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
        best_err = torch.minimum(err, best_err)
    return best_lo, best_hi


register_observer("mse", activation_range, weight_range, needs_histogram=True)
