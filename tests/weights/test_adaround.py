"""AdaRound on one layer: lower output error than round to nearest, with codes that round each weight down or up."""

import pytest
import torch
from torch import nn

from pcr.config import QuantConfig, ReconConfig
from pcr.quant.affine import qrange
from pcr.quant.modules import QConv2d, QLinear
from pcr.quant.observers import get_observer
from pcr.weights.adaround import b_schedule, inverse_rectified_sigmoid, rectified_sigmoid
from pcr.weights.reconstruct import Unit, capture, reconstruct_unit
from pcr.weights.rtn import rtn, weight_params

RECON = ReconConfig(iterations=300, batch_size=32, lr=1e-2)


def _layer_and_input(kind):
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(24, 16), torch.randn(256, 24)
    return nn.Conv2d(8, 12, 3, padding=1), torch.randn(64, 8, 6, 6)


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_adaround_beats_rtn_and_rounds_every_weight_down_or_up(kind, symmetric):
    layer, x = _layer_and_input(kind)
    model = nn.Sequential(layer)
    quant = QuantConfig(weight_bits=3, weight_observer="minmax", weight_symmetric=symmetric, recon=RECON)
    data = capture(model, layer, [lambda: model(x)])
    result = reconstruct_unit(model, Unit("0", "layer", ("0",)), data, quant, torch.Generator().manual_seed(0))

    codes = result.codes["0"]
    w_hat = codes.dequantize()
    with torch.no_grad():
        f = nn.functional.linear if kind == "linear" else nn.functional.conv2d
        ref = layer(x)
        kw = {} if kind == "linear" else {"padding": 1}
        mse = float((f(x, w_hat, layer.bias, **kw) - ref).pow(2).mean())
        mse_rtn = float((f(x, rtn(layer.weight, 3, symmetric, "minmax").dequantize(), layer.bias, **kw) - ref).pow(2).mean())
    assert mse < mse_rtn
    assert result.mse_adaround == pytest.approx(mse, rel=1e-4) and result.mse_rtn == pytest.approx(mse_rtn, rel=1e-4)

    q_min, q_max = qrange(3, symmetric)
    scale, zero_point = weight_params(layer.weight.detach(), 3, symmetric, "minmax")
    assert torch.equal(codes.scale, scale) and torch.equal(codes.zero_point, zero_point)
    q = codes.codes.long()
    assert q.min() >= q_min and q.max() <= q_max
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    floor = torch.floor(layer.weight.detach() / scale.reshape(shape)) + zero_point.reshape(shape)
    down, up = floor.clamp(q_min, q_max), (floor + 1).clamp(q_min, q_max)
    assert ((q == down) | (q == up)).all()
    assert ((q == up) & (down != up)).any() and ((q == down) & (down != up)).any()


def test_rtn_is_what_quantized_layers_apply_bit_for_bit():
    torch.manual_seed(1)
    for float_layer, qcls in ((nn.Linear(10, 6), QLinear), (nn.Conv2d(3, 5, 3), QConv2d)):
        w = float_layer.weight.detach().clone()
        q = qcls.from_module(float_layer, num_steps=1, weight_bits=4, act_bits=8, observer=get_observer("mse"))
        codes = rtn(w, 4, False, "mse")
        assert torch.equal(codes.codes.long(), q.codes().long()) and torch.equal(codes.scale, q.weight_scale)
        assert torch.equal(codes.dequantize(), q.dequantized_weight())
        assert codes.codes.dtype == torch.uint8 and rtn(w, 4, True, "mse").codes.dtype == torch.int8


def test_rectified_sigmoid_starts_at_the_fractional_part_and_b_anneals():
    frac = torch.linspace(0, 0.999, 50)
    assert torch.allclose(rectified_sigmoid(inverse_rectified_sigmoid(frac)), frac, atol=1e-6)
    assert b_schedule(0, 100, 20, 2, 0.2) is None and b_schedule(19, 100, 20, 2, 0.2) is None
    assert b_schedule(20, 100, 20, 2, 0.2) == 20 and b_schedule(60, 100, 20, 2, 0.2) == pytest.approx(11)
    assert b_schedule(0, 100, 20, 2, 0.0) == 20 and b_schedule(99, 100, 20, 2, 0.0) == pytest.approx(2.18)
