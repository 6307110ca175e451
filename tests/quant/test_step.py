"""The step counter: the quantized UNet finds step k by counting calls and checking each t."""

import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler
from quant_testlib import tiny_unet, unet_inputs

from pcr.quant import at_step, qmodules, quantize_model, step_counter
from pcr.quant.step import StepCounter


def _timesteps(scheduler, n):
    scheduler.set_timesteps(n)
    return scheduler.timesteps.tolist()


def test_counts_calls_and_restarts_on_the_first_timestep():
    ts = [961.0, 921.0, 881.0]
    c = StepCounter(ts, "DDIMScheduler")
    assert [c.advance(t) for t in ts] == [0, 1, 2]
    assert int(c.index) == 2
    assert [c.advance(t) for t in ts[:2]] == [0, 1]  # a second generation
    assert c.advance(961.0) == 0  # an aborted one: t_0 again starts over


def test_pndm_repeated_timestep_is_counted_not_mapped():
    ts = _timesteps(PNDMScheduler(skip_prk_steps=True), 4)
    assert len(ts) == 5 and len(set(ts)) == 4  # PLMS runs one timestep twice
    c = StepCounter(ts, "PNDMScheduler", num_inference_steps=4)
    assert [c.advance(t) for t in ts] == [0, 1, 2, 3, 4]


def test_other_step_count_fails_at_first_call_naming_T_scheduler_and_given():
    calibrated = _timesteps(DDIMScheduler(), 5)
    c = StepCounter(calibrated, "DDIMScheduler")
    other = _timesteps(DDIMScheduler(), 10)
    with pytest.raises(ValueError) as e:
        c.advance(other[0])
    msg = str(e.value)
    assert "T=5 steps of DDIMScheduler" in msg and f"t={other[0]:g}" in msg and "num_inference_steps=5" in msg
    c.advance(calibrated[0])
    with pytest.raises(ValueError, match=f"call 1 of a generation got timestep t={calibrated[2]:g} where t={calibrated[1]:g}"):
        c.advance(calibrated[2])


def test_pin_fixes_the_step_and_checks_its_timestep():
    c = StepCounter([30.0, 20.0, 10.0])
    with c.pin(2):
        assert c.advance(10.0) == 2 and c.advance(10.0) == 2  # several batches of one step
        with pytest.raises(ValueError, match="step 2 was calibrated at t=10"):
            c.advance(20.0)
    with pytest.raises(ValueError, match="sampling step 3 is not allowed"):
        with c.pin(3):
            pass


def test_quantized_unet_counts_its_own_calls(qcfg):
    unet = tiny_unet()
    ts = [900.0, 500.0, 100.0]
    quantize_model(unet, qcfg, ts, "DDIMScheduler")
    for m in qmodules(unet).values():  # distinct ranges per step, so the row matters
        for k in range(3):
            m.input_quant.set_step(k, torch.tensor(-0.5 * (k + 1)), torch.tensor(0.5 * (k + 1)))
    x, ehs = unet_inputs()
    counted = [unet(x, t, ehs).sample for t in ts]
    for k, t in enumerate(ts):
        with at_step(unet, k):
            assert torch.equal(unet(x, t, ehs).sample, counted[k])
    assert not torch.equal(counted[0], counted[2])
    assert step_counter(unet).calls == 0  # a generation ended: the next call must be t_0
    with pytest.raises(ValueError, match="T=3 steps of DDIMScheduler"):
        unet(x, 500.0, ehs)
