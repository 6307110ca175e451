import numpy as np
import pytest
from metrics_testlib import random_images

from pcr.metrics.image import psnr_per_image
from pcr.metrics.qdiffbench import FEATURE_NETWORK_KEY, qdiffbench, qdiffbench_per_image

N = 6
PROMPTS = [
    "a red circle",
    "a blue square",
    "big green circle",
    "small red square",
    "a gray circle",
    "a big square",
]


def _noisy(images: np.ndarray, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(2).normal(0, sigma, images.shape)
    return np.clip(images.astype(np.float64) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sets():
    fp32 = random_images(N, seed=0)
    return _noisy(fp32, 15.0), fp32, random_images(N + 2, seed=9)


def test_all_documented_keys_with_real_and_clip(clip_dir, sets):
    quant, fp32, real = sets
    out = qdiffbench(
        quant,
        fp32,
        real,
        PROMPTS,
        feature="clip",
        feature_path=clip_dir,
        clip_path=clip_dir,
        kid_subset_size=50,
    )
    floats = {
        "fid_fp32",
        "kid_fp32",
        "fid_real",
        "kid_real",
        "clip_score",
        "clip_score_fp32",
        "psnr_fp32",
        "ssim_fp32",
    }
    assert set(out) == floats | {FEATURE_NETWORK_KEY}
    assert all(isinstance(out[k], float) and np.isfinite(out[k]) for k in floats)
    assert out[FEATURE_NETWORK_KEY] == f"clip:{clip_dir.name}"
    assert out["psnr_fp32"] == pytest.approx(psnr_per_image(quant, fp32).mean())
    assert out["fid_fp32"] > 0 and 0 < out["ssim_fp32"] < 1


def test_without_real_or_clip_only_fp32_keys(clip_dir, sets):
    quant, fp32, _ = sets
    out = qdiffbench(quant, fp32, None, PROMPTS, feature="clip", feature_path=clip_dir, clip_path=None)
    assert set(out) == {"fid_fp32", "kid_fp32", "psnr_fp32", "ssim_fp32", FEATURE_NETWORK_KEY}


def test_fp32_against_itself_scores_perfect(clip_dir, sets):
    _, fp32, _ = sets
    out = qdiffbench(fp32, fp32, None, PROMPTS, feature="clip", feature_path=clip_dir, clip_path=clip_dir)
    assert abs(out["fid_fp32"]) < 1e-3
    assert out["psnr_fp32"] == 100.0 and out["ssim_fp32"] == pytest.approx(1.0)
    assert out["clip_score"] == pytest.approx(out["clip_score_fp32"])


def test_per_image_arrays(clip_dir, sets):
    quant, fp32, _ = sets
    per = qdiffbench_per_image(quant, fp32, PROMPTS, clip_path=clip_dir)
    assert set(per) == {"psnr_fp32", "ssim_fp32", "clip_score", "clip_score_fp32"}
    assert all(v.shape == (N,) for v in per.values())


def test_bad_inputs_raise(clip_dir, sets):
    quant, fp32, _ = sets
    kwargs = dict(feature="clip", feature_path=clip_dir, clip_path=None)
    with pytest.raises(ValueError, match="pair up"):
        qdiffbench(quant[:3], fp32, None, PROMPTS[:3], **kwargs)
    with pytest.raises(ValueError, match="6 images but 2 prompts"):
        qdiffbench(quant, fp32, None, PROMPTS[:2], **kwargs)
    with pytest.raises(ValueError, match=r"unknown feature extractor 'dino'"):
        qdiffbench(quant, fp32, None, PROMPTS, feature="dino", feature_path=None, clip_path=None)
