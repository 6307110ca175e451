"""calibrate: quantize the weights once, calibrate activations per step, write calib.zarr + qparams.

The sampled activations for inspection (`calibrate.store.*`: integer codes of chosen layers' inputs)
go to their own store, activations.zarr, so calib.zarr and the quantized model do not depend on what
is dumped: changing the dumps reruns this stage, which writes the same calib.zarr and qparams again,
and DVC then reruns nothing downstream.

Resumable: every finished step is in `<calib.zarr>.partial` (x̂_{k+1}, eps_k, the step's statistics)
and `<activations.zarr>.partial` with `steps_done` in the attrs. Quantizer parameters are a function of
the stored statistics, and stateful schedulers are replayed from the stored x̂ and eps, so a rerun
after a kill continues from the last finished step. A partial store is never renamed into place
before the last step and the qparams are written.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import zarr

from pcr.calibrate.sweep import Calibration, StepResult, replay_schedulers, sweep
from pcr.config import ConfigError, Params, RelaxConfig
from pcr.errors import StoreError
from pcr.models.layers import match_layers
from pcr.quant.affine import code_dtype, quantize
from pcr.quant.observers import get_observer
from pcr.quant.quantize import corrected_output, qmodules, quantize_model
from pcr.quant.serialize import save_quant_state
from pcr.relax import make_schedule
from pcr.sampling import load_sampler
from pcr.stats.record import stack_stats, unstack_stats
from pcr.stores import (
    add_correction_arrays,
    add_stats_arrays,
    add_trajectory_arrays,
    create_store,
    fingerprint,
    finish_store,
    open_store,
    read_stats,
    resume_store,
    write_activation_codes,
    write_stats,
)
from pcr.weights.codes import load_weights


def fp32_stats_reader(traj: zarr.Group, names: list[str], histogram: bool):
    """step k -> the FP32 statistics (collect's) of the quantized layers."""
    idx = [traj.attrs["layers"].index(n) for n in names]
    stats = ["min", "max", "ema_min", "ema_max"] + (["hist"] if histogram else [])
    cache = {s: traj[f"stats/{s}"][:][:, idx] for s in stats}  # [T, L(, B)]: small, read once
    return lambda k: unstack_stats({s: v[k] for s, v in cache.items()}, names)


def _write_activations(store: zarr.Group, r: StepResult, qlayers, T: int) -> None:
    for name, x in r.captured.items():
        aq = qlayers[name].input_quant
        if aq.format != "int":  # the store holds integer codes + scale/zero point: fp8 inputs are not dumped
            continue
        bits, sym = int(aq.bits[r.k]), aq.symmetric
        codes = quantize(x, aq.scale[r.k], aq.zero_point[r.k], bits, sym).numpy()  # [S, ...]
        codes = codes.astype(np.dtype(str(code_dtype(bits, sym)).removeprefix("torch.")), copy=False)
        write_activation_codes(store, name, r.k, codes, T, float(aq.scale[r.k]), int(aq.zero_point[r.k]), bits, sym)


WEIGHTS_STAGE_KEYS = ("weight_method", "recon")  # read by the weights stage only


def use_weights(qlayers: dict, path: str | Path) -> None:
    """The weights stage's integer codes (rtn or AdaRound) in place of the ones quantize_model rounded."""
    stored = load_weights(path)
    for name, q in qlayers.items():
        w = stored.get(name)
        if w is None:
            raise StoreError(f"{path} has no weights for layer {name!r}: rerun the weights stage for these quant.* params")
        if (w.bits, w.symmetric) != (q.weight_bits, q.weight_symmetric):
            raise StoreError(f"{path}: layer {name!r} holds {w.bits}-bit {'symmetric' if w.symmetric else 'asymmetric'} codes, "
                             f"quant.* asks for {q.weight_bits}-bit: rerun the weights stage")
        q.set_codes(w.codes, w.scale, w.zero_point)


def prepare(params: Params, traj: zarr.Group, trajectories: str | Path = "trajectories.zarr", weights: str | Path | None = None,
            min_bits: int | None = None):
    """The pipeline with its UNet quantized (weights done) and the Calibration that sweeps it.

    min_bits: the fewest activation bits the statistics will serve (relaxed steps and the relax stage read them
    too; default quant.act_bits). Histograms are recorded only where the observer needs one at some bitwidth
    from there up."""
    cfg = params.calibrate
    pipe, sampler = load_sampler(params.model)
    T = sampler.num_steps
    if traj.attrs["num_steps"] != T:
        raise ConfigError(f"{trajectories} has {traj.attrs['num_steps']} steps but model.steps gives {T}: rerun collect")
    qmap = quantize_model(pipe.unet, params.quant, sampler.timesteps.tolist(), type(sampler.scheduler).__name__, params.model.steps,
                          output_correction=cfg.objective != "ranges")
    if weights is not None:
        use_weights(qmodules(pipe.unet), weights)
    names = list(qmap.layers)
    observer = get_observer(params.quant.act_observer)
    cond = {k: torch.from_numpy(traj[f"cond/{k}"][:]) for k in traj["cond"].array_keys()}  # every collected prompt
    store_layers = tuple(match_layers(names, cfg.store.layers, "calibrate.store.layers", "quantized layer"))
    histogram = observer.needs_histogram_from(min_bits or params.quant.act_bits)
    cal = Calibration(sampler, qmodules(pipe.unet), cond, fp32_stats_reader(traj, names, histogram), observer,
                      params.quant.act_bits, cfg.batch_size, store_layers, min(cfg.store.samples, cfg.batch_size),
                      params.quant.ema_constant, cfg.objective, corrected_output(pipe.unet),
                      lambda k: torch.from_numpy(traj["x"][k]), lambda k: torch.from_numpy(traj["model_output"][k]), histogram)
    return pipe, qmap, cal


def relaxed_bits(relax: dict, num_steps: int, act_bits: int) -> tuple[int, ...] | None:
    """Per-step bits to calibrate at, from env's relax_calibration.json (None: every step at act_bits)."""
    if not relax.get("recalibrate"):
        return None
    cfg = RelaxConfig(**{k: relax[k] for k in ("fraction", "where", "bits")}, recalibrate=True)
    return make_schedule(cfg, num_steps, act_bits).bits


def calibrate(params: Params, trajectories: str | Path, out: str | Path, qparams: str | Path, qconfig: str | Path,
              activations: str | Path, weights: str | Path | None = None, progress: bool = True,
              relax: dict | None = None) -> None:
    """weights: the weights stage's file (None: round to nearest here, with quant.weight_observer). relax: env's
    relax_calibration.json; with recalibrate, the relaxed steps are calibrated at their bits in the sweep, as
    the official loop does (the steps after them then see the relaxed prefix)."""
    cfg = params.calibrate
    traj = open_store(trajectories, "trajectories")
    pipe, qmap, cal = prepare(params, traj, trajectories, weights, (relax or {}).get("min_bits"))
    sampler, names, T = cal.sampler, list(qmap.layers), cal.sampler.num_steps
    cal.bits = relaxed_bits(relax or {}, T, params.quant.act_bits) or cal.bits
    n = next(iter(cal.cond.values())).shape[0]
    quant = {f.name: getattr(params.quant, f.name) for f in fields(params.quant) if f.name not in WEIGHTS_STAGE_KEYS}
    fp = fingerprint(traj.attrs["fingerprint"], n, quant, cfg.mode, cfg.objective, cfg.batch_size, cal.bits, cal.histogram,  # not the dumps
                     files=[weights] if weights is not None else [])  # the weights stage's settings are in its file
    dumps_fp = fingerprint(fp, asdict(cfg.store))
    store = resume_store(out, "calibration", fp)
    dumps = resume_store(activations, "activations", dumps_fp) if store is not None else None
    if store is None or dumps is None:
        store = create_store(out, "calibration", fingerprint=fp, mode=cfg.mode, layers=names, num_steps=T, steps_done=0,
                             act_bits=params.quant.act_bits, act_observer=params.quant.act_observer, num_prompts=n,
                             objective=cfg.objective)
        add_trajectory_arrays(store, sampler.timesteps.cpu().numpy(), n, sampler.latent_shape, cfg.batch_size)
        add_stats_arrays(store, T, names, traj["stats/hist"].shape[-1] if cal.histogram else None)
        if cal.output is not None:
            add_correction_arrays(store, T, cal.output.out_channels)
        store["x"][0] = traj["x"][0]
        dumps = create_store(activations, "activations", fingerprint=dumps_fp, layers=list(cal.capture_layers),
                             samples=cal.capture_samples, num_steps=T)
    done = int(store.attrs["steps_done"])
    for k in range(done):  # resume: parameters of finished steps follow from their stored statistics
        cal.set_params(unstack_stats(read_stats(store, k), names), k)
        if cal.output is not None:  # ... and their output corrections are stored as fitted
            cal.output.set_step(k, torch.from_numpy(store["correction/gain"][k]), torch.from_numpy(store["correction/shift"][k]))
    schedulers = replay_schedulers(cal, lambda j: torch.from_numpy(store["x"][j]),
                                   lambda j: torch.from_numpy(store["model_output"][j]), done)

    def on_step(r: StepResult) -> None:
        store["x"][r.k + 1] = r.x_next.numpy()
        store["model_output"][r.k] = r.eps.numpy()
        write_stats(store, r.k, stack_stats(r.stats, names))
        if r.correction is not None:
            store["correction/gain"][r.k], store["correction/shift"][r.k] = (c.numpy() for c in r.correction)
        _write_activations(dumps, r, cal.qlayers, T)
        store.attrs["steps_done"] = r.k + 1  # last: a step counts only once all of it is written

    x = torch.from_numpy(store["x"][done]).to(sampler.unet.device)
    sweep(cal, cfg.mode, x, start=done, schedulers=schedulers, on_step=on_step, progress=progress)
    save_quant_state(pipe.unet, qmap, qparams, qconfig)
    finish_store(dumps, activations)
    finish_store(store, out)
