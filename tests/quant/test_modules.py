import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcr.quant import QConv2d, QLinear, StepCounter, at_step, get_observer
from pcr.quant.affine import fake_quantize, params_from_range


def _qlayer(cls, float_layer, steps, **kw):
    """A quantized layer with its own step counter (timesteps steps-1 .. 0) and min/max weights."""
    counter = StepCounter([float(steps - 1 - k) for k in range(steps)])
    kw.setdefault("observer", get_observer("minmax"))
    return cls.from_module(float_layer, num_steps=steps, counter=counter, **kw), counter


def _calibrate_all_steps(q, x, steps):
    for k in range(steps):
        q.input_quant.set_step(k, x.min() * (k + 1) / steps, x.max() * (k + 1) / steps)


@pytest.mark.parametrize("symmetric", [False, True])
def test_qlinear_equals_float_layer_on_dequantized_weight_and_input(symmetric):
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    w_float = lin.weight.detach().clone()
    q, counter = _qlayer(QLinear, lin, 3, weight_bits=4, act_bits=6, weight_symmetric=symmetric, act_symmetric=symmetric)
    x = torch.randn(5, 12) * 2
    _calibrate_all_steps(q, x, 3)
    # independent reference: torch's per-channel / per-tensor fake quant
    w_scale, w_zp = params_from_range(w_float.amin(1), w_float.amax(1), 4, symmetric)
    w_ref = fake_quantize(w_float, w_scale, w_zp, 4, symmetric, axis=0)
    assert torch.equal(q.dequantized_weight(), w_ref)
    assert "weight" not in dict(q.named_parameters()) and q.weight_codes.dtype == torch.uint8  # codes, packed at 4 bits
    for k in range(3):
        x_ref = fake_quantize(x, q.input_quant.scale[k], q.input_quant.zero_point[k], 6, symmetric)
        with at_step(counter, k):
            assert torch.allclose(q(x), F.linear(x_ref, w_ref, lin.bias), atol=1e-6)


def test_qconv_equals_float_layer_on_dequantized_weight_and_input():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
    q, counter = _qlayer(QConv2d, conv, 2, weight_bits=8, act_bits=8)
    x = torch.randn(2, 3, 9, 9)
    _calibrate_all_steps(q, x, 2)
    with at_step(counter, 1):
        x_ref = fake_quantize(x, q.input_quant.scale[1], q.input_quant.zero_point[1], 8, False)
        assert torch.equal(q.input_quant(x), x_ref)  # bit for bit torch's kernel
        assert torch.allclose(q(x), F.conv2d(x_ref, q.dequantized_weight(), conv.bias, stride=2, padding=1), atol=1e-6)
    assert q.stride == (2, 2) and isinstance(q, nn.Conv2d)


def test_step_counter_picks_the_row_and_is_required():
    q, counter = _qlayer(QLinear, nn.Linear(4, 4), 3, weight_bits=8, act_bits=2)
    x = torch.linspace(-1, 1, 4).repeat(2, 1)
    for k, amax in enumerate([0.1, 1.0, 10.0]):
        q.input_quant.set_step(k, torch.tensor(-amax), torch.tensor(amax))
    outs = []
    for k in range(3):
        with at_step(counter, k):
            outs.append(q.input_quant(x))
    assert outs[0].abs().max() <= 0.1 + float(q.input_quant.scale[0])  # step 0 clamps to its small range (zero point rounds)
    assert not torch.equal(outs[1], outs[2])
    lone = QLinear.from_module(nn.Linear(4, 4), num_steps=1, weight_bits=8, act_bits=8)
    with pytest.raises(RuntimeError, match="no step counter"):
        lone(x)


def test_disabled_quantizer_is_identity_and_bits_change_per_step():
    q, counter = _qlayer(QLinear, nn.Linear(4, 4), 2, weight_bits=8, act_bits=4)
    x = torch.randn(3, 4)
    q.input_quant.set_step(0, x.min(), x.max())
    q.input_quant.set_step(1, x.min(), x.max(), bits=10)
    assert q.input_quant.bits.tolist() == [4, 10]
    with at_step(counter, 0):
        e4 = (q.input_quant(x) - x).abs().max()
    with at_step(counter, 1):
        e10 = (q.input_quant(x) - x).abs().max()
        assert torch.equal(q.input_quant(x), fake_quantize(x, q.input_quant.scale[1], q.input_quant.zero_point[1], 10, False))
    assert e10 < e4
    q.input_quant.enabled = False
    with at_step(counter, 0):
        assert torch.equal(q.input_quant(x), x)


def test_casting_the_model_keeps_scales_float32():
    q, _ = _qlayer(QLinear, nn.Linear(4, 4), 2, weight_bits=8, act_bits=8)
    q.to(torch.float64)
    assert q.bias.dtype == torch.float64
    assert q.weight_scale.dtype == q.input_quant.scale.dtype == torch.float32
