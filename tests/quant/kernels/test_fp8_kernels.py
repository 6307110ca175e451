"""The fp8 kernels (torch._scaled_mm on E4M3 operands) against the fake-quantized fp8 layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernels_testlib import assert_agrees
from quant_testlib import tiny_unet, unet_inputs
from test_conv import CONVS
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from pcr.config import QuantConfig
from pcr.quant import at_step, qmodules, quantize_model
from pcr.quant.affine import dequantize, params_from_range, quantize
from pcr.quant.float8 import E4M3, fake_quantize
from pcr.quant.float8 import dequantize as dequantize_e4m3
from pcr.quant.float8 import params_from_range as e4m3_params
from pcr.quant.float8 import quantize as quantize_e4m3
from pcr.quant.kernels import use_kernels
from pcr.quant.kernels.fp8 import (
    Fp8QConv2d,
    Fp8QLinear,
    e4m3_weight,
    fp8_conv2d,
    fp8_linear,
    prepare_fp8_conv2d,
    prepare_fp8_linear,
)

STEP_BITS = (8, 16, 8)  # a relaxed step (unquantized in fp8) between two E4M3 ones
TIMESTEPS = [999.0, 500.0, 1.0]


def _weights(w: torch.Tensor, bits: int):
    """(E4M3 kernel weight, W_hat) of an fp8 weight (bits 8) or of 4-bit asymmetric integer codes."""
    flat = w.flatten(1)
    if bits == 8:
        s = e4m3_params(flat.amin(1), flat.amax(1))[0]
        q = quantize_e4m3(w, s, axis=0)
        return q, s, dequantize_e4m3(q, s, axis=0)
    s, z = params_from_range(flat.amin(1), flat.amax(1), bits, False)
    q = quantize(w, s, z, bits, False, axis=0)
    return e4m3_weight(q, z, bits, False), s, dequantize(q, s, z, axis=0)


def _act(x: torch.Tensor) -> torch.Tensor:
    """A different E4M3 scale per step: [T]."""
    amax = x.abs().max()
    return torch.stack([e4m3_params(-amax * f, amax * f)[0] for f in (1.0, 0.5, 0.3)])


def _x_hat(x, scale, k):
    return x if STEP_BITS[k] > 8 else fake_quantize(x, scale[k])


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape", [(2, 3, 37, 21), (1, 17, 64, 40), (5, 1, 9, 3)])  # (lead..., K, C_out): not multiples of 16
def test_fp8_linear_matches_fake_reference(shape, bits):
    *lead, k_in, c_out = shape
    g = torch.Generator().manual_seed(k_in)
    x, w, b = 3 * torch.randn(*lead, k_in, generator=g), torch.randn(c_out, k_in, generator=g), torch.randn(c_out, generator=g)
    w8, s_w, w_hat = _weights(w, bits)
    s_x = _act(x)
    p, spec = prepare_fp8_linear(w8, s_w, s_x, torch.tensor(STEP_BITS))
    assert p.weight.dtype == E4M3 and p.weight.shape[1] % 16 == 0 and p.weight.shape[2] % 16 == 0 and spec.relaxed
    for k in range(len(STEP_BITS)):
        assert_agrees(fp8_linear(x, torch.tensor(k), p, spec, b), F.linear(_x_hat(x, s_x, k), w_hat, b))
    assert_agrees(fp8_linear(x, torch.tensor(0), p, spec), F.linear(_x_hat(x, s_x, 0), w_hat))  # no bias


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: "-".join(map(str, c)))
def test_fp8_conv2d_matches_fake_reference_on_every_route(cfg, bits):
    c_in, c_out, kernel, stride, padding, dilation, groups, mode, h, w_ = cfg
    torch.manual_seed(c_in * 100 + c_out)
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, padding_mode=mode)
    x = 3 * torch.randn(2, c_in, h, w_)
    w8, s_w, w_hat = _weights(conv.weight.detach(), bits)
    s_x = _act(x)
    pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) and groups == 1
    for route in ["im2col"] + (["1x1"] if pointwise else []):
        p, spec = prepare_fp8_conv2d(w8, s_w, s_x, torch.tensor(STEP_BITS), stride=conv.stride, padding=conv.padding,
                                     dilation=conv.dilation, groups=groups, padding_mode=mode, route=route)
        assert spec.route == route
        for k in range(len(STEP_BITS)):
            with torch.no_grad():
                ref = conv._conv_forward(_x_hat(x, s_x, k), w_hat, conv.bias)
                assert_agrees(fp8_conv2d(x, torch.tensor(k), p, spec, conv.bias), ref)
    with pytest.raises(ValueError, match="route='1x1' needs a 1x1 kernel") if not pointwise else torch.no_grad():
        prepare_fp8_conv2d(w8, s_w, s_x, torch.tensor(STEP_BITS), stride=conv.stride, padding=conv.padding,
                           dilation=conv.dilation, groups=groups, route="1x1")


def test_integer_codes_past_4_bits_are_refused_as_e4m3():
    with pytest.raises(ValueError, match="5-bit integer weight codes are not all E4M3 values"):
        e4m3_weight(torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), 5, False)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_compiled_fp8_kernels_run_every_step_in_one_graph(kind):
    torch.manual_seed(0)
    if kind == "linear":
        x, w = torch.randn(3, 5, 24), torch.randn(16, 24)
        w8, s_w, _ = _weights(w, 8)
        p, spec = prepare_fp8_linear(w8, s_w, _act(x), torch.tensor(STEP_BITS))
        fn = fp8_linear
    else:
        x, w = torch.randn(2, 8, 9, 9), torch.randn(16, 8, 3, 3)
        w8, s_w, _ = _weights(w, 8)
        p, spec = prepare_fp8_conv2d(w8, s_w, _act(x), torch.tensor(STEP_BITS), padding=1)
        fn = fp8_conv2d
    b = torch.randn(16)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")  # inductor's codegen takes minutes here; gpu.py compiles with it
    compiled = torch.compile(lambda x, k: fn(x, k, p, spec, b), fullgraph=True, backend=counter)
    for k in (0, 1, 2, 1):  # E4M3, relaxed (torch.cond's other branch), E4M3 at another scale, back again
        step = torch.tensor(k)
        assert_agrees(compiled(x, step), fn(x, step, p, spec, b))
    assert counter.frame_count == 1


def _fp8_unet(weight_bits: int = 8) -> nn.Module:
    unet = tiny_unet()
    quantize_model(unet, QuantConfig(format="fp8", weight_bits=weight_bits, act_bits=8, weight_observer="minmax"), TIMESTEPS)
    g = torch.Generator().manual_seed(0)
    for m in qmodules(unet).values():
        for k, bits in enumerate(STEP_BITS):
            m.input_quant.set_step(k, -1 - 3 * torch.rand((), generator=g), 1 + 3 * torch.rand((), generator=g), bits)
    return unet


@pytest.mark.parametrize("weight_bits", [8, 4])
@torch.no_grad()
def test_every_fp8_unet_layer_agrees_with_fake_and_saves_the_same_codes(weight_bits):
    unet = _fp8_unet(weight_bits)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    x, cond = unet_inputs()
    io = {}
    for k, t in enumerate(TIMESTEPS):
        with at_step(unet, k):
            hooks = [m.register_forward_hook(lambda m, a, out, n=n, k=k: io.setdefault((n, k), (a[0], out)) and None)
                     for n, m in qmodules(unet).items()]
            unet(x, t, encoder_hidden_states=cond)
            for h in hooks:
                h.remove()
    summary = use_kernels(unet, "fp8")
    layers = qmodules(unet)
    assert summary == {"fp8": len(layers), "fake": 0, "fallback": {}}
    assert all(isinstance(m, Fp8QLinear | Fp8QConv2d) and m.weight_codes is None for m in layers.values())  # weights once
    for (name, k), (inp, ref) in io.items():
        with at_step(unet, k):
            assert_agrees(layers[name](inp), ref)
    saved = unet.state_dict()
    assert saved.keys() == state.keys()
    for key, ref in state.items():
        assert saved[key].dtype == ref.dtype and torch.equal(saved[key].view(torch.uint8) if ref.dtype == E4M3 else saved[key],
                                                              ref.view(torch.uint8) if ref.dtype == E4M3 else ref), key
    use_kernels(unet, "fake")
    assert not any(isinstance(m, Fp8QLinear | Fp8QConv2d) for m in unet.modules())
    assert all(torch.equal(m.weight_codes.view(torch.uint8), state[f"{n}.weight_codes"].view(torch.uint8))
               for n, m in qmodules(unet).items())


@torch.no_grad()
def test_fp8_and_int_kernels_each_leave_the_other_format_fake_by_name():
    fp8 = _fp8_unet()
    summary = use_kernels(fp8, "int")
    assert summary["int"] == 0 and all("run it with kernels='fp8'" in why for why in summary["fallback"].values())
    int_unet = tiny_unet()
    quantize_model(int_unet, QuantConfig(weight_bits=8, act_bits=8, weight_observer="minmax"), TIMESTEPS)
    summary = use_kernels(int_unet, "fp8")
    assert summary["fp8"] == 0 and all("run it with kernels='int'" in why for why in summary["fallback"].values())
    w6 = _fp8_unet(weight_bits=6)  # W6 integer codes: not exact in E4M3
    summary = use_kernels(w6, "fp8")
    assert summary["fp8"] == 0 and all("6-bit integer weight codes" in why for why in summary["fallback"].values())


@torch.no_grad()
def test_casting_the_fp8_model_keeps_e4m3_codes_and_rederives_its_kernels():
    unet = _fp8_unet()
    use_kernels(unet, "fp8")
    x, cond = unet_inputs()
    before = unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample
    unet.to(torch.float64).to(torch.float32)
    layer = next(iter(qmodules(unet).values()))
    assert layer.fp8_weight.dtype == E4M3 and layer.fp8_weight_scale.dtype == torch.float32
    torch.testing.assert_close(unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample, before, rtol=0, atol=0)
