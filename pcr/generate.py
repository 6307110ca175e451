"""generate: the quantized UNet with the relax schedule on the evaluation prompts, paired with reference.

Prompt sets and seeds come from reference.zarr, so generated image i and reference image i share both.
The image writing (batches, processes, resume) is pcr.images'.
"""

from __future__ import annotations

from pathlib import Path

import torch
import zarr

from pcr.config import Params
from pcr.errors import StoreError
from pcr.images import load_for_process, write_images
from pcr.quant.observers import get_observer
from pcr.quant.quantize import qmodules, set_activation_step
from pcr.quant.serialize import load_quantized
from pcr.quant.step import timestep
from pcr.relax import Schedule
from pcr.stats.record import unstack_stats
from pcr.stores import open_store, read_stats


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


def generate(params: Params, qparams: str | Path, qconfig: str | Path, calib_path: str | Path, schedule_path: str | Path,
             reference_path: str | Path, out: str | Path, progress: bool = True) -> None:
    reference_store = open_store(reference_path, "reference")
    calib = open_store(calib_path, "calibration")
    pipe, sampler = load_for_process(params, step_scope=timestep)
    qmap = load_quantized(pipe.unet, qparams, qconfig)
    schedule = Schedule.load(schedule_path)
    apply_schedule(pipe.unet, schedule, calib, qmap.act_observer)
    missing = [n for n, m in qmodules(pipe.unet).items() if not bool(m.input_quant.calibrated.all())]
    if missing:
        raise StoreError(f"{qparams}: {len(missing)} layers have uncalibrated steps (first: {missing[0]}); rerun calibrate")
    weight_bits = max(spec.weight_bits for spec in qmap.layers.values())
    write_images(params, pipe, sampler, out, "generated", reference_store.attrs["prompts"], reference_store.attrs["seed"],
                 progress, inputs=(qparams, qconfig, schedule_path), schedule=list(schedule.bits),
                 average_bits=schedule.average_bits, weight_bits=weight_bits)
