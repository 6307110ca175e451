"""Recording layer inputs during a forward pass, as a context manager.

    with StatsRecorder(unet, names, histogram=True, ema_constant=0.01) as rec:
        rec.start()                  # a fresh RunningStats per layer (one sampling step)
        unet(...)                    # every named layer's input feeds its RunningStats
    stats = rec.stats                # hooks are gone once the block exits

Forward *pre*-hooks see a quantized layer's input before its quantizer, i.e. the activation whose
range is being fitted. `capture` additionally keeps chosen rows of chosen layers' inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pcr.stats.running import EMA_CONSTANT, RunningStats, merge_histograms

STAT_NAMES = ("min", "max", "ema_min", "ema_max")


class StatsRecorder:
    def __init__(self, model: nn.Module, names: Sequence[str], *, histogram: bool, ema_constant: float = EMA_CONSTANT):
        self.model, self.names, self.histogram, self.ema_constant = model, list(names), histogram, ema_constant
        self.stats: dict[str, RunningStats] = {}
        self.capture_layers: set[str] = set()
        self.capture_rows: slice | None = None
        self.captured: dict[str, Tensor] = {}
        self.recording = True
        self._handles: list = []

    def __enter__(self) -> StatsRecorder:
        for name in self.names:
            self._handles.append(self.model.get_submodule(name).register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def start(self) -> None:
        """Begin a new sampling step: fresh statistics, nothing captured."""
        self.stats = {n: RunningStats(histogram=self.histogram, ema_constant=self.ema_constant) for n in self.names}
        self.captured = {}

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if self.recording:
                self.stats[name].update(x)
            if self.capture_rows is not None and name in self.capture_layers and name not in self.captured:
                self.captured[name] = x[self.capture_rows].detach().float().cpu()

        return hook


def stack_stats(stats: dict[str, RunningStats], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-layer statistics of one step as arrays: min/max/ema_* [L], hist [L, B] (if kept)."""
    t = [stats[n].as_tensors() for n in names]
    out = {k: torch.stack([s[k] for s in t]).numpy() for k in STAT_NAMES}
    if "hist" in t[0]:
        out["hist"] = torch.stack([s["hist"] for s in t]).numpy()
    return out


def unstack_stats(arrays: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, RunningStats]:
    """Inverse of stack_stats for one step."""
    return {
        n: RunningStats.from_tensors({k: torch.from_numpy(np.asarray(v[i])) for k, v in arrays.items()})
        for i, n in enumerate(names)
    }


def merge_stats(per_step: list[dict[str, RunningStats]], names: Sequence[str]) -> dict[str, RunningStats]:
    """One set of statistics over all steps (the `shared` baseline): union range, mean EMA, summed histogram."""
    merged = {}
    for n in names:
        ss = [s[n] for s in per_step]
        m = RunningStats(histogram=ss[0].hist is not None, bins=ss[0].bins)
        m.count = 1
        m.min, m.max = torch.stack([s.min for s in ss]).min(), torch.stack([s.max for s in ss]).max()
        m.ema_min, m.ema_max = torch.stack([s.ema_min for s in ss]).mean(), torch.stack([s.ema_max for s in ss]).mean()
        if m.hist is not None:
            m.hist = merge_histograms(ss, m.min, m.max, m.bins)
        merged[n] = m
    return merged
