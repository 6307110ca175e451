"""The calibrate stage: its stores, resuming after a kill, and never passing off a partial store."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file

from pcr.calibrate import run as run_mod
from pcr.calibrate.run import calibrate
from pcr.collect import collect
from pcr.errors import ConfigError
from pcr.quant.affine import dequantize
from pcr.quant.qmap import FORMAT_VERSION
from pcr.stores import StoreError, open_store, partial_path


class Killed(Exception):
    pass


@pytest.fixture
def setup(tmp_path, tiny_sd_dir, small_params):
    params = small_params(tiny_sd_dir, model={"scheduler": "pndm", "steps": 5})
    collect(params, tmp_path / "traj.zarr", progress=False)
    return params, tmp_path


def _outs(tmp_path, tag):
    return [tmp_path / "traj.zarr", tmp_path / f"{tag}.zarr", tmp_path / f"{tag}.safetensors", tmp_path / f"{tag}.json",
            tmp_path / f"{tag}_activations.zarr"]


def test_calib_store_layout(setup):
    params, tmp = setup
    calibrate(params, *_outs(tmp, "c"), progress=False)
    g = zarr.open_group(str(tmp / "c.zarr"), mode="r")  # plain zarr opens it
    T = g.attrs["num_steps"]
    assert g.attrs["complete"] is True and g.attrs["steps_done"] == T
    assert g["x"].shape[:2] == (T + 1, 5) and g["x"].metadata.dimension_names == ("state", "sample", "channel", "height", "width")
    assert g["model_output"].shape[:2] == (T, 5) and g["model_output"].metadata.dimension_names[0] == "step"
    assert g["stats/max"].shape == (T, len(g.attrs["layers"]))
    assert "activations" not in g  # the inspection dumps have their own store
    dumps = zarr.open_group(str(tmp / "c_activations.zarr"), mode="r")
    assert dumps.attrs["complete"] is True and dumps.attrs["kind"] == "activations"
    act = dumps["activations/down_blocks.0.resnets.0.conv1"]
    assert act.dtype == np.uint8 and act.shape[:2] == (T, 2)
    layer = "down_blocks.0.resnets.0.conv1"
    assert act.metadata.dimension_names == ("step", "capture", f"{layer}.channel", f"{layer}.height", f"{layer}.width")
    # integer codes + per-step scale / zero point give back activations inside that step's range
    k = 1
    x_hat = dequantize(torch.from_numpy(act[k]), torch.tensor(act.attrs["scale"][k]),
                       torch.tensor(act.attrs["zero_point"][k]))
    idx = g.attrs["layers"].index("down_blocks.0.resnets.0.conv1")
    assert float(x_hat.min()) >= g["stats/min"][k, idx] - act.attrs["scale"][k]
    assert float(x_hat.max()) <= g["stats/max"][k, idx] + act.attrs["scale"][k]
    assert json.loads((tmp / "c.json").read_text())["format_version"] == FORMAT_VERSION


def test_inspection_dumps_leave_calibration_outputs_identical(setup):
    params, tmp = setup
    calibrate(params, *_outs(tmp, "a"), progress=False)
    other = dataclasses.replace(params, calibrate=dataclasses.replace(
        params.calibrate, store=dataclasses.replace(params.calibrate.store, samples=1)))
    calibrate(other, *_outs(tmp, "b"), progress=False)
    assert (tmp / "a.safetensors").read_bytes() == (tmp / "b.safetensors").read_bytes()
    a, b = zarr.open_group(str(tmp / "a.zarr"), mode="r"), zarr.open_group(str(tmp / "b.zarr"), mode="r")
    assert dict(a.attrs) == dict(b.attrs)
    for name in ("x", "model_output", "stats/min", "stats/max"):
        assert np.array_equal(a[name][:], b[name][:]), name
    assert zarr.open_group(str(tmp / "b_activations.zarr"), mode="r")["activations/down_blocks.0.resnets.0.conv1"].shape[1] == 1


def test_killed_run_resumes_from_last_finished_step_and_matches(setup, monkeypatch):
    params, tmp = setup
    calibrate(params, *_outs(tmp, "full"), progress=False)

    original = run_mod.write_stats
    calls = {"n": 0}

    def dying_write_stats(store, k, arrays):
        calls["n"] += 1
        if k == 3:
            raise Killed  # dies while writing step 3: steps 0-2 are finished
        original(store, k, arrays)

    monkeypatch.setattr(run_mod, "write_stats", dying_write_stats)
    with pytest.raises(Killed):
        calibrate(params, *_outs(tmp, "resumed"), progress=False)
    assert not (tmp / "resumed.zarr").exists() and not (tmp / "resumed.safetensors").exists()
    with pytest.raises(StoreError, match="does not exist.*interrupted run"):
        open_store(tmp / "resumed.zarr", "calibration")
    assert zarr.open_group(str(partial_path(tmp / "resumed.zarr")), mode="r").attrs["steps_done"] == 3

    resumed_steps = []
    monkeypatch.setattr(run_mod, "write_stats", lambda store, k, arrays: (resumed_steps.append(k), original(store, k, arrays)))
    calibrate(params, *_outs(tmp, "resumed"), progress=False)
    T = open_store(tmp / "full.zarr", "calibration").attrs["num_steps"]
    assert resumed_steps == list(range(3, T))  # only the unfinished steps ran
    a, b = open_store(tmp / "full.zarr", "calibration"), open_store(tmp / "resumed.zarr", "calibration")
    np.testing.assert_array_equal(a["x"][:], b["x"][:])
    np.testing.assert_array_equal(a["stats/max"][:], b["stats/max"][:])
    full, resumed = load_file(tmp / "full.safetensors"), load_file(tmp / "resumed.safetensors")
    assert full.keys() == resumed.keys()
    differ = [k for k in full if not torch.equal(full[k], resumed[k])]
    assert not differ, [(k, full[k].flatten()[:4], resumed[k].flatten()[:4]) for k in differ[:3]]
    assert not partial_path(tmp / "resumed.zarr").exists()


def test_changed_params_do_not_resume_a_stale_partial_store(setup, small_params, tiny_sd_dir, monkeypatch):
    params, tmp = setup
    monkeypatch.setattr(run_mod, "write_stats", lambda *a: (_ for _ in ()).throw(Killed))
    with pytest.raises(Killed):
        calibrate(params, *_outs(tmp, "c"), progress=False)
    monkeypatch.undo()
    other = small_params(tiny_sd_dir, model={"scheduler": "pndm", "steps": 5}, quant={"act_bits": 6})
    calibrate(other, *_outs(tmp, "c"), progress=False)
    assert open_store(tmp / "c.zarr", "calibration").attrs["act_bits"] == 6


@pytest.mark.parametrize("mode", ["progressive", "fp32", "shared"])
def test_every_mode_calibrates_on_every_collected_prompt(setup, mode):
    """A cross-attention key projection reads the text encoder's hidden states, which no UNet quantization
    touches: its input statistics in any mode equal collect's FP32 ones only if the mode saw every prompt."""
    params, tmp = setup
    params = dataclasses.replace(params, calibrate=dataclasses.replace(params.calibrate, mode=mode))
    calibrate(params, *_outs(tmp, mode), progress=False)
    traj, calib = open_store(tmp / "traj.zarr", "trajectories"), open_store(tmp / f"{mode}.zarr", "calibration")
    assert calib.attrs["num_prompts"] == traj["x"].shape[1] == calib["x"].shape[1]
    names, fp32_names = calib.attrs["layers"], traj.attrs["layers"]
    keys = [n for n in names if n.endswith("attn2.to_k")]
    assert keys
    for stat in ("min", "max"):
        got = calib[f"stats/{stat}"][:, [names.index(n) for n in keys]]
        want = traj[f"stats/{stat}"][:, [fp32_names.index(n) for n in keys]]
        if mode == "shared":  # one set over all steps: the union range
            want = want.min(0, keepdims=True) if stat == "min" else want.max(0, keepdims=True)
        np.testing.assert_array_equal(got, np.broadcast_to(want, got.shape))


def test_store_layer_pattern_matching_no_quantized_layer_is_refused_by_name(setup, small_params, tiny_sd_dir):
    _, tmp = setup
    # conv_in is a Conv2d of the UNet, but kept in float (quant.keep_float): no quantized layer has that name
    params = small_params(tiny_sd_dir, model={"scheduler": "pndm", "steps": 5},
                          calibrate={"store": {"layers": ["*.attn1.to_q", "conv_in"], "samples": 1}})
    with pytest.raises(ConfigError, match=r"calibrate.store.layers pattern 'conv_in' matches no quantized layer"):
        calibrate(params, *_outs(tmp, "c"), progress=False)
    assert not (tmp / "c.zarr").exists() and not partial_path(tmp / "c.zarr").exists()


@pytest.mark.parametrize("mode", ["progressive", "fp32"])
def test_fitted_output_correction_is_in_the_quantized_model_and_reproduces_calibration(setup, mode):
    """The sweep corrects each step's output after the UNet call; the saved state must hold that correction in
    the model: the reloaded quantized UNet, run at each step on the stored x̂_k, gives the stored corrected ε̂_k
    and x̂_{k+1} (to float rounding: the sweep corrects the guided output, the model each CFG branch)."""
    from pcr.models.conditioning import select
    from pcr.quant.correction import StepAffineConv2d
    from pcr.quant.serialize import load_quant_state
    from pcr.sampling import load_sampler

    params, tmp = setup
    params = dataclasses.replace(params, calibrate=dataclasses.replace(params.calibrate, mode=mode, objective="affine"))
    calibrate(params, *_outs(tmp, "aff"), progress=False)
    calib, traj = open_store(tmp / "aff.zarr", "calibration"), open_store(tmp / "traj.zarr", "trajectories")
    gain = calib["correction/gain"][:]
    assert calib["correction/gain"].metadata.dimension_names == ("step", "channel")
    assert not np.allclose(gain, 1.0)  # fitted, not left at the identity

    _, sampler = load_sampler(params.model)
    load_quant_state(sampler.unet, tmp / "aff.safetensors", tmp / "aff.json")
    assert isinstance(sampler.unet.conv_out, StepAffineConv2d)
    np.testing.assert_array_equal(sampler.unet.conv_out.out_gain.numpy(), gain)
    cond = {k: torch.from_numpy(traj[f"cond/{k}"][:]) for k in traj["cond"].array_keys()}
    b = slice(0, params.calibrate.batch_size)  # the sweep's first batch: same batch, same float sums
    sched = sampler.new_scheduler()
    for k in range(sampler.num_steps):  # each step from the stored x̂_k: layers before the output see the same input
        x = torch.from_numpy(calib["x"][k][b])  # bit for bit, so no rounding flip can grow over later steps
        eps = sampler.eps(x, k, select(cond, b), sched)
        np.testing.assert_allclose(eps.numpy(), calib["model_output"][k][b], atol=1e-5, rtol=0)
        np.testing.assert_allclose(sampler.step(sched, eps, k, x).numpy(), calib["x"][k + 1][b], atol=1e-5, rtol=0)


def test_killed_run_with_output_correction_resumes_with_the_fitted_rows(setup, monkeypatch):
    params, tmp = setup
    params = dataclasses.replace(params, calibrate=dataclasses.replace(params.calibrate, objective="affine"))
    calibrate(params, *_outs(tmp, "full"), progress=False)
    original = run_mod.write_stats
    monkeypatch.setattr(run_mod, "write_stats", lambda store, k, a: (_ for _ in ()).throw(Killed) if k == 2 else original(store, k, a))
    with pytest.raises(Killed):
        calibrate(params, *_outs(tmp, "resumed"), progress=False)
    monkeypatch.undo()
    calibrate(params, *_outs(tmp, "resumed"), progress=False)
    a, b = open_store(tmp / "full.zarr", "calibration"), open_store(tmp / "resumed.zarr", "calibration")
    for name in ("x", "correction/gain", "correction/shift"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    full, resumed = load_file(tmp / "full.safetensors"), load_file(tmp / "resumed.safetensors")
    assert torch.equal(full["conv_out.out_gain"], resumed["conv_out.out_gain"])


def test_histograms_are_recorded_only_where_the_observer_reads_them(setup):
    params, tmp = setup

    def run(tag, act_bits, min_bits):
        p = dataclasses.replace(params, quant=dataclasses.replace(params.quant, act_observer="auto", act_bits=act_bits))
        calibrate(p, *_outs(tmp, tag), progress=False, relax={"recalibrate": False, "min_bits": min_bits})
        return zarr.open_group(str(tmp / f"{tag}.zarr"), mode="r"), load_file(tmp / f"{tag}.safetensors")

    g8, q8 = run("a8", 8, 8)  # auto at 8 bits and above: min/max ranges, no histogram
    g8h, q8h = run("a8_relax6", 8, 6)  # the relax stage will ask for 6-bit ranges: MSE, histograms
    g4, _ = run("a4", 4, 4)
    assert "hist" not in g8["stats"] and "hist" in g8h["stats"] and "hist" in g4["stats"]
    assert float(g4["stats/hist"][0].sum()) > 0
    assert q8.keys() == q8h.keys() and all(torch.equal(q8[k], q8h[k]) for k in q8)  # skipping them changes no parameter
    np.testing.assert_array_equal(g8["x"][:], g8h["x"][:])
