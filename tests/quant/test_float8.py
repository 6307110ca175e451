"""The fp8 format: E4M3 codes with per-step activation scales and per-channel weight scales, as the fake reference."""

import pytest
import torch
from quant_testlib import tiny_unet, unet_inputs
from safetensors.torch import load_file

from pcr.config import QuantConfig
from pcr.quant import at_step, load_quantized, qmodules, quantize_model, save_quantized
from pcr.quant.float8 import E4M3, E4M3_MAX, fake_quantize, params_from_range, quantize
from pcr.quant.modules import ActQuantizer, QLinear
from pcr.quant.observers import get_observer
from pcr.quant.serialize import WEIGHTS
from pcr.quant.step import StepCounter

TIMESTEPS = [900.0, 500.0, 100.0]


def _reference(x, s):
    """The issue's definition, written out: (x / s).clamp(-448, 448).to(float8_e4m3fn).float() * s."""
    return (x / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s


def test_fake_quantize_is_the_e4m3_round_trip_and_saturates():
    x = torch.cat([torch.randn(1000) * 3, torch.tensor([1e6, -1e6, 0.0])])
    s, z = params_from_range(torch.tensor(-2.0), torch.tensor(5.0))
    assert float(s) == pytest.approx(5.0 / E4M3_MAX) and int(z) == 0
    y = fake_quantize(x, s)
    torch.testing.assert_close(y, _reference(x, s), rtol=0, atol=0)
    assert y[-3] == 448 * s and y[-2] == -448 * s and y[-1] == 0  # clamped, never NaN
    assert quantize(x, s).dtype == E4M3 and quantize(x, s).element_size() == 1
    normal = (x.abs() > 64 * s) & (x.abs() <= 5)  # E4M3 normals inside the range: 3 mantissa bits, error <= 2^-4
    assert float(((y - x).abs() / x.abs())[normal].max()) <= 2**-4 + 1e-6


def _fp8_quantizer(bits=(8, 16, 8)) -> ActQuantizer:
    counter = StepCounter(TIMESTEPS)
    aq = ActQuantizer(len(bits), 8, False, counter, "fp8")
    for k, b in enumerate(bits):
        aq.set_step(k, torch.tensor(-1.0 - k), torch.tensor(2.0 + k), b)
    return aq


def test_activation_quantizer_runs_e4m3_per_step_and_relaxed_steps_unquantized():
    aq = _fp8_quantizer()
    x = 4 * torch.randn(3, 7)
    assert aq.scale.tolist() == pytest.approx([2.0 / 448, 3.0 / 448, 4.0 / 448]) and not aq.zero_point.any()
    for k in range(3):
        with aq._counter.pin(k):
            eager = aq(x)
            with torch.no_grad():
                tensors = torch.compile(aq, fullgraph=True, backend="aot_eager")(x)  # the index_select path
        ref = x if k == 1 else _reference(x, aq.scale[k])
        assert torch.equal(eager, ref) and torch.equal(tensors, ref), k
    with pytest.raises(ValueError, match="act_bits=6 is not allowed in the fp8 format"):
        ActQuantizer(3, 6, False, None, "fp8")


def test_fp8_weights_are_one_byte_codes_with_a_scale_per_output_channel():
    torch.manual_seed(0)
    lin = torch.nn.Linear(24, 10)
    q = QLinear.from_module(lin, num_steps=3, weight_bits=8, act_bits=8, observer=get_observer("minmax"),
                            counter=StepCounter(TIMESTEPS), fmt="fp8")
    w = lin.weight.detach()
    s_w = w.abs().amax(1) / 448
    assert q.weight_codes.dtype == E4M3 and q.weight_codes.shape == w.shape
    torch.testing.assert_close(q.weight_scale, s_w, rtol=1e-6, atol=0)
    torch.testing.assert_close(q.dequantized_weight(), _reference(w, s_w[:, None]), rtol=0, atol=0)
    q.to(torch.float16)  # a dtype cast leaves the codes E4M3 and the scales float32
    assert q.weight_codes.dtype == E4M3 and q.weight_scale.dtype == torch.float32
    q4 = QLinear.from_module(lin, num_steps=3, weight_bits=4, act_bits=8, observer=get_observer("minmax"), fmt="fp8")
    assert q4.weight_codes.dtype == torch.uint8 and q4.input_quant.format == "fp8"  # W4A8 fp8: integer 4-bit weights


@pytest.mark.parametrize("weight_bits", [8, 4])
@torch.no_grad()
def test_fp8_artifact_round_trips_on_a_meta_model(tmp_path, weight_bits):
    unet = tiny_unet()
    cfg = QuantConfig(format="fp8", weight_bits=weight_bits, act_bits=8, weight_observer="minmax")
    qmap = quantize_model(unet, cfg, TIMESTEPS, "DDIMScheduler")
    assert {spec.format for spec in qmap.layers.values()} == {"fp8"}
    for m in qmodules(unet).values():
        for k in range(3):
            m.input_quant.set_step(k, torch.tensor(-1.0 - k), torch.tensor(2.0 + k), bits=16 if k == 1 else 8)
    save_quantized(unet, qmap, tmp_path / "q")
    stored = load_file(str(tmp_path / "q" / WEIGHTS))["down_blocks.0.resnets.0.conv1.weight_codes"]
    assert stored.dtype == (E4M3 if weight_bits == 8 else torch.uint8)
    loaded = load_quantized(tmp_path / "q")
    x, ehs = unet_inputs()
    for k, t in enumerate(TIMESTEPS):
        with at_step(unet, k), at_step(loaded, k):
            assert torch.equal(unet(x, t, ehs).sample, loaded(x, t, ehs).sample)
    layer = loaded.get_submodule("mid_block.attentions.0.proj_in")
    assert layer.input_quant.format == "fp8" and layer.fp8_weights == (weight_bits == 8)
