"""quant.format fp8 through the same calibration sweep: per-step E4M3 scales from each step's observed range."""

import pytest
import torch

from pcr.calibrate.run import prepare
from pcr.calibrate.sweep import sweep
from pcr.collect import collect
from pcr.quant.float8 import E4M3, E4M3_MAX
from pcr.stores import open_store


@pytest.mark.parametrize("mode", ["progressive", "fp32"])
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
