import numpy as np
import pytest
from PIL import Image

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
