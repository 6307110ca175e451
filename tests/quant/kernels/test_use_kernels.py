"""use_kernels: quantized layers on the integer kernels agree with their fake-quantized selves."""

from __future__ import annotations

import pytest
import torch
from kernels_testlib import STEP_BITS, assert_agrees
from quant_testlib import tiny_unet, unet_inputs
from torch import nn

from pcr.config import QuantConfig
from pcr.quant import QConv2d, QLinear, at_step, qmodules, quantize_model
from pcr.quant.kernels import IntQConv2d, IntQLinear, use_kernels
from pcr.quant.observers import get_observer
from pcr.quant.step import StepCounter

TIMESTEPS = [999.0, 500.0, 1.0]  # one per entry of STEP_BITS: 8, 10 (relaxed), 6 bits


def _set_ranges(model: nn.Module, seed: int = 0) -> None:
    """A different activation range per layer and step, at STEP_BITS (calibration is tested elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    for m in qmodules(model).values():
        for k, bits in enumerate(STEP_BITS):
            m.input_quant.set_step(k, -1 - 3 * torch.rand((), generator=g), 1 + 3 * torch.rand((), generator=g), bits)


def _quantized_unet(weight_bits: int, weight_symmetric: bool = False) -> nn.Module:
    unet = tiny_unet()
    quantize_model(unet, QuantConfig(weight_bits=weight_bits, act_bits=8, weight_observer="minmax",
                                     weight_symmetric=weight_symmetric), TIMESTEPS)
    _set_ranges(unet)
    return unet


def assert_close_whole(y: torch.Tensor, ref: torch.Tensor) -> None:
    """Whole-UNet outputs: each layer agrees to float order (tested above), but an activation code that rounds
    the other way in one layer moves everything after it by about one code step: relative L2 within 3%
    (measured: 2e-7 without such a flip, 0.2-1.7% with one; a wrong zero point or step is off by O(1))."""
    assert y.shape == ref.shape
    assert float((y - ref).norm() / ref.norm()) < 3e-2


def _layer_io(model: nn.Module, run) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every quantized layer during run()."""
    seen = {}
    def record(name):
        def hook(m, inputs, output):
            seen.setdefault(name, (inputs[0], output))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in qmodules(model).items()]
    run()
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("weight_bits,weight_symmetric", [(8, False), (4, False), (8, True)])
@torch.no_grad()
def test_every_unet_layer_agrees_with_fake_at_every_step(weight_bits, weight_symmetric):
    unet = _quantized_unet(weight_bits, weight_symmetric)
    x, cond = unet_inputs()
    state = unet.state_dict()
    for k, t in enumerate(TIMESTEPS):
        with at_step(unet, k):
            io = _layer_io(unet, lambda t=t: unet(x, t, encoder_hidden_states=cond))
        summary = use_kernels(unet, "int")
        assert summary == {"int": len(io), "fake": 0, "fallback": {}}
        with at_step(unet, k):
            for name, (inp, ref) in io.items():
                layer = unet.get_submodule(name)
                assert isinstance(layer, IntQLinear | IntQConv2d)
                assert_agrees(layer(inp), ref)
        use_kernels(unet, "fake")
    assert unet.state_dict().keys() == state.keys()  # derived buffers are not saved: the artifact format stays


@torch.no_grad()
def test_whole_unet_call_agrees_with_fake():
    unet = _quantized_unet(8)
    x, cond = unet_inputs()
    fake = [unet(x, t, encoder_hidden_states=cond).sample for t in TIMESTEPS]
    use_kernels(unet, "int")
    for t, ref in zip(TIMESTEPS, fake, strict=True):
        assert_close_whole(unet(x, t, encoder_hidden_states=cond).sample, ref)


def _odd_layers() -> nn.ModuleDict:
    torch.manual_seed(1)
    return nn.ModuleDict({
        "linear": nn.Linear(13, 7),
        "linear_nobias": nn.Linear(9, 17, bias=False),
        "conv": nn.Conv2d(5, 11, 3, padding=1),
        "conv_strided": nn.Conv2d(6, 9, 3, stride=2, padding=1, dilation=1),
        "conv_groups": nn.Conv2d(6, 9, (3, 1), padding=(1, 0), groups=3),
        "conv_reflect": nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect", bias=False),
        "conv_dilated": nn.Conv2d(4, 7, 3, padding=2, dilation=2),
    })


def _quantize_layers(layers: nn.ModuleDict, weight_bits: int) -> StepCounter:
    counter = StepCounter(TIMESTEPS)
    observer = get_observer("minmax")
    for name, m in list(layers.items()):
        qcls = {nn.Linear: QLinear, nn.Conv2d: QConv2d}[type(m)]
        layers[name] = qcls.from_module(m, num_steps=len(TIMESTEPS), weight_bits=weight_bits, act_bits=8,
                                        observer=observer, counter=counter)
    _set_ranges(layers)
    return counter


@pytest.mark.parametrize("weight_bits", [8, 4, 3])
@torch.no_grad()
def test_odd_shaped_layers_agree_with_fake(weight_bits):
    layers = _odd_layers()
    counter = _quantize_layers(layers, weight_bits)
    g = torch.Generator().manual_seed(2)
    inputs = {n: torch.randn(3, 13, generator=g) if n == "linear" else torch.randn(2, 5, 9, generator=g)
              if n == "linear_nobias" else torch.randn(2, m.in_channels, 7, 9, generator=g) for n, m in layers.items()}
    refs = {}
    for k in range(len(TIMESTEPS)):
        with counter.pin(k):
            refs[k] = {n: m(inputs[n]) for n, m in layers.items()}
    assert use_kernels(layers, "int")["int"] == len(layers)
    for k in range(len(TIMESTEPS)):
        with counter.pin(k):
            for n, m in layers.items():
                assert_agrees(m(inputs[n]), refs[k][n])


@torch.no_grad()
def test_a_layer_the_int_path_cannot_run_falls_back_by_name():
    unet = _quantized_unet(8)
    name = "mid_block.attentions.0.proj_in"
    layer = unet.get_submodule(name)
    layer.input_quant.set_step(1, torch.tensor(-2.0), torch.tensor(2.0), bits=16)  # past the 14-bit split
    x, cond = unet_inputs()
    fake = unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample
    summary = use_kernels(unet, "int")
    assert list(summary["fallback"]) == [name] and "16-bit" in summary["fallback"][name]
    assert summary["int"] == len(qmodules(unet)) - 1 and summary["fake"] == 1
    assert not isinstance(unet.get_submodule(name), IntQLinear | IntQConv2d)
    assert_close_whole(unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample, fake)
    with pytest.raises(ValueError, match="kernels='int8' is not allowed"):
        use_kernels(unet, "int8")


@torch.no_grad()
def test_moving_the_int_model_recomputes_its_kernels():
    unet = _quantized_unet(8)
    use_kernels(unet, "int")
    x, cond = unet_inputs()
    before = unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample
    unet.to(torch.float64).to(torch.float32)  # a cast the prepacked oneDNN weights could not follow
    torch.testing.assert_close(unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample, before, rtol=0, atol=0)


@pytest.mark.parametrize("weight_bits,weight_symmetric", [(8, False), (4, False), (8, True), (6, False)])
@torch.no_grad()
def test_int_layers_hold_the_weights_once_and_save_the_same_codes(weight_bits, weight_symmetric):
    unet = _quantized_unet(weight_bits, weight_symmetric)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    x, cond = unet_inputs()
    fake = unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample
    use_kernels(unet, "int")
    assert all(m.weight_codes is None for m in qmodules(unet).values())  # the int8 weights hold the codes
    saved = unet.state_dict()
    assert saved.keys() == state.keys()
    for key, ref in state.items():
        assert saved[key].dtype == ref.dtype and torch.equal(saved[key], ref), key
    unet.load_state_dict(state)  # into the int layers: derived again
    int_out = unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample
    use_kernels(unet, "fake")
    assert all(torch.equal(m.weight_codes, state[f"{n}.weight_codes"]) for n, m in qmodules(unet).items())
    assert torch.equal(unet(x, TIMESTEPS[0], encoder_hidden_states=cond).sample, fake)
    assert_close_whole(int_out, fake)
