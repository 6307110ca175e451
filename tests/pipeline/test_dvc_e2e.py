"""The whole DVC pipeline on a tiny pipeline in a temporary git repo: repro, experiments, run-cache."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from e2e_project import STAGES, dvc, from_run_cache, make_project, ran

from pcr.models.tiny import build_tiny_sd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # AdaRound weights (a few iterations): a change of activation bits must not rerun them
    recon = {"iterations": 2, "batch_size": 4, "num_samples": 2, "num_steps": 2}
    return make_project(tmp_path_factory.mktemp("project"), build_tiny_sd, quant={"weight_method": "adaround", "recon": recon})


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
    assert ran(out) == {"calibrate", "relax", "generate", "score"}  # neither collect, weights nor reference

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
