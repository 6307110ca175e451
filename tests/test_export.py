"""export: the artifact's relaxed steps carry the relaxed bits and the ranges the observer derives from calib stats."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

import pcr
from pcr.calibrate.run import calibrate
from pcr.collect import collect
from pcr.errors import StoreError
from pcr.export import export
from pcr.quant import get_observer, qmodules
from pcr.quant.affine import params_from_range
from pcr.relax import relax
from pcr.stats.record import unstack_stats
from pcr.stores import open_store, read_stats


@pytest.fixture
def calibrated(tmp_path, tiny_sd_dir, small_params):
    params = small_params(tiny_sd_dir, model={"steps": 4}, relax={"fraction": 0.5, "where": "x0", "bits": 10})
    t = tmp_path
    collect(params, t / "traj.zarr", progress=False)
    calibrate(params, t / "traj.zarr", t / "calib.zarr", t / "q.safetensors", t / "q.json", t / "act.zarr", progress=False)
    return params, t


def test_relaxed_steps_get_relaxed_bits_and_ranges_from_the_statistics(calibrated):
    params, t = calibrated
    relax(params.relax, t / "q.json", t / "schedule.json")
    export(params, t / "q.safetensors", t / "q.json", t / "calib.zarr", t / "schedule.json", t / "quantized")
    unet = pcr.load_quantized(t / "quantized")
    calib = open_store(t / "calib.zarr", "calibration")
    observer = get_observer(params.quant.act_observer)
    names = calib.attrs["layers"]
    for k in range(4):
        stats = unstack_stats(read_stats(calib, k), names)
        for name, q in list(qmodules(unet).items())[:10]:
            aq = q.input_quant
            bits = 10 if k >= 2 else 8  # x0: the last half of the steps
            assert int(aq.bits[k]) == bits, (name, k)
            lo, hi = observer.activation_range(stats[name], bits, aq.symmetric)
            scale, zero_point = params_from_range(lo, hi, bits, aq.symmetric)  # independent of export's code path
            assert torch.equal(aq.scale[k : k + 1], scale.reshape(1)) and int(aq.zero_point[k]) == int(zero_point), (name, k)


def test_a_schedule_of_another_length_is_refused(calibrated):
    params, t = calibrated
    other = dataclasses.replace(params, model=dataclasses.replace(params.model, steps=3))
    relax(params.relax, t / "q.json", t / "schedule.json")
    with pytest.raises(StoreError, match="model.steps=3 gives 3 steps, the calibration has 4"):
        export(other, t / "q.safetensors", t / "q.json", t / "calib.zarr", t / "schedule.json", t / "quantized")
    assert not (t / "quantized").exists()


def test_recalibrated_relaxed_steps_are_kept_and_later_steps_see_the_relaxed_prefix(calibrated):
    """relax.recalibrate (the official loop): calibrate runs the relaxed steps at their bits in the sweep."""
    from pcr.env import relax_calibration

    params, t = calibrated
    r = dataclasses.replace(params.relax, where="xT", recalibrate=True)
    params = dataclasses.replace(params, relax=r)
    spec = relax_calibration(params)
    assert spec == {"recalibrate": True, "fraction": 0.5, "where": "xT", "bits": 10, "min_bits": 8}
    calibrate(params, t / "traj.zarr", t / "re.zarr", t / "re.safetensors", t / "re.json", t / "re_act.zarr", progress=False,
              relax=spec)
    before, after = open_store(t / "calib.zarr", "calibration"), open_store(t / "re.zarr", "calibration")
    assert not (before["x"][3] == after["x"][3]).all()  # steps 2, 3 ran after a 10-bit prefix
    relax(r, t / "re.json", t / "schedule.json")
    export(params, t / "re.safetensors", t / "re.json", t / "re.zarr", t / "schedule.json", t / "quantized")
    raw = load_file(t / "re.safetensors")  # the calibration state itself
    for name, q in list(qmodules(pcr.load_quantized(t / "quantized")).items())[:10]:
        aq = q.input_quant
        assert aq.bits.tolist() == [10, 10, 8, 8]
        assert torch.equal(aq.scale, raw[f"{name}.input_quant.scale"])  # export kept what the sweep calibrated


def test_recalibrate_is_refused_with_auto():
    from pcr.config import ConfigError, RelaxConfig

    with pytest.raises(ConfigError, match="relax.recalibrate=true needs relax.where x0 or xT"):
        RelaxConfig(where="auto", recalibrate=True)
