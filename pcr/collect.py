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

from dataclasses import asdict, replace
from pathlib import Path

from tqdm.auto import tqdm

from pcr.config import Params, calibration_prompts
from pcr.distributed import (
    batches,
    finish_shared_store,
    model_device,
    process_state,
    reduce_step_stats,
    share,
    shared_store,
)
from pcr.models.conditioning import select
from pcr.models.layers import candidate_layers
from pcr.sampling import conditioning, load_sampler
from pcr.stats.record import StatsRecorder
from pcr.stats.running import HIST_BINS
from pcr.stores import (
    add_cond_arrays,
    add_stats_arrays,
    add_trajectory_arrays,
    create_store,
    fingerprint,
    write_stats,
)


def collect(params: Params, out: str | Path, prompts: list[str] | None = None, progress: bool = True) -> None:
    """Run under `accelerate launch` to spread the batches over processes (see pcr.distributed).

    prompts: the calibration prompts (the env stage's snapshot); None reads them as `collect.prompts` says.
    """
    cfg = params.collect
    state = process_state(params.model.device)
    prompts = calibration_prompts(params) if prompts is None else prompts
    model_cfg = replace(params.model, device=model_device(params.model.device, state))
    pipe, sampler = load_sampler(model_cfg)
    cond = conditioning(pipe, prompts, model_cfg, sampler)  # [N, 2, ...]
    n, T = len(prompts), sampler.num_steps
    layers = candidate_layers(pipe.unet)
    all_batches = batches(n, cfg.batch_size)
    mine = share(range(len(all_batches)), state)  # whole chunks of x and model_output along samples

    def make():
        store = create_store(out, "trajectories", fingerprint=fingerprint(asdict(params.model), prompts, cfg.seed, cfg.batch_size),
                             prompts=prompts, layers=layers, num_steps=T, seed=cfg.seed, model=asdict(params.model))
        add_trajectory_arrays(store, sampler.timesteps.cpu().numpy(), n, sampler.latent_shape, cfg.batch_size, shard_samples=False)
        add_cond_arrays(store, {name: v.numpy() for name, v in cond.items()})
        add_stats_arrays(store, T, layers, HIST_BINS)
        return store

    store = shared_store(state, out, make)
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
                store["model_output"][k, b] = e.cpu().numpy()
            stats = reduce_step_stats(per_batch, len(all_batches), layers, state, histogram=True,
                                      ema_constant=params.quant.ema_constant)
            if state.is_main_process:
                write_stats(store, k, stats)
    finish_shared_store(state, out, store)
