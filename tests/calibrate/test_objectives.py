"""Calibration objectives: the least-squares fits against numpy, and the scheduler-step target against diffusers."""

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

from pcr.calibrate.objectives import OBJECTIVES, apply_correction, fit_affine, fit_bias, get_fit, step_target


def _pair(seed=0, n=6, c=4):
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, c, 5, 5, generator=g)
    gain, shift = torch.tensor([0.5, 1.0, 2.0, -1.0])[:c], torch.tensor([0.1, -0.3, 0.0, 2.0])[:c]
    target = apply_correction(eps, gain, shift) + 0.1 * torch.randn(n, c, 5, 5, generator=g)
    return eps, target


def test_affine_fit_is_numpys_least_squares_per_channel():
    eps, target = _pair()
    g, h = fit_affine(eps, target)
    for c in range(eps.shape[1]):
        e, t = eps[:, c].flatten().double().numpy(), target[:, c].flatten().double().numpy()
        (want_g, want_h), *_ = np.linalg.lstsq(np.stack([e, np.ones_like(e)], 1), t, rcond=None)
        assert g[c].item() == pytest.approx(want_g, rel=1e-5) and h[c].item() == pytest.approx(want_h, abs=1e-5)
    noiseless = apply_correction(eps, torch.tensor([0.5, 1.0, 2.0, -1.0]), torch.tensor([0.1, -0.3, 0.0, 2.0]))
    g, h = fit_affine(eps, noiseless)  # an exact affine relation is recovered exactly
    torch.testing.assert_close(g, torch.tensor([0.5, 1.0, 2.0, -1.0]))
    torch.testing.assert_close(h, torch.tensor([0.1, -0.3, 0.0, 2.0]), atol=1e-6, rtol=0)


def test_bias_fit_is_the_mean_difference_and_a_constant_channel_keeps_gain_one():
    eps, target = _pair(1)
    g, h = fit_bias(eps, target)
    assert torch.equal(g, torch.ones(4))
    torch.testing.assert_close(h, (target - eps).mean(dim=(0, 2, 3)))
    eps[:, 2] = 0.7  # no variance: the gain is undetermined, the shift alone fits
    g, h = fit_affine(eps, target)
    assert g[2].item() == 1.0 and h[2].item() == pytest.approx((target[:, 2] - 0.7).mean().item(), abs=1e-6)


@pytest.mark.parametrize("cls", [DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler])
def test_step_target_is_the_output_that_lands_the_scheduler_on_the_target(cls):
    kw = {"skip_prk_steps": True} if cls is PNDMScheduler else {"clip_sample": False} if cls is DDIMScheduler else {}
    sched = cls(num_train_timesteps=1000, **kw)
    sched.set_timesteps(6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64) * float(sched.init_noise_sigma)  # float64: exact algebra
    for t in sched.timesteps[:3]:  # a few steps first: multistep schedulers then hold history
        sched.scale_model_input(x, t)
        x = sched.step(torch.randn(x.shape, generator=g, dtype=x.dtype), t, x).prev_sample
    t = sched.timesteps[3]
    x_next = torch.randn(x.shape, generator=g, dtype=x.dtype)

    def step(s, eps):
        s.scale_model_input(x, t)
        return s.step(eps, t, x).prev_sample

    eps_star = step_target(step, sched, x, x_next)
    torch.testing.assert_close(step(copy.deepcopy(sched), eps_star), x_next, atol=1e-9, rtol=1e-9)


def test_a_clipping_scheduler_step_is_refused_by_name():
    sched = DDIMScheduler(num_train_timesteps=1000, clip_sample=True)
    sched.set_timesteps(4)
    x = torch.randn(1, 4, 8, 8) * 3
    t = sched.timesteps[0]
    with pytest.raises(ValueError, match=r"DDIMScheduler's step is not affine.*clip_sample=True"):
        step_target(lambda s, e: s.step(e, t, x).prev_sample, sched, x, x)


def test_objectives_registry_and_refusal():
    assert get_fit("ranges") is None and get_fit("affine") is fit_affine and set(OBJECTIVES) == {"ranges", "bias", "affine"}
    with pytest.raises(ValueError, match=r"calibrate.objective='mse' is not allowed: choose one of \['ranges', 'bias', 'affine'\]"):
        get_fit("mse")
