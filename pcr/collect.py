"""collect: FP32 trajectories of the calibration prompts, and each layer's input statistics per step.

The FP32 pass that records x_t is also the one the official code calls its "original calibration":
with hooks on every Conv2d/Linear it yields, per step, the statistics behind the `fp32` baseline
and the progressive sweep's starting parameters, at no extra UNet pass.

Under `accelerate launch` the batches are spread over processes (pcr.distributed); each batch records
its own statistics and every step's are reduced over all batches, so trajectories and statistics are
the same for any process count: min/max exact, the EMA folded over batch minima/maxima in batch
order, the histogram the sum of the batch histograms re-binned to the step's [min, max].
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import zarr
from tqdm.auto import tqdm

from pcr.calibrate.observe import StatsRecorder
from pcr.config import Params, read_prompts
from pcr.distributed import batches, model_device, process_state, reduce_step_stats, share
from pcr.models.conditioning import select
from pcr.quant.observers.stats import HIST_BINS
from pcr.quant.quantize import candidate_layers
from pcr.sampling import Sampler, conditioning, load_sampler
from pcr.stores import TRAJECTORY_DIMS, add_array, create_store, finish_store, open_partial

STATS_DIMS = ("step", "layer")
HIST_DIMS = ("step", "layer", "bin")


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def add_trajectory_arrays(store: zarr.Group, sampler: Sampler, n: int, batch: int, shard_samples: bool = True) -> None:
    """x [T+1, N, C, h, w] and eps [T, N, C, h, w]: chunks of (1 step, batch samples), one shard per step.

    shard_samples=False (arrays several processes write, batch by batch): no shards, one file per chunk,
    so no two processes ever write one file.
    """
    T, shape = sampler.num_steps, sampler.latent_shape
    for name, steps in (("x", T + 1), ("eps", T)):
        chunks = (1, min(batch, n), *shape)
        add_array(store, name, (steps, n, *shape), "float32", TRAJECTORY_DIMS, chunks, (1, n, *shape) if shard_samples else None)
    store.create_array("timesteps", data=sampler.timesteps.cpu().numpy().astype("int64"), dimension_names=("step",))


def add_stats_arrays(store: zarr.Group, T: int, layers: list[str], histogram: bool) -> None:
    L = len(layers)
    for stat in ("min", "max", "ema_min", "ema_max"):
        add_array(store, f"stats/{stat}", (T, L), "float32", STATS_DIMS, (1, L), layers=layers)
    if histogram:
        add_array(store, "stats/hist", (T, L, HIST_BINS), "float32", HIST_DIMS, (1, L, HIST_BINS), (T, L, HIST_BINS), layers=layers)


def write_stats(store: zarr.Group, k: int, arrays: dict[str, np.ndarray]) -> None:
    for stat, v in arrays.items():
        if f"stats/{stat}" in store:
            store[f"stats/{stat}"][k] = v


def collect(params: Params, out: str | Path, progress: bool = True) -> None:
    """Run under `accelerate launch` to spread the batches over processes (see pcr.distributed)."""
    cfg = params.collect
    state = process_state(params.model.device)
    prompts = read_prompts(cfg.prompts, cfg.num_prompts, key="collect.prompts")
    model_cfg = replace(params.model, device=model_device(params.model.device, state))
    pipe, sampler = load_sampler(model_cfg)
    cond = conditioning(pipe, prompts, model_cfg, sampler)  # [N, 2, ...]
    n, T = len(prompts), sampler.num_steps
    layers = candidate_layers(pipe.unet)
    all_batches = batches(n, cfg.batch_size)
    mine = share(range(len(all_batches)), state)  # whole chunks of x and eps along samples
    if state.is_main_process:
        store = create_store(out, "trajectories", fingerprint=fingerprint(asdict(params.model), asdict(cfg)),
                             prompts=prompts, layers=layers, num_steps=T, seed=cfg.seed, model=asdict(params.model))
        add_trajectory_arrays(store, sampler, n, cfg.batch_size, shard_samples=False)
        for name, v in cond.items():
            add_array(store, f"cond/{name}", v.shape, "float32", ("sample", "branch") + tuple(f"d{i}" for i in range(v.dim() - 2)), v.shape)
            store[f"cond/{name}"][:] = v.numpy()
        add_stats_arrays(store, T, layers, histogram=True)
    state.wait_for_everyone()
    if not state.is_main_process:
        store = open_partial(out)

    x = {}
    for i in mine:
        b = all_batches[i]
        x[i] = sampler.initial_noise([cfg.seed + j for j in range(b.start, b.stop)])  # x_T
        store["x"][0, b] = x[i].numpy()
    schedulers = {i: sampler.new_scheduler() for i in mine}
    with StatsRecorder(pipe.unet, layers, histogram=True, ema_constant=params.quant.ema_constant) as rec:
        for k in tqdm(range(T), desc="collect (fp32)", disable=not progress or not state.is_main_process):
            per_batch = {}
            for i in mine:
                b, sched = all_batches[i], schedulers[i]
                rec.start()  # each batch's own statistics, reduced over batches below
                e = sampler.eps(x[i], k, select(cond, b), sched)
                x[i] = sampler.step(sched, e, k, x[i]).cpu()
                per_batch[i] = rec.stats
                store["x"][k + 1, b] = x[i].numpy()
                store["eps"][k, b] = e.cpu().numpy()
            stats = reduce_step_stats(per_batch, len(all_batches), layers, state, histogram=True, ema_constant=params.quant.ema_constant)
            if state.is_main_process:
                write_stats(store, k, stats)
    state.wait_for_everyone()
    if state.is_main_process:
        finish_store(store, out)
    state.wait_for_everyone()
