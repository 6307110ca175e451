"""Moving-average min/max observer: torch's MovingAverageMinMaxObserver, the official PCR activation observer.

The first batch's min/max start the range, then each batch moves it by c * (batch value - range),
c = `quant.ema_constant` (torch's 0.01): an outlier of one batch moves the range by c of its excess only.
The averages are kept by `RunningStats` (stats.py). A weight is one tensor seen once, so for
weights this is plain min/max per channel.
"""

from torch import Tensor

from pcr.quant.observers import minmax, register_observer
from pcr.stats.running import RunningStats


def activation_range(stats: RunningStats, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    return stats.ema_min.clone(), stats.ema_max.clone()


register_observer("ema_minmax", activation_range, minmax.weight_range)
