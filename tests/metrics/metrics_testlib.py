"""Tiny random CLIP directories built offline from configs, and test images, for the metrics tests.

(A uniquely named module rather than conftest.py, so that `import` finds it even when other test
folders have their own conftest.py.)
"""

from __future__ import annotations

import numpy as np
from tiny_models import CLIP_EMBED_DIM as EMBED_DIM  # noqa: F401 (re-exported for the tests)
from tiny_models import CLIP_IMAGE_SIDE as IMAGE_SIDE
from tiny_models import CLIP_TEXT_POSITIONS as TEXT_POSITIONS  # noqa: F401
from tiny_models import CLIP_WORDS, build_tiny_clip

WORDS = list(CLIP_WORDS)


def make_clip_dir(path, *, with_processor: bool = True, seed: int = 0):
    return build_tiny_clip(path, seed, with_processor=with_processor)


def random_images(n: int, side: int = IMAGE_SIDE, seed: int = 0) -> np.ndarray:
    """uint8 [N, side, side, 3]: smooth blobs plus noise, so that images differ in structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.empty((n, side, side, 3), dtype=np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
        colour = rng.uniform(0, 255, 3)
        img = blob[..., None] * colour + rng.normal(0, 20, (side, side, 3)) + 60
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out
