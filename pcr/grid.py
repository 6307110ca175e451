"""grid.png: FP32 images above quantized ones, the first n of the standard set (a cheap stage of its own,
so that changing n reruns nothing else)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from PIL import Image, ImageDraw

from pcr.files import atomic_path
from pcr.stores import open_store

GRID_MIN_PX = 96  # small demo images are upscaled (nearest) to at least this size in grid.png


def save_grid(top: zarr.Array, bottom: zarr.Array, n: int, path: str | Path, labels: tuple[str, str]) -> None:
    """Two rows, `top` above `bottom`, the first n images of each; upscaled if tiny."""
    n = min(n, top.shape[0])
    rows = [np.concatenate(list(a[:n]), axis=1) for a in (top, bottom)]  # [H, n*W, 3]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    h = top.shape[1]
    if h < GRID_MIN_PX:
        f = -(-GRID_MIN_PX // h)
        grid = grid.resize((grid.width * f, grid.height * f), Image.NEAREST)
        h *= f
    canvas = Image.new("RGB", (grid.width + 64, grid.height), "white")
    canvas.paste(grid, (64, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        draw.text((4, i * h + h // 2 - 6), label, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp)


def grid(n: int, reference_path: str | Path, generated_path: str | Path, out: str | Path) -> None:
    """The grid of reference.zarr over generated.zarr, labelled FP32 and W<w>A<average bits>."""
    ref, gen = open_store(reference_path, "reference"), open_store(generated_path, "generated")
    label = f"W{gen.attrs['weight_bits']}A{gen.attrs['average_bits']:g}"
    save_grid(ref["images/standard"], gen["images/standard"], n, out, ("FP32", label))
