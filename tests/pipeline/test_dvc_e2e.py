"""The whole DVC pipeline on a tiny pipeline in a temporary git repo: repro, experiments, run-cache."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from depgraph import ROOT

from pcr.models.tiny import build_tiny_clip, build_tiny_sd

pytestmark = pytest.mark.slow
STAGES = ["collect", "reference", "calibrate", "relax", "generate", "score"]


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def from_run_cache(output: str) -> set[str]:
    return set(re.findall(r"Stage '(\w+)' is cached - skipping run", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "stages").glob("*.py")] + ["dvc.yaml", "params.yaml"]
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "pcr").rglob("*.py")]
    for f in set(files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/demo/", "tests/")):
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / f)
    build_tiny_sd(root / "data/tiny")
    build_tiny_clip(root / "data/clip")
    (root / "data/demo/judge").mkdir(parents=True, exist_ok=True)  # score's static dep; unused with judge: null
    (root / "data/demo/judge/README").write_text("placeholder for the test\n")
    words = ["a red circle", "a blue square", "a green circle", "a gray square", "a small red square"]
    (root / "data/prompts").mkdir(parents=True, exist_ok=True)
    for name in ("calibration", "eval", "eval_paraphrase"):
        (root / f"data/prompts/{name}.txt").write_text("\n".join(words) + "\n")
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["model"].update(path="data/tiny", steps=3, scheduler="ddim", device="cpu")
    p["collect"].update(num_prompts=4, batch_size=4)
    p["calibrate"]["batch_size"] = 4
    p["eval"].update(num_prompts=4, batch_size=4)
    p["score"].update(feature_path="data/clip", clip_path="data/clip", judge=None, real=None, kid_subset_size=2)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "DVC_NO_ANALYTICS": "1"}
    assert (root / ".dvc/config").is_file()  # the project's own `dvc init`, analytics off
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        _run(cmd, root, env)
    return root, env


def dvc(project, *args) -> str:
    root, env = project
    return _run([sys.executable, "-m", "dvc", *args], root, env)


def test_repro_then_experiments_rerun_only_downstream(project):
    root, _ = project
    out = dvc(project, "repro")
    assert ran(out) == set(STAGES)
    metrics = json.loads((root / "outputs/metrics.json").read_text())
    for key in ("fid_fp32", "kid_fp32", "clip_score", "psnr_fp32", "ssim_fp32", "average_bits"):
        assert key in metrics, key
    assert "paraphrase" in metrics and (root / "outputs/grid.png").is_file()
    assert abs(metrics["fp32"]["fid_fp32"]) < 1e-3  # FID of the FP32 images against themselves is 0
    assert (root / "outputs/plots/step_error.csv").read_text().startswith("step,relative_error")
    assert ran(dvc(project, "repro")) == set()  # nothing changed

    out = dvc(project, "exp", "run", "-S", "relax.fraction=0.34")
    assert ran(out) == {"relax", "generate", "score"}
    assert json.loads((root / "outputs/schedule.json").read_text())["bits"] == [8, 8, 10]

    out = dvc(project, "exp", "run", "-S", "quant.act_bits=6")
    assert ran(out) == {"calibrate", "relax", "generate", "score"}  # neither collect nor reference

    out = dvc(project, "exp", "run", "-S", "quant.act_bits=8")  # back to the committed value
    assert ran(out) == set()
    assert {"calibrate", "relax", "generate", "score"} <= from_run_cache(out) | set(re.findall(r"Stage '(\w+)' didn't change", out))


def test_bad_param_fails_cleanly_without_outputs(project):
    root, env = project
    r = subprocess.run([sys.executable, "stages/relax.py", "params.yaml", "outputs/qconfig.json", "outputs/bad.json"], cwd=root,
                       env={**env}, capture_output=True, text=True)
    assert r.returncode == 0
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["relax"]["fraction"] = 1.5
    (root / "bad.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, "stages/relax.py", "bad.yaml", "outputs/qconfig.json", "outputs/bad2.json"], cwd=root,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert "relax.fraction=1.5 is not allowed: use a number in [0, 1]" in r.stderr and "Traceback" not in r.stderr
    assert not (root / "outputs/bad2.json").exists()
    p["relax"]["fraction"] = 0.1
    p["model"]["path"] = "data"
    (root / "bad.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, "stages/collect.py", "bad.yaml", "outputs/t2.zarr"], cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "not a diffusers pipeline directory" in r.stderr
    assert not (root / "outputs/t2.zarr").exists() and not (root / "outputs/t2.zarr.partial").exists()
