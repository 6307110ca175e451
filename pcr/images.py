"""reference, and the image writing generate shares: images of the evaluation prompt sets, with the eval seeds.

Evaluation sample i of every prompt set starts from noise seeded with seed + i, so FP32 and quantized
images are pairs, whatever the batch size. Images go to images/<set> [N, H, W, 3] uint8, one chunk per
batch, with done/<set> [N] marking finished samples (chunked alike, so each process writes only its own
chunks). Under `accelerate launch` the batches are spread over the processes (pcr.distributed); an
interrupted run resumes from `<out>.partial`, computing only unfinished batches.

This module reads no quantization code: reference is an FP32 stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pcr.config import Params, eval_prompt_sets
from pcr.distributed import batches, finish_shared_store, model_device, process_state, share, shared_store
from pcr.models.conditioning import select
from pcr.sampling import Sampler, conditioning, decode, load_sampler, sample
from pcr.stores import StoreError, add_image_arrays, create_store, fingerprint, partial_path, resume_store


def write_images(params: Params, pipe, sampler: Sampler, out: str | Path, kind: str, sets: dict[str, list[str]], seed: int,
                 progress: bool = True, inputs: Sequence[str | Path] = (), **attrs) -> None:
    """images/<set> and done/<set>, batch by batch (eval.batch_size), spread over the launched processes; resumable.

    The main process creates `<out>.partial` (or resumes it when its fingerprint matches: same model params,
    prompts, seed, batch size, attrs and input files), everyone waits, then the batches not yet marked done
    are shared out as whole chunks; a batch's done chunk is set after its images are written.
    """
    state = process_state(params.model.device)
    batch = params.eval.batch_size
    fp = fingerprint(kind, asdict(params.model), sets, seed, batch, attrs, files=inputs)
    _, h, w = sampler.latent_shape
    f = pipe.vae_scale_factor

    def make():
        store = resume_store(out, kind, fp)
        if store is None:
            store = create_store(out, kind, fingerprint=fp, prompts=sets, seed=seed, model=asdict(params.model), **attrs)
            add_image_arrays(store, {name: len(p) for name, p in sets.items()}, (h * f, w * f), batch)
        return store

    store = shared_store(state, out, make)
    todo = {}
    for name, prompts in sets.items():
        mask = store[f"done/{name}"][:]
        todo[name] = [b for b in batches(len(prompts), batch) if not mask[b].all()]
    state.wait_for_everyone()  # every process shares out the same snapshot of the masks before anyone writes
    for name, prompts in sets.items():
        images, done = store[f"images/{name}"], store[f"done/{name}"]
        mine = share(todo[name], state)
        if not mine:
            continue
        cond = conditioning(pipe, prompts, params.model, sampler)  # all prompts: encoded as by a single process
        for b in tqdm(mine, desc=f"{kind} ({name})", disable=not progress or not state.is_main_process):
            latents = sample(sampler, select(cond, b), [seed + i for i in range(b.start, b.stop)])
            images[b] = decode(pipe, latents)  # [B, H, W, 3]
            done[b] = np.ones(b.stop - b.start, dtype=bool)  # last: the chunk counts once its images are in

    def check() -> None:
        holes = {name: int((~store[f"done/{name}"][:]).sum()) for name in sets}
        if any(holes.values()):
            raise StoreError(f"{partial_path(out)}: unfinished samples {holes}; rerun the stage to finish them")

    finish_shared_store(state, out, store, check)


def load_for_process(params: Params, **kwargs):
    """The pipeline and sampler on this process's device (its own GPU when launched on several)."""
    state = process_state(params.model.device)
    return load_sampler(replace(params.model, device=model_device(params.model.device, state)), **kwargs)


def reference(params: Params, out: str | Path, sets: dict[str, list[str]] | None = None, progress: bool = True) -> None:
    """FP32 images of the evaluation prompt sets (the env stage's snapshot; None: read as params.eval says)."""
    pipe, sampler = load_for_process(params)
    sets = eval_prompt_sets(params) if sets is None else sets
    write_images(params, pipe, sampler, out, "reference", sets, params.eval.seed, progress)
