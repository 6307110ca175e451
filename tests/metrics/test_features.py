import importlib.util

import numpy as np
import pytest
import torch
from metrics_testlib import EMBED_DIM, IMAGE_SIDE, make_clip_dir, random_images
from transformers import CLIPImageProcessor, CLIPModel

from pcr.errors import ConfigError
from pcr.metrics.features import FEATURES, build_feature, register_feature


def _reference_embeds(clip_dir, images_nhwc: np.ndarray) -> torch.Tensor:
    """CLIP image embeddings the transformers way: the saved processor, then get_image_features."""
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    proc = CLIPImageProcessor.from_pretrained(clip_dir, local_files_only=True)
    pixels = proc(images=list(images_nhwc), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_unknown_name_names_value_and_allowed():
    with pytest.raises(ValueError, match=r"'vgg'.*\['clip', 'inception'\]"):
        build_feature("vgg")


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_feature("clip")(lambda path, device: torch.nn.Identity())
    assert set(FEATURES) == {"clip", "inception"}


@pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed"
)
def test_inception_without_extra_says_how_to_install(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"pcr\[inception\]"):
        build_feature("inception", weights)


def test_clip_features_match_processor_and_model(clip_dir):
    images = random_images(5)  # already at the processor's size: no resampling involved
    feature = build_feature("clip", clip_dir)
    out = feature(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert out.shape == (5, EMBED_DIM) and out.dtype == torch.float32
    assert feature.num_features == EMBED_DIM
    torch.testing.assert_close(out, _reference_embeds(clip_dir, images), atol=1e-4, rtol=1e-4)


def test_clip_features_resize_like_the_processor(clip_dir):
    images = random_images(4, side=IMAGE_SIDE + 16, seed=3)  # 48x48 -> resized to 32, as the processor does
    feature = build_feature("clip", clip_dir)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    ref_pixels = CLIPImageProcessor.from_pretrained(clip_dir)(images=list(images), return_tensors="pt")[
        "pixel_values"
    ]
    pixels = feature.preprocess(x)
    assert pixels.shape == ref_pixels.shape == (4, 3, IMAGE_SIDE, IMAGE_SIDE)
    # torch's antialiased bicubic vs PIL's: a few uint8 levels apart at most, on average well under one
    assert (pixels - ref_pixels).abs().mean() < 0.02


def test_clip_without_processor_config_uses_vision_size(tmp_path):
    bare = make_clip_dir(tmp_path / "bare", with_processor=False)
    feature = build_feature("clip", bare)
    assert feature.resize == IMAGE_SIDE and feature.crop == (IMAGE_SIDE, IMAGE_SIDE)
    assert feature(torch.from_numpy(random_images(2)).permute(0, 3, 1, 2)).shape == (2, EMBED_DIM)


def test_missing_clip_dir_raises(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_feature("clip", tmp_path / "nope")
