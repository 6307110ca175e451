"""Per-step sensitivity: the ranking on a constructed case, and the auto schedule built from it."""

import numpy as np
import pytest
import torch

from pcr.calibrate.run import prepare
from pcr.calibrate.sweep import sweep
from pcr.collect import collect
from pcr.config import RelaxConfig
from pcr.errors import StoreError
from pcr.relax import SENSITIVITY_COLUMNS, Sensitivity, make_schedule, relax
from pcr.sensitivity import measure
from pcr.stores import open_store

ACT_BITS, INFLATE = 8, 64


@pytest.fixture
def calibrated(tmp_path, tiny_sd_dir, small_params):
    """A tiny SD calibrated in fp32 mode at A8; `inflate`: step k's ranges widened 64x (a step that 8 bits wreck)."""
    params = small_params(tiny_sd_dir, model={"steps": 5}, quant={"act_bits": ACT_BITS},
                          calibrate={"objective": "ranges"})  # the ranking of ranges, without the output correction
    collect(params, tmp_path / "traj.zarr", progress=False)
    traj = open_store(tmp_path / "traj.zarr", "trajectories")

    def run(inflate: int | None = None):
        _, _, cal = prepare(params, traj)
        fp32_stats = cal.starting_stats

        def stats(k):
            st = fp32_stats(k)
            if k == inflate:
                for s in st.values():
                    s.min, s.max = s.min * INFLATE, s.max * INFLATE
            return st

        cal.starting_stats = stats
        xs, outs = {}, {}
        x_T = torch.from_numpy(traj["x"][0])
        xs[0] = x_T

        def keep(r):
            xs[r.k + 1], outs[r.k] = r.x_next, r.eps

        sweep(cal, "fp32", x_T, on_step=keep, progress=False)
        return measure(cal.sampler, cal.qlayers, cal.observer, cal.cond, xs.__getitem__, outs.__getitem__, stats,
                       torch.from_numpy(traj["x"][-1]), 10, progress=False)

    return run


def test_ranking_finds_the_step_whose_ranges_make_base_bits_fail(calibrated):
    plain = calibrated()
    assert plain.bits == 10 and plain.samples == 5 and plain.gain_db.max() > 0
    # the least sensitive step of the plain model but the last (whose ε error hardly reaches x_0: √(1-ᾱ) ≈ 0) ...
    k_star = int(np.argmin(plain.gain_db[:-1]))
    hurt = calibrated(inflate=k_star)  # ... made the most sensitive: 64x wider ranges leave 8 bits about 2
    assert hurt.sensitive()[0] == k_star, (plain.gain_db, hurt.gain_db, hurt.stderr_db)
    assert hurt.choose(1) == (k_star,)
    assert hurt.gain_db[k_star] > plain.gain_db[k_star] + 3  # dB


def test_auto_schedule_takes_significant_steps_then_the_x0_end(tmp_path):
    gain, err = np.array([0.1, 3.0, 0.05, 2.0, 0.2, 0.4]), np.array([0.1, 0.5, 0.1, 0.6, 0.1, 0.3])
    sens = Sensitivity(np.arange(6.0), gain, err, samples=8, bits=10)
    sens.save(tmp_path / "s.csv")
    back = Sensitivity.load(tmp_path / "s.csv")
    np.testing.assert_allclose(back.gain_db, gain)
    assert back.sensitive() == [1, 3]  # 3.0 ± 0.5 and 2.0 ± 0.5; 0.1 ± 0.1, 0.4 ± 0.3 ... are within noise
    assert make_schedule(RelaxConfig(fraction=1 / 6, where="auto", bits=10), 6, 8, back).relaxed_steps == (1,)
    s = make_schedule(RelaxConfig(fraction=0.5, where="auto", bits=10), 6, 8, back)
    assert s.relaxed_steps == (1, 3, 5) and s.bits == (8, 10, 8, 10, 8, 10)  # the third from the x0 end
    assert s.sensitivity == pytest.approx(tuple(gain))
    with pytest.raises(StoreError, match="needs the sensitivity of all 7 steps, got 6 steps"):
        make_schedule(RelaxConfig(fraction=0.4, where="auto"), 7, 8, back)


def _qconfig(tmp_path):
    from pcr.quant.quantize import LayerQuant, QuantMap

    QuantMap(5, "mse", "minmax", {"a": LayerQuant("QLinear", 8, False, 8, False)}).save(tmp_path / "q.json")
    return tmp_path / "q.json"


def test_relax_refuses_a_sensitivity_measured_at_other_bits(tmp_path):
    _qconfig(tmp_path)
    Sensitivity(np.arange(5.0), np.ones(5), np.ones(5), samples=4, bits=10).save(tmp_path / "s.csv")
    with pytest.raises(StoreError, match="at 10 bits, relax.bits=12"):
        relax(RelaxConfig(fraction=0.2, where="auto", bits=12), tmp_path / "q.json", tmp_path / "out.json", tmp_path / "s.csv")
    assert not (tmp_path / "out.json").exists()
    relax(RelaxConfig(fraction=0.2, where="auto", bits=10), tmp_path / "q.json", tmp_path / "out.json", tmp_path / "s.csv",
          tmp_path / "bits.csv")
    assert (tmp_path / "bits.csv").read_text().splitlines() == ["step,act_bits", "0,8", "1,8", "2,8", "3,8", "4,10"]




def test_sensitivity_is_measured_for_auto_only(tmp_path):
    from pcr.config import Params
    from pcr.sensitivity import sensitivity_stage

    params = Params.from_dict({"relax": {"where": "x0"}})
    sensitivity_stage(params, tmp_path / "no.zarr", tmp_path / "no.zarr", "q", "q", tmp_path / "s.csv")  # reads no input
    assert (tmp_path / "s.csv").read_text().splitlines() == [",".join(SENSITIVITY_COLUMNS)]
    with pytest.raises(StoreError, match="needs the sensitivity of all 5 steps, got 0 steps"):
        relax(RelaxConfig(fraction=0.2, where="auto"), _qconfig(tmp_path), tmp_path / "out.json", tmp_path / "s.csv")
