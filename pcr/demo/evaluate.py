"""Quality of the demo pipeline: does an FP32 generation show the caption's colour, shape, background?

`pcr demo eval` generates one image per evaluation caption (seed = its line number), scores it
with the judge, also scores the judge on rendered ground truth, and writes quality.json + grid.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from pcr.demo.judge import attribute_accuracy, load_judge
from pcr.demo.render import render_caption

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 4.5
GRID_ROWS, GRID_COLS, GRID_SCALE, TEXT_WIDTH = 8, 4, 2, 250


def read_prompts(path: str | Path) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    return [ln for ln in lines if ln]


def load_pipeline(pipeline_dir: str | Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, captions: list[str], seeds: list[int], steps: int = DEFAULT_STEPS,
             guidance: float = DEFAULT_GUIDANCE, batch_size: int = 50) -> np.ndarray:  # fmt: skip
    """uint8 [N, 32, 32, 3]: one image per caption, each from its own seeded generator."""
    if len(captions) != len(seeds):
        raise ValueError(f"{len(captions)} captions but {len(seeds)} seeds")
    out = []
    for s in tqdm(range(0, len(captions), batch_size), desc="generate", mininterval=2.0):
        gens = [torch.Generator().manual_seed(int(seed)) for seed in seeds[s : s + batch_size]]
        images = pipe(captions[s : s + batch_size], num_inference_steps=steps, guidance_scale=guidance,
                      generator=gens, output_type="np").images  # fmt: skip
        out.append(np.clip(np.rint(images * 255), 0, 255).astype(np.uint8))  # [B, 32, 32, 3]
    return np.concatenate(out)


def save_grid(images: np.ndarray, captions: list[str], path: str | Path, cols: int = GRID_COLS) -> None:
    """Rows of `cols` images with their caption on the left."""
    rows = len(images) // cols
    cell = 32 * GRID_SCALE
    canvas = Image.new("RGB", (TEXT_WIDTH + cols * cell, rows * cell), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        draw.text((4, r * cell + cell // 2 - 6), captions[r * cols], fill=(0, 0, 0))
        for c in range(cols):
            tile = Image.fromarray(images[r * cols + c]).resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (TEXT_WIDTH + c * cell, r * cell))
    canvas.save(path, optimize=True)


def evaluate(pipeline_dir: Path, judge_dir: Path, prompts: Path, paraphrase_prompts: Path | None, out_dir: Path,
             steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, limit: int | None = None) -> dict:  # fmt: skip
    """Measure, print nothing, write quality.json and grid.png under out_dir; return the figures."""
    pipe = load_pipeline(pipeline_dir)
    judge = load_judge(judge_dir)
    caps = read_prompts(prompts)[:limit]
    seeds = list(range(len(caps)))
    images = generate(pipe, caps, seeds, steps, guidance)
    rendered = np.stack([render_caption(c, s) for c, s in zip(caps, seeds, strict=True)])
    result = {
        "steps": steps,
        "guidance": guidance,
        "scheduler": type(pipe.scheduler).__name__,
        "n": len(caps),
        "generated": attribute_accuracy(images, caps, judge),
        # Control: the same images against the captions of other images; chance-level if the judge reads images.
        "generated_vs_shifted_captions": attribute_accuracy(images, caps[1:] + caps[:1], judge),
        "judge_on_rendered": attribute_accuracy(rendered, caps, judge),
    }
    if paraphrase_prompts is not None:
        para = read_prompts(paraphrase_prompts)[:limit]
        para_images = generate(pipe, para, list(range(len(para))), steps, guidance)
        result["generated_paraphrase"] = attribute_accuracy(para_images, para, judge)
        result["n_paraphrase"] = len(para)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    grid_caps = caps[:GRID_ROWS]
    grid_seeds = [1000 + k for k in range(GRID_COLS)]
    grid = generate(
        pipe, [c for c in grid_caps for _ in grid_seeds], grid_seeds * len(grid_caps), steps, guidance
    )
    save_grid(grid, [c for c in grid_caps for _ in grid_seeds], out_dir / "grid.png")
    return result
