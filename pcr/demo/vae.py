"""The demo's AutoencoderKL: 32x32 RGB <-> 4x8x8 latents, trained on rendered images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm import tqdm

from pcr.demo.data import Pool, to_model_range
from pcr.demo.loop import LoopConfig, train

KL_WEIGHT = 1e-5  # small, as in SD: the latent only needs to stay roughly Gaussian-shaped


@dataclass(frozen=True)
class VAEConfig:
    block_out_channels: tuple[int, ...] = (16, 32, 32)  # two downsamplings: 32 -> 8
    latent_channels: int = 4
    norm_num_groups: int = 8
    batch_size: int = 32

    def __post_init__(self) -> None:
        if len(self.block_out_channels) < 1 or any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"VAEConfig.block_out_channels={self.block_out_channels} must be non-empty multiples "
                f"of norm_num_groups={self.norm_num_groups}"
            )
        if self.latent_channels < 1 or self.batch_size < 1:
            raise ValueError(
                f"VAEConfig latent_channels={self.latent_channels}, batch_size={self.batch_size} must be >= 1"
            )


def build_vae(cfg: VAEConfig) -> AutoencoderKL:
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=32,
    )


def train_vae(
    pool: Pool, cfg: VAEConfig, loop: LoopConfig, ckpt: Path | None, seed: int = 0
) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = build_vae(cfg)

    def step(i: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen).numpy()
        x = to_model_range(pool.images[idx])  # [B, 3, 32, 32]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)  # [B, 4, 8, 8]
        recon = vae.decode(z).sample
        kl = posterior.kl().mean() / z[0].numel()
        return F.mse_loss(recon, x) + F.l1_loss(recon, x) + KL_WEIGHT * kl

    return train("vae", vae, step, loop, ckpt)


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, pool: Pool, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and std of every pool image, unscaled: two float32 [N, 4, 8, 8]."""
    means, stds = [], []
    for s in tqdm(range(0, len(pool), batch_size), desc="encode pool", mininterval=2.0):
        dist = vae.encode(to_model_range(pool.images[s : s + batch_size])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


def scaling_factor(means: np.ndarray, stds: np.ndarray) -> float:
    """1 / std of sampled latents, as SD measured its 0.18215."""
    rng = np.random.default_rng(0)
    z = means + stds * rng.standard_normal(means.shape).astype(np.float32)
    return float(1.0 / z.std())
