"""FID and KID between two image sets, with any feature extractor of `features.py`.

Features are extracted once per image set, in batches, then fed to torchmetrics'
`FrechetInceptionDistance` / `KernelInceptionDistance` through a pass-through module, so that one set
of FP32 (or real) features serves both metrics and the quantized set is embedded only once.
KID draws random subsets; its generator is seeded so that a stage's metrics.json is reproducible.

Paired sets. Against FP32, sample i of both sets comes from the same prompt and seed, so the two sets
are not independent, and torchmetrics' KID (which treats them as independent) is biased far below
zero: its cross term E[k(x, y)] includes the near-identical pairs k(x_i, y_i). With `paired=True` KID
is the paired U-statistic of Gretton et al. (2012, Lemma 6), which leaves those pairs out and stays
unbiased: over a subset S of pair indices,

    MMD²_u = 1/(|S|(|S|-1)) Σ_{i≠j ∈ S} k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j) - k(x_j,y_i),

with KID's kernel k(a, b) = (a·b / D + 1)³. Identical sets give exactly 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from pcr.errors import ConfigError
from pcr.metrics.image import to_nchw_u8

DEFAULT_BATCH_SIZE = 64
DEFAULT_KID_SUBSETS = 100
DEFAULT_KID_SEED = 0
MIN_SAMPLES = 2  # a covariance (FID) and an unbiased MMD (KID) need two samples per set


class _Precomputed(nn.Module):
    """Pass-through 'extractor': the metrics receive features [N, D] already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


@torch.no_grad()
def extract_features(
    images: np.ndarray | Tensor, feature: nn.Module, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Tensor:
    """uint8 images -> features [N, D] float64 on CPU, `batch_size` images at a time."""
    x = to_nchw_u8(images)
    device = next(feature.parameters(), torch.empty(0)).device
    chunks = [feature(x[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]
    if not chunks:
        raise ValueError("no images to embed")
    return torch.cat(chunks)


def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3  # KID's kernel, as torchmetrics and the KID paper


def paired_kid(x: Tensor, y: Tensor, *, subset_size: int, subsets: int, seed: int) -> tuple[float, float]:
    """KID (mean, std over subsets) of paired features x[i] <-> y[i], [N, D] each (see module docstring)."""
    if x.shape != y.shape:
        raise ValueError(f"paired KID needs sets of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    m = subset_size
    values = []
    for _ in range(subsets):
        idx = torch.randperm(len(x), generator=g)[:m]
        xs, ys = x[idx], y[idx]
        h = _poly_kernel(xs, xs) + _poly_kernel(ys, ys) - _poly_kernel(xs, ys) - _poly_kernel(ys, xs)  # [m, m]
        values.append((h.sum() - h.diagonal().sum()) / (m * (m - 1)))
    v = torch.stack(values)
    return float(v.mean()), float(v.std(unbiased=False))


def fid_kid_from_features(
    real: Tensor,
    fake: Tensor,
    *,
    kid_subset_size: int,
    kid_subsets: int = DEFAULT_KID_SUBSETS,
    seed: int = DEFAULT_KID_SEED,
    paired: bool = False,
) -> dict[str, float]:
    """FID and KID (mean, std) of features [N_real, D] vs [N_fake, D].

    KID's subset size is clipped to the smaller set, so a small demo set still scores. `paired=True`:
    real[i] and fake[i] share a prompt and a seed (FP32 vs quantized), see the module docstring.
    """
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be [N, D] with one D, got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    n = min(len(real), len(fake))
    if n < MIN_SAMPLES:
        raise ConfigError(
            f"FID/KID need at least {MIN_SAMPLES} images per set, got {len(real)} and {len(fake)}"
        )
    if kid_subset_size < 1:
        raise ValueError(f"kid_subset_size must be >= 1, got {kid_subset_size}")
    subset = max(min(kid_subset_size, n), MIN_SAMPLES)
    dim = real.shape[1]
    real, fake = real.double().cpu(), fake.double().cpu()

    fid = FrechetInceptionDistance(feature=_Precomputed(dim))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    if paired:
        kid_mean, kid_std = paired_kid(real, fake, subset_size=subset, subsets=kid_subsets, seed=seed)
    else:
        with warnings.catch_warnings():  # "will save all extracted features": they are [N, D] features already
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            kid = KernelInceptionDistance(feature=_Precomputed(dim), subsets=kid_subsets, subset_size=subset)
        kid.update(real, real=True)
        kid.update(fake, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": float(subset),
    }


def fid_kid(
    real_u8: np.ndarray | Tensor,
    fake_u8: np.ndarray | Tensor,
    feature: nn.Module,
    *,
    kid_subset_size: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_KID_SEED,
) -> dict[str, float]:
    """FID and KID of `fake_u8` against `real_u8` in the feature space of `feature`.

    Images: uint8 [N, H, W, 3] or [N, 3, H, W]. Returns floats: fid, kid, kid_std, kid_subset_size.
    """
    real = extract_features(real_u8, feature, batch_size=batch_size)
    fake = extract_features(fake_u8, feature, batch_size=batch_size)
    return fid_kid_from_features(real, fake, kid_subset_size=kid_subset_size, seed=seed)
