"""Per-step sensitivity to the activation bitwidth, measured along the calibrated trajectory (`relax.where: auto`).

For step k, on the first m calibration samples (relax.sensitivity_samples): start from the stored x̂_k of the
quantized trajectory (calib.zarr), run step k with its activations at relax.bits (ranges derived from the
step's statistics, as export derives the relaxed steps'), then steps k+1..T-1 at their calibrated base bits,
and compare both final latents, x̃_T^(k) and the stored x̂_T (step k at base bits), with the FP32 x_T
(trajectories.zarr). Per sample i, in dB as QDiffBench's PSNR:

    g_k,i = 10 log10( mse(x̂_T,i, x_T,i) / mse(x̃_T,i^(k), x_T,i) )      S_k = mean_i g_k,i  ± its standard error

the error to FP32 that relaxing step k alone removes. Every later step reacts to the change, as in
sampling; measuring the error to FP32 and not the change: downstream of a badly quantized step any change
is amplified without getting closer (tested). A first-order rule that takes later steps as passive (Δε at
step k moves x_0 by (σ(t_k) − σ(t_{k+1})) Δε in x/√ᾱ units) ranks the first steps far too high; per-sample
dB, not a pooled MSE, since a few samples whose trajectory diverges would dominate the MSE.

Cost: m (T − k) UNet passes for step k, m T (T + 1) / 2 in all; one pass per step over N calibration
prompts is N T, so m = 2N / (T + 1) costs that (N = 32, T = 25: m = 2.5). The default m = 8 costs 3.3 such
passes per step: on the demo at W8A8, 4 samples could not separate the one step that matters (5.8 ± 1.0 dB at
8 samples) from the noise of the others (±0.3 to 0.7 dB each). Stateful schedulers (PNDM, DPM++) are advanced along the stored trajectory and copied at k.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pcr.relax import Sensitivity

if TYPE_CHECKING:  # torch and diffusers load only to measure (sensitivity_stage writes x0/xT's empty table at once)
    from torch import Tensor

    from pcr.quant.modules import QModuleMixin
    from pcr.quant.observers import Observer
    from pcr.sampling import Sampler
    from pcr.stats.running import RunningStats


def sensitivity_stage(params, trajectories: str | Path, calib: str | Path, qparams: str | Path, qconfig: str | Path,
                      out: str | Path) -> Sensitivity:
    """The sensitivity stage: measured for relax.where = auto only, since the other schedules do not read it
    and it costs about three calibration passes per step; otherwise a table without rows, written at once."""
    if params.relax.where != "auto":
        table = Sensitivity(np.zeros(0), np.zeros(0), np.zeros(0), 0, params.relax.bits)
        table.save(out)
        return table
    return sensitivity(params, trajectories, calib, qparams, qconfig, out)


def measure(sampler: Sampler, qlayers: dict[str, QModuleMixin], observer: Observer, cond: dict[str, Tensor],
            xs: Callable[[int], Tensor], outputs: Callable[[int], Tensor], stats: Callable[[int], dict[str, RunningStats]],
            target: Tensor, bits: int, progress: bool = True) -> Sensitivity:
    """S_k of every step. xs(k) = x̂_k [m, C, h, w] (k = 0..T), outputs(k) = step k's guided output at base bits,
    stats(k) = step k's statistics, target = the FP32 x_T [m, C, h, w], cond: the m samples' conditioning.

    Step k's parameters are set at `bits` and left so: rollout k runs only steps k..T-1, which k' > k never revisit.
    """
    import torch  # here, not at the top: see sensitivity_stage
    from tqdm.auto import tqdm

    from pcr.quant.quantize import set_activation_step

    T = sampler.num_steps
    target = target.double()
    base_error = _mse(xs(T), target)  # [m]
    base = sampler.new_scheduler()  # state after steps 0..k-1 of the stored trajectory
    gain = np.zeros((T, len(target)))  # g_k,i dB
    with torch.no_grad():
        for k in tqdm(range(T), desc=f"sensitivity (A{bits})", disable=not progress):
            x_k = xs(k)
            set_activation_step(qlayers, observer, stats(k), k, bits)
            sched, x = copy.deepcopy(base), x_k
            for j in range(k, T):
                x = sampler.step(sched, sampler.eps(x, j, cond, sched), j, x)
            gain[k] = (10 * torch.log10(base_error / _mse(x, target))).numpy()
            base.scale_model_input(x_k, sampler.timesteps[k])  # as sampling calls it (Euler counts its steps here)
            sampler.step(base, outputs(k), k, x_k)
    m = gain.shape[1]
    stderr = gain.std(1, ddof=1) / np.sqrt(m) if m > 1 else np.full(T, np.inf)
    return Sensitivity(sampler.timesteps.cpu().double().numpy(), gain.mean(1), stderr, m, bits)


def _mse(x: Tensor, target: Tensor) -> Tensor:
    return (x.cpu().double() - target).pow(2).flatten(1).mean(1)  # [m] per sample


def sensitivity(params, trajectories: str | Path, calib_path: str | Path, qparams: str | Path, qconfig: str | Path,
                out: str | Path, progress: bool = True) -> Sensitivity:
    """S_k of the calibrated model at relax.bits on the first relax.sensitivity_samples calibration samples
    -> out (CSV). The stage calls it through `sensitivity_stage` (for relax.where = auto only)."""
    import torch

    from pcr.quant.observers import get_observer
    from pcr.quant.quantize import qmodules
    from pcr.quant.serialize import load_quant_state
    from pcr.quant.step import check_timesteps
    from pcr.sampling import load_sampler
    from pcr.stats.record import unstack_stats
    from pcr.stores import open_store, read_stats

    traj, calib = open_store(trajectories, "trajectories"), open_store(calib_path, "calibration")
    pipe, sampler = load_sampler(params.model)
    qmap = load_quant_state(pipe.unet, qparams, qconfig)
    check_timesteps(pipe.unet, sampler.timesteps, str(qparams), "model.scheduler/model.steps give", "calibrate")
    m = min(params.relax.sensitivity_samples, int(calib.attrs["num_prompts"]))  # calibrate's samples are the first collected
    cond = {k: torch.from_numpy(traj[f"cond/{k}"][:m]) for k in traj["cond"].array_keys()}
    names = calib.attrs["layers"]
    result = measure(sampler, qmodules(pipe.unet), get_observer(qmap.act_observer), cond,
                     lambda k: torch.from_numpy(calib["x"][k, :m]), lambda k: torch.from_numpy(calib["model_output"][k, :m]),
                     lambda k: unstack_stats(read_stats(calib, k), names), torch.from_numpy(traj["x"][-1, :m]),
                     params.relax.bits, progress)
    result.save(out)
    return result
