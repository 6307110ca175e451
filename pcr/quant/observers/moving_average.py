"""Moving-average min/max observer: exponential averages of each batch's min and max.

Outliers of a single batch move the range by (1 - EMA_MOMENTUM) only. A weight is one
tensor seen once, so for weights this is plain min/max per channel.
"""

from torch import Tensor

from pcr.quant.observers import minmax, register_observer
from pcr.stats.running import RunningStats


def activation_range(stats: RunningStats, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    return stats.ema_min.clone(), stats.ema_max.clone()


register_observer("ema_minmax", activation_range, minmax.weight_range)
