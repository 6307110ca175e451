"""Observers: how a quantization range [lo, hi] is chosen.

Each observer is one file and one registry entry with two rules:
- `activation_range(stats, bits, symmetric)`: from streamed per-tensor statistics (`RunningStats`),
  so a range for *any* bitwidth follows from stored statistics without another forward pass;
- `weight_range(w, bits, symmetric)`: per output channel (axis 0) from the weight itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from pcr.stats.running import RunningStats

ActivationRule = Callable[[RunningStats, int, bool], tuple[Tensor, Tensor]]
WeightRule = Callable[[Tensor, int, bool], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Observer:
    name: str
    activation_range: ActivationRule
    weight_range: WeightRule
    needs_histogram: bool = False


OBSERVERS: dict[str, Observer] = {}


def register_observer(
    name: str, activation_range: ActivationRule, weight_range: WeightRule, *, needs_histogram: bool = False
) -> Observer:
    """Add an observer to the registry under `name` (called once at the bottom of each rule file)."""
    if name in OBSERVERS:
        raise ValueError(f"observer {name!r} is registered twice")
    OBSERVERS[name] = Observer(name, activation_range, weight_range, needs_histogram)
    return OBSERVERS[name]


def get_observer(name: str) -> Observer:
    if name not in OBSERVERS:
        raise ValueError(f"observer {name!r} is unknown: allowed are {sorted(OBSERVERS)}")
    return OBSERVERS[name]


# Registration happens on import of each rule file.
from pcr.quant.observers import auto, minmax, moving_average, mse, percentile  # noqa: E402,F401

__all__ = ["OBSERVERS", "Observer", "RunningStats", "get_observer", "register_observer"]
