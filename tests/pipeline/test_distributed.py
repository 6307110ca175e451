"""collect and reference spread over 2 CPU processes (torchrun, gloo): the same stores as 1 process, bit for
bit; a run killed midway resumes and computes only the missing samples; a store with holes is never scored."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from depgraph import ROOT

from pcr.collect import collect
from pcr.images import reference
from pcr.score import score
from pcr.stores import StoreError, open_store, partial_path

# Runs a stage's script in a launched process; optionally logs the seeds of every sampled batch and makes
# rank 1 die (os._exit, as a crash would) on its (FAIL_AFTER + 1)-th batch.
WRAPPER = """
import json, os, runpy, sys
import pcr.images as g
rank, log, fail_after = int(os.environ.get("RANK", "0")), os.environ.get("PCR_TEST_LOG"), int(os.environ.get("PCR_TEST_FAIL_AFTER", "0"))
calls, sample = [0], g.sample
def logged(sampler, cond, seeds):
    calls[0] += 1
    if fail_after and rank == 1 and calls[0] > fail_after:
        os._exit(17)
    if log:
        with open(f"{log}.{rank}", "a") as f:
            f.write(json.dumps(seeds) + "\\n")
    return sample(sampler, cond, seeds)
g.sample = logged
for stage_args in sys.argv[1:]:
    stage, *args = stage_args.split()
    sys.argv = [f"stages/{stage}.py", *args]
    runpy.run_path(os.path.join(os.environ["PCR_ROOT"], "stages", f"{stage}.py"), run_name="__main__")
"""


def launch(tmp: Path, *stage_args: str, nproc: int = 2, **env_extra) -> subprocess.CompletedProcess:
    wrapper = tmp / "wrapper.py"
    wrapper.write_text(WRAPPER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PCR_ROOT": str(ROOT), **env_extra}
    # the launcher form dvc.yaml uses: `<launcher> python stages/<stage>.py ...`, so --no-python
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "--no-python"]
    cmd = [*launcher, sys.executable, str(wrapper), *stage_args]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def _plain(x):
    return json.loads(json.dumps(x))  # tuples -> lists


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Params (collect: 3 batches; eval: 4 batches per set) and the 1-process stores, computed in this process."""
    from tiny_models import build_tiny_sd

    from pcr.config import Params, calibration_prompts, eval_prompt_sets

    tmp = tmp_path_factory.mktemp("dist")
    model = build_tiny_sd(tmp / "sd")
    words = ["a red circle", "a blue square", "a green triangle", "a gray circle", "a small red square"]
    (tmp / "cal.txt").write_text("\n".join(words) + "\n")
    (tmp / "eval.txt").write_text("\n".join(reversed(words)) + "\n")
    (tmp / "para.txt").write_text("\n".join(w.replace("a ", "one ") for w in words) + "\n")
    d = {"model": {"path": str(model), "steps": 3, "scheduler": "pndm", "device": "cpu"},  # PNDM: a stateful scheduler
         "collect": {"prompts": str(tmp / "cal.txt"), "num_prompts": 5, "batch_size": 2},
         "eval": {"prompts": str(tmp / "eval.txt"), "paraphrase_prompts": str(tmp / "para.txt"), "num_prompts": 4, "batch_size": 1},
         "score": {"feature_path": None, "clip_path": None, "judge": None, "real": None}}
    params = Params.from_dict(d)
    (tmp / "params.yaml").write_text(yaml.safe_dump(_plain(dataclasses.asdict(params))))
    import torch

    torch.set_num_threads(1)
    (tmp / "cal.json").write_text(json.dumps(calibration_prompts(params)))  # env's snapshots
    (tmp / "eval.json").write_text(json.dumps(eval_prompt_sets(params)))
    collect(params, tmp / "traj1.zarr", progress=False)
    reference(params, tmp / "ref1.zarr", progress=False)
    return tmp, params


def _arrays(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    out = {}
    for name, a in g.members(max_depth=None):
        if isinstance(a, zarr.Array):
            out[name] = a[:]
    return out


def assert_same_arrays(a: Path, b: Path) -> list[str]:
    x, y = _arrays(a), _arrays(b)
    assert sorted(x) == sorted(y)
    for name in x:
        assert x[name].dtype == y[name].dtype and np.array_equal(x[name], y[name]), name  # bit for bit (no NaNs here)
    return sorted(x)


def test_two_processes_match_one_and_a_killed_run_resumes_only_the_missing_samples(setup):
    tmp, _ = setup
    # one launch: collect on 2 processes, then reference with rank 1 dying on its second batch
    r = launch(tmp, "collect params.yaml cal.json traj2.zarr", "reference params.yaml eval.json ref2.zarr", PCR_TEST_FAIL_AFTER="1",
               PCR_TEST_LOG=str(tmp / "run1"))
    assert r.returncode != 0, r.stdout + r.stderr

    names = assert_same_arrays(tmp / "traj1.zarr", tmp / "traj2.zarr")
    assert {"x", "model_output", "stats/min", "stats/max", "stats/ema_min", "stats/ema_max", "stats/hist"} <= set(names)
    assert open_store(tmp / "traj2.zarr", "trajectories").attrs["complete"] is True

    # the killed run left a partial store with holes, and no store at the declared path
    assert not (tmp / "ref2.zarr").exists()
    with pytest.raises(StoreError, match="interrupted run"):
        open_store(tmp / "ref2.zarr", "reference")
    partial = zarr.open_group(str(partial_path(tmp / "ref2.zarr")), mode="r")
    missing = sorted(i for name in ("standard", "paraphrase") for i in np.flatnonzero(~partial[f"done/{name}"][:]))
    assert 0 < len(missing) < 8

    r = launch(tmp, "reference params.yaml eval.json ref2.zarr", PCR_TEST_LOG=str(tmp / "run2"))
    errors = [line for line in (r.stdout + r.stderr).splitlines() if "error:" in line]
    assert r.returncode == 0, "\n".join(errors) + r.stdout[-2000:] + r.stderr[-2000:]
    seeds = [s - 1000 for rank in (0, 1) if Path(f"{tmp}/run2.{rank}").exists()
             for line in Path(f"{tmp}/run2.{rank}").read_text().splitlines() for s in json.loads(line)]
    assert sorted(seeds) == missing  # only the unfinished samples were computed
    assert all(Path(f"{tmp}/run2.{rank}").exists() for rank in (0, 1)) or len(missing) == 1  # shared out again
    assert_same_arrays(tmp / "ref1.zarr", tmp / "ref2.zarr")  # images/<set>, done/<set>: as one process made them


def test_a_store_with_holes_is_never_scored(setup):
    tmp, params = setup
    gen = tmp / "gen_holes.zarr"
    shutil.copytree(tmp / "ref1.zarr", gen)
    g = zarr.open_group(str(gen), mode="r+")
    g.attrs["kind"] = "generated"
    done = g["done/standard"]  # the first set score reads
    done[2:3] = np.zeros(1, dtype=bool)  # one chunk never finished, though the store says complete
    with pytest.raises(StoreError, match="1 unfinished samples"):
        score(params, tmp / "ref1.zarr", gen, tmp / "traj1.zarr", tmp / "none.zarr", tmp / "m.json", tmp / "plots")
    assert not (tmp / "m.json").exists()
