"""Streaming per-tensor activation statistics: the sufficient statistics of every observer.

One `RunningStats` per (layer, step) sees every calibration batch of that step. It keeps
- min, max over everything seen;
- ema_min, ema_max: moving averages of each batch's min and max by torch's
  MovingAverageMinMaxObserver rule (the official PCR code's activation observer): the first batch
  sets them, then ema <- ema + c * (batch value - ema), with averaging constant c (torch's default
  EMA_CONSTANT = 0.01; `quant.ema_constant`). Same float32 ops in the same order: bit for bit torch's;
- optionally a histogram of HIST_BINS bins over [min, max], re-binned when the range grows
  (as torch.ao's HistogramObserver does), from which percentile and MSE ranges follow. Tensors
  larger than HIST_SAMPLE elements feed it a strided subsample (weighted by the stride), which
  keeps the histogram's cost near that of min/max on real model sizes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

HIST_BINS = 1024
HIST_SAMPLE = 1 << 16  # elements per update that feed the histogram (a strided subsample of larger tensors)
EMA_CONSTANT = 0.01  # c: ema <- ema + c * (batch value - ema), torch's averaging_constant default


class RunningStats:
    def __init__(self, histogram: bool = False, bins: int = HIST_BINS, ema_constant: float = EMA_CONSTANT):
        self.bins = bins
        self.ema_constant = ema_constant
        self.histogram = histogram
        self.count = 0
        self.min = torch.tensor(float("inf"))
        self.max = torch.tensor(float("-inf"))
        self.ema_min = torch.tensor(0.0)
        self.ema_max = torch.tensor(0.0)
        self.hist = torch.zeros(bins, dtype=torch.float64) if histogram else None

    @torch.no_grad()
    def update(self, x: Tensor, shared: dict | None = None) -> None:
        """Add x to the statistics. `shared`: a dict kept per input tensor by the caller, in which x's min/max and
        histogram counts are stored once and reused by every other statistic fed the same x (attention q/k/v)."""
        x = x.detach().float()
        shared = {} if shared is None else shared
        if "minmax" not in shared:
            b_min, b_max = torch.aminmax(x)
            shared["minmax"] = (b_min.cpu(), b_max.cpu())
        b_min, b_max = shared["minmax"]
        if self.count == 0:
            self.ema_min, self.ema_max = b_min.clone(), b_max.clone()
        else:
            self.ema_min, self.ema_max = ema_update(self.ema_min, b_min, self.ema_constant), ema_update(self.ema_max, b_max, self.ema_constant)
        new_min, new_max = torch.minimum(self.min, b_min), torch.maximum(self.max, b_max)
        if self.hist is not None:
            if self.count > 0 and (new_min < self.min or new_max > self.max):
                self.hist = rebin(self.hist, self.min, self.max, new_min, new_max)
            lo, hi = float(new_min), float(new_max)
            if hi > lo:
                key = ("hist", self.bins, lo, hi)
                if key not in shared:
                    shared[key] = histogram(x, self.bins, lo, hi)
                self.hist += shared[key]
            else:  # constant tensor: all mass in the first bin
                self.hist[0] += x.numel()
        self.min, self.max = new_min, new_max
        self.count += 1

    def as_tensors(self) -> dict[str, Tensor]:
        out = {"min": self.min, "max": self.max, "ema_min": self.ema_min, "ema_max": self.ema_max}
        if self.hist is not None:
            out["hist"] = self.hist.float()
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> RunningStats:
        hist = t["hist"].double() if "hist" in t else None
        return cls.of(t["min"].float(), t["max"].float(), t["ema_min"].float(), t["ema_max"].float(), 1, hist)

    @classmethod
    def of(cls, min: Tensor, max: Tensor, ema_min: Tensor, ema_max: Tensor, count: int, hist: Tensor | None = None,
           ema_constant: float = EMA_CONSTANT) -> RunningStats:
        """Statistics with these values (0-d float32 tensors; hist float64 [B] or None), no defaults allocated."""
        s = cls.__new__(cls)
        s.bins, s.ema_constant, s.histogram, s.count = HIST_BINS if hist is None else hist.numel(), ema_constant, hist is not None, count
        s.min, s.max, s.ema_min, s.ema_max, s.hist = min, max, ema_min, ema_max, hist
        return s

    def bin_centers(self) -> Tensor:
        width = (self.max - self.min) / self.bins
        return self.min + width * (torch.arange(self.bins, dtype=torch.float64) + 0.5)


def histogram(x: Tensor, bins: int, lo: float, hi: float) -> Tensor:
    """Counts of x in `bins` bins over [lo, hi]: float64 [bins] on the CPU. Tensors above HIST_SAMPLE elements
    are counted on a strided subsample, weighted by the stride (min/max stay exact; the tails' shape is sampled)."""
    flat = x.reshape(-1)
    stride = -(-flat.numel() // HIST_SAMPLE)
    return torch.histc(flat[::stride], bins, lo, hi).double().cpu() * stride


def fold_batches(b_min: Tensor, b_max: Tensor, c: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(min, max, ema_min, ema_max) [L] of n batches' minima and maxima b_min, b_max [n, L] (float32, batch order):
    what n `RunningStats.update` calls per layer give, bit for bit, in a few ops over all layers at once."""
    ema_min, ema_max = b_min[0].clone(), b_max[0].clone()
    for j in range(1, b_min.shape[0]):
        ema_min, ema_max = ema_update(ema_min, b_min[j], c), ema_update(ema_max, b_max[j], c)
    return b_min.amin(0), b_max.amax(0), ema_min, ema_max


def ema_update(ema: Tensor, batch_value: Tensor, c: float) -> Tensor:
    """torch's MovingAverageMinMaxObserver step, elementwise: ema + c * (batch value - ema), in float32."""
    return ema + c * (batch_value - ema)


def rebin(hist: Tensor, lo: Tensor, hi: Tensor, new_lo: Tensor, new_hi: Tensor) -> Tensor:
    """Move each old bin's count to the new bin holding its centre."""
    bins = hist.numel()
    centers = lo + (hi - lo) / bins * (torch.arange(bins, dtype=torch.float64) + 0.5)
    width = float(new_hi - new_lo) / bins
    idx = ((centers - new_lo) / width).floor().clamp(0, bins - 1).long() if width > 0 else torch.zeros(bins, dtype=torch.long)
    return torch.zeros_like(hist).index_add_(0, idx, hist)


def merge_histograms(stats: Iterable[RunningStats], lo: Tensor, hi: Tensor, bins: int = HIST_BINS) -> Tensor:
    """The histograms of `stats` re-binned to [lo, hi] and summed: float64 [bins] (zeros for none)."""
    return sum((rebin(s.hist, s.min, s.max, lo, hi) for s in stats), torch.zeros(bins, dtype=torch.float64))
