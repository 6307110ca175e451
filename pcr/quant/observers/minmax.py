"""Min/max observer: the range is everything seen."""

import torch
from torch import Tensor

from pcr.quant.observers import register_observer
from pcr.stats.running import RunningStats


def activation_range(stats: RunningStats, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    return stats.min.clone(), stats.max.clone()


def weight_range(w: Tensor, bits: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    flat = w.detach().float().reshape(w.shape[0], -1)  # [C_out, fan_in]
    return torch.aminmax(flat, dim=1)


register_observer("minmax", activation_range, weight_range)
