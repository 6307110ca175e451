import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pcr.metrics.intervals import check_pairing, compare_dirs, differences, scored
from pcr.metrics.samples import Samples, load, save

N, D = 80, 6


def _experiment(noise: float, seed: int, fp32: np.ndarray) -> Samples:
    """Per-sample data of one experiment: the quantized features are the FP32 ones plus noise."""
    rng = np.random.default_rng(seed)
    meta = {"n": N, "seed": 1000, "prompts_sha256": "x", "feature_network": "clip:test", "paired_real": True,
            "kid_subset_size": 50}
    quant = fp32 + rng.normal(0, noise, fp32.shape)
    psnr = 60.0 - 20 * np.log10(noise) + rng.normal(0, 1.0, N)  # more noise, lower PSNR, image by image
    return Samples(meta,
                   quant={"features": quant.astype(np.float32), "psnr_fp32": psnr, "ssim_fp32": 1 - noise * rng.random(N)},
                   fp32={"features": fp32.astype(np.float32)},
                   real={"features": (fp32 + rng.normal(0, 0.5, fp32.shape)).astype(np.float32)})


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    fp32 = np.random.default_rng(0).normal(size=(N, D))
    for name, noise, seed in (("a", 0.2, 1), ("worse", 0.6, 2), ("same", 0.2, 3)):
        save(_experiment(noise, seed, fp32), tmp / name / "standard")
    return tmp


def test_samples_round_trip(dirs):
    s = load(dirs / "a" / "standard")
    assert s.n == N and s.quant["features"].dtype == np.float32 and s.meta["paired_real"] is True
    figs, row = scored(s, 200, 0)
    assert figs["fid_fp32_ci95_lo"] <= figs["fid_fp32_ci95_hi"] and "fid_real_ci95" in row


def test_compare_flags_a_real_difference(dirs):
    real = compare_dirs(dirs / "worse", dirs / "a", 1000, 0)["standard"]
    for key in ("fid_fp32", "kid_fp32", "psnr_fp32"):
        assert real[key]["significant"], (key, real[key])
    assert real["fid_fp32"]["diff"] > 0 and real["psnr_fp32"]["diff"] < 0


def test_compare_rarely_flags_a_null_difference():
    """Two experiments drawn alike: each figure's difference is significant in about 5% of draws or fewer."""
    rng = np.random.default_rng(1)
    flagged = {}
    for t in range(40):
        fp32 = rng.normal(size=(N, D))
        out = differences(_experiment(0.2, 2 * t, fp32), _experiment(0.2, 2 * t + 1, fp32), 200, t)
        for key, d in out.items():
            flagged[key] = flagged.get(key, 0) + d["significant"]
    assert {"fid_fp32", "kid_fp32", "psnr_fp32", "fid_real", "kid_real"} <= set(flagged)
    assert all(v <= 4 for v in flagged.values()), flagged


def test_experiments_of_different_eval_sets_do_not_pair(dirs):
    a = load(dirs / "a" / "standard")
    b = load(dirs / "same" / "standard")
    b.meta["seed"] = 7
    with pytest.raises(ValueError, match="do not pair up: seed is 1000 vs 7"):
        check_pairing(a, b)


def test_compare_command(dirs):
    from pcr.cli import app

    out = CliRunner().invoke(app, ["compare", str(dirs / "worse"), str(dirs / "a"), "--bootstrap", "200", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output)
    assert result["standard"]["psnr_fp32"]["significant"] is True
    table = CliRunner().invoke(app, ["compare", str(dirs / "worse"), str(dirs / "a"), "--bootstrap", "200"])
    assert "| psnr_fp32 |" in table.output and "significant" in table.output
    missing = CliRunner().invoke(app, ["compare", str(dirs / "nope"), str(dirs / "a")])
    assert missing.exit_code == 2 and "neither a samples directory nor a DVC experiment" in missing.output


def test_images_of_one_prompt_are_resampled_together(dirs):
    """meta prompt_groups (score's, from the prompt list) makes the intervals a cluster bootstrap: with a
    PSNR shared by each prompt's 8 images, the interval widens (prompts, not images, are independent)."""
    s = load(dirs / "a" / "standard")
    s.quant["psnr_fp32"] = np.repeat(np.random.default_rng(4).normal(40, 2, N // 8), 8)
    per_image = scored(s, 400, 0)[0]["psnr_fp32_ci95"]
    s.meta["prompt_groups"] = np.repeat(np.arange(N // 8), 8).tolist()
    per_prompt = scored(s, 400, 0)[0]["psnr_fp32_ci95"]
    assert per_prompt[1] - per_prompt[0] > 2 * (per_image[1] - per_image[0])
    s.meta["prompt_groups"] = list(range(N))  # every prompt once: the per-image bootstrap, same draws
    assert scored(s, 400, 0)[0]["psnr_fp32_ci95"] == per_image
