"""MSE observer: search the clipping range that minimises the quantization error.

Candidates shrink the min/max range by a factor alpha in CLIP_GRID; the one with the least
squared error of fake-quantization wins. Activations are searched over the histogram (bin
centres weighted by counts), so the search is exact for the bitwidth asked, after the fact;
weights are searched per output channel on the weight itself.
"""

import torch
from torch import Tensor

from pcr.quant.affine import fake_quantize, fake_quantize_at, params_from_range, qrange
from pcr.quant.observers import register_observer, require_histogram
from pcr.stats.running import RunningStats

CLIP_GRID = torch.linspace(0.3, 1.0, 36)


def activation_range(stats: RunningStats, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """The candidate range of least histogram-weighted error; the first of them on a tie (all 36 at once)."""
    require_histogram(stats, "mse", bits)
    x = stats.bin_centers().float()  # [B]
    weight = stats.hist.float()  # [B]
    lo, hi = stats.min * CLIP_GRID, stats.max * CLIP_GRID  # [A] candidates
    scale, zp = params_from_range(lo, hi, bits, symmetric)
    q_min, q_max = qrange(bits, symmetric)
    s, z = scale[:, None], zp[:, None].float()  # [A, 1]
    err = ((fake_quantize_at(x, s, q_min - z, q_max - z) - x) ** 2).mul_(weight).sum(1)  # [A, B] -> [A]
    best = int(torch.argmin(err))  # first index of the least error
    return lo[best].clone(), hi[best].clone()


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
