"""The denoising loop, step by step, as calibration needs it.

    x_T = sigma_0 * n,  n ~ N(0, I) seeded per sample (seed + i), so a sample never depends on
          its batch or on the process that draws it;
    eps_k = eps_u + g * (eps_c - eps_u)          classifier-free guidance at step k
    x_{k+1} = scheduler.step(eps_k, t_k, x_k)    k = 0 .. T-1 (k = 0 is x_T, the first step)

A quantized UNet counts its own calls (pcr.quant.step); here each call is pinned to step k, since
calibration runs one step over several batches (this module reads no quantization code: the FP32
stages import it, so the counter is found by its attribute name). Schedulers
with state (PNDM, DPM++ multistep, Euler) get one copy per batch, all stepped in lockstep.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import diffusers
import numpy as np
import torch
import transformers
from diffusers import DiffusionPipeline
from torch import Tensor, nn

from pcr.config import ModelConfig
from pcr.models.conditioning import encode_prompts, guide, is_sdxl, unet_kwargs
from pcr.models.load import check_resolution, inspect_model_dir, load_pipeline, resolve_device, resolve_dtype

STEP_COUNTER = "pcr_step"  # pcr.quant.step.STEP_COUNTER


@dataclass
class Sampler:
    unet: nn.Module
    scheduler: object  # a diffusers scheduler with timesteps set: the template every batch copies
    guidance_scale: float
    latent_shape: tuple[int, int, int]  # (C, h, w)

    @property
    def timesteps(self) -> Tensor:
        return self.scheduler.timesteps

    @property
    def num_steps(self) -> int:
        """T: UNet evaluations per sample (PNDM's PLMS takes one more than asked)."""
        return len(self.scheduler.timesteps)

    def new_scheduler(self):
        return copy.deepcopy(self.scheduler)

    def initial_noise(self, seeds: list[int]) -> Tensor:
        """x_T for each seed: [N, C, h, w] float32 on the CPU (identical on every device)."""
        n = torch.stack([torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return n * float(self.scheduler.init_noise_sigma)

    @torch.no_grad()
    def eps(self, x: Tensor, k: int, cond: dict[str, Tensor], scheduler) -> Tensor:
        """Guided model output at step k: x [N, C, h, w] -> [N, C, h, w]."""
        t = self.timesteps[k]
        p = next(self.unet.parameters())  # not unet.device/.dtype: diffusers walks every module for those
        dev, dtype = p.device, p.dtype
        model_in = scheduler.scale_model_input(torch.cat([x, x]).to(dev), t).to(dtype)  # [2N, C, h, w]
        kwargs = unet_kwargs({name: v.to(dev, dtype) for name, v in cond.items()})
        counter = getattr(self.unet, STEP_COUNTER, None)  # a quantized UNet's
        with counter.pin(k) if counter is not None else nullcontext():
            out = self.unet(model_in, t, **kwargs).sample
        return guide(out.float(), self.guidance_scale)

    @torch.no_grad()
    def step(self, scheduler, eps: Tensor, k: int, x: Tensor) -> Tensor:
        return scheduler.step(eps, self.timesteps[k], x.to(eps.device)).prev_sample.float()


@contextmanager
def quiet_loading():
    """diffusers' and transformers' "Loading weights" bars off inside (loading is quick, our bars cover the
    work), restored on exit: the process's other users keep theirs."""
    libs = (diffusers.utils.logging, transformers.utils.logging)
    was = [lib.is_progress_bar_enabled() for lib in libs]
    for lib in libs:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, on in zip(libs, was, strict=True):
            if on:
                lib.enable_progress_bar()


def load_sampler(cfg: ModelConfig, unet: nn.Module | None = None, scheduler=None) -> tuple[DiffusionPipeline, Sampler]:
    """The pipeline of `cfg.path` and a sampler over its UNet (checks path, resolution and dtype first).

    `unet` / `scheduler` replace the pipeline's own (a quantized UNet and its calibrated scheduler).
    """
    info = inspect_model_dir(cfg.path)
    height, width = cfg.height or info.sample_size, cfg.width or info.sample_size
    check_resolution(info, height, width)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    components = {"unet": unet} if unet is not None else {}
    with quiet_loading():
        pipe = load_pipeline(cfg.path, scheduler=scheduler if scheduler is not None else cfg.scheduler, dtype=dtype,
                             device=cfg.device, **components)
    pipe.unet.eval()
    scheduler = copy.deepcopy(pipe.scheduler)  # the template every batch copies
    scheduler.set_timesteps(cfg.steps, device=resolve_device(cfg.device))
    f = info.vae_scale_factor
    return pipe, Sampler(pipe.unet, scheduler, cfg.guidance_scale, (info.latent_channels, height // f, width // f))


def conditioning(pipe: DiffusionPipeline, prompts: list[str], cfg: ModelConfig, sampler: Sampler) -> dict[str, Tensor]:
    """[N, 2, ...] conditioning of the prompts, float32 on the CPU (what stores keep)."""
    _, h, w = sampler.latent_shape
    f = pipe.vae_scale_factor
    cond = encode_prompts(pipe, prompts, height=h * f, width=w * f, negative_prompt=cfg.negative_prompt)
    return {k: v.float().cpu() for k, v in cond.items()}


@torch.no_grad()
def decode(pipe: DiffusionPipeline, latents: Tensor) -> np.ndarray:
    """Latents [N, C, h, w] -> uint8 images [N, H, W, 3].

    As the stock SDXL pipeline does, an fp16 SDXL VAE with `force_upcast` (SDXL base's VAE overflows in
    fp16: NaN, black images) is moved to float32 for decoding, once, and stays there.
    """
    vae = pipe.vae
    if is_sdxl(pipe) and vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae.to(torch.float32)
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    img = vae.decode(z).sample.float()  # [N, 3, H, W] in [-1, 1]
    img = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return img.permute(0, 2, 3, 1).cpu().numpy()


def sample(sampler: Sampler, cond: dict[str, Tensor], seeds: list[int]) -> Tensor:
    """The whole loop for one batch: x_T -> x_0 latents [N, C, h, w]."""
    scheduler = sampler.new_scheduler()
    x = sampler.initial_noise(seeds)
    for k in range(sampler.num_steps):
        x = sampler.step(scheduler, sampler.eps(x, k, cond, scheduler), k, x)
    return x
