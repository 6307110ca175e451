"""Tiny random CLIP directories built offline from configs, and test images, for the metrics tests.

(A uniquely named module rather than conftest.py, so that `import` finds it even when other test
folders have their own conftest.py.)
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from pcr.models.tokenizer import build_clip_tokenizer

WORDS = ["a", "red", "green", "blue", "circle", "square", "on", "gray", "background", "small", "big"]
IMAGE_SIDE = 32
TEXT_POSITIONS = 12
EMBED_DIM = 16


def make_clip_dir(path, *, with_processor: bool = True, seed: int = 0):
    tok = build_clip_tokenizer(WORDS, path, max_length=TEXT_POSITIONS)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TEXT_POSITIONS,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            image_size=IMAGE_SIDE,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=EMBED_DIM,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path)
    if with_processor:
        CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIDE}, crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}
        ).save_pretrained(path)
    return path


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
