import numpy as np
import pytest
import torch
from metrics_testlib import random_images

from pcr.metrics.image import PSNR_CAP_DB, psnr_per_image, ssim_per_image


def _noisy(images: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(images.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def test_psnr_matches_numpy_formula():
    fp32 = random_images(4)
    quant = _noisy(fp32, 8.0)
    mse = ((quant.astype(np.float64) - fp32.astype(np.float64)) ** 2).reshape(4, -1).mean(axis=1)
    expected = 10 * np.log10(255.0**2 / mse)
    # torchmetrics holds data_range in float32: agreement to ~1e-7 relative
    np.testing.assert_allclose(psnr_per_image(quant, fp32), expected, rtol=1e-6)


def test_identical_images_hit_the_psnr_cap_and_ssim_one():
    images = random_images(3)
    np.testing.assert_array_equal(psnr_per_image(images, images), np.full(3, PSNR_CAP_DB))
    np.testing.assert_allclose(ssim_per_image(images, images), np.ones(3), atol=1e-10)


def test_ssim_drops_with_noise_per_image():
    fp32 = random_images(3)
    low, high = ssim_per_image(_noisy(fp32, 5.0), fp32), ssim_per_image(_noisy(fp32, 40.0), fp32)
    assert low.shape == (3,) and np.all(high < low) and np.all(low < 1.0)


def test_torch_channels_first_gives_the_same_values():
    fp32 = random_images(2)
    quant = _noisy(fp32, 10.0)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    np.testing.assert_allclose(psnr_per_image(to_t(quant), to_t(fp32)), psnr_per_image(quant, fp32))
    np.testing.assert_allclose(ssim_per_image(to_t(quant), to_t(fp32)), ssim_per_image(quant, fp32))


def test_small_images_shrink_the_ssim_window():
    images = random_images(2, side=8)
    np.testing.assert_allclose(ssim_per_image(images, images), np.ones(2), atol=1e-10)


def test_shape_mismatch_and_dtype_raise():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_per_image(random_images(2), random_images(3))
    with pytest.raises(ValueError, match="uint8"):
        ssim_per_image(random_images(2).astype(np.float32), random_images(2))
