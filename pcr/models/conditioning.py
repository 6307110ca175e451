"""Prompt conditioning in one layout for SD and SDXL.

`encode_prompts` returns tensors shaped [N, 2, ...]: index 0 is the unconditional (negative prompt)
branch, index 1 the conditional one, so a store can keep one row per prompt. `unet_kwargs` turns them
into what `pipe.unet(latents_2N, t, **kwargs)` takes for a classifier-free-guidance batch laid out as
[uncond_0..uncond_{N-1}, cond_0..cond_{N-1}], the layout of the stock diffusers pipelines.
Both use the pipelines' own `encode_prompt` and `_get_add_time_ids`, so they follow diffusers exactly.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, StableDiffusionXLPipeline
from torch import Tensor

UNCOND, COND = 0, 1  # index of each CFG branch along dim 1
HIDDEN = "encoder_hidden_states"  # [N, 2, L, D]
TEXT_EMBEDS = "text_embeds"  # SDXL only: [N, 2, P], pooled output of text_encoder_2
TIME_IDS = "time_ids"  # SDXL only: [N, 2, 6], original size, crop top-left, target size
CROP_TOP_LEFT = (0, 0)


def is_sdxl(pipe: DiffusionPipeline) -> bool:
    return isinstance(pipe, StableDiffusionXLPipeline)


def _pair(uncond: Tensor, cond: Tensor) -> Tensor:
    """[N, ...] twice -> [N, 2, ...] with unconditional first."""
    return torch.stack([uncond, cond], dim=1)


@torch.no_grad()
def encode_prompts(
    pipe: DiffusionPipeline,
    prompts: list[str],
    *,
    height: int,
    width: int,
    negative_prompt: str | None = "",
) -> dict[str, Tensor]:
    """Conditioning of `prompts` for both CFG branches, every tensor [N, 2, ...], in the pipe's dtype.

    `negative_prompt=None` keeps the pipeline's own default for the unconditional branch: the empty
    prompt for SD, zero embeddings for SDXL checkpoints with `force_zeros_for_empty_prompt`.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    prompts = list(prompts)
    n = len(prompts)
    negatives = None if negative_prompt is None else [negative_prompt] * n
    device = pipe._execution_device
    if not is_sdxl(pipe):
        cond, uncond = pipe.encode_prompt(
            prompts, device, 1, True, negative_prompt=negatives
        )  # [N, L, D] each
        return {HIDDEN: _pair(uncond, cond)}

    cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
        prompt=prompts,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negatives,
    )  # [N, L, D], [N, L, D], [N, P], [N, P]
    if pipe.text_encoder_2 is None:
        projection_dim = int(pooled.shape[-1])
    else:
        projection_dim = pipe.text_encoder_2.config.projection_dim
    size = (height, width)
    time_ids = pipe._get_add_time_ids(
        size, CROP_TOP_LEFT, size, dtype=cond.dtype, text_encoder_projection_dim=projection_dim
    ).to(device)  # [1, 6]
    return {
        HIDDEN: _pair(uncond, cond),
        TEXT_EMBEDS: _pair(uncond_pooled, pooled),
        TIME_IDS: time_ids.expand(n, 2, -1).clone(),  # same ids for both branches and all prompts
    }


def _cfg_batch(x: Tensor) -> Tensor:
    """[N, 2, ...] -> [2N, ...] as [uncond_0..uncond_{N-1}, cond_0..cond_{N-1}]."""
    return torch.cat([x[:, UNCOND], x[:, COND]], dim=0)


def unet_kwargs(cond: dict[str, Tensor]) -> dict:
    """Keyword arguments of `pipe.unet(latents_2N, t, **kwargs)` for a CFG batch of the N prompts."""
    kwargs: dict = {HIDDEN: _cfg_batch(cond[HIDDEN])}  # [2N, L, D]
    if TEXT_EMBEDS in cond:
        kwargs["added_cond_kwargs"] = {
            TEXT_EMBEDS: _cfg_batch(cond[TEXT_EMBEDS]),  # [2N, P]
            TIME_IDS: _cfg_batch(cond[TIME_IDS]),  # [2N, 6]
        }
    return kwargs


def select(cond: dict[str, Tensor], index: slice | list[int] | Tensor) -> dict[str, Tensor]:
    """The conditioning of a subset of the prompts (index along dim 0)."""
    return {k: v[index] for k, v in cond.items()}


def guide(noise_pred: Tensor, guidance_scale: float) -> Tensor:
    """Classifier-free guidance of a UNet output on a CFG batch: [2N, ...] -> [N, ...]."""
    uncond, cond = noise_pred.chunk(2)
    return uncond + guidance_scale * (cond - uncond)
