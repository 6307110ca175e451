"""Observers: how a quantization range [lo, hi] is chosen.

Each observer is one file and one registry entry with two rules:
- `activation_range(stats, bits, symmetric)`: from streamed per-tensor statistics (`RunningStats`),
  so a range for *any* bitwidth follows from stored statistics without another forward pass;
- `weight_range(w, bits, symmetric)`: per output channel (axis 0) from the weight itself.

`needs_histogram(bits)` says whether the activation rule at that bitwidth reads the histogram; where no
bitwidth a run serves needs one, the recorders skip it (histograms are most of a calibration pass's cost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from pcr.quant.bits import MAX_BITS
from pcr.stats.running import RunningStats

ActivationRule = Callable[[RunningStats, int, bool], tuple[Tensor, Tensor]]
WeightRule = Callable[[Tensor, int, bool], tuple[Tensor, Tensor]]
HistogramRule = Callable[[int], bool]  # bits -> does the activation rule read the histogram there


def _never(bits: int) -> bool:
    return False


@dataclass(frozen=True)
class Observer:
    name: str
    activation_range: ActivationRule
    weight_range: WeightRule
    needs_histogram: HistogramRule = _never

    def needs_histogram_from(self, bits: int) -> bool:
        """Whether statistics that serve `bits` and every wider bitwidth (relaxed steps) need the histogram."""
        return any(self.needs_histogram(b) for b in range(bits, MAX_BITS + 1))


OBSERVERS: dict[str, Observer] = {}


def register_observer(
    name: str, activation_range: ActivationRule, weight_range: WeightRule, *, needs_histogram: bool | HistogramRule = False
) -> Observer:
    """Add an observer to the registry under `name` (called once at the bottom of each rule file).

    needs_histogram: True / False for every bitwidth, or a rule bits -> bool."""
    if name in OBSERVERS:
        raise ValueError(f"observer {name!r} is registered twice")
    rule = needs_histogram if callable(needs_histogram) else (lambda bits, v=bool(needs_histogram): v)
    OBSERVERS[name] = Observer(name, activation_range, weight_range, rule)
    return OBSERVERS[name]


def require_histogram(stats: RunningStats, observer: str, bits: int) -> None:
    """A clear error where a rule that reads the histogram is given statistics recorded without one."""
    if stats.hist is None:
        raise ValueError(f"act_observer={observer!r} at {bits} bits needs activation histograms, and these statistics "
                         "were recorded without them: rerun calibrate (relax.bits below the calibrated bits needs them too)")


def get_observer(name: str) -> Observer:
    if name not in OBSERVERS:
        raise ValueError(f"observer {name!r} is unknown: allowed are {sorted(OBSERVERS)}")
    return OBSERVERS[name]


# Registration happens on import of each rule file.
from pcr.quant.observers import auto, minmax, moving_average, mse, percentile  # noqa: E402,F401

__all__ = ["OBSERVERS", "Observer", "RunningStats", "get_observer", "register_observer", "require_histogram"]
