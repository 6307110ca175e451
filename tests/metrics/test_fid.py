import numpy as np
import pytest
import torch
from metrics_testlib import random_images

from pcr.metrics.features import build_feature
from pcr.metrics.fid import fid_kid, fid_kid_from_features


def _noisy(images: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, images.shape)
    return np.clip(images.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), numpy only."""
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(sa)
    cross = _sqrt_psd(root_a @ sb @ root_a)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(cross))


def _kid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3 over the full sets."""
    d, m = a.shape[1], len(a)
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    off = lambda kk: kk.sum() - np.trace(kk)  # noqa: E731
    return float((off(kxx) + off(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2)


@pytest.fixture(scope="module")
def clip_feature(clip_dir):
    return build_feature("clip", clip_dir)


def test_fid_of_a_set_with_itself_is_zero(clip_feature):
    images = random_images(12)
    assert abs(fid_kid(images, images, clip_feature, kid_subset_size=50)["fid"]) < 1e-3


def test_fid_grows_with_noise(clip_feature):
    images = random_images(16)
    fids = [
        fid_kid(images, _noisy(images, s), clip_feature, kid_subset_size=8)["fid"] for s in (4.0, 20.0, 60.0)
    ]
    assert fids[0] < fids[1] < fids[2], fids
    assert fids[0] > 0


def test_fid_and_kid_match_numpy_references():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (40, 6))
    b = rng.normal(0.3, 1.5, (40, 6))
    out = fid_kid_from_features(torch.from_numpy(a), torch.from_numpy(b), kid_subset_size=1000)
    assert out["fid"] == pytest.approx(_fid_reference(a, b), rel=1e-6)
    # subset size clipped to the 40 samples: every subset is the full set, so KID is exact, std 0
    assert out["kid_subset_size"] == 40
    assert out["kid"] == pytest.approx(_kid_reference(b, a), rel=1e-6)
    assert out["kid_std"] == pytest.approx(0.0, abs=1e-9)


def test_kid_subset_clipped_to_the_smaller_set_and_seeded():
    rng = np.random.default_rng(1)
    a, b = torch.from_numpy(rng.normal(0, 1, (30, 5))), torch.from_numpy(rng.normal(0, 1, (9, 5)))
    first = fid_kid_from_features(a, b, kid_subset_size=50)
    assert first["kid_subset_size"] == 9
    assert fid_kid_from_features(a, b, kid_subset_size=50) == first  # same seed, same subsets
    assert fid_kid_from_features(a, b, kid_subset_size=4)["kid_subset_size"] == 4


def test_too_few_images_raise():
    one = torch.zeros(1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least 2"):
        fid_kid_from_features(one, torch.ones(5, 4, dtype=torch.float64), kid_subset_size=5)


def test_paired_kid_is_zero_on_identical_sets_and_unbiased_where_torchmetrics_is_not():
    import torch

    from pcr.metrics.fid import fid_kid_from_features

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=g, dtype=torch.float64) * 3
    same = fid_kid_from_features(x, x, kid_subset_size=30, paired=True)
    assert same["kid"] == 0.0
    # torchmetrics' independent-sets estimator on paired data: strongly negative (the bias paired=True removes)
    assert fid_kid_from_features(x, x, kid_subset_size=30)["kid"] < -0.1
    # a paired copy with small noise: near 0; a shifted copy: clearly positive
    near = fid_kid_from_features(x, x + 0.01 * torch.randn(60, 8, generator=g, dtype=torch.float64), kid_subset_size=30, paired=True)
    far = fid_kid_from_features(x, x + 1.0, kid_subset_size=30, paired=True)
    assert abs(near["kid"]) < 0.05 * far["kid"] and far["kid"] > 0


def test_paired_kid_matches_the_u_statistic_formula():
    import torch

    from pcr.metrics.fid import paired_kid

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    mean, std = paired_kid(x, y, subset_size=7, subsets=3, seed=0)  # the whole set each time: std 0
    X, Y = x.numpy(), y.numpy()

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    total = sum(k(X[i], X[j]) + k(Y[i], Y[j]) - k(X[i], Y[j]) - k(X[j], Y[i]) for i in range(7) for j in range(7) if i != j)
    assert mean == pytest.approx(total / 42, rel=1e-10) and std == pytest.approx(0.0, abs=1e-12)
