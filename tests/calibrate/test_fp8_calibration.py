"""quant.format fp8 through the same calibration sweep: per-step E4M3 scales from each step's observed range."""

import pytest
import torch

from pcr.calibrate.run import prepare
from pcr.calibrate.sweep import sweep
from pcr.collect import collect
from pcr.quant.float8 import E4M3, E4M3_MAX
from pcr.stores import open_store


@pytest.mark.parametrize("mode", ["progressive"])
def test_fp8_calibration_fits_a_scale_per_step_from_the_observed_range(tmp_path, tiny_sd_dir, small_params, mode):
    params = small_params(tiny_sd_dir, quant={"format": "fp8", "weight_observer": "minmax"})
    collect(params, tmp_path / "traj.zarr", progress=False)
    traj = open_store(tmp_path / "traj.zarr", "trajectories")
    _, qmap, cal = prepare(params, traj)
    steps = {}
    sweep(cal, mode, torch.from_numpy(traj["x"][0]), progress=False, on_step=lambda r: steps.setdefault(r.k, r))
    assert {spec.format for spec in qmap.layers.values()} == {"fp8"}
    for name, q in cal.qlayers.items():
        assert q.weight_codes.dtype == E4M3
        aq = q.input_quant
        assert bool(aq.calibrated.all()) and not aq.zero_point.any()
        for k, r in steps.items():
            amax = max(-float(r.stats[name].min), float(r.stats[name].max), 0.0)
            assert float(aq.scale[k]) == pytest.approx(amax / E4M3_MAX, rel=1e-6), (name, k)
    scales = torch.stack([q.input_quant.scale for q in cal.qlayers.values()])  # [L, T]
    assert not torch.all(scales == scales[:, :1])  # one scale per step, not one for all


def test_fp8_through_calibrate_relax_and_export_to_an_artifact_on_fp8_kernels(tmp_path, tiny_sd_dir, small_params):
    import json

    import zarr
    from safetensors.torch import load_file

    from pcr.calibrate.run import calibrate

    params = small_params(tiny_sd_dir, quant={"format": "fp8", "weight_observer": "minmax"})
    collect(params, tmp_path / "traj.zarr", progress=False)
    outs = [tmp_path / n for n in ("c.zarr", "q.safetensors", "q.json", "act.zarr")]
    calibrate(params, tmp_path / "traj.zarr", *outs, progress=False)
    assert {v["format"] for v in json.loads(outs[2].read_text())["layers"].values()} == {"fp8"}
    assert load_file(str(outs[1]))["down_blocks.0.resnets.0.conv1.weight_codes"].dtype == E4M3
    dumps = zarr.open_group(str(outs[3]), mode="r")
    assert dumps.attrs["complete"] is True and "activations" not in dumps  # integer-code dumps: none for E4M3 inputs

    import pcr
    from pcr.config import RelaxConfig
    from pcr.export import export
    from pcr.quant import qmodules
    from pcr.relax import relax

    schedule = relax(RelaxConfig(fraction=0.34, where="x0"), outs[2], tmp_path / "schedule.json")
    export(params, outs[1], outs[2], outs[0], tmp_path / "schedule.json", tmp_path / "quantized")
    pipe = pcr.load_pipeline(tiny_sd_dir, tmp_path / "quantized", kernels="fp8")
    layers = qmodules(pipe.unet)
    assert pipe.unet.pcr_kernels["fp8"] == len(layers) and not pipe.unet.pcr_kernels["fallback"]
    aq = next(iter(layers.values())).input_quant
    assert aq.bits.tolist() == list(schedule.bits) and max(schedule.bits) > 8  # relaxed steps: unquantized in fp8
