import numpy as np
import pytest
from PIL import Image
from store_testlib import trajectory_store

from pcr.config import ConfigError
from pcr.score import real_images


def test_real_images_from_a_folder_are_resized(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    imgs = real_images(str(tmp_path), ["p"] * 3, [0, 1, 2], (16, 16))
    assert imgs.shape == (3, 16, 16, 3) and imgs.dtype == np.uint8
    assert [int(im.mean()) for im in imgs] == [0, 40, 80]


def test_real_images_bad_source_names_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"score.real='.*' is not allowed: use 'render', null, or a folder holding images"):
        real_images(str(tmp_path / "missing"), ["p"], [0], (8, 8))


def test_render_gives_the_demo_ground_truth():
    from pcr.demo.render import parse_caption, render

    caption = "a red circle on a gray background"
    parse_caption(caption)  # the demo renderer understands its captions
    imgs = real_images("render", [caption, caption], [0, 1], (32, 32))
    np.testing.assert_array_equal(imgs[0], render(parse_caption(caption), 0))


# ----- a whole score run on tiny stores: models loaded once, each image set featurised once ------------------

CAPTIONS = ["a red circle on a gray background", "a blue square on a white background",
            "a green circle on a black background", "a red star on a gray background",
            "a cyan diamond on a navy background", "a green square on a gray background"]
SETS = {"standard": CAPTIONS, "paraphrase": CAPTIONS[::-1]}
SEED = 100


def _image_store(path, kind, images, **attrs):
    from pcr.stores import add_image_arrays, create_store, finish_store

    g = create_store(path, kind, prompts=SETS, seed=SEED, **attrs)
    add_image_arrays(g, {name: len(imgs) for name, imgs in images.items()}, images["standard"].shape[1:3], 2)
    for name, imgs in images.items():
        g[f"images/{name}"][:] = imgs
        g[f"done/{name}"][:] = True
    finish_store(g, path)


RANGES = np.linspace(1.0, 2.0, 3)[:, None] * np.array([1.0, 2.0, 3.0, 4.0])  # [T=3, 4 layers] FP32 input ranges


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from tiny_models import build_tiny_clip

    from pcr.demo.render import render_caption

    tmp = tmp_path_factory.mktemp("score")
    clip = build_tiny_clip(tmp / "clip")
    rng = np.random.default_rng(0)
    noisy = lambda v, s: np.clip(v + rng.normal(0, s, v.shape), 0, 255).astype(np.uint8)  # noqa: E731
    fp32 = {k: noisy(np.stack([render_caption(c, SEED + i) for i, c in enumerate(v)]), 3) for k, v in SETS.items()}
    quant = {k: noisy(v, 6) for k, v in fp32.items()}
    _image_store(tmp / "ref.zarr", "reference", fp32)
    _image_store(tmp / "gen.zarr", "generated", quant, average_bits=8.0, weight_bits=8)
    x = rng.normal(size=(4, 2, 1, 2, 2)).astype(np.float32)
    trajectory_store(tmp / "traj.zarr", "trajectories", x, list("abcd"), -RANGES / 2, RANGES / 2)
    drift = RANGES[:, [3, 1, 0]] * [1.5, 1.0, 0.25]  # calibration ranges of d, b, a: d 1.5x, b equal, a 4x narrower
    trajectory_store(tmp / "calib.zarr", "calibration", x + 0.1, list("dba"), -drift / 2, drift / 2)
    return tmp, clip


def _run(tmp, clip, out, **score):
    from pcr.config import Params
    from pcr.score import score as run

    cfg = {"feature_path": str(clip), "clip_path": str(clip), "judge": "data/demo/judge", "real": "render",
           "kid_subset_size": 4, "batch_size": 4, "bootstrap": 200, "device": "cpu", **score}
    params = Params.from_dict({"score": cfg})
    paths = [tmp / p for p in ("ref.zarr", "gen.zarr", "traj.zarr", "calib.zarr")]
    return run(params, *paths, tmp / f"{out}.json", tmp / f"{out}_plots", tmp / f"{out}_samples")


def test_each_model_loads_once_and_each_image_set_is_featurised_once(project, monkeypatch):
    import pcr.demo.judge
    import pcr.metrics.clip_model
    from pcr.metrics.clip_score import ClipScorer
    from pcr.metrics.features import ClipImageFeatures

    tmp, clip = project
    count = {"clip loads": 0, "judge loads": 0, "featurised": [], "clip scored": [], "texts": 0}
    real_load, real_judge = pcr.metrics.clip_model.CLIPModel.from_pretrained, pcr.demo.judge.load_judge
    real_forward, real_scores, real_text = ClipImageFeatures.forward, ClipScorer.image_scores, ClipScorer.text_features

    def load(*a, **k):
        count["clip loads"] += 1
        return real_load(*a, **k)

    def judge(*a, **k):
        count["judge loads"] += 1
        return real_judge(*a, **k)

    def forward(self, images):
        count["featurised"] += [bytes(im.numpy()) for im in images]
        return real_forward(self, images)

    def scores(self, images, text):
        count["clip scored"] += [bytes(np.ascontiguousarray(im)) for im in images]
        return real_scores(self, images, text)

    def text(self, prompts):
        count["texts"] += len(prompts)
        return real_text(self, prompts)

    monkeypatch.setattr(pcr.metrics.clip_model.CLIPModel, "from_pretrained", load)
    monkeypatch.setattr(pcr.demo.judge, "load_judge", judge)
    monkeypatch.setattr(ClipImageFeatures, "forward", forward)
    monkeypatch.setattr(ClipScorer, "image_scores", scores)
    monkeypatch.setattr(ClipScorer, "text_features", text)
    _run(tmp, clip, "count")
    n, sets = len(CAPTIONS), len(SETS)
    assert count["clip loads"] == 1 and count["judge loads"] == 1
    # quantized, FP32 and real images of each set through the feature network once each (real = rendered)
    assert len(count["featurised"]) == len(set(count["featurised"])) == 3 * n * sets
    # quantized and FP32 images through the CLIP score once each, each prompt's text once
    assert len(count["clip scored"]) == 2 * n * sets and count["texts"] == n * sets


def test_metrics_carry_intervals_and_the_samples_reproduce_them(project):
    from pcr.metrics.intervals import scored
    from pcr.metrics.samples import load

    tmp, clip = project
    m = _run(tmp, clip, "a")
    figures = ["fid_fp32", "kid_fp32", "psnr_fp32", "ssim_fp32", "fid_real", "kid_real", "clip_score",
               "clip_score_fp32", "color_acc", "shape_acc", "background_acc", "all_acc"]
    for block in (m, m["paraphrase"]):
        for key in figures:
            lo, hi = block[f"{key}_ci95"]
            assert (block[f"{key}_ci95_lo"], block[f"{key}_ci95_hi"]) == (lo, hi) and lo <= hi, key
    assert {"fid_real_ci95", "clip_score_ci95", "all_acc_ci95"} <= set(m["fp32"])
    lo, hi = m["psnr_fp32_ci95"]
    assert lo < m["psnr_fp32"] < hi
    again = scored(load(tmp / "a_samples" / "standard"), 200, 0)
    assert again[0] == {k: v for k, v in m.items() if k in again[0]}
    assert _run(tmp, clip, "b") == m  # deterministic for a seed
    assert _run(tmp, clip, "c", seed=1)["psnr_fp32_ci95"] != m["psnr_fp32_ci95"]


def test_no_intervals_with_bootstrap_zero(project):
    tmp, clip = project
    m = _run(tmp, clip, "none", bootstrap=0, judge=None, real=None)
    assert "fid_fp32" in m and not any(k.endswith("ci95") for k in m)


def test_activation_ranges_plot_the_layers_that_drift_most(project):
    from pcr.score import activation_ranges

    tmp, clip = project
    r = activation_ranges(tmp / "traj.zarr", tmp / "calib.zarr", layers=2)
    assert list(r) == ["a", "d"]  # |log 0.25| > |log 1.5| > |log 1|
    np.testing.assert_allclose(r["a"], np.stack([RANGES[:, 0], RANGES[:, 0] / 4], 1), rtol=1e-6)
    _run(tmp, clip, "plots", bootstrap=0, judge=None, real=None)
    lines = (tmp / "plots_plots" / "ranges" / "d.csv").read_text().splitlines()
    assert lines[0] == "step,fp32,calibrated" and lines[1] == "0,4,6"
