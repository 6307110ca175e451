"""Per-image error of quantized images against the FP32 images of the same prompts and seeds.

PSNR (dB) and SSIM via torchmetrics.functional, one value per image pair.
Identical images have infinite PSNR; it is capped at `PSNR_CAP_DB` (100 dB) so that means and JSON stay
finite. The smallest non-zero error of 8-bit images, one level on one value, gives 83 dB at 32x32x3
and 107 dB at 512x512x3: on the demo's images the cap marks exact copies only; on large images it
also marks copies within a handful of one-level differences.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

U8_RANGE = 255.0
PSNR_CAP_DB = 100.0
SSIM_KERNEL = 11  # Wang et al.'s Gaussian window, shrunk (odd) for images smaller than it
SSIM_SIGMA = 1.5
CHW_DIMS = (1, 2, 3)


def to_nchw_u8(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images [N, H, W, 3] (numpy or torch) or [N, 3, H, W] (torch) -> uint8 tensor [N, 3, H, W]."""
    channels_last = isinstance(images, np.ndarray)  # numpy arrays are always [N, H, W, 3]
    x = torch.from_numpy(np.ascontiguousarray(images)) if channels_last else images
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(
            f"expected uint8 images [N, H, W, 3] or [N, 3, H, W], got {x.dtype} {tuple(x.shape)}"
        )
    channels_last = channels_last or (x.shape[-1] == 3 and x.shape[1] != 3)
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got images of shape {tuple(images.shape)}")
    return x.contiguous()


def _pair(quant: np.ndarray | Tensor, fp32: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
    # -> float64 [N, 3, H, W] each, values in [0, 255]
    q, f = to_nchw_u8(quant), to_nchw_u8(fp32)
    if q.shape != f.shape:
        raise ValueError(f"quantized and FP32 images differ in shape: {tuple(q.shape)} vs {tuple(f.shape)}")
    return q.double(), f.double()


def psnr_per_image(quant: np.ndarray | Tensor, fp32: np.ndarray | Tensor) -> np.ndarray:
    """PSNR in dB of each quantized image against its FP32 image, [N] float64, capped at PSNR_CAP_DB."""
    q, f = _pair(quant, fp32)
    psnr = peak_signal_noise_ratio(q, f, data_range=U8_RANGE, reduction="none", dim=CHW_DIMS)
    return psnr.clamp(max=PSNR_CAP_DB).numpy()


def _ssim_kernel(height: int, width: int) -> int:
    side = min(SSIM_KERNEL, height, width)
    return side if side % 2 == 1 else side - 1


def ssim_per_image(quant: np.ndarray | Tensor, fp32: np.ndarray | Tensor) -> np.ndarray:
    """SSIM (Gaussian window, sigma 1.5) of each quantized image against its FP32 image, [N] float64."""
    q, f = _pair(quant, fp32)
    kernel = _ssim_kernel(*q.shape[-2:])
    ssim = structural_similarity_index_measure(
        q,
        f,
        gaussian_kernel=True,
        sigma=SSIM_SIGMA,
        kernel_size=kernel,
        data_range=U8_RANGE,
        reduction="none",
    )
    return ssim.numpy()
