"""The fp8 artifact: E4M3 weights on disk, the stock pipeline from a model folder without float UNet weights,
the fp8 kernels against fake quantization, and torch.compile(fullgraph=True) in one graph."""

from __future__ import annotations

import shutil

import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from test_pipeline import BACKEND, STEPS, _images, _psnr

import pcr
from pcr.config import QuantConfig
from pcr.quant import qmodules, quantize_model, save_quantized
from pcr.quant.float8 import E4M3
from pcr.quant.kernels.fp8 import Fp8QConv2d, Fp8QLinear
from pcr.quant.qmap import QuantMap
from pcr.quant.serialize import WEIGHTS


def _export_fp8(model_dir, out, relaxed: tuple[int, ...] = (1,)):
    """An fp8 artifact, per-step ranges set by hand, the `relaxed` steps unquantized."""
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet").eval()
    scheduler = PNDMScheduler.from_pretrained(model_dir / "scheduler", skip_prk_steps=True)
    scheduler.set_timesteps(STEPS)
    qmap = quantize_model(unet, QuantConfig(format="fp8", weight_bits=8, act_bits=8, weight_observer="minmax"),
                          scheduler.timesteps.tolist(), type(scheduler).__name__, STEPS)
    for m in qmodules(unet).values():
        for k in range(len(scheduler.timesteps)):
            m.input_quant.set_step(k, torch.tensor(-3.0 + 0.5 * k), torch.tensor(3.0 - 0.5 * k), bits=16 if k in relaxed else 8)
    meta = {"scheduler": dict(scheduler.config), "num_inference_steps": STEPS}
    save_quantized(unet, QuantMap(qmap.num_steps, qmap.weight_observer, qmap.act_observer, qmap.layers, meta=meta), out, scheduler)
    return out


def _without_unet_weights(model_dir, out):
    """The model folder with the UNet's config only: the float UNet weights cannot be read."""
    shutil.copytree(model_dir, out)
    for f in (out / "unet").iterdir():
        if f.name != "config.json":
            f.unlink()
    return out


def test_fp8_artifact_runs_in_the_stock_pipeline_on_fp8_kernels_like_fake(tiny_sd_dir, tmp_path, capsys):
    quantized = _export_fp8(tiny_sd_dir, tmp_path / "quantized")
    stored = load_file(str(quantized / WEIGHTS))
    assert stored["down_blocks.0.resnets.0.conv1.weight_codes"].dtype == E4M3  # 1 byte per weight
    model_dir = _without_unet_weights(tiny_sd_dir, tmp_path / "model")
    fake = _images(pcr.load_pipeline(model_dir, quantized))
    pipe = pcr.load_pipeline(model_dir, quantized, kernels="fp8")
    assert type(pipe) is StableDiffusionPipeline
    n = len(qmodules(pipe.unet))
    assert pipe.unet.pcr_kernels == {"fp8": n, "fake": 0, "fallback": {}}
    assert f"kernels=fp8: {n} quantized layers on fp8 (E4M3) kernels, 0 fake-quantized" in capsys.readouterr().out
    assert all(isinstance(m, Fp8QLinear | Fp8QConv2d) for m in qmodules(pipe.unet).values())
    # Measured 45.1 dB here (float32 GEMM of the E4M3 codes, the CPU's route) and 42.4 dB with torch._scaled_mm
    # forced: the two sum in another order, and an E4M3 code that rounds the other way moves a value by 1/16 to 1/8
    # of itself (an int8 code: 1/255 of the range), so whole generations differ more than int's; a wrong scale or
    # step costs tens of dB. The demo set's figure is in benchmarks/README.md (fp8_demo.py).
    images = _images(pipe)
    assert _psnr(images, fake) >= 40, _psnr(images, fake)


def test_fullgraph_compile_of_the_fp8_unet_runs_a_generation_in_one_graph(tiny_sd_dir, tmp_path):
    import torch._dynamo
    from torch._dynamo.utils import counters

    quantized = _export_fp8(tiny_sd_dir, tmp_path / "quantized", relaxed=())  # relaxed steps: test_fp8_kernels.py
    pipe = pcr.load_pipeline(tiny_sd_dir, quantized, kernels="fp8")
    eager = _images(pipe)
    torch._dynamo.reset()
    counters.clear()
    pipe.unet = torch.compile(pipe.unet, fullgraph=True, backend=BACKEND)
    compiled = _images(pipe)
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])  # one graph serves every step
    assert not counters["graph_break"]
    assert _psnr(compiled, eager) >= 45
