"""Recording layer inputs during a forward pass, as a context manager.

    with StatsRecorder(unet, names, histogram=True, ema_constant=0.01) as rec:
        rec.start()                  # fresh statistics per layer (one sampling step)
        unet(...)                    # every named layer's input feeds its statistics
    stats = rec.stats                # layer -> RunningStats; hooks are gone once the block exits

Forward *pre*-hooks see a quantized layer's input before its quantizer, i.e. the activation whose
range is being fitted. `capture` additionally keeps chosen rows of chosen layers' inputs.

Without histograms a hook only takes its input's (min, max) (`batch_minmax`: numpy's reductions on
the CPU, twice as fast as torch's `aminmax` there; `aminmax` left on the device elsewhere, so no host
copy per layer), once per input tensor: layers fed the same tensor (attention q/k/v) share it.
`stats` folds them, all layers at once (`fold_batches`), into what `RunningStats.update` per call
would give. With histograms, layers fed one tensor share its min/max and histogram counts the same way
(`RunningStats.update(x, shared)`). `stop_after` ends a forward pass (raising `AllRecorded`) once that many inputs are
recorded: what runs after the last recorded layer changes no statistic.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pcr.stats.running import EMA_CONSTANT, RunningStats, fold_batches, merge_histograms

STAT_NAMES = ("min", "max", "ema_min", "ema_max")
MinMax = tuple[float, float] | tuple[Tensor, Tensor]


class AllRecorded(Exception):
    """Raised by a recording hook once `stop_after` inputs are recorded (caught by whoever set it)."""


def batch_minmax(x: Tensor) -> MinMax:
    """(min, max) of x: Python floats for a CPU tensor numpy can view, else 0-d tensors on x's device."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float16, torch.float64):
        a = x.detach().numpy()
        return float(a.min()), float(a.max())
    return torch.aminmax(x.detach())


class StatsRecorder:
    def __init__(self, model: nn.Module, names: Sequence[str], *, histogram: bool, ema_constant: float = EMA_CONSTANT):
        self.model, self.names, self.histogram, self.ema_constant = model, list(names), histogram, ema_constant
        self.capture_layers: set[str] = set()
        self.capture_rows: slice | None = None
        self.captured: dict[str, Tensor] = {}
        self.recording = True
        self.stop_after: int | None = None  # raise AllRecorded once `recorded` reaches it
        self.recorded = 0  # inputs recorded since the caller last reset it
        self._handles: list = []
        self.start()

    def __enter__(self) -> StatsRecorder:
        for i, name in enumerate(self.names):
            self._handles.append(self.model.get_submodule(name).register_forward_pre_hook(self._hook(i, name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def start(self) -> None:
        """Begin a new sampling step: fresh statistics, nothing captured."""
        self._running = {n: RunningStats(histogram=True, ema_constant=self.ema_constant) for n in self.names} if self.histogram else {}
        self._seen: list[list[MinMax]] = [[] for _ in self.names]  # per layer: (min, max) of each input, in call order
        self._memo: dict[int, tuple[weakref.ref, int, dict]] = {}  # id(input) -> (input, its version, values of it)
        self._stats: dict[str, RunningStats] | None = None
        self.captured = {}

    @property
    def stats(self) -> dict[str, RunningStats]:
        """Layer -> statistics of every input recorded since `start`."""
        if self.histogram:
            return self._running
        if self._stats is None:
            self._stats = fold_minmax(self._seen, self.names, self.ema_constant)
        return self._stats

    def _shared(self, x: Tensor) -> dict:
        """What is computed once per input tensor (its min/max, histogram counts), for every layer it feeds."""
        if x.is_inference():  # no version counter to tell an unchanged tensor
            return {}
        m = self._memo.get(id(x))
        if m is not None and m[0]() is x and m[1] == x._version:
            return m[2]
        values: dict = {}
        self._memo[id(x)] = (weakref.ref(x), x._version, values)
        return values

    def _minmax(self, x: Tensor) -> MinMax:
        shared = self._shared(x)
        if "batch_minmax" not in shared:
            shared["batch_minmax"] = batch_minmax(x)
        return shared["batch_minmax"]

    def _hook(self, i: int, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            if self.recording:
                if self.histogram:
                    self._running[name].update(x, self._shared(x))
                else:
                    self._seen[i].append(self._minmax(x))
                    self._stats = None
                self.recorded += 1
            if self.capture_rows is not None and name in self.capture_layers and name not in self.captured:
                self.captured[name] = x[self.capture_rows].detach().float().cpu()
            if self.recording and self.stop_after is not None and self.recorded >= self.stop_after:
                raise AllRecorded

        return hook


def fold_minmax(seen: list[list[MinMax]], names: Sequence[str], c: float) -> dict[str, RunningStats]:
    """Per layer, the RunningStats (no histogram) of the inputs whose (min, max) are listed in `seen`, in call order."""
    counts = {len(s) for s in seen}
    if len(counts) == 1 and (n := counts.pop()) > 0:  # every layer called n times, as in a UNet pass: [n, L] at once
        m = _as_tensor([v for j in range(n) for s in seen for v in s[j]]).view(n, len(names), 2)
        rows = torch.stack(fold_batches(m[..., 0], m[..., 1], c), 1)  # [L, 4]
        return {name: RunningStats.of(*row.unbind(), n, ema_constant=c) for name, row in zip(names, rows, strict=True)}
    out = {}
    for name, s in zip(names, seen, strict=True):  # layers called unequally often: one at a time
        if s:
            m = _as_tensor([v for pair in s for v in pair]).view(len(s), 1, 2)
            out[name] = RunningStats.of(*(v[0] for v in fold_batches(m[..., 0], m[..., 1], c)), len(s), ema_constant=c)
        else:
            out[name] = RunningStats(ema_constant=c)
    return out


def _as_tensor(values: list) -> Tensor:
    """float32 [n] on the CPU from Python floats and/or 0-d tensors (one host copy for the device ones)."""
    if all(isinstance(v, float) for v in values):
        return torch.tensor(values, dtype=torch.float32)  # float32 (or narrower) values: exact
    return torch.stack([torch.as_tensor(v).reshape(()).float() for v in values]).cpu()


def stack_stats(stats: dict[str, RunningStats], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-layer statistics of one step as arrays: min/max/ema_* [L], hist [L, B] (if kept)."""
    t = [stats[n].as_tensors() for n in names]
    out = {k: torch.stack([s[k] for s in t]).numpy() for k in STAT_NAMES}
    if "hist" in t[0]:
        out["hist"] = torch.stack([s["hist"] for s in t]).numpy()
    return out


def unstack_stats(arrays: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, RunningStats]:
    """Inverse of stack_stats for one step."""
    cols = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
    cols = {k: (v.double() if k == "hist" else v.float()).unbind() for k, v in cols.items()}  # [L] each
    hist = cols.get("hist")
    return {n: RunningStats.of(cols["min"][i], cols["max"][i], cols["ema_min"][i], cols["ema_max"][i], 1,
                               None if hist is None else hist[i])
            for i, n in enumerate(names)}


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
