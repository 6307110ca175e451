"""kernels="openvino": the artifact exported to one OpenVINO model agrees with fake quantization, runs its quantized
layers u8 x i8 (OpenVINO's executed graph says so), and refuses IR that is not this artifact's."""

from __future__ import annotations

import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kernels_testlib import act_state
from torch import nn

import pcr
from pcr.errors import StoreError
from pcr.quant import QConv2d, QLinear, qmodules, quantize_model, save_quantized
from pcr.quant.kernels import openvino as pov
from pcr.quant.kernels import use_kernels
from pcr.quant.observers import get_observer
from pcr.quant.qmap import QuantMap
from pcr.quant.serialize import load_quantized
from pcr.quant.step import StepCounter

STEPS = 3
PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino")


class _OneLayer(nn.Module):
    def __init__(self, layer: pov.ExportLayer):
        super().__init__()
        self.layer = layer

    def forward(self, x, step):
        self.layer.step_input.k = step
        return self.layer(x)


def _convert(ov, module: nn.Module, x: torch.Tensor):
    return ov.convert_model(module.eval(), example_input=(x, torch.zeros(1, dtype=torch.long)))


def _precisions(compiled) -> set[str]:
    """Runtime precisions of the executed convolutions and matmuls."""
    return {precision for _, precision in pov.executed_kernels(compiled).values()}


def _layer(kind: str, weight_bits: int, weight_symmetric: bool, bits: tuple[int, ...], act_symmetric: bool = False):
    torch.manual_seed(0)
    counter = StepCounter([float(t) for t in range(len(bits))])
    float_layer = nn.Conv2d(8, 16, 3, padding=1, stride=2) if kind == "conv" else nn.Linear(24, 16)
    cls = QConv2d if kind == "conv" else QLinear
    q = cls.from_module(float_layer, num_steps=len(bits), weight_bits=weight_bits, act_bits=8, weight_symmetric=weight_symmetric,
                        act_symmetric=act_symmetric, observer=get_observer("minmax"), counter=counter)
    scale, zp, b = act_state(bits, act_symmetric)
    for k in range(len(bits)):
        q.input_quant.set_step_params(k, scale[k], zp[k], int(b[k]))
    return q, counter


@pytest.mark.parametrize(("kind", "weight_bits", "weight_symmetric", "bits", "int8"), [
    ("conv", 8, False, (8, 6, 8), True),   # 8-bit asymmetric weights: window sums; 6-bit step: per-step clamp
    ("conv", 4, False, (8, 8, 8), True),   # W4A8
    ("linear", 8, False, (8, 8, 8), True),
    ("linear", 8, True, (6, 6, 6), True),  # symmetric weights, 6-bit activations: a 64-level FakeQuantize
    ("linear", 8, False, (8, 10, 8), False),  # a relaxed 10-bit step: the layer stays fake (float32)
    ("conv", 8, False, (8, 10, 8), False),  # the same, padded by its conv in float (a padded 0 stays 0)
])
def test_export_layer_agrees_with_the_fake_layer_at_every_step(ov, kind, weight_bits, weight_symmetric, bits, int8):
    q, counter = _layer(kind, weight_bits, weight_symmetric, bits)
    layer = pov.ExportLayer(q, pov._StepInput())
    assert layer.int8 is int8 and (int8 or "10-bit activations" in layer.why)
    x = 2 * torch.randn(2, 8, 10, 10) if kind == "conv" else 2 * torch.randn(2, 5, 24)
    model = _convert(ov, _OneLayer(layer), x)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    ops = pov.executed_kernels(compiled)
    assert ("u8" in _precisions(compiled)) is int8, ops  # the quantized op runs on u8 codes in OpenVINO's executed graph
    for k in range(len(bits)):
        with counter.pin(k), torch.no_grad():
            ref = q(x)
        y = torch.from_numpy(compiled([x.numpy(), np.array([k])])[0])
        err = (y - ref).abs()
        # the same codes up to a rare half-way rounding (OpenVINO's FakeQuantize computes x / 255 * 255): one code
        # step of one input moves an output by s_x |w| <= 1e-2 of its range; a wrong step or zero point by O(1)
        assert float(err.max()) <= 2e-2 * float(ref.abs().max()), (k, float(err.max()))
        assert float(err.mean()) <= 1e-4 * float(ref.abs().max()), (k, float(err.mean()))


@pytest.mark.parametrize("weight_symmetric", [True, False])
def test_bf16_float_parts_do_not_cancel_the_zero_point(ov, weight_symmetric):
    """The int8 op's bias -c R' (c: the layer's median zero point) is added inside the kernel before its bf16 store,
    so a padded conv's output is about sum (u - c) w, not sum u w = ... + c R, whose large c R cancelled against the
    float correction in bf16: format 2 gave 11% (symmetric weights) and 14% (asymmetric) relative error on this
    layer (weights with a large per-channel sum), format 3 2.2% and 0.2%. Static shapes, as OpenVINOUNet compiles."""
    torch.manual_seed(0)
    counter = StepCounter([0.0])
    float_layer = nn.Conv2d(64, 64, 3, padding=1)
    with torch.no_grad():  # every output channel's weights shifted by up to 2 std: a large rowsum R
        w = float_layer.weight
        w.add_(2 * w.std() * torch.rand(w.shape[0], 1, 1, 1))
    q = QConv2d.from_module(float_layer, num_steps=1, weight_bits=8, act_bits=8, weight_symmetric=weight_symmetric,
                            act_symmetric=False, observer=get_observer("minmax"), counter=counter)
    x = torch.randn(1, 64, 16, 16)
    q.input_quant.set_step(0, x.min(), x.max())
    layer = pov.ExportLayer(q, pov._StepInput())
    assert layer.int8 and layer.padded and 100 <= layer.c <= 160, layer.c  # about the middle of the codes
    with counter.pin(0), torch.no_grad():
        ref = q(x)
    model = _convert(ov, _OneLayer(layer), x)
    model.reshape({model.inputs[0]: list(x.shape), model.inputs[1]: [1]})
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 1})
    assert "u8" in _precisions(compiled)
    y = torch.from_numpy(compiled([x.numpy(), np.array([0])])[0])
    assert float((y - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()) <= 0.03


def _op_types(ov, model, tmp_path) -> set[str]:
    """The op types of `model` as saved to IR and read back."""
    ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=False)
    return {op.get_type_name() for op in ov.Core().read_model(tmp_path / "m.xml").get_ops()}


def _run(ov, model, x: torch.Tensor, k: int, static: bool) -> torch.Tensor:
    if static:
        model.reshape({model.inputs[0]: list(x.shape), model.inputs[1]: [1]})
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    return torch.from_numpy(compiled([x.numpy(), np.array([k])])[0])


@pytest.mark.parametrize(("conv", "weight_bits", "weight_symmetric"), [
    ({"padding": 1, "stride": 2}, 8, False),  # window sums of the zero-padded codes, stride 2
    ({"padding": 1}, 8, True),
    ({"padding": 2, "dilation": 2}, 4, False),
    ({"padding": (1, 0)}, 8, True),  # padded in height only
    ({"padding": 1, "groups": 4}, 8, True),  # grouped: each output channel's R_in sums its own group's weights
])
def test_padded_conv_runs_without_pad_nodes_and_agrees_at_the_border(ov, tmp_path, conv, weight_bits, weight_symmetric):
    """The conv zero-pads the u codes (a padded code is 0, not z_k) and R_in corrects it; large zero points
    (ranges mostly below 0) make a border off by z_k R far outside the tolerance."""
    torch.manual_seed(0)
    ranges = [(-3.5, 0.5), (-0.2, 3.0), (-6.0, 0.1)]  # u's zero points ~223, ~16, ~251
    counter = StepCounter([float(t) for t in range(len(ranges))])
    q = QConv2d.from_module(nn.Conv2d(8, 16, 3, **conv), num_steps=len(ranges), weight_bits=weight_bits, act_bits=8,
                            weight_symmetric=weight_symmetric, act_symmetric=False, observer=get_observer("minmax"),
                            counter=counter)
    for k, (lo, hi) in enumerate(ranges):
        q.input_quant.set_step(k, torch.tensor(lo), torch.tensor(hi))
    layer = pov.ExportLayer(q, pov._StepInput())
    assert layer.int8 and layer.padded, layer.why
    x = torch.rand(2, 8, 11, 10) * 4 - 3
    model = _convert(ov, _OneLayer(layer), x)
    types = _op_types(ov, model, tmp_path)
    assert "Pad" not in types and "Convolution" in types, types
    assert "u8" in _precisions(ov.Core().compile_model(model.clone(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
    for static in (False, True):  # dynamic shapes as exported, static as OpenVINOUNet compiles them
        for k in range(len(ranges)):
            with counter.pin(k), torch.no_grad():
                ref = q(x)
            y = _run(ov, model.clone(), x, k, static)
            err = (y - ref).abs()
            assert float(err.max()) <= 2e-2 * float(ref.abs().max()), (static, k, float(err.max()))
            assert float(err.mean()) <= 1e-4 * float(ref.abs().max()), (static, k, float(err.mean()))
            border = torch.cat([err[..., 0, :].flatten(), err[..., -1, :].flatten(), err[..., 0].flatten(), err[..., -1].flatten()])
            assert float(border.mean()) <= 1e-4 * float(ref.abs().max()), (static, k, float(border.mean()))


class _Stepped(nn.Module):
    """Export layers of one step input, combined by `body`: (x, step) -> output."""

    def __init__(self, layers, step):
        super().__init__()
        self.layers, self.step = nn.ModuleList(layers), step

    def forward(self, x, k):
        self.step.k = k
        return self.body(x)


class _ConvChain(_Stepped):
    """conv -> SiLU -> conv: what a UNet's resnet block runs."""

    def body(self, x):
        return self.layers[1](F.silu(self.layers[0](x)))


def _reorders(ov, chain: nn.Module, x: torch.Tensor) -> tuple[int, np.ndarray]:
    """(executed reorders of activations, not of the one-element step scalars; the output at step 1) of the chain
    compiled for x's shape with bf16 float parts."""
    model = _convert(ov, chain, x)
    model.reshape({model.inputs[0]: list(x.shape), model.inputs[1]: [1]})
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 1})
    assert [p for _, p in pov.executed_kernels(compiled).values()] == ["u8", "u8"], pov.executed_kernels(compiled)
    reorders = sum(op.get_rt_info()["layerType"].astype(str) == "Reorder" and math.prod(op.get_output_shape(0)) > 1
                   for op in compiled.get_runtime_model().get_ordered_ops())
    return reorders, compiled([x.numpy(), np.array([1])])[0]


def test_per_step_scalars_keep_the_convs_in_one_layout(ov, monkeypatch):
    """Format 4: table[k] at the tensor's rank lets the per-step rescale run in the convs' channels-last layout; the
    format-3 lookup (a [1] scalar) made OpenVINO reorder a conv's output to planar (on the SD 1.5 UNet in bf16:
    134 -> 114 reorders). With f32 float parts OpenVINO lays both out alike."""
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("the layout effect is measured with bf16 float parts; this CPU runs f32")
    step = pov._StepInput()
    layers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        q = QConv2d.from_module(nn.Conv2d(16, 16, 3), num_steps=3, weight_bits=8, act_bits=8, weight_symmetric=True,
                                act_symmetric=False, observer=get_observer("minmax"), counter=StepCounter([0.0, 1.0, 2.0]))
        for k in range(3):
            q.input_quant.set_step(k, torch.tensor(-1.0 - k), torch.tensor(2.0 + k))
        layers.append(pov.ExportLayer(q, step))
    x = torch.randn(1, 16, 16, 16)
    rank_scalars, y = _reorders(ov, _ConvChain(layers, step), x)
    monkeypatch.setattr(pov.ExportLayer, "step_scalar", lambda self, table, x: table.index_select(0, self.step_input.k))
    flat_scalars, y_flat = _reorders(ov, _ConvChain(layers, step), x)
    assert rank_scalars < flat_scalars, (rank_scalars, flat_scalars)
    np.testing.assert_allclose(y, y_flat, rtol=0, atol=1e-2 * float(np.abs(y_flat).max()))  # the layout, not the numbers


class _QKV(_Stepped):
    def body(self, x):
        return torch.cat([m(x) for m in self.layers], -1)


def test_qkv_projections_of_one_tensor_with_equal_steps_agree(ov):
    """q, k, v read one tensor through equal activation quantizers (OpenVINO may merge them into one)."""
    torch.manual_seed(0)
    bits = (8, 8, 8)
    counter = StepCounter([float(t) for t in range(len(bits))])
    scale, zp, b = act_state(bits)
    qs = []
    for _ in range(3):
        q = QLinear.from_module(nn.Linear(24, 16), num_steps=len(bits), weight_bits=8, act_bits=8, weight_symmetric=False,
                                act_symmetric=False, observer=get_observer("minmax"), counter=counter)
        for k in range(len(bits)):
            q.input_quant.set_step_params(k, scale[k], zp[k], int(b[k]))
        qs.append(q)
    step = pov._StepInput()
    x = 2 * torch.randn(2, 5, 24)
    model = _convert(ov, _QKV([pov.ExportLayer(q, step) for q in qs], step), x)
    for k in range(len(bits)):
        with counter.pin(k), torch.no_grad():
            ref = torch.cat([q(x) for q in qs], -1)
        err = (_run(ov, model.clone(), x, k, static=True) - ref).abs()
        assert float(err.max()) <= 2e-2 * float(ref.abs().max()), (k, float(err.max()))
        assert float(err.mean()) <= 1e-4 * float(ref.abs().max()), (k, float(err.mean()))


def _export(model_dir, out, bits=None, output_correction=False):
    """A quantized artifact of the tiny model's UNet (per-step ranges, and output corrections, set by hand),
    T=STEPS+1 PNDM steps."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    from pcr.config import QuantConfig

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet").eval()
    scheduler = PNDMScheduler.from_pretrained(model_dir / "scheduler", skip_prk_steps=True)
    scheduler.set_timesteps(STEPS)
    qmap = quantize_model(unet, QuantConfig(weight_bits=8, act_bits=8, weight_observer="minmax"), scheduler.timesteps.tolist(),
                          type(scheduler).__name__, STEPS, output_correction=output_correction)
    for m in qmodules(unet).values():
        for k in range(len(scheduler.timesteps)):
            m.input_quant.set_step(k, torch.tensor(-3.0 + 0.5 * k), torch.tensor(3.0 - 0.5 * k), bits)
    t = len(scheduler.timesteps)
    if output_correction:  # a different gain and shift per step: the IR must read them by the input step
        for k in range(t):
            unet.conv_out.set_step(k, torch.full((4,), 1.0 + 0.15 * k), torch.full((4,), 0.05 * k))
    meta = {"scheduler": dict(scheduler.config), "num_inference_steps": STEPS,
            "schedule": {"bits": [bits or 8] * t, "average_bits": float(bits or 8), "fraction": 0.0, "where": "x0"}}
    save_quantized(unet, QuantMap(qmap.num_steps, qmap.weight_observer, qmap.act_observer, qmap.layers,
                                  output_correction=qmap.output_correction, meta=meta), out, scheduler)
    return out


def _images(pipe):
    noise = torch.randn((len(PROMPTS), 4, 8, 8), generator=torch.Generator().manual_seed(0))
    return np.asarray(pipe(PROMPTS, latents=noise, num_inference_steps=STEPS, guidance_scale=4.0, output_type="np").images)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def exported(ov, tiny_sd_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("openvino")
    quantized = _export(tiny_sd_dir, root / "quantized", output_correction=True)
    return quantized, pov.export_openvino(quantized, root / "ir")


def test_openvino_pipeline_gives_the_fake_images(exported, tiny_sd_dir, capsys):
    quantized, ir = exported
    fake = _images(pcr.load_pipeline(tiny_sd_dir, quantized))
    before = (ir / pov.IR_BIN).stat().st_mtime_ns
    pipe = pcr.load_pipeline(tiny_sd_dir, quantized, kernels="openvino", openvino_dir=ir, openvino_precision="f32")
    assert (ir / pov.IR_BIN).stat().st_mtime_ns == before  # the IR of this artifact is reused, not exported again
    assert type(pipe).__name__ == "StableDiffusionPipeline" and isinstance(pipe.unet, pov.OpenVINOUNet)
    n = len(QuantMap.load(quantized / "quantization.json").layers)
    assert pipe.unet.pcr_kernels == {"int": n, "fake": 0, "fallback": {}}
    assert f"kernels=openvino: {n} quantized layers u8 x i8 in OpenVINO" in capsys.readouterr().out
    images = _images(pipe)
    assert _psnr(images, fake) >= 45, _psnr(images, fake)
    assert np.array_equal(_images(pipe), images)  # the step counter starts a new generation
    with pytest.raises(ValueError, match="T=4 steps of PNDMScheduler.*num_inference_steps=3"):
        pipe(PROMPTS, num_inference_steps=7, output_type="np")


def test_bf16_float_parts_on_request_and_a_bad_precision_refused_before_any_export(ov, exported, tiny_sd_dir, tmp_path):
    quantized, ir = exported
    fake = _images(pcr.load_pipeline(tiny_sd_dir, quantized))
    pipe = pcr.load_pipeline(tiny_sd_dir, quantized, kernels="openvino", openvino_dir=ir, openvino_precision="bf16")
    assert pipe.unet.ov_config["INFERENCE_PRECISION_HINT"] == "bf16"
    images = _images(pipe)
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):  # else OpenVINO runs f32 anyway
        executed = {op.get_rt_info()["runtimePrecision"].astype(str) for op in pipe.unet.compiled.get_runtime_model().get_ordered_ops()}
        assert "bf16" in executed, executed
    assert 25 <= _psnr(images, fake) < float("inf")
    with pytest.raises(ValueError, match=r"precision='fp16' is not allowed: choose one of \['auto', 'f32', 'bf16'\]"):
        pcr.load_pipeline(tiny_sd_dir, quantized, kernels="openvino", openvino_dir=tmp_path / "ir", openvino_precision="fp16")
    assert not (tmp_path / "ir").exists()


def test_default_precision_is_openvinos_own_for_this_cpu(ov, exported, tiny_sd_dir):
    """precision="auto" (the default) sets no hint: the float parts run at what OpenVINO picks for this CPU, as its
    own int8 models do (bf16 with AVX512-BF16 or AMX), and the UNet says which."""
    quantized, ir = exported
    pipe = pcr.load_pipeline(tiny_sd_dir, quantized, kernels="openvino", openvino_dir=ir)
    assert "INFERENCE_PRECISION_HINT" not in pipe.unet.ov_config
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert pipe.unet.precision == default  # before the first call: what OpenVINO will pick
    assert pov.OpenVINOUNet.load(ir, precision="f32").precision == "f32"
    bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert pov.OpenVINOUNet.load(ir, precision="bf16").precision == ("bf16" if bf16 else "f32")
    images = _images(pipe)
    assert pipe.unet.precision == default  # compiled: what it runs
    assert _psnr(images, _images(pcr.load_pipeline(tiny_sd_dir, quantized))) >= 25


def test_exported_unet_has_no_pad_nodes(ov, exported):
    """Every padded conv zero-pads its u codes itself: no Pad node in front of the 3x3 convs."""
    types = {op.get_type_name() for op in ov.Core().read_model(exported[1] / pov.IR_XML).get_ops()}
    assert "Convolution" in types and "Pad" not in types, sorted(types)


def test_relaxed_steps_stay_fake_by_name(ov, tiny_sd_dir, tmp_path):
    """Layers with a step above 8 bits stay fake-quantized in float32 inside the model (their agreement: the layer test)."""
    wrapper = pov.ExportUNet(load_quantized(_export(tiny_sd_dir, tmp_path / "quantized", bits=10)))
    fallback = wrapper.summary["fallback"]
    assert wrapper.summary["int"] == 0 and len(fallback) == wrapper.summary["fake"] > 0
    assert all("10-bit activations" in why for why in fallback.values())


def test_ir_of_another_artifact_or_damaged_is_refused(exported, tiny_sd_dir, tmp_path):
    quantized, ir = exported
    other = shutil.copytree(quantized, tmp_path / "other")
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")  # other bytes: another artifact
    with pytest.raises(StoreError, match="OpenVINO export of another artifact"):
        pcr.load_pipeline(tiny_sd_dir, other, kernels="openvino", openvino_dir=ir)
    damaged = shutil.copytree(ir, tmp_path / "damaged")
    (damaged / pov.IR_XML).write_text((damaged / pov.IR_XML).read_text()[:500])
    with pytest.raises(StoreError, match="damaged OpenVINO IR"):
        pov.OpenVINOUNet.load(damaged)
    (damaged / pov.IR_META).write_text('{"format": "something else"}')
    with pytest.raises(StoreError, match="format 'something else'.*export again"):
        pov.OpenVINOUNet.load(damaged)
    with pytest.raises(StoreError, match="not a pcr quantized-model folder"):
        pov.export_openvino(tmp_path / "nothing", tmp_path / "ir2")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(StoreError, match="exists and is not a pcr OpenVINO export"):  # never written over
        pov.export_openvino(quantized, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "a user's file"


def _as_older_format(ir, dest):
    old = shutil.copytree(ir, dest)
    meta = json.loads((old / pov.IR_META).read_text())
    (old / pov.IR_META).write_text(json.dumps({**meta, "format_version": pov.FORMAT_VERSION - 1}))
    return old


def test_cached_ir_of_an_older_format_is_not_found_and_exported_anew(exported, tmp_path, monkeypatch):
    """The cache folder names the format version: an older pcr's export of the same artifact (the same hash) sits
    beside it, untouched, and a fresh IR is made; an explicit folder with an older export is refused."""
    quantized, ir = exported
    monkeypatch.setenv("PCR_CACHE", str(tmp_path / "cache"))
    digest = pov.artifact_hash(quantized)
    old = _as_older_format(ir, tmp_path / "cache" / "openvino" / digest[:16])  # where format 1 cached it
    assert pov.default_ir_dir(digest) == tmp_path / "cache" / "openvino" / f"v{pov.FORMAT_VERSION}" / digest[:16]
    folder = pov.export_openvino(quantized)
    assert folder == pov.default_ir_dir(digest) and pov.check_ir(folder, digest)["format_version"] == pov.FORMAT_VERSION
    assert json.loads((old / pov.IR_META).read_text())["format_version"] == pov.FORMAT_VERSION - 1
    explicit = _as_older_format(ir, tmp_path / "explicit")
    with pytest.raises(StoreError, match=f"version {pov.FORMAT_VERSION - 1}, this pcr reads .* version {pov.FORMAT_VERSION}: export again"):
        pov.export_openvino(quantized, explicit)


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'pcr\[openvino\]'"):
        pov.require_openvino()


def test_use_kernels_sends_openvino_to_load_pipeline():
    layer = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="kernels='openvino' runs the whole UNet from its artifact"):
        use_kernels(layer, "openvino")


def test_generate_stage_runs_the_openvino_route(exported, tiny_sd_dir, small_params, tmp_path, monkeypatch):
    import zarr

    from pcr.generate import generate
    from pcr.images import reference

    quantized, ir = exported
    monkeypatch.setenv("PCR_CACHE", str(tmp_path / "cache"))  # the IR is looked up in the cache folder of the artifact's hash
    shutil.copytree(ir, pov.default_ir_dir(pov.artifact_hash(quantized)))  # as an earlier export left it (saves one)
    params = small_params(tiny_sd_dir, model={"steps": STEPS, "scheduler": "pndm"}, eval={"num_prompts": 2})
    reference(params, tmp_path / "ref.zarr", progress=False)
    images = {}
    for kernels in ("fake", "openvino"):
        p = small_params(tiny_sd_dir, model={"steps": STEPS, "scheduler": "pndm"}, eval={"num_prompts": 2},
                         generate={"kernels": kernels, "openvino_precision": "f32"})
        generate(p, quantized, tmp_path / "ref.zarr", tmp_path / f"{kernels}.zarr", progress=False)
        store = zarr.open_group(str(tmp_path / f"{kernels}.zarr"), mode="r")
        images[kernels] = store["images/standard"][:]
    assert store.attrs["kernels_summary"]["precision"] == "f32"  # the scored model says how its float parts ran
    assert [p.name for p in (tmp_path / "cache" / "openvino").iterdir()] == [f"v{pov.FORMAT_VERSION}"]
    assert [p.name for p in (tmp_path / "cache" / "openvino" / f"v{pov.FORMAT_VERSION}").iterdir()] == [pov.artifact_hash(quantized)[:16]]
    assert _psnr(images["openvino"] / 255, images["fake"] / 255) >= 40
