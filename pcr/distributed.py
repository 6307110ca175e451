"""Spreading collect, reference and generate over processes started by `accelerate launch` (or torchrun).

The unit of work is a batch of `batch_size` consecutive samples, which is also one Zarr chunk along
the sample axis of every array those stages write: a process owns whole chunks, so no two processes
ever write one chunk (and the arrays they share are not sharded along samples). Which process runs
a batch changes nothing in it: sample i starts from noise seeded `seed + i` and the batch boundaries
depend on `batch_size` only, so a store is the same, bit for bit on the CPU, for any process count.

Store protocol: the main process creates (or resumes) `<path>.partial` and its arrays, everyone waits,
each process writes its batches, everyone waits, the main process checks and renames.

Statistics (collect) are reduced per step so that they do not depend on the process count either:
every batch records its own min/max/histogram; `reduce_step_stats` all-reduces the per-batch minima
and maxima as a [batches, layers] table (each process fills its rows, the others are +-inf, so MIN/MAX
give the table exactly), from which min, max and the EMA (torch's MovingAverageMinMaxObserver rule folded
over the batches in batch order, as one process sees them) follow
on every process; each batch's histogram is re-binned to the step's union range and the re-binned
histograms are summed (integer counts in float64: the sum is exact, hence order-free).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import zarr
from accelerate import PartialState

from pcr.stats.running import EMA_CONSTANT, RunningStats, fold_batches, merge_histograms
from pcr.stores import finish_store, open_partial


def process_state(device: str = "auto") -> PartialState:
    """accelerate's view of this process (one process, rank 0, when not launched); gloo on the CPU."""
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return PartialState(cpu=cpu)


def model_device(device: str, state: PartialState) -> str:
    """The device this process runs on: with several GPU processes each takes its own (accelerate's choice)."""
    if state.num_processes > 1 and device in ("auto", "cuda") and state.device.type == "cuda":
        return str(state.device)
    return device


def batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches of `batch_size` samples: the chunks along the sample axis."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def share(items: Sequence, state: PartialState) -> list:
    """This process's contiguous share of `items` (whole items, balanced to within one)."""
    p, r, m = state.num_processes, state.process_index, len(items)
    return list(items[r * m // p:(r + 1) * m // p])


def shared_store(state: PartialState, path: str | Path, make: Callable[[], zarr.Group]) -> zarr.Group:
    """The store protocol's opening: the main process makes `<path>.partial` (`make` creates or resumes it,
    with its arrays), everyone waits, the others open it for writing their batches."""
    store = make() if state.is_main_process else None
    state.wait_for_everyone()
    return store if state.is_main_process else open_partial(path)


def finish_shared_store(state: PartialState, path: str | Path, store: zarr.Group, check: Callable[[], None] = lambda: None) -> None:
    """The store protocol's close: everyone waits, the main process checks (`check` raises on holes) and renames."""
    state.wait_for_everyone()
    if state.is_main_process:
        check()
        finish_store(store, path)
    state.wait_for_everyone()


def _all_reduce(t: torch.Tensor, op, state: PartialState) -> torch.Tensor:
    if state.num_processes == 1:
        return t
    dev = state.device if state.device.type == "cuda" else torch.device("cpu")  # NCCL reduces on the GPU
    buf = t.to(dev)
    dist.all_reduce(buf, op=op)
    return buf.cpu()


def reduce_step_stats(per_batch: dict[int, dict[str, RunningStats]], num_batches: int, names: Sequence[str],
                      state: PartialState, histogram: bool, ema_constant: float = EMA_CONSTANT) -> dict[str, np.ndarray]:
    """One step's statistics over every batch of every process, as `stack_stats` lays them out.

    per_batch: batch index -> this batch's statistics per layer (this process's batches only).
    min/max: over all batches; ema_min/ema_max: the batch minima/maxima folded in batch order by
    `fold_batches` with constant `ema_constant` (the first batch's value starts it), what one process's
    RunningStats gives, bit for bit; hist: sum of the batch histograms re-binned to
    [min, max]. Collective: every process must call it for every step, with or without batches.
    """
    L = len(names)
    mins = torch.full((num_batches, L), float("inf"))
    maxs = torch.full((num_batches, L), float("-inf"))
    for b, stats in per_batch.items():
        mins[b] = torch.stack([stats[n].min for n in names]).float()
        maxs[b] = torch.stack([stats[n].max for n in names]).float()
    mins = _all_reduce(mins, dist.ReduceOp.MIN, state)
    maxs = _all_reduce(maxs, dist.ReduceOp.MAX, state)
    lo, hi, ema_lo, ema_hi = fold_batches(mins, maxs, ema_constant)
    out = {"min": lo.numpy(), "max": hi.numpy(), "ema_min": ema_lo.numpy(), "ema_max": ema_hi.numpy()}
    if histogram:
        hist = torch.stack([merge_histograms([stats[n] for stats in per_batch.values()], lo[i], hi[i])
                            for i, n in enumerate(names)])  # [L, HIST_BINS]
        out["hist"] = _all_reduce(hist, dist.ReduceOp.SUM, state).float().numpy()
    return out
