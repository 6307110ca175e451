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

from pcr.models.tiny import build_tiny_clip

STAGES = ["collect", "weights", "reference", "calibrate", "relax", "generate", "score"]
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
        p[name].update(values)
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
