"""export: the calibrated UNet with its relax schedule applied, as one self-contained artifact.

    float UNet (model.path/unet) + calibration state (qparams, qconfig) + relax schedule
        -> relaxed steps' parameters from calib.zarr's statistics at their bits
        -> quantized/ (pcr.quant.serialize): what generate runs and what users ship

The float UNet's weights are read here, once; the artifact does not need them again.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import zarr
from diffusers import UNet2DConditionModel

from pcr.config import Params
from pcr.errors import StoreError
from pcr.models.load import inspect_model_dir, model_scheduler
from pcr.models.schedulers import as_sd_pipeline_would
from pcr.quant.observers import get_observer
from pcr.quant.quantize import qmodules, set_activation_step
from pcr.quant.serialize import load_quant_state, save_quantized
from pcr.quant.step import check_timesteps
from pcr.relax import Schedule
from pcr.stats.record import unstack_stats
from pcr.stores import open_store, read_stats


@torch.no_grad()
def apply_schedule(unet: torch.nn.Module, schedule: Schedule, calib: zarr.Group, act_observer: str) -> None:
    """Set each step's activation bits per the schedule; ranges of changed steps follow from calib stats."""
    q = qmodules(unet)
    names = calib.attrs["layers"]
    if len(schedule.bits) != calib.attrs["num_steps"]:
        raise StoreError(f"schedule has {len(schedule.bits)} steps, the calibration {calib.attrs['num_steps']}: rerun relax")
    observer = get_observer(act_observer)
    for k, bits in enumerate(schedule.bits):
        if all(int(m.input_quant.bits[k]) == bits for m in q.values()):
            continue
        set_activation_step(q, observer, unstack_stats(read_stats(calib, k), names), k, bits)


def calibrated_scheduler(params: Params, num_steps: int):
    """The scheduler the activations were calibrated with (model.scheduler over the model's own config)."""
    info = inspect_model_dir(params.model.path)
    scheduler = model_scheduler(info, params.model.scheduler)
    if info.family == "sd":
        scheduler = as_sd_pipeline_would(scheduler)  # what every stage ran: the pipeline constructor applies these
    scheduler.set_timesteps(params.model.steps)
    if len(scheduler.timesteps) != num_steps:
        raise StoreError(f"model.scheduler={params.model.scheduler!r} with model.steps={params.model.steps} gives "
                         f"{len(scheduler.timesteps)} steps, the calibration has {num_steps}: rerun calibrate")
    return scheduler


def export(params: Params, qparams: str | Path, qconfig: str | Path, calib_path: str | Path, schedule_path: str | Path,
           out: str | Path) -> None:
    calib = open_store(calib_path, "calibration")
    root = inspect_model_dir(params.model.path).path
    unet = UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True).eval()
    qmap = load_quant_state(unet, qparams, qconfig)
    schedule = Schedule.load(schedule_path)
    apply_schedule(unet, schedule, calib, qmap.act_observer)
    missing = [n for n, m in qmodules(unet).items() if not bool(m.input_quant.calibrated.all())]
    if missing:
        raise StoreError(f"{qparams}: {len(missing)} layers have uncalibrated steps (first: {missing[0]}); rerun calibrate")
    scheduler = calibrated_scheduler(params, qmap.num_steps)
    check_timesteps(unet, scheduler.timesteps, str(qparams), "model.scheduler/model.steps give", "calibrate")
    meta = {**qmap.meta, "scheduler": dict(scheduler.config), "num_inference_steps": params.model.steps,
            "schedule": {"bits": list(schedule.bits), "average_bits": schedule.average_bits, "fraction": schedule.fraction,
                         "where": schedule.where}}
    save_quantized(unet, replace(qmap, meta=meta), out, scheduler)
