"""The one-sweep progressive calibration against the official code's naive loop, and the baselines."""

import pytest
import torch

from pcr.calibrate.run import prepare
from pcr.calibrate.sweep import naive_progressive, sweep
from pcr.collect import collect
from pcr.stores import open_store


def _act_params(cal):
    return {n: (q.input_quant.scale.clone(), q.input_quant.zero_point.clone()) for n, q in cal.qlayers.items()}


@pytest.fixture
def collected(tmp_path, tiny_sd_dir, small_params):
    def run(**sections):
        params = small_params(tiny_sd_dir, **sections)
        collect(params, tmp_path / "traj.zarr", progress=False)
        return params, open_store(tmp_path / "traj.zarr", "trajectories")

    return run


@pytest.mark.parametrize("scheduler", ["ddim", "pndm"])  # PNDM's PLMS keeps state across steps
def test_one_sweep_gives_the_naive_loops_parameters(collected, scheduler):
    params, traj = collected(model={"scheduler": scheduler})
    _, _, cal_sweep = prepare(params, traj)
    x_T = torch.from_numpy(traj["x"][0])
    sweep(cal_sweep, "progressive", x_T, progress=False)
    _, _, cal_naive = prepare(params, traj)
    naive_progressive(cal_naive, x_T)
    a, b = _act_params(cal_sweep), _act_params(cal_naive)
    for name in a:
        assert torch.equal(a[name][0], b[name][0]) and torch.equal(a[name][1], b[name][1]), name
    assert all(bool(q.input_quant.calibrated.all()) for q in cal_sweep.qlayers.values())  # every step, the last included


def test_progressive_moves_parameters_away_from_fp32_and_shared_is_one_set(collected):
    params, traj = collected(quant={"act_bits": 4, "weight_bits": 4})
    x_T = torch.from_numpy(traj["x"][0])
    results = {}
    for mode in ("fp32", "progressive", "shared"):
        _, _, cal = prepare(params, traj)
        before = _act_params(cal)
        sweep(cal, mode, x_T, progress=False)
        after = _act_params(cal)
        assert any(not torch.equal(before[n][0], after[n][0]) for n in after), f"{mode}: scales did not change"
        results[mode] = after
    fp32, prog, shared = results["fp32"], results["progressive"], results["shared"]
    changed = [n for n in prog if not torch.allclose(prog[n][0][1:], fp32[n][0][1:])]
    assert len(changed) > len(prog) // 2  # later steps see the accumulated error: different ranges
    for n, (scale, zp) in shared.items():
        assert torch.all(scale == scale[0]) and torch.all(zp == zp[0]), n
        assert scale[0] >= fp32[n][0].max() * (1 - 1e-6)  # the union range covers every step's range


def test_fp32_mode_parameters_follow_collected_statistics(collected):
    params, traj = collected()
    _, _, cal = prepare(params, traj)
    sweep(cal, "fp32", torch.from_numpy(traj["x"][0]), progress=False)
    names, layers = list(cal.qlayers), traj.attrs["layers"]
    k, name = 2, names[3]
    lo = traj["stats/min"][k, layers.index(name)]
    hi = traj["stats/max"][k, layers.index(name)]
    expected = (max(hi, 0) - min(lo, 0)) / 255
    assert float(cal.qlayers[name].input_quant.scale[k]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("act_observer", ["ema_minmax", "percentile"])  # aminmax hooks / histogram hooks
def test_observed_statistics_are_a_full_passes(collected, act_observer):
    """Every step's statistics (the observe pass stops at the last layer's input) against full, independently
    hooked UNet passes over the same batches, with torch's MovingAverageMinMaxObserver as the reference."""
    from torch.ao.quantization import MinMaxObserver, MovingAverageMinMaxObserver

    from pcr.models.conditioning import select
    from pcr.quant import at_step

    params, traj = collected(quant={"act_observer": act_observer})
    _, _, cal = prepare(params, traj)
    steps = {}
    sweep(cal, "progressive", torch.from_numpy(traj["x"][0]), progress=False,
          on_step=lambda r: steps.setdefault(r.k, r))
    x_k = {0: torch.from_numpy(traj["x"][0]), **{k + 1: r.x_next for k, r in steps.items()}}
    unet, names = cal.sampler.unet, list(cal.qlayers)
    assert len(cal.batches) > 1
    for k in (0, cal.sampler.num_steps - 1):  # the first pass counts the inputs; later ones stop early
        cal.set_params(cal.starting_stats(k), k)  # what step k's observe pass ran with
        obs = {n: MovingAverageMinMaxObserver(averaging_constant=params.quant.ema_constant) for n in names}
        mm = {n: MinMaxObserver() for n in names}

        def observe(m, a, n, obs=obs, mm=mm):
            obs[n](a[0])
            mm[n](a[0])

        handles = [unet.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: observe(m, a, n)) for n in names]
        try:
            schedulers = [cal.sampler.new_scheduler() for _ in cal.batches]
            for b, sched in zip(cal.batches, schedulers, strict=True):
                with at_step(unet, k):
                    cal.sampler.eps(x_k[k][b], k, select(cal.cond, b), sched)
        finally:
            for h in handles:
                h.remove()
        for n in names:
            s = steps[k].stats[n]
            assert s.count == len(cal.batches), n
            assert torch.equal(s.ema_min, obs[n].min_val) and torch.equal(s.ema_max, obs[n].max_val), n
            assert torch.equal(s.min, mm[n].min_val) and torch.equal(s.max, mm[n].max_val), n
        cal.set_params(steps[k].stats, k)
