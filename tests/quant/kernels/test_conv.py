import pytest
import torch
from kernels_testlib import STEP_BITS, act_state, assert_agrees, fake_inputs, weight_state
from torch import nn

from pcr.quant.kernels import int_conv2d, onednn_available, prepare_conv2d

ROUTES = ["im2col"] + (["onednn"] if onednn_available() else [])
CONVS = [  # (C_in, C_out, kernel, stride, padding, dilation, groups, padding_mode, H, W)
    (3, 5, 3, 1, 1, 1, 1, "zeros", 7, 9),
    (8, 16, 1, 1, 0, 1, 1, "zeros", 5, 5),
    (6, 12, 3, 2, 1, 1, 3, "zeros", 11, 8),
    (4, 6, 3, 1, 2, 2, 1, "zeros", 9, 9),
    (5, 7, (4, 2), (2, 1), (1, 0), 1, 1, "zeros", 10, 7),
    (4, 8, 3, 1, "same", 1, 2, "zeros", 6, 6),
    (3, 4, 3, 2, 1, 1, 1, "reflect", 8, 9),
    (320, 24, 3, 1, 1, 1, 1, "zeros", 6, 5),  # SD-sized K = 2880
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("w_bits,w_sym,a_sym", [(8, False, False), (8, True, False), (4, False, True)])
@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: "-".join(map(str, c)))
def test_int_conv2d_matches_fake_reference(cfg, w_bits, w_sym, a_sym, route):
    c_in, c_out, kernel, stride, padding, dilation, groups, mode, h, w_ = cfg
    torch.manual_seed(c_in * 100 + c_out)
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, padding_mode=mode)
    x = 3 * torch.randn(2, c_in, h, w_)
    codes, w_scale, w_zp = weight_state(conv.weight.detach(), w_bits, w_sym)
    a_scale, a_zp, a_bits = act_state(STEP_BITS, a_sym)
    p, spec = prepare_conv2d(codes, w_scale, w_zp, a_scale, a_zp, a_bits, weight_bits=w_bits, weight_symmetric=w_sym,
                             act_symmetric=a_sym, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                             groups=groups, padding_mode=mode, route=route)
    assert spec.route == route
    for k in range(len(STEP_BITS)):
        x_hat, w_hat = fake_inputs(x, conv.weight.detach(), w_scale, w_zp, w_bits, w_sym, a_scale, a_zp, a_bits, a_sym, k)
        with torch.no_grad():
            ref = conv._conv_forward(x_hat, w_hat, conv.bias)
            y = int_conv2d(x, torch.tensor(k), p, spec, conv.bias)
        assert_agrees(y, ref)


def test_default_route_on_the_cpu():
    codes, w_scale, w_zp = weight_state(torch.randn(4, 2, 3, 3), 8, True)
    _, spec = prepare_conv2d(codes, w_scale, w_zp, *act_state((8,)), weight_bits=8, weight_symmetric=True,
                             act_symmetric=False, padding=1)
    assert spec.route == ("onednn" if onednn_available() else "im2col")
