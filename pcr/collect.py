"""collect: FP32 trajectories of the calibration prompts, and each layer's input statistics per step.

The FP32 pass that records x_t is also the one the official code calls its "original calibration":
with hooks on every Conv2d/Linear it yields, per step, the statistics behind the `fp32` baseline
and the progressive sweep's starting parameters, at no extra UNet pass.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from pcr.calibrate.observe import StatsRecorder, stack_stats
from pcr.config import Params, read_prompts
from pcr.models.conditioning import select
from pcr.quant.observers.stats import HIST_BINS
from pcr.quant.quantize import candidate_layers
from pcr.sampling import Sampler, conditioning, load_sampler
from pcr.stores import TRAJECTORY_DIMS, add_array, create_store, finish_store

STATS_DIMS = ("step", "layer")
HIST_DIMS = ("step", "layer", "bin")


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def add_trajectory_arrays(store: zarr.Group, sampler: Sampler, n: int, batch: int) -> None:
    """x [T+1, N, C, h, w] and eps [T, N, C, h, w]: chunks of (1 step, batch samples), one shard per step."""
    T, shape = sampler.num_steps, sampler.latent_shape
    for name, steps in (("x", T + 1), ("eps", T)):
        add_array(store, name, (steps, n, *shape), "float32", TRAJECTORY_DIMS, (1, min(batch, n), *shape), (1, n, *shape))
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
    cfg = params.collect
    prompts = read_prompts(cfg.prompts, cfg.num_prompts, key="collect.prompts")
    pipe, sampler = load_sampler(params.model)
    cond = conditioning(pipe, prompts, params.model, sampler)  # [N, 2, ...]
    n, T = len(prompts), sampler.num_steps
    layers = candidate_layers(pipe.unet)
    store = create_store(out, "trajectories", fingerprint=fingerprint(asdict(params.model), asdict(cfg)),
                         prompts=prompts, layers=layers, num_steps=T, seed=cfg.seed, model=asdict(params.model))
    add_trajectory_arrays(store, sampler, n, cfg.batch_size)
    for name, v in cond.items():
        add_array(store, f"cond/{name}", v.shape, "float32", ("sample", "branch") + tuple(f"d{i}" for i in range(v.dim() - 2)), v.shape)
        store[f"cond/{name}"][:] = v.numpy()
    add_stats_arrays(store, T, layers, histogram=True)

    x = sampler.initial_noise([cfg.seed + i for i in range(n)])  # x_T [N, C, h, w]
    store["x"][0] = x.numpy()
    batches = [slice(i, min(i + cfg.batch_size, n)) for i in range(0, n, cfg.batch_size)]
    schedulers = [sampler.new_scheduler() for _ in batches]
    with StatsRecorder(pipe.unet, layers, histogram=True) as rec:
        for k in tqdm(range(T), desc="collect (fp32)", disable=not progress):
            rec.start()
            xs, eps = [], []
            for b, sched in zip(batches, schedulers, strict=True):
                e = sampler.eps(x[b], k, select(cond, b), sched)
                xs.append(sampler.step(sched, e, k, x[b]).cpu())
                eps.append(e.cpu())
            x = torch.cat(xs)
            store["x"][k + 1] = x.numpy()
            store["eps"][k] = torch.cat(eps).numpy()
            write_stats(store, k, stack_stats(rec.stats, layers))
    finish_store(store, out)
