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

from pcr.config import Params, read_prompts
from pcr.distributed import batches, model_device, process_state, share
from pcr.models.conditioning import select
from pcr.pipeline import load_scheduler
from pcr.quant.kernels.layers import describe, use_kernels
from pcr.quant.qmap import QuantMap
from pcr.quant.serialize import ARTIFACT_FILES, QUANT_CONFIG, load_quantized
from pcr.quant.step import step_counter
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


def generate(params: Params, quantized: str | Path, reference_path: str | Path, out: str | Path, grid_png: str | Path,
             progress: bool = True) -> None:
    """Images of the evaluation prompts from the exported artifact: exactly what users load."""
    reference_store = open_store(reference_path, "reference")
    state = process_state(params.model.device)
    model = replace(params.model, device=model_device(params.model.device, state))
    unet = load_quantized(quantized)
    counter = step_counter(unet)
    qmap = QuantMap.load(Path(quantized) / QUANT_CONFIG)
    pipe, sampler = load_sampler(model, unet=unet, scheduler=load_scheduler(quantized))
    if not torch.equal(sampler.timesteps.double().cpu(), counter.timesteps.cpu()):
        raise StoreError(f"{quantized} was calibrated at timesteps {counter.timesteps.tolist()}, model.steps={model.steps} gives "
                         f"{sampler.timesteps.tolist()}: rerun export")
    kernels = use_kernels(pipe.unet, params.generate.kernels)  # after load_sampler: on the model's device
    if state.is_main_process:
        print(describe(kernels, params.generate.kernels))
    schedule = qmap.meta["schedule"]
    weight_bits = max(spec.weight_bits for spec in qmap.layers.values())
    write_images(params, pipe, sampler, out, "generated", progress, inputs=[Path(quantized) / f for f in ARTIFACT_FILES],
                 schedule=schedule["bits"], average_bits=schedule["average_bits"], weight_bits=weight_bits,
                 kernels=params.generate.kernels, kernels_summary=kernels)
    if not state.is_main_process:
        return
    label = f"W{weight_bits}A{schedule['average_bits']:g}"
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
