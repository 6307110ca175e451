"""QDiffBench: score quantized images against the FP32 model's images of the same prompts and seeds.

FID against real images misleads for quantized models (the domain gap between generated and real
images masks the quantization error); FID against the FP32 images isolates it. Real images, when given,
are scored too, for comparison.

`qdiffbench` returns one flat dict for metrics.json. Every value is a float except
`feature_network` (`FEATURE_NETWORK_KEY`), a string naming the feature space of the FID/KID values
(for example "clip:clip" or "inception:pt_inception-2015-12-05.pth"), because FIDs computed in
different feature spaces are not comparable. `qdiffbench_per_image` keeps the per-image arrays for plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pcr.metrics.clip_score import ClipScorer
from pcr.metrics.features import build_feature
from pcr.metrics.fid import extract_features, fid_kid_from_features
from pcr.metrics.image import psnr_per_image, ssim_per_image

FEATURE_NETWORK_KEY = "feature_network"
FP32_KEYS = ("fid_fp32", "kid_fp32", "psnr_fp32", "ssim_fp32")
REAL_KEYS = ("fid_real", "kid_real")
CLIP_KEYS = ("clip_score", "clip_score_fp32")


def _check_images(name: str, images: np.ndarray) -> None:
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] != 3
    ):
        shape = getattr(images, "shape", None)
        raise ValueError(
            f"{name} images must be a uint8 numpy array [N, H, W, 3], got {type(images).__name__} {shape}"
        )


def feature_network_name(feature: str, feature_path: Path | None) -> str:
    """'<registry name>:<file or directory name>' (or the bare name without a path)."""
    return f"{feature}:{Path(feature_path).name}" if feature_path is not None else feature


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
) -> dict[str, float | str]:
    """QDiffBench metrics of quantized images `quant` [N, H, W, 3] uint8.

    `real_paired`: real[i] shows prompt i (the demo renderer's ground truth), so KID to real uses the
    paired estimator too; a folder of unrelated real images is not paired.

    `fp32` are the FP32 model's images of the same prompts and seeds ([N, H, W, 3], paired with `quant`);
    `real` ([M, H', W', 3]) optional. Keys: fid_fp32, kid_fp32, psnr_fp32 (mean dB, capped at 100),
    ssim_fp32 (mean), fid_real and kid_real when `real` is given, clip_score and clip_score_fp32 when
    `clip_path` is given, and feature_network (a string, see the module docstring).
    """
    _check_images("quantized", quant)
    _check_images("FP32", fp32)
    if quant.shape != fp32.shape:
        raise ValueError(f"quantized and FP32 images must pair up, got shapes {quant.shape} and {fp32.shape}")
    if len(prompts) != len(quant):
        raise ValueError(f"{len(quant)} images but {len(prompts)} prompts")
    if real is not None:
        _check_images("real", real)

    extractor = build_feature(feature, feature_path, device)
    quant_f = extract_features(quant, extractor)  # [N, D]
    fp32_f = extract_features(fp32, extractor)  # [N, D]
    vs_fp32 = fid_kid_from_features(fp32_f, quant_f, kid_subset_size=kid_subset_size, paired=True)
    out: dict[str, float | str] = {
        "fid_fp32": vs_fp32["fid"],
        "kid_fp32": vs_fp32["kid"],
        "psnr_fp32": float(psnr_per_image(quant, fp32).mean()),
        "ssim_fp32": float(ssim_per_image(quant, fp32).mean()),
    }
    if real is not None:
        vs_real = fid_kid_from_features(
            extract_features(real, extractor), quant_f, kid_subset_size=kid_subset_size, paired=real_paired
        )
        out["fid_real"] = vs_real["fid"]
        out["kid_real"] = vs_real["kid"]
    del extractor
    if clip_path is not None:
        scorer = ClipScorer.from_dir(clip_path, device)
        out["clip_score"] = scorer.score(quant, prompts)
        out["clip_score_fp32"] = scorer.score(fp32, prompts)
    out[FEATURE_NETWORK_KEY] = feature_network_name(feature, feature_path)
    return out


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
    _check_images("quantized", quant)
    _check_images("FP32", fp32)
    out = {"psnr_fp32": psnr_per_image(quant, fp32), "ssim_fp32": ssim_per_image(quant, fp32)}
    if clip_path is not None:
        scorer = ClipScorer.from_dir(clip_path, device)
        out["clip_score"] = scorer.per_image(quant, prompts)
        out["clip_score_fp32"] = scorer.per_image(fp32, prompts)
    return out
