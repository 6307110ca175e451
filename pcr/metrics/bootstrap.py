"""Paired bootstrap intervals over evaluation samples, from per-sample values already extracted.

Pairing. Sample i of every image set of one prompt set comes from prompt i and seed `eval.seed + i`: the
quantized image, the FP32 image and, on the demo, the rendered ground truth. A replicate draws N sample
indices with replacement once and applies them to every paired set; an unpaired set (a folder of real
images) is redrawn on its own, from the same generator. Nothing goes through a network again.

Weights. A replicate is a count vector w [N] (how often each sample was drawn, Σw = N), and every figure
is a function of weights (a `Statistic`): a mean is w·v / Σw; FID takes the weighted moments

    μ = Σ w_i x_i / Σw,    Σ = Σ w_i (x_i - μ)(x_i - μ)ᵀ / (Σw - 1),

exactly the mean and unbiased covariance of the resampled rows, and
tr (Σ_x Σ_y)^½ = ||A Bᵀ||_* (nuclear norm) for any factors Σ_x = AᵀA, Σ_y = BᵀB: the weighted, centred
rows themselves when N ≤ D (an N×N SVD), else A = Λ^½ Vᵀ from eigh(Σ_x) (D×D). KID is the U-statistic
over pairs of drawn positions holding two different samples. R replicates are one [R, N] matrix.

Intervals. Means, CLIP scores and KID (an unbiased U-statistic): BCa (bias-corrected and accelerated;
Efron & Tibshirani 1993, ch. 14), from the replicates and a jackknife that leaves out one of at most
`JACKKNIFE_GROUPS` interleaved groups of samples. FID: the replicates' spread around the estimate,
[F + q_lo - mean*, F + q_hi - mean*], an interval for the expected FID at this N. FID is biased upward
by about k/N (with D-dimensional features and N ≲ 4D the bias exceeds the spread; demo: D = 64, N = 64),
and a replicate, with its duplicated rows, is biased by about as much again, so percentile and BCa
intervals would lie above the estimate (their coverage is 0 in synthetic Gaussian cases). FIDs are
therefore only comparable at one N, and the interval says how far the FID at this N could move with
other samples. Measured on synthetic Gaussians: coverage of the expected N-sample FID 0.955 at N = 50D,
0.98 at N = 16D, and wider than needed (up to 3x) at N ≈ D.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor

LEVEL = 0.95
JACKKNIFE_GROUPS = 200
CHUNK_BYTES = 1 << 28  # float64 work memory per replicate chunk of the FID/KID statistics


@dataclass(frozen=True)
class Weights:
    """R weight rows: `pairs` [R, N] over the paired samples, `real` [R, M] over an unpaired real set."""

    pairs: np.ndarray
    real: np.ndarray | None = None

    def side(self, name: str) -> np.ndarray:
        w = self.pairs if name == "pairs" else self.real
        if w is None:
            raise ValueError(f"no weights for the {name!r} samples")
        return w


Statistic = Callable[[Weights], np.ndarray]  # Weights with R rows -> [R] values


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    # idx [R, n] drawn indices -> [R, n] how often each index was drawn
    r = len(idx)
    flat = (idx + n * np.arange(r)[:, None]).ravel()
    return np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)


def resample(n: int, replicates: int, seed: int, m: int | None = None, groups: np.ndarray | None = None) -> Weights:
    """`replicates` bootstrap draws: N paired indices once per replicate (and M unpaired ones).

    groups [N] (ints 0..G-1, e.g. the prompt of each sample): a cluster bootstrap, drawing G groups and
    every sample of each; images of one prompt are correlated, so resampling them one by one would give
    intervals that are too narrow.
    """
    if n < 2 or replicates < 1:
        raise ValueError(f"a bootstrap needs at least 2 samples and 1 replicate, got {n} and {replicates}")
    rng = np.random.default_rng(seed)
    if groups is None:
        pairs = _counts(rng.integers(0, n, (replicates, n)), n)
    else:
        g = _check_groups(groups, n)
        pairs = _counts(rng.integers(0, g, (replicates, g)), g)[:, groups]  # [R, G] -> [R, N]
    real = _counts(rng.integers(0, m, (replicates, m)), m) if m else None
    return Weights(pairs, real)


def _check_groups(groups: np.ndarray, n: int) -> int:
    g = int(groups.max()) + 1 if len(groups) else 0
    if groups.shape != (n,) or groups.min() < 0 or len(np.unique(groups)) != g or g < 2:
        raise ValueError(f"groups must label the {n} samples with 0..G-1 (each used, G >= 2), got {groups!r}")
    return g


def jackknife(n: int, m: int | None = None, groups: np.ndarray | None = None, max_groups: int = JACKKNIFE_GROUPS) -> Weights:
    """Leave-one-group-out weights: G = min(N, max_groups) rows, sample i (or its cluster) in group i mod G."""
    unit = np.arange(n) if groups is None else groups
    g = min(int(unit.max()) + 1, max_groups)
    pairs = (unit[None, :] % g != np.arange(g)[:, None]).astype(np.float64)  # [G, N]
    return Weights(pairs, np.ones((g, m)) if m else None)


def full(n: int, m: int | None = None) -> Weights:
    """The one unresampled row: the estimate itself."""
    return Weights(np.ones((1, n)), np.ones((1, m)) if m else None)


def bca(estimate: float, boot: np.ndarray, jack: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """BCa interval from the estimate, bootstrap values [B] and jackknife values [G]."""
    if not np.isfinite(boot).all():
        return float("nan"), float("nan")
    normal = NormalDist()
    b = len(boot)
    below = ((boot < estimate).sum() + 0.5 * (boot == estimate).sum()) / b
    z0 = normal.inv_cdf(float(np.clip(below, 1 / (b + 1), b / (b + 1))))
    d = jack.mean() - jack
    den = 6.0 * float((d**2).sum()) ** 1.5
    a = float((d**3).sum()) / den if den > 0 else 0.0
    qs = []
    for z in (normal.inv_cdf((1 - level) / 2), normal.inv_cdf((1 + level) / 2)):
        zz = z0 + z
        qs.append(normal.cdf(z0 + zz / (1 - a * zz)))
    lo, hi = np.quantile(boot, qs)
    return float(lo), float(hi)


def shifted(estimate: float, boot: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The replicates' percentile interval moved by their bias: [θ + q_lo - mean*, θ + q_hi - mean*]."""
    if not np.isfinite(boot).all():
        return float("nan"), float("nan")
    q_lo, q_hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) - boot.mean()
    return float(estimate + q_lo), float(estimate + q_hi)


def intervals(stats: dict[str, Statistic], n: int, replicates: int, seed: int, m: int | None = None,
              level: float = LEVEL, groups: np.ndarray | None = None) -> dict[str, tuple[float, float, float]]:
    """(estimate, lo, hi) of each statistic; every statistic sees the same replicates (clustered by `groups`).

    A statistic marked `biased` (FID and differences of FIDs) gets the shifted interval, the others BCa.
    """
    boot, jack, one = resample(n, replicates, seed, m, groups), jackknife(n, m, groups), full(n, m)
    out = {}
    for key, stat in stats.items():
        est = float(stat(one)[0])
        if getattr(stat, "biased", False):
            out[key] = (est, *shifted(est, stat(boot), level))
        else:
            out[key] = (est, *bca(est, stat(boot), stat(jack), level))
    return out


def _mark(stat: Statistic, biased: bool) -> Statistic:
    stat.biased = biased  # type: ignore[attr-defined]
    return stat


def difference(a: Statistic, b: Statistic) -> Statistic:
    """The paired difference a - b: both figures on the same resampled samples."""
    return _mark(lambda w: a(w) - b(w), getattr(a, "biased", False) or getattr(b, "biased", False))


# ----- weighted statistics -----------------------------------------------------------------------------------


def weighted_mean(values: np.ndarray, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Statistic:
    """Mean of per-sample values [N] (optionally transformed, e.g. clipped at 0 as the CLIP score)."""
    v = np.asarray(values, dtype=np.float64)

    def stat(w: Weights) -> np.ndarray:
        mean = w.pairs @ v / w.pairs.sum(1)
        return transform(mean) if transform else mean

    return stat


def _chunks(rows: int, per_row_floats: int):
    step = max(1, CHUNK_BYTES // (8 * max(per_row_floats, 1)))
    return [(i, min(i + step, rows)) for i in range(0, rows, step)]


def _factor(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    # x [N, D], w [r, N] -> mean [r, D], A [r, N, D] with AᵀA the weighted unbiased covariance
    s = w.sum(1, keepdim=True)  # [r, 1]
    mu = w @ x / s
    a = (w / (s - 1)).sqrt()[:, :, None] * (x[None] - mu[:, None])
    return mu, a


def _cov(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    # x [N, D], w [r, N] -> mean [r, D], covariance [r, D, D]
    s = w.sum(1)
    mu = w @ x / s[:, None]
    second = (w[:, :, None] * x[None]).transpose(1, 2) @ x  # Σ w_i x_i x_iᵀ, [r, D, D]
    return mu, (second - s[:, None, None] * mu[:, :, None] * mu[:, None, :]) / (s - 1)[:, None, None]


def fid_statistic(x: np.ndarray, y: np.ndarray, x_side: str = "pairs", y_side: str = "pairs",
                  device: str | torch.device = "cpu") -> Statistic:
    """FID of features x [N, D] against y [M, D] under weights (the moments of the resampled rows)."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.float64, device=device)
    gram = max(len(xt), len(yt)) <= xt.shape[1]

    def stat(w: Weights) -> np.ndarray:
        wx = torch.as_tensor(w.side(x_side), dtype=torch.float64, device=device)
        wy = torch.as_tensor(w.side(y_side), dtype=torch.float64, device=device)
        out = []
        d = xt.shape[1]
        per_row = 3 * (len(xt) + len(yt)) * d if gram else (len(xt) + len(yt)) * d + 6 * d * d
        for i, j in _chunks(len(wx), per_row):
            if gram:
                mx, ax = _factor(xt, wx[i:j])
                my, ay = _factor(yt, wy[i:j])
                tr_x, tr_y = (ax**2).sum((1, 2)), (ay**2).sum((1, 2))
                cross = torch.linalg.svdvals(ax @ ay.transpose(1, 2)).sum(-1)
            else:
                mx, sx = _cov(xt, wx[i:j])
                my, sy = _cov(yt, wy[i:j])
                lam, v = torch.linalg.eigh(sx)
                ax = lam.clamp(min=0).sqrt()[:, :, None] * v.transpose(1, 2)  # Λ^½ Vᵀ
                cross = torch.linalg.eigvalsh(ax @ sy @ ax.transpose(1, 2)).clamp(min=0).sqrt().sum(-1)
                tr_x, tr_y = sx.diagonal(dim1=1, dim2=2).sum(-1), sy.diagonal(dim1=1, dim2=2).sum(-1)
            out.append(((mx - my) ** 2).sum(-1) + tr_x + tr_y - 2 * cross)
        return torch.cat(out).cpu().numpy()

    return _mark(stat, True)


def _kernel(a: Tensor, b: Tensor) -> Tensor:
    return (a @ b.T / a.shape[1] + 1.0) ** 3  # KID's polynomial kernel


def _pair_mask(n: int, groups: np.ndarray | None, device) -> Tensor:
    """[n, n] 1 where samples i and j may form a pair of the U-statistic: i != j, and other groups when given."""
    g = torch.as_tensor(np.arange(n) if groups is None else np.asarray(groups), device=device)
    return (g[:, None] != g[None, :]).to(torch.float64)


def _pair_form(k: Tensor, mask: Tensor, w: Tensor) -> Tensor:
    # Σ_ij w_i w_j m_ij k_ij / Σ_ij w_i w_j m_ij: the U-statistic mean over the allowed pairs of drawn samples
    return ((w @ (k * mask)) * w).sum(1) / ((w @ mask) * w).sum(1)


def kid_statistic(x: np.ndarray, y: np.ndarray, paired: bool, x_side: str = "pairs",
                  device: str | torch.device = "cpu", groups: np.ndarray | None = None) -> Statistic:
    """KID (unbiased MMD², cubic kernel) of features x [N, D] against y; `paired`: x[i] <-> y[i].

    Paired: the U-statistic of h_ij = k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j) - k(x_j,y_i) (fid.py's
    paired KID over the whole set instead of random subsets). Unpaired: the usual unbiased MMD².

    groups [N] (the prompt of each paired sample, as the cluster bootstrap draws them): pairs of one group
    are left out, in the estimate and in every replicate. Images of one prompt are alike, so their pairs
    are not pairs of independent draws; and a replicate that draws a prompt twice would otherwise add
    pairs between the two copies that the estimate never had, biasing every replicate (the BCa interval
    then excluded its own estimate). Without groups only pairs of one sample (i = j) are left out.
    """
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.float64, device=device)
    kxx, kyy, kxy = _kernel(xt, xt), _kernel(yt, yt), _kernel(xt, yt)
    h = kxx + kyy - kxy - kxy.T if paired else None
    mask_y = _pair_mask(len(yt), groups, device)
    mask_x = mask_y if x_side == "pairs" else _pair_mask(len(xt), None, device)

    def stat(w: Weights) -> np.ndarray:
        wy = torch.as_tensor(w.pairs, dtype=torch.float64, device=device)
        wx = torch.as_tensor(w.side(x_side), dtype=torch.float64, device=device)
        out = []
        for i, j in _chunks(len(wy), 2 * (len(xt) + len(yt))):
            if paired:
                out.append(_pair_form(h, mask_y, wy[i:j]))
            else:
                u, v = wx[i:j], wy[i:j]
                cross = ((u @ kxy) * v).sum(1) / (u.sum(1) * v.sum(1))
                out.append(_pair_form(kxx, mask_x, u) + _pair_form(kyy, mask_y, v) - 2 * cross)
        return torch.cat(out).cpu().numpy()

    return stat
