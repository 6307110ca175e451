"""A temporary copy of the project, as a git + DVC repo around a tiny pipeline, for end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from depgraph import ROOT
from tiny_models import build_tiny_clip

STAGES = ["env", "collect", "weights", "reference", "calibrate", "sensitivity", "relax", "export", "generate", "grid", "score"]
PROMPTS = ["a red circle", "a blue square", "a green circle", "a gray square", "a small red square"]
Project = tuple[Path, dict]


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def from_run_cache(output: str) -> set[str]:
    return set(re.findall(r"Stage '(\w+)' is cached - skipping run", output))


def stage_env() -> dict:
    """One torch thread, this venv's python and dvc first on PATH, a git identity, no analytics."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
            "DVC_NO_ANALYTICS": "1"}


def copy_project(root: Path) -> None:
    """The tracked sources, stages, dvc.yaml and params.yaml of the checkout (no demo data, no tests)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py")] + ["dvc.yaml", "params.yaml"]
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "pcr").rglob("*.py")]
    for f in set(files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/demo/", "tests/", "params/")):
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / f)


def make_project(root: Path, build_model: Callable[[Path], Path], **sections: dict) -> Project:
    """A committed git + DVC repo at `root`: the tiny model from `build_model` at data/tiny, a tiny CLIP
    at data/clip, short prompt files, and params.yaml for 3 steps and 4 prompts updated by `sections`."""
    copy_project(root)
    build_model(root / "data/tiny")
    build_tiny_clip(root / "data/clip")
    (root / "data/demo/judge").mkdir(parents=True, exist_ok=True)  # score's static dep; unused with judge: null
    (root / "data/demo/judge/README").write_text("placeholder for the test\n")
    (root / "data/prompts").mkdir(parents=True, exist_ok=True)
    for name in ("calibration", "eval", "eval_paraphrase"):
        (root / f"data/prompts/{name}.txt").write_text("\n".join(PROMPTS) + "\n")
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["model"].update(path="data/tiny", steps=3, scheduler="ddim", device="cpu")
    p["collect"].update(num_prompts=4, batch_size=4)
    p["calibrate"]["batch_size"] = 4
    p["eval"].update(num_prompts=4, batch_size=4)
    p["score"].update(feature_path="data/clip", clip_path="data/clip", judge=None, real=None, kid_subset_size=2)
    for name, values in sections.items():
        for key, value in values.items():  # nested sections (quant.recon) are merged, not replaced
            if isinstance(value, dict):
                p[name][key].update(value)
            else:
                p[name][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = stage_env()
    assert (root / ".dvc/config").is_file()  # the project's own `dvc init`, analytics off
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(cmd, root, env)
    return root, env


def dvc(project: Project, *args: str) -> str:
    root, env = project
    return run([sys.executable, "-m", "dvc", *args], root, env)


def stock_pipeline_images(root: Path, model_dir: Path, n: int):
    """The first n standard evaluation images as the stock diffusers pipeline makes them from root's artifact.

    Same prompts, negative prompt, guidance, step count and initial noise (seed eval.seed + i) as generate.
    """
    import numpy as np
    import torch

    import pcr
    from pcr.config import load_params, read_prompts

    params = load_params(root / "params.yaml")
    pipe = pcr.load_pipeline(model_dir, root / "outputs/quantized")
    prompts = read_prompts(root / params.eval.prompts, n)
    c, size = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    noise = torch.stack([torch.randn((c, size, size), generator=torch.Generator().manual_seed(params.eval.seed + i)) for i in range(n)])
    out = pipe(prompts, negative_prompt=[params.model.negative_prompt] * n, latents=noise, guidance_scale=params.model.guidance_scale,
               num_inference_steps=pipe.unet.pcr_step.num_inference_steps, output_type="np")
    return (np.asarray(out.images) * 255).round().astype(np.uint8)  # what the pipeline's PIL images hold


def assert_stock_pipeline_reproduces_generate(root: Path, model_dir: Path) -> None:
    """The artifact in the stock pipeline gives generate's images (its first batch): bit for bit, or within one grey level.

    One batch as generate ran it: a quantized UNet's outputs depend on the batch it runs in (float sums in
    another order move a value across a rounding boundary of an activation code now and then).
    """
    import numpy as np
    import zarr

    from pcr.config import load_params

    params = load_params(root / "params.yaml")
    n = min(params.eval.batch_size, params.eval.num_prompts)
    generated = zarr.open_group(str(root / "outputs/generated.zarr"), mode="r")["images/standard"][:n]
    stock = stock_pipeline_images(root, model_dir, n)
    diff = np.abs(stock.astype(int) - generated.astype(int))
    assert diff.max() <= 1, f"stock pipeline differs from generate by up to {diff.max()} grey levels"
