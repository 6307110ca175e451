"""Auto observer: MSE range search below 8 bits, min/max at 8 bits and above (the default activation observer).

Why (issue 20's screening, DDIM 25 steps, latent error of x̂_0 to FP32 in dB, 16 held-out calibration samples):
clipping pays where the grid is coarse and costs where it is fine.

| activations | min/max | mse    |
|-------------|---------|--------|
| A4          |  9.25   | 13.45  |
| A6          | 21.13   | 22.40  |
| A8          | 33.08   | 30.13  |

The choice is per bitwidth asked, not per run, so relaxed steps at 10 bits take min/max ranges while the
other steps of the same run search theirs.
"""

from torch import Tensor

from pcr.quant.observers import Observer, get_observer, register_observer
from pcr.stats.running import RunningStats

MSE_BELOW_BITS = 8  # bitwidths under this search their range; the rest keep everything seen


def _rule(bits: int) -> Observer:
    return get_observer("mse" if bits < MSE_BELOW_BITS else "minmax")


def activation_range(stats: RunningStats, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    return _rule(bits).activation_range(stats, bits, symmetric)


def weight_range(w: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    return _rule(bits).weight_range(w, bits, symmetric)


register_observer("auto", activation_range, weight_range, needs_histogram=lambda bits: _rule(bits).needs_histogram(bits))
