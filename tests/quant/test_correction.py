"""The corrected output layer: g_k ⊙ conv(x) + h_k at the UNet's step, against torch's conv2d."""

import pytest
import torch
import torch.nn.functional as F
from quant_testlib import tiny_unet
from torch import nn

from pcr.config import QuantConfig
from pcr.errors import ConfigError
from pcr.quant import at_step, quantize_model
from pcr.quant.correction import StepAffineConv2d
from pcr.quant.quantize import corrected_output
from pcr.quant.step import StepCounter


def _layer(T=3):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 3, padding=1)
    return conv, StepAffineConv2d.from_module(conv, num_steps=T, counter=StepCounter(torch.arange(T, 0, -1.0)))


def test_identity_until_calibrated_then_each_step_its_own_row():
    conv, q = _layer()
    x = torch.randn(2, 8, 6, 6)
    with at_step(q._counter, 1):
        assert torch.equal(q(x), conv(x))
    gain, shift = torch.tensor([1.0, 2.0, -0.5, 0.0]), torch.tensor([0.0, 0.1, 0.2, 3.0])
    q.set_step(1, gain, shift)
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1) * gain.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    with at_step(q._counter, 1):
        torch.testing.assert_close(q(x), ref)
    with at_step(q._counter, 2):  # another step: still the identity
        assert torch.equal(q(x), conv(x))
    state = q.state_dict()
    assert state["out_gain"].shape == (3, 4) and torch.equal(state["out_shift"][1], shift)
    assert q.half().out_gain.dtype == torch.float32  # the correction stays float32 when the model is cast


def test_only_a_float_output_layer_can_be_corrected():
    counter = StepCounter([1.0])
    with pytest.raises(ValueError, match="needs a float nn.Conv2d output layer, got Linear"):
        StepAffineConv2d.from_module(nn.Linear(4, 4), num_steps=1, counter=counter)
    unet = tiny_unet()
    cfg = QuantConfig(keep_float=("conv_in",))  # conv_out quantized
    with pytest.raises(ConfigError, match="output correction needs conv_out in float"):
        quantize_model(unet, cfg, [900.0, 500.0], output_correction=True)
    unet = tiny_unet()
    qmap = quantize_model(unet, QuantConfig(), [900.0, 500.0], output_correction=True)
    assert qmap.output_correction == "conv_out" and isinstance(unet.conv_out, StepAffineConv2d)
    assert corrected_output(unet) is unet.conv_out
