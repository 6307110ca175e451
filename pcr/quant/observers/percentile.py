"""Percentile observer: clip the PERCENTILE-th upper and (100 - PERCENTILE)-th lower tails."""

import torch
from torch import Tensor

from pcr.quant.observers import register_observer, require_histogram
from pcr.stats.running import RunningStats

PERCENTILE = 99.99


def _hist_quantile(stats: RunningStats, q: float) -> Tensor:
    """Quantile q in [0, 1] of the histogram, linear inside the bin."""
    cdf = torch.cumsum(stats.hist, 0)
    total = cdf[-1]
    if total <= 0 or stats.max <= stats.min:
        return stats.min.clone() if q < 0.5 else stats.max.clone()
    target = q * total
    i = int(torch.searchsorted(cdf, target).clamp(max=stats.bins - 1))
    before = cdf[i - 1] if i > 0 else torch.tensor(0.0, dtype=torch.float64)
    frac = ((target - before) / stats.hist[i].clamp_min(1e-12)).clamp(0, 1)
    width = (stats.max.double() - stats.min.double()) / stats.bins
    return (stats.min.double() + width * (i + frac)).float()


def activation_range(stats: RunningStats, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    require_histogram(stats, "percentile", bits)
    q = PERCENTILE / 100
    return _hist_quantile(stats, 1 - q), _hist_quantile(stats, q)


def weight_range(w: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    flat = w.detach().float().reshape(w.shape[0], -1)  # [C_out, fan_in]
    q = torch.tensor([1 - PERCENTILE / 100, PERCENTILE / 100])
    lo_hi = torch.quantile(flat, q, dim=1)  # [2, C_out]
    return lo_hi[0], lo_hi[1]


register_observer("percentile", activation_range, weight_range, needs_histogram=True)
