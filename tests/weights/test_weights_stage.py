"""The weights stage: its file, exactly the params it reads, and resuming after a kill."""

import csv
import dataclasses
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from pcr.collect import collect
from pcr.models.load import load_pipeline
from pcr.quant.quantize import select_layers
from pcr.weights import run as run_mod
from pcr.weights.codes import load_weights, read_metadata
from pcr.weights.rtn import rtn
from pcr.weights.run import settings, weights

ROOT = Path(__file__).resolve().parents[2]
RECON = {"iterations": 4, "batch_size": 4, "num_samples": 3, "num_steps": 2}


class Killed(Exception):
    pass


@pytest.fixture
def setup(tmp_path, tiny_sd_dir, small_params):
    params = small_params(tiny_sd_dir, model={"steps": 3}, quant={"weight_bits": 4, "weight_method": "adaround", "recon": RECON})
    collect(params, tmp_path / "traj.zarr", progress=False)
    return params, tmp_path


def _run(params, tmp, tag):
    out, losses = tmp / f"{tag}.safetensors", tmp / f"{tag}.csv"
    weights(params, tmp / "traj.zarr", out, losses, progress=False)
    return load_weights(out), list(csv.DictReader(open(losses)))


def test_a_killed_run_resumes_with_the_next_unit_and_matches_an_uninterrupted_one(setup, monkeypatch):
    params, tmp = setup
    whole, rows = _run(params, tmp, "whole")
    real, calls, killed = run_mod.reconstruct_unit, [], []

    def dies_after_the_first_unit(*args, **kwargs):
        calls.append(args[1].module)
        if len(calls) == 2 and not killed:
            killed.append(True)
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "reconstruct_unit", dies_after_the_first_unit)
    with pytest.raises(Killed):
        weights(params, tmp / "traj.zarr", tmp / "w.safetensors", tmp / "w.csv", progress=False)
    assert not (tmp / "w.safetensors").exists() and (tmp / "w.safetensors.partial" / "0000.safetensors").exists()
    first = calls[0]
    calls.clear()
    resumed, resumed_rows = _run(params, tmp, "w")
    assert first not in calls and len(calls) == len(rows) - 1  # the finished unit is not learned again
    assert not (tmp / "w.safetensors.partial").exists()
    assert set(resumed) == set(whole)
    for name in whole:
        assert torch.equal(resumed[name].codes, whole[name].codes) and torch.equal(resumed[name].scale, whole[name].scale)
    assert [r["unit"] for r in resumed_rows] == [r["unit"] for r in rows]
    assert {r["kind"] for r in rows} == {"block", "layer"} and all(float(r["mse_adaround"]) >= 0 for r in rows)


def test_rtn_writes_round_to_nearest_codes_of_every_chosen_layer(setup):
    params, tmp = setup
    params = replace(params, quant=replace(params.quant, weight_method="rtn"))
    codes, rows = _run(params, tmp, "rtn")
    meta = read_metadata(tmp / "rtn.safetensors")
    assert meta["method"] == "rtn" and meta["settings"] == settings(params) and rows == []
    unet = load_pipeline(params.model.path, scheduler="ddim", dtype=torch.float32, device="cpu").unet
    q = params.quant
    names = select_layers(unet, q.include, q.exclude, q.keep_float)
    assert sorted(codes) == sorted(names)
    for n in names[:5]:
        ref = rtn(unet.get_submodule(n).weight, 4, False, q.weight_observer)
        assert torch.equal(codes[n].codes, ref.codes) and codes[n].codes.dtype == torch.uint8


def test_dvc_lists_exactly_the_quant_keys_the_weights_depend_on(setup):
    params, _ = setup
    listed = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["weights"]["params"]
    recon = dataclasses.replace(params, quant=dataclasses.replace(params.quant, weight_method="adaround"))
    keys = {f"quant.{k}" for k in settings(recon) if k != "recon"} | {f"quant.recon.{f.name}" for f in dataclasses.fields(params.quant.recon)}
    assert sorted(keys) == sorted(p for p in listed if p.startswith("quant."))
    assert "quant.act_bits" not in listed and "quant" not in listed


def test_fp8_rtn_writes_e4m3_codes_that_calibrate_loads(setup):
    from pcr.calibrate.run import use_weights
    from pcr.quant import qmodules, quantize_model
    from pcr.quant.float8 import E4M3

    params, tmp = setup
    params = replace(params, quant=replace(params.quant, weight_method="rtn", weight_bits=8, format="fp8"))
    codes, _ = _run(params, tmp, "fp8")
    assert read_metadata(tmp / "fp8.safetensors")["settings"]["format"] == "fp8"
    assert all(w.codes.dtype == E4M3 and w.format == "fp8" and not w.zero_point.any() for w in codes.values())
    unet = load_pipeline(params.model.path, scheduler="ddim", dtype=torch.float32, device="cpu").unet
    name = next(iter(codes))
    w = unet.get_submodule(name).weight.detach()
    ref = (w / codes[name].scale.reshape(-1, *[1] * (w.dim() - 1))).clamp(-448, 448).to(E4M3)
    assert torch.equal(codes[name].codes.view(torch.uint8), ref.view(torch.uint8))
    quantize_model(unet, params.quant, [999.0, 500.0, 1.0])  # the layers the calibrate stage builds take the codes as stored
    use_weights(qmodules(unet), tmp / "fp8.safetensors")
    assert torch.equal(unet.get_submodule(name).weight_codes.view(torch.uint8), codes[name].codes.view(torch.uint8))
