"""QDiffBench: score quantized images against the FP32 model's images of the same prompts and seeds.

FID against real images misleads for quantized models (the domain gap between generated and real
images masks the quantization error); FID against the FP32 images isolates it. Real images, when given,
are scored too, for comparison.

Every figure is computed from per-sample data (`samples.py`) extracted once: `figures` gives the values,
`statistics` the same figures as functions of bootstrap weights (`bootstrap.py`), so that intervals and
paired differences between experiments come from the saved samples without a network.

Figures of the quantized images: fid_fp32, kid_fp32, psnr_fp32 (mean dB, capped at 100), ssim_fp32,
fid_real and kid_real with real images, clip_score and clip_score_fp32 with a CLIP model, and the demo
judge's color_acc, shape_acc, background_acc, all_acc. `FP32_ROW` of them describe the FP32 images
themselves (the results table's FP32 row). `feature_network` (`FEATURE_NETWORK_KEY`) is a string naming
the feature space of the FID/KID values, because FIDs of different feature spaces are not comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pcr.metrics.bootstrap import Statistic, fid_statistic, kid_statistic, weighted_mean
from pcr.metrics.fid import DEFAULT_KID_SEED, fid_kid_from_features
from pcr.metrics.image import psnr_per_image, ssim_per_image
from pcr.metrics.samples import Models, Samples, extract, feature_network_name, groups_of, load_models

FEATURE_NETWORK_KEY = "feature_network"
FP32_KEYS = ("fid_fp32", "kid_fp32", "psnr_fp32", "ssim_fp32")
REAL_KEYS = ("fid_real", "kid_real")
CLIP_KEYS = ("clip_score", "clip_score_fp32")
FP32_ROW = ("fid_real", "kid_real", "clip_score")  # + the judge's accuracies
MEANS = ("psnr_fp32", "ssim_fp32")
__all__ = ["FEATURE_NETWORK_KEY", "feature_network_name", "figures", "qdiffbench", "statistics"]


def _clip_at_zero(mean: np.ndarray) -> np.ndarray:
    return np.maximum(mean, 0.0)  # torchmetrics' CLIPScore: max(mean 100 cos, 0)


def _accuracy_keys(side: dict) -> list[str]:
    return sorted(k for k in side if k.endswith("_acc"))


def _real_side(s: Samples) -> str:
    return "pairs" if s.meta.get("paired_real") else "real"


def _fid_kid(ref: np.ndarray, fake: np.ndarray, s: Samples, paired: bool) -> dict[str, float]:
    return fid_kid_from_features(torch.from_numpy(ref), torch.from_numpy(fake),
                                 kid_subset_size=s.meta["kid_subset_size"], paired=paired, seed=DEFAULT_KID_SEED)


def figures(s: Samples) -> tuple[dict[str, float | str], dict[str, float]]:
    """(figures of the quantized images, the FP32 row), from per-sample data."""
    q, f, real = s.quant, s.fp32, s.real.get("features")
    vs_fp32 = _fid_kid(f["features"], q["features"], s, paired=True)
    out: dict[str, float | str] = {"fid_fp32": vs_fp32["fid"], "kid_fp32": vs_fp32["kid"]}
    out.update({k: float(q[k].mean()) for k in MEANS})
    row: dict[str, float] = {"fid_fp32": 0.0, "kid_fp32": 0.0}  # the FP32 images against themselves
    if real is not None:
        paired = bool(s.meta.get("paired_real"))
        for target, side in ((out, q), (row, f)):
            m = _fid_kid(real, side["features"], s, paired)
            target["fid_real"], target["kid_real"] = m["fid"], m["kid"]
    if "clip_score" in q:
        out["clip_score"] = float(_clip_at_zero(q["clip_score"].mean()))
        out["clip_score_fp32"] = row["clip_score"] = float(_clip_at_zero(f["clip_score"].mean()))
    for side, target in ((q, out), (f, row)):
        target.update({k: float(side[k].mean()) for k in _accuracy_keys(side)})
    out[FEATURE_NETWORK_KEY] = s.meta["feature_network"]
    return out, row


def statistics(s: Samples, device: str | torch.device = "cpu") -> tuple[dict[str, Statistic], dict[str, Statistic]]:
    """The figures of `figures` (but feature_network and the FP32 row's zeros) as functions of weights; KID's
    U-statistics leave out pairs of one prompt (the bootstrap's clusters, `groups_of`)."""
    q, f, real = s.quant, s.fp32, s.real.get("features")
    groups = groups_of(s)
    out: dict[str, Statistic] = {
        "fid_fp32": fid_statistic(f["features"], q["features"], device=device),
        "kid_fp32": kid_statistic(f["features"], q["features"], paired=True, device=device, groups=groups),
    }
    out.update({k: weighted_mean(q[k]) for k in MEANS})
    row: dict[str, Statistic] = {}
    if real is not None:
        side, paired = _real_side(s), bool(s.meta.get("paired_real"))
        for target, feats in ((out, q["features"]), (row, f["features"])):
            target["fid_real"] = fid_statistic(real, feats, x_side=side, device=device)
            target["kid_real"] = kid_statistic(real, feats, paired=paired, x_side=side, device=device, groups=groups)
    if "clip_score" in q:
        out["clip_score"] = weighted_mean(q["clip_score"], _clip_at_zero)
        out["clip_score_fp32"] = row["clip_score"] = weighted_mean(f["clip_score"], _clip_at_zero)
    for side, target in ((q, out), (f, row)):
        target.update({k: weighted_mean(side[k]) for k in _accuracy_keys(side)})
    return out, row


def qdiffbench(
    quant: np.ndarray,
    fp32: np.ndarray,
    real: np.ndarray | None,
    prompts: Sequence[str],
    *,
    feature: str,
    feature_path: Path | None,
    clip_path: Path | None,
    kid_subset_size: int = 50,
    real_paired: bool = False,
    device: str | torch.device = "cpu",
    models: Models | None = None,
) -> dict[str, float | str]:
    """QDiffBench figures of quantized images `quant` [N, H, W, 3] uint8 held in memory (no intervals).

    `fp32`: the FP32 model's images of the same prompts and seeds, paired with `quant`; `real`
    ([M, H', W', 3]) optional; `real_paired`: real[i] shows prompt i (the demo renderer's ground truth), so
    KID to real uses the paired estimator too. `models`: loaded already (else loaded from the paths).
    """
    if real is not None and (not isinstance(real, np.ndarray) or real.dtype != np.uint8 or real.ndim != 4):
        raise ValueError(f"real images must be a uint8 numpy array [N, H, W, 3], got {getattr(real, 'shape', None)}")
    models = models or load_models(feature, feature_path, clip_path, device)
    samples = extract(models, [(quant, fp32, list(prompts))], None if real is None else [real],
                      kid_subset_size=kid_subset_size, paired_real=real_paired)
    return figures(samples)[0]


def qdiffbench_per_image(
    quant: np.ndarray,
    fp32: np.ndarray,
    prompts: Sequence[str],
    *,
    clip_path: Path | None,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Per-image arrays [N] for plots: psnr_fp32, ssim_fp32, and with `clip_path` clip_score and
    clip_score_fp32 (raw 100 * cos, not clipped at 0)."""
    out = {"psnr_fp32": psnr_per_image(quant, fp32), "ssim_fp32": ssim_per_image(quant, fp32)}
    if clip_path is not None:
        from pcr.metrics.clip_score import ClipScorer

        scorer = ClipScorer.from_dir(clip_path, device)
        text = scorer.text_features(prompts)
        out["clip_score"] = scorer.image_scores(quant, text)
        out["clip_score_fp32"] = scorer.image_scores(fp32, text)
    return out
