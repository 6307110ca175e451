"""reference and generate: images of the evaluation prompts, FP32 and quantized, with the same seeds.

Evaluation sample i of every prompt set starts from noise seeded with eval.seed + i, so FP32 and
quantized images are pairs, whatever the batch size. Images go to images/<set> [N, H, W, 3] uint8,
one chunk per batch, with done/<set> [N] marking finished samples (chunked alike, so each process
writes only its own chunks). Under `accelerate launch` the batches are spread over the processes
(pcr.distributed); an interrupted run resumes from `<out>.partial`, computing only unfinished batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import zarr
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from pcr.calibrate.observe import unstack_stats
from pcr.config import Params, read_prompts
from pcr.distributed import batches, model_device, process_state, share
from pcr.models.conditioning import select
from pcr.quant.observers import get_observer
from pcr.quant.quantize import qmodules
from pcr.quant.serialize import load_quantized
from pcr.relax import Schedule
from pcr.sampling import Sampler, conditioning, decode, load_sampler, sample
from pcr.stores import (
    IMAGE_DIMS,
    StoreError,
    add_array,
    create_store,
    finish_store,
    open_partial,
    open_store,
    partial_path,
    resume_store,
)

GRID_MIN_PX = 96  # small demo images are upscaled (nearest) to at least this size in grid.png


def prompt_sets(params: Params) -> dict[str, list[str]]:
    e = params.eval
    sets = {"standard": read_prompts(e.prompts, e.num_prompts, key="eval.prompts")}
    if e.paraphrase_prompts:
        sets["paraphrase"] = read_prompts(e.paraphrase_prompts, e.num_prompts, key="eval.paraphrase_prompts")
    return sets


def _fingerprint(*parts, files: Sequence[str | Path] = ()) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:  # the inputs a resumed store must share (qparams, qconfig, schedule)
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def write_images(params: Params, pipe, sampler: Sampler, out: str | Path, kind: str, progress: bool = True,
                 inputs: Sequence[str | Path] = (), **attrs) -> None:
    """images/<set> and done/<set>, batch by batch, spread over the launched processes; resumable.

    The main process creates `<out>.partial` (or resumes it when its fingerprint matches: same model,
    eval params, prompts and input files), everyone waits, then the batches not yet marked done are
    shared out as whole chunks; a batch's done chunk is set after its images are written.
    """
    state = process_state(params.model.device)
    sets = prompt_sets(params)
    e = params.eval
    fp = _fingerprint(kind, asdict(params.model), asdict(e), sets, attrs, files=inputs)
    _, h, w = sampler.latent_shape
    f = pipe.vae_scale_factor
    if state.is_main_process:
        store = resume_store(out, kind, fp)
        if store is None:
            store = create_store(out, kind, fingerprint=fp, prompts=sets, seed=e.seed, model=asdict(params.model), **attrs)
            for name, prompts in sets.items():
                n = len(prompts)
                add_array(store, f"images/{name}", (n, h * f, w * f, 3), "uint8", IMAGE_DIMS, (min(e.batch_size, n), h * f, w * f, 3))
                add_array(store, f"done/{name}", (n,), "bool", ("sample",), (min(e.batch_size, n),))
    state.wait_for_everyone()
    if not state.is_main_process:
        store = open_partial(out)
    todo = {}
    for name, prompts in sets.items():
        mask = store[f"done/{name}"][:]
        todo[name] = [b for b in batches(len(prompts), e.batch_size) if not mask[b].all()]
    state.wait_for_everyone()  # every process shares out the same snapshot of the masks before anyone writes
    for name, prompts in sets.items():
        images, done = store[f"images/{name}"], store[f"done/{name}"]
        mine = share(todo[name], state)
        if not mine:
            continue
        cond = conditioning(pipe, prompts, params.model, sampler)  # all prompts: encoded as by a single process
        for b in tqdm(mine, desc=f"{kind} ({name})", disable=not progress or not state.is_main_process):
            latents = sample(sampler, select(cond, b), [e.seed + i for i in range(b.start, b.stop)])
            images[b] = decode(pipe, latents)  # [B, H, W, 3]
            done[b] = np.ones(b.stop - b.start, dtype=bool)  # last: the chunk counts once its images are in
    state.wait_for_everyone()
    if state.is_main_process:
        holes = {name: int((~store[f"done/{name}"][:]).sum()) for name in sets}
        if any(holes.values()):
            raise StoreError(f"{partial_path(out)}: unfinished samples {holes}; rerun the stage to finish them")
        finish_store(store, out)
    state.wait_for_everyone()


def _load(params: Params):
    """The pipeline on this process's device (its own GPU when launched on several)."""
    state = process_state(params.model.device)
    return load_sampler(replace(params.model, device=model_device(params.model.device, state)))


def reference(params: Params, out: str | Path, progress: bool = True) -> None:
    pipe, sampler = _load(params)
    write_images(params, pipe, sampler, out, "reference", progress)


def apply_schedule(unet: torch.nn.Module, schedule: Schedule, calib: zarr.Group, act_observer: str) -> None:
    """Set each step's activation bits per the schedule; ranges of changed steps follow from calib stats."""
    q = qmodules(unet)
    names = calib.attrs["layers"]
    if len(schedule.bits) != calib.attrs["num_steps"]:
        raise ValueError(f"schedule has {len(schedule.bits)} steps, the calibration {calib.attrs['num_steps']}: rerun relax")
    observer = get_observer(act_observer)
    stat_names = list(calib["stats"].array_keys())
    for k, bits in enumerate(schedule.bits):
        if all(int(m.input_quant.bits[k]) == bits for m in q.values()):
            continue
        stats = unstack_stats({s: calib[f"stats/{s}"][k] for s in stat_names}, names)
        for name, m in q.items():
            lo, hi = observer.activation_range(stats[name], bits, m.input_quant.symmetric)
            m.input_quant.set_step(k, lo, hi, bits)


def generate(params: Params, qparams: str | Path, qconfig: str | Path, calib_path: str | Path, schedule_path: str | Path,
             reference_path: str | Path, out: str | Path, grid_png: str | Path, progress: bool = True) -> None:
    reference_store = open_store(reference_path, "reference")
    calib = open_store(calib_path, "calibration")
    pipe, sampler = _load(params)
    qmap = load_quantized(pipe.unet, qparams, qconfig)
    schedule = Schedule.load(schedule_path)
    apply_schedule(pipe.unet, schedule, calib, qmap.act_observer)
    missing = [n for n, m in qmodules(pipe.unet).items() if not bool(m.input_quant.calibrated.all())]
    if missing:
        raise ValueError(f"{qparams}: {len(missing)} layers have uncalibrated steps (first: {missing[0]}); rerun calibrate")
    weight_bits = max(spec.weight_bits for spec in qmap.layers.values())
    write_images(params, pipe, sampler, out, "generated", progress, inputs=(qparams, qconfig, schedule_path),
                 schedule=list(schedule.bits), average_bits=schedule.average_bits, weight_bits=weight_bits)
    if not process_state(params.model.device).is_main_process:
        return
    label = f"W{weight_bits}A{schedule.average_bits:g}"
    save_grid(reference_store["images/standard"], open_store(out, "generated")["images/standard"], params.generate.grid_images,
              grid_png, ("FP32", label))


def save_grid(top: zarr.Array, bottom: zarr.Array, n: int, path: str | Path, labels: tuple[str, str]) -> None:
    """Two rows, FP32 above quantized, the first n images of each; upscaled if tiny."""
    n = min(n, top.shape[0])
    rows = [np.concatenate(list(a[:n]), axis=1) for a in (top, bottom)]  # [H, n*W, 3]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    h = top.shape[1]
    if h < GRID_MIN_PX:
        f = -(-GRID_MIN_PX // h)
        grid = grid.resize((grid.width * f, grid.height * f), Image.NEAREST)
        h *= f
    canvas = Image.new("RGB", (grid.width + 64, grid.height), "white")
    canvas.paste(grid, (64, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        draw.text((4, i * h + h // 2 - 6), label, fill="black")
    tmp = Path(str(path) + ".tmp.png")
    canvas.save(tmp)
    tmp.replace(path)
