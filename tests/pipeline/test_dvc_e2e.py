"""The whole DVC pipeline on a tiny pipeline in a temporary git repo: repro, experiments, run-cache, and what
each kind of change reruns (params, quantization code, library versions, a null prompt set, a bad param)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from e2e_project import (
    STAGES,
    assert_stock_pipeline_reproduces_generate,
    dvc,
    from_run_cache,
    make_project,
    ran,
    run,
)
from tiny_models import build_tiny_sd

from pcr.relax import Sensitivity

pytestmark = pytest.mark.slow
MODEL_STAGES = {"collect", "weights", "reference", "calibrate", "sensitivity", "export", "generate"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # AdaRound weights (a few iterations): a change of activation bits must not rerun them
    recon = {"iterations": 2, "batch_size": 4, "num_samples": 2, "num_steps": 2}
    project = make_project(tmp_path_factory.mktemp("project"), build_tiny_sd, quant={"weight_method": "adaround", "recon": recon})
    out = dvc(project, "repro")
    assert ran(out) == set(STAGES)
    run(["git", "add", "-A"], *project)
    run(["git", "commit", "-qm", "repro"], *project)
    return project


@pytest.fixture
def committed(project):
    """The project back at its committed params and outputs after the test."""
    yield project
    root, env = project
    run(["git", "checkout", "--", "params.yaml", "dvc.lock", "pcr"], root, env)
    dvc(project, "checkout", "--force")


def changed_stages(project) -> set[str]:
    """Stages `dvc status` reports as changed (env, always_changed, is always among them)."""
    out = dvc(project, "status")
    return set(re.findall(r"^(\w+):", out, flags=re.M))


def test_repro_then_experiments_rerun_only_downstream(committed):
    project = committed
    root, _ = project
    metrics = json.loads((root / "outputs/metrics.json").read_text())
    for key in ("fid_fp32", "kid_fp32", "clip_score", "psnr_fp32", "ssim_fp32", "average_bits"):
        assert key in metrics, key
    assert "paraphrase" in metrics and (root / "outputs/grid.png").is_file()
    assert abs(metrics["fp32"]["fid_fp32"]) < 1e-3  # FID of the FP32 images against themselves is 0
    assert (root / "outputs/plots/step_error.csv").read_text().startswith("step,relative_error")
    assert ran(dvc(project, "repro")) == {"env"}  # nothing changed: env reruns (always_changed), writes the same files
    assert_stock_pipeline_reproduces_generate(root, root / "data/tiny")  # what generate scored is what users load

    out = dvc(project, "exp", "run", "-S", "relax.fraction=0.34")
    assert ran(out) == {"env", "relax", "export", "generate", "grid", "score"}
    assert json.loads((root / "outputs/schedule.json").read_text())["bits"] == [8, 8, 10]

    out = dvc(project, "exp", "run", "-S", "quant.act_bits=6", "-S", "relax.where=auto")  # sensitivity: measured for auto only
    assert ran(out) == {"env", "calibrate", "sensitivity", "relax", "export", "generate", "grid", "score"}  # neither collect, weights nor reference
    schedule = json.loads((root / "outputs/schedule.json").read_text())
    measured = Sensitivity.load(root / "outputs/sensitivity.csv")
    assert len(measured.gain_db) == 3 and measured.samples == min(8, 4)  # the e2e project collects 4 prompts
    assert schedule["relaxed_steps"] == list(measured.choose(1)) and schedule["bits"].count(10) == 1
    assert schedule["sensitivity"] == pytest.approx(measured.gain_db.tolist())

    out = dvc(project, "exp", "run", "-S", "quant.act_bits=8", "-S", "relax.where=x0")  # back to the committed values
    assert ran(out) == {"env"}
    assert {"calibrate", "sensitivity", "relax", "export", "generate", "score"} <= from_run_cache(out) | set(re.findall(r"Stage '(\w+)' didn't change", out))


def test_artifact_loads_without_the_float_unet_weights(committed, tmp_path):
    root, _ = committed
    model = tmp_path / "model"
    shutil.copytree(root / "data/tiny", model)
    weights = list((model / "unet").glob("*.safetensors"))
    assert weights
    for f in weights:
        f.unlink()
    assert_stock_pipeline_reproduces_generate(root, model)


def test_grid_size_reruns_only_the_grid(committed):
    out = dvc(committed, "exp", "run", "-S", "generate.grid_images=2")
    assert ran(out) == {"env", "grid"}


def test_inspection_dumps_rerun_only_calibrate(committed):
    out = dvc(committed, "exp", "run", "-S", "calibrate.store.samples=1")
    # calibrate writes the same calib.zarr and qparams again (the dumps have their own store): nothing downstream reruns
    assert ran(out) == {"env", "calibrate"}, ran(out)


def test_editing_quantization_code_leaves_the_fp32_stages_cached(committed):
    root, _ = committed
    observer = root / "pcr/quant/observers/minmax.py"
    observer.write_text(observer.read_text() + "# an edit\n")
    changed = changed_stages(committed)
    assert "calibrate" in changed and not changed & {"collect", "reference"}, changed


def test_a_library_upgrade_reruns_the_stages_it_can_change(committed, tmp_path):
    """A newer diffusers (its metadata, shadowing the installed one's) changes versions_sampling.json only."""
    root, env = committed
    fake = tmp_path / "site" / "diffusers-999.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: diffusers\nVersion: 999.0\n")
    upgraded = {**env, "PYTHONPATH": os.pathsep.join([str(fake.parent), env.get("PYTHONPATH", "")])}
    run([sys.executable, "-m", "dvc", "repro", "env"], root, upgraded)
    assert json.loads((root / "outputs/env/versions_sampling.json").read_text())["diffusers"] == "999.0"
    changed = changed_stages(committed) - {"env"}
    assert changed == MODEL_STAGES, changed  # not relax, grid, or score (which reads no diffusers)


def test_null_paraphrase_set_is_skipped(committed):
    root, _ = committed
    out = dvc(committed, "exp", "run", "-S", "eval.paraphrase_prompts=null")
    assert ran(out) == {"env", "reference", "generate", "grid", "score"}
    assert "paraphrase" not in json.loads((root / "outputs/env/prompts_eval.json").read_text())
    assert "paraphrase" not in json.loads((root / "outputs/metrics.json").read_text())


def test_bad_param_fails_in_env_before_any_output_is_removed(committed):
    root, env = committed
    before = {p: p.stat().st_mtime_ns for p in (root / "outputs").iterdir() if p.name != "env"}
    r = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-S", "quant.act_bits=99"], cwd=root, env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "quant.act_bits=99 is not allowed" in r.stdout + r.stderr
    assert ran(r.stdout + r.stderr) == {"env"}
    assert {p: p.stat().st_mtime_ns for p in (root / "outputs").iterdir() if p.name != "env"} == before


def test_bad_param_fails_cleanly_without_outputs(committed):
    root, env = committed
    r = subprocess.run([sys.executable, "stages/relax.py", "params.yaml", "outputs/qconfig.json", "outputs/sensitivity.csv",
                        "outputs/bad.json", "outputs/bad.csv"], cwd=root,
                       env={**env}, capture_output=True, text=True)
    assert r.returncode == 0
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["relax"]["fraction"] = 1.5
    (root / "bad.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, "stages/relax.py", "bad.yaml", "outputs/qconfig.json", "outputs/sensitivity.csv",
                        "outputs/bad2.json", "outputs/bad2.csv"], cwd=root,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert "relax.fraction=1.5 is not allowed: use a number in [0, 1]" in r.stderr and "Traceback" not in r.stderr
    assert not (root / "outputs/bad2.json").exists()
    p["relax"]["fraction"] = 0.1
    p["model"]["path"] = "data"
    (root / "bad.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, "stages/collect.py", "bad.yaml", "outputs/env/prompts_calibration.json", "outputs/t2.zarr"],
                       cwd=root, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "not a diffusers pipeline directory" in r.stderr
    assert not (root / "outputs/t2.zarr").exists() and not (root / "outputs/t2.zarr.partial").exists()
