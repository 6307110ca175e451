"""A fixed pool of rendered training images with their labels, cached on disk.

Every trainer draws its batches from this pool by index, so batches are a pure function of
(seed, step) and a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pcr.demo.render import BACKGROUNDS, COLORS, SHAPES, TEMPLATES, Labels, all_labels, caption, render

ATTRIBUTES = ("color", "shape", "background")
VALUES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "background": tuple(BACKGROUNDS),
}
POOL_SEED_OFFSET = 1_000_000  # pool image seeds never collide with evaluation seeds (0, 1, ...)


@dataclass(frozen=True)
class Pool:
    """images: [N, 32, 32, 3] uint8; labels: [N, 3] int64 indices into VALUES per ATTRIBUTES."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1:] != (32, 32, 3) or self.images.dtype != np.uint8:
            raise ValueError(
                f"pool images must be [N, 32, 32, 3] uint8, got {self.images.shape} {self.images.dtype}"
            )
        if self.labels.shape != (len(self.images), len(ATTRIBUTES)):
            raise ValueError(f"pool labels must be [N, 3], got {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def label(self, i: int) -> Labels:
        return index_to_labels(self.labels[i])


def labels_to_index(labels: Labels) -> np.ndarray:
    """[3] int64 indices of colour, shape, background."""
    return np.array([VALUES[a].index(getattr(labels, a)) for a in ATTRIBUTES], dtype=np.int64)


def index_to_labels(index: np.ndarray) -> Labels:
    return Labels(**{a: VALUES[a][int(i)] for a, i in zip(ATTRIBUTES, index, strict=True)})


def build_pool(per_combo: int, seed: int) -> Pool:
    """`per_combo` jittered renders of every combination, in a seed-fixed shuffled order."""
    combos = all_labels()
    n = per_combo * len(combos)
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)
    labels = np.empty((n, len(ATTRIBUTES)), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n)
    for k in tqdm(range(n), desc="render pool", unit="img", mininterval=1.0):
        i = int(order[k])
        combo = combos[i % len(combos)]
        images[k] = render(combo, seed=POOL_SEED_OFFSET + seed * n + i)
        labels[k] = labels_to_index(combo)
    return Pool(images, labels)


def load_or_build_pool(path: Path, per_combo: int, seed: int) -> Pool:
    """The pool cached at `path` (npz), built first if absent or built with other settings."""
    if path.exists():
        with np.load(path) as z:
            if int(z["per_combo"]) == per_combo and int(z["seed"]) == seed:
                return Pool(z["images"], z["labels"])
    pool = build_pool(per_combo, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=pool.images, labels=pool.labels, per_combo=per_combo, seed=seed)
    tmp.replace(path)
    return pool


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 32, 32, 3] -> float32 [N, 3, 32, 32] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, 3, 32, 32] in [-1, 1] -> uint8 [N, 32, 32, 3]."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def random_captions(labels: np.ndarray, rng: np.random.Generator, paraphrase_prob: float) -> list[str]:
    """A caption per row of labels [N, 3]: standard template, or a random paraphrase with paraphrase_prob."""
    out = []
    for row in labels:
        template = TEMPLATES[0]
        if rng.random() < paraphrase_prob:
            template = TEMPLATES[1 + int(rng.integers(len(TEMPLATES) - 1))]
        out.append(caption(index_to_labels(row), template))
    return out
