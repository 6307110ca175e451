"""Every branch only CUDA takes, executed on the CPU inside `cuda_routes()` against the fake reference, int8 and fp8:
torch._int_mm's small-M padding, the im2col convolution (grouped too), tensor-indexed step tables, torch._scaled_mm."""

from __future__ import annotations

import pytest
import torch
from kernels_testlib import STEP_BITS, act_state, assert_agrees, fake_inputs, linear_ref, weight_state
from test_fp8_kernels import STEP_BITS as FP8_STEP_BITS
from test_fp8_kernels import _act, _weights, _x_hat
from torch import nn

from pcr.quant.kernels import int_conv2d, int_linear, int_supported, prepare_conv2d, prepare_linear
from pcr.quant.kernels.common import cuda_routes
from pcr.quant.kernels.fp8 import fp8_conv2d, fp8_linear, prepare_fp8_conv2d, prepare_fp8_linear


@pytest.fixture
def spy(monkeypatch):
    """Shapes of the operands each GEMM received: {"_int_mm": [(M, K), ...], "_scaled_mm": [...]}."""
    calls: dict[str, list] = {"_int_mm": [], "_scaled_mm": []}
    for name in calls:
        real = getattr(torch, name)

        def wrapped(a, b, *args, real=real, name=name, **kwargs):
            calls[name].append(tuple(a.shape))
            return real(a, b, *args, **kwargs)

        monkeypatch.setattr(torch, name, wrapped)
    return calls


@pytest.mark.parametrize("m", [1, 16, 17, 40])  # M <= 16: padded to 17 rows and cut, as CUDA's _int_mm needs
def test_int_linear_small_m_padding_on_the_cuda_route(m, spy):
    g = torch.Generator().manual_seed(m)
    x, w, b = 3 * torch.randn(m, 37, generator=g), torch.randn(21, 37, generator=g), torch.randn(21, generator=g)
    codes, w_scale, w_zp = weight_state(w, 8, False)
    a_scale, a_zp, a_bits = act_state(STEP_BITS)
    with cuda_routes():
        p, spec = prepare_linear(codes, w_scale, w_zp, a_scale, a_zp, a_bits, weight_bits=8, weight_symmetric=False,
                                 act_symmetric=False)
        for k in range(len(STEP_BITS)):  # 8, 10 (two int8 GEMMs), 6 bits
            ref = linear_ref(x, w, b, w_scale=w_scale, w_zp=w_zp, w_bits=8, w_sym=False, a_scale=a_scale, a_zp=a_zp,
                             a_bits=a_bits, a_sym=False, k=k)
            assert_agrees(int_linear(x, torch.tensor(k), p, spec, b), ref)
    assert spy["_int_mm"] and all(shape == (max(m, 17), p.weight.shape[1]) for shape in spy["_int_mm"])  # K padded to 8


@pytest.mark.parametrize("groups,c_out", [(1, 16), (2, 16), (4, 32)])  # C_out / groups a multiple of 8, as CUDA needs
def test_int_conv2d_takes_im2col_on_the_cuda_route(groups, c_out, spy):
    torch.manual_seed(groups)
    conv = nn.Conv2d(8, c_out, 3, stride=1, padding=1, groups=groups)
    x = 3 * torch.randn(1, 8, 3, 4)  # N*Ho*Wo = 12 rows: the small-M branch too
    codes, w_scale, w_zp = weight_state(conv.weight.detach(), 8, False)
    a_scale, a_zp, a_bits = act_state(STEP_BITS)
    with cuda_routes():
        p, spec = prepare_conv2d(codes, w_scale, w_zp, a_scale, a_zp, a_bits, weight_bits=8, weight_symmetric=False,
                                 act_symmetric=False, padding=1, groups=groups)
        assert spec.route == "im2col"
        for k in range(len(STEP_BITS)):
            x_hat, w_hat = fake_inputs(x, conv.weight.detach(), w_scale, w_zp, 8, False, a_scale, a_zp, a_bits, False, k)
            with torch.no_grad():
                assert_agrees(int_conv2d(x, torch.tensor(k), p, spec, conv.bias), conv._conv_forward(x_hat, w_hat, conv.bias))
    assert spy["_int_mm"] and all(shape[0] == 17 for shape in spy["_int_mm"])


def test_grouped_convs_cuda_cannot_run_fall_back_on_the_cuda_route():
    args = dict(weight_bits=8, act_bits=[8], reduction=9 * 2, kind="conv2d", groups=3, out_channels=9)
    assert int_supported(**args) == (True, "")  # the CPU (oneDNN) runs it
    with cuda_routes():
        ok, why = int_supported(**args)
    assert not ok and "C_out/groups a multiple of 8, got 3" in why


@pytest.mark.parametrize("m", [3, 40])
def test_fp8_linear_through_scaled_mm_on_the_cuda_route(m, spy):
    g = torch.Generator().manual_seed(m)
    x, w, b = 3 * torch.randn(m, 37, generator=g), torch.randn(21, 37, generator=g), torch.randn(21, generator=g)
    w8, s_w, w_hat = _weights(w, 8)
    s_x = _act(x)
    with cuda_routes():
        p, spec = prepare_fp8_linear(w8, s_w, s_x, torch.tensor(FP8_STEP_BITS))
        for k in range(len(FP8_STEP_BITS)):
            assert_agrees(fp8_linear(x, torch.tensor(k), p, spec, b), torch.nn.functional.linear(_x_hat(x, s_x, k), w_hat, b))
    assert spy["_scaled_mm"] == [(m, 48)] * 2  # the two E4M3 steps, K = 37 padded to 48; the relaxed one is float
    assert not spy["_int_mm"]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("kernel,groups", [(1, 1), (3, 1), (3, 2)])
def test_fp8_conv2d_through_scaled_mm_on_the_cuda_route(kernel, groups, bits, spy):
    torch.manual_seed(kernel + groups)
    conv = nn.Conv2d(8, 16, kernel, padding=kernel // 2, groups=groups)
    x = 3 * torch.randn(2, 8, 5, 6)
    w8, s_w, w_hat = _weights(conv.weight.detach(), bits)
    s_x = _act(x)
    with cuda_routes():
        p, spec = prepare_fp8_conv2d(w8, s_w, s_x, torch.tensor(FP8_STEP_BITS), padding=conv.padding, groups=groups)
        assert spec.route == ("1x1" if kernel == 1 else "im2col")
        for k in range(len(FP8_STEP_BITS)):
            with torch.no_grad():
                ref = conv._conv_forward(_x_hat(x, s_x, k), w_hat, conv.bias)
                assert_agrees(fp8_conv2d(x, torch.tensor(k), p, spec, conv.bias), ref)
    assert len(spy["_scaled_mm"]) == 2 * groups


@pytest.mark.parametrize("kernels", ["int", "fp8"])
@torch.no_grad()
def test_whole_unet_on_the_cuda_route_agrees_with_fake(kernels, spy):
    from quant_testlib import unet_inputs
    from test_fp8_kernels import _fp8_unet
    from test_use_kernels import _quantized_unet, assert_close_whole

    from pcr.quant import at_step, qmodules
    from pcr.quant.kernels import use_kernels

    unet = _fp8_unet() if kernels == "fp8" else _quantized_unet(8)
    x, cond = unet_inputs()
    with at_step(unet, 0):
        fake = unet(x, 999.0, encoder_hidden_states=cond).sample
    with cuda_routes():
        summary = use_kernels(unet, kernels)
        assert summary[kernels] == len(qmodules(unet))
        convs = [m for m in qmodules(unet).values() if isinstance(m, torch.nn.Conv2d)]
        assert {m.int_spec.route for m in convs} <= {"im2col", "1x1"}  # no oneDNN: what CUDA runs
        with at_step(unet, 0):
            assert_close_whole(unet(x, 999.0, encoder_hidden_states=cond).sample, fake)
    assert spy["_scaled_mm" if kernels == "fp8" else "_int_mm"]
