"""The demo's UNet2DConditionModel, trained on VAE latents conditioned on the frozen CLIP text tower,
then exported with the VAE, text encoder, tokenizer and a DDIM scheduler as a StableDiffusionPipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPModel

from pcr.demo.clip import demo_tokenizer, text_encoder_from, tokenize
from pcr.demo.data import Pool
from pcr.demo.loop import LoopConfig, train
from pcr.demo.render import TEMPLATES, all_labels, caption
from pcr.demo.vae import VAEConfig, build_vae, encode_pool, scaling_factor

LATENT_SIZE = 8
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


@dataclass(frozen=True)
class UNetConfig:
    block_out_channels: tuple[int, ...] = (48, 96)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    attention_head_dim: int = 4  # diffusers' legacy name: number of heads
    cross_attention_dim: int = 128  # the CLIP text hidden size
    batch_size: int = 48
    uncond_prob: float = 0.1  # empty caption, for classifier-free guidance
    paraphrase_prob: float = 0.3

    def __post_init__(self) -> None:
        if not self.block_out_channels or any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"UNetConfig.block_out_channels={self.block_out_channels} must be multiples of "
                f"norm_num_groups={self.norm_num_groups}"
            )
        if self.batch_size < 1 or self.layers_per_block < 1:
            raise ValueError(
                f"UNetConfig batch_size={self.batch_size}, layers_per_block={self.layers_per_block} must be >= 1"
            )
        for name in ("uncond_prob", "paraphrase_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"UNetConfig.{name}={getattr(self, name)} must be in [0, 1]")


def build_unet(cfg: UNetConfig, latent_channels: int = 4) -> UNet2DConditionModel:
    n = len(cfg.block_out_channels)
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        cross_attention_dim=cfg.cross_attention_dim,
        norm_num_groups=cfg.norm_num_groups,
        # A pooled-text path into the time embedding, computed from encoder_hidden_states alone
        # (stock pipelines need nothing extra): global conditioning that pins the colour.
        addition_embed_type="text",
        addition_embed_type_num_heads=cfg.attention_head_dim,
    )


@torch.no_grad()
def caption_embeddings(clip: CLIPModel) -> torch.Tensor:
    """Frozen text states of every (combination, template) caption and the empty one:
    [n_combos * n_templates + 1, MAX_LENGTH, hidden]; the empty caption is the last row."""
    encoder = text_encoder_from(clip)
    tokenizer = demo_tokenizer()
    caps = [caption(lab, t) for lab in all_labels() for t in TEMPLATES] + [""]
    out = [encoder(tokenize(tokenizer, caps[s : s + 256]))[0] for s in range(0, len(caps), 256)]
    return torch.cat(out)


def combo_index(pool: Pool) -> np.ndarray:
    """[N] index of each pool image's combination in all_labels() order."""
    lookup = {lab: i for i, lab in enumerate(all_labels())}
    return np.array([lookup[pool.label(i)] for i in range(len(pool))], dtype=np.int64)


def load_vae(work: Path) -> AutoencoderKL:
    vae = build_vae(VAEConfig())
    vae.load_state_dict(torch.load(work / "vae.ckpt", map_location="cpu", weights_only=True)["model"])
    return vae.eval()


def train_and_export_unet(
    pool: Pool, cfg: UNetConfig, loop: LoopConfig, work: Path, out: Path, seed: int = 0
) -> None:
    vae = load_vae(work)
    cache = work / "latents.npz"
    if not cache.exists():
        means, stds = encode_pool(vae, pool)
        np.savez(cache, means=means, stds=stds)
    with np.load(cache) as z:
        means, stds = torch.from_numpy(z["means"]), torch.from_numpy(z["stds"])  # [N, 4, 8, 8] each
    sf = scaling_factor(means.numpy(), stds.numpy())
    clip = CLIPModel.from_pretrained(out / "clip", local_files_only=True).eval()
    states = caption_embeddings(clip)  # [C*T + 1, L, D]
    combos = torch.from_numpy(combo_index(pool))
    n_templates = len(TEMPLATES)
    noise_sched = DDPMScheduler(**SCHEDULE)
    torch.manual_seed(seed)
    unet = build_unet(cfg, vae.config.latent_channels)

    def step(i: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        b = cfg.batch_size
        idx = torch.randint(len(pool), (b,), generator=gen)
        z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * sf  # [B, 4, 8, 8]
        paraphrase = torch.rand(b, generator=gen) < cfg.paraphrase_prob
        template = torch.where(paraphrase, 1 + torch.randint(n_templates - 1, (b,), generator=gen), 0)
        row = combos[idx] * n_templates + template
        row = torch.where(torch.rand(b, generator=gen) < cfg.uncond_prob, len(states) - 1, row)
        t = torch.randint(SCHEDULE["num_train_timesteps"], (b,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        pred = unet(noise_sched.add_noise(z0, eps, t), t, encoder_hidden_states=states[row]).sample
        return F.mse_loss(pred, eps)

    ema = train("unet", unet, step, loop, work / "unet.ckpt")
    vae.register_to_config(scaling_factor=sf)
    export_pipeline(ema, vae, clip, out / "pipeline")


def default_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def export_pipeline(unet: UNet2DConditionModel, vae: AutoencoderKL, clip: CLIPModel, out_dir: Path) -> None:
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder_from(clip), tokenizer=demo_tokenizer(), unet=unet,
        scheduler=default_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(out_dir)
    demo_tokenizer(out_dir / "tokenizer")  # adds vocab.json + merges.txt for older transformers
