"""Every stage reads exactly the param keys dvc.yaml lists for it: each stage script runs in-process on the
tiny model with params that record every key read (asdict and replace read keys too, as they should: a key
that reaches a store's attrs or fingerprint is a key the stage depends on)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from depgraph import ROOT
from scripts import load_script
from tiny_models import build_tiny_clip

from pcr.config import Params, calibration_prompts, eval_prompt_sets

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
ORDER = ["collect", "weights", "reference", "calibrate", "sensitivity", "relax", "export", "generate", "grid", "score"]  # env validates every key


def traced(section, prefix: str, log: set[str]):
    """`section` (a frozen config dataclass, nested ones too) as an instance that logs each leaf key it is read."""
    fields = {f.name for f in dataclasses.fields(section)}

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        if name in fields and not dataclasses.is_dataclass(value):
            log.add(f"{prefix}.{name}")
        return value

    cls = type(type(section).__name__, (type(section),), {"__getattribute__": getattribute})
    obj = object.__new__(cls)
    for f in dataclasses.fields(section):
        v = object.__getattribute__(section, f.name)
        object.__setattr__(obj, f.name, traced(v, f"{prefix}.{f.name}", log) if dataclasses.is_dataclass(v) else v)
    return obj


def traced_params(params: Params, log: set[str]) -> Params:
    return Params(**{f.name: traced(getattr(params, f.name), f.name, log) for f in dataclasses.fields(params)})


def _stage_main(name: str):
    return load_script(f"stages/{name}.py")


def test_each_stage_reads_exactly_its_listed_keys(tmp_path, tiny_sd_dir, small_params, monkeypatch):
    build_tiny_clip(tmp_path / "clip")
    recon = {"iterations": 1, "batch_size": 2, "num_samples": 1, "num_steps": 1}  # adaround: the weights stage reads quant.recon.*
    params = small_params(tiny_sd_dir, model={"steps": 3}, relax={"fraction": 0.34, "where": "auto"},
                          quant={"weight_observer": "minmax", "act_observer": "minmax", "weight_method": "adaround", "recon": recon},
                          score={"feature_path": str(tmp_path / "clip"), "clip_path": str(tmp_path / "clip"), "kid_subset_size": 2})
    o = tmp_path / "outputs"
    o.mkdir()
    (o / "cal.json").write_text(json.dumps(calibration_prompts(params)))
    (o / "eval.json").write_text(json.dumps(eval_prompt_sets(params)))
    (o / "relax_calibration.json").write_text(json.dumps({"recalibrate": False}))
    argv = {
        "collect": [o / "cal.json", o / "traj.zarr"],
        "weights": [o / "traj.zarr", o / "weights.safetensors", o / "weights_loss.csv"],
        "reference": [o / "eval.json", o / "ref.zarr"],
        "calibrate": [o / "relax_calibration.json", o / "traj.zarr", o / "weights.safetensors", o / "calib.zarr", o / "q.safetensors", o / "q.json", o / "activations.zarr"],
        "sensitivity": [o / "traj.zarr", o / "calib.zarr", o / "q.safetensors", o / "q.json", o / "sensitivity.csv"],
        "relax": [o / "q.json", o / "sensitivity.csv", o / "schedule.json", o / "bits.csv"],
        "export": [o / "q.safetensors", o / "q.json", o / "calib.zarr", o / "schedule.json", o / "quantized"],
        "generate": [o / "quantized", o / "ref.zarr", o / "gen.zarr"],
        "grid": [o / "ref.zarr", o / "gen.zarr", o / "grid.png"],
        "score": [o / "ref.zarr", o / "gen.zarr", o / "traj.zarr", o / "calib.zarr", o / "metrics.json", o / "plots", o / "samples"],
    }
    read = {}
    for stage in ORDER:
        log: set[str] = set()
        module = _stage_main(stage)
        monkeypatch.setattr(module, "load_params", lambda _path, log=log: traced_params(params, log))
        module.main(["params.yaml", *map(str, argv[stage])])
        read[stage] = log
    assert (o / "metrics.json").is_file() and (o / "grid.png").is_file()
    for stage in ORDER:
        listed = set(DVC[stage]["params"])
        assert read[stage] == listed, f"{stage}: read but not listed {sorted(read[stage] - listed)}, listed but not read {sorted(listed - read[stage])}"


@pytest.mark.parametrize("stage", ORDER)
def test_env_reads_the_prompt_keys_no_other_stage_reads(stage):
    assert not {"collect.prompts", "collect.num_prompts", "eval.prompts", "eval.paraphrase_prompts", "eval.num_prompts"} & set(DVC[stage]["params"])
