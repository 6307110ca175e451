"""pcr.load_pipeline: the artifact in the stock diffusers pipelines, eager and under torch.compile(fullgraph=True)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

import pcr
from pcr.config import QuantConfig
from pcr.quant import qmodules, quantize_model, save_quantized
from pcr.quant.qmap import QuantMap
from pcr.quant.serialize import QUANT_CONFIG

STEPS = 3
# aot_eager traces exactly what inductor gets (dynamo + AOTAutograd, same graph breaks and guards) without the
# C++ compile, which takes minutes on a shared CPU; benchmarks/ measures inductor itself.
BACKEND = "aot_eager"
PROMPTS = ["a red circle", "a blue square"]


def _export(model_dir, out, scheduler=None, output_correction=False):
    """A quantized artifact of the model's UNet, per-step ranges (and output corrections) set by hand
    (calibration is tested elsewhere)."""
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet").eval()
    scheduler = scheduler or PNDMScheduler.from_pretrained(model_dir / "scheduler", skip_prk_steps=True)
    scheduler.set_timesteps(STEPS)
    qmap = quantize_model(unet, QuantConfig(weight_bits=8, act_bits=8, weight_observer="minmax"), scheduler.timesteps.tolist(),
                          type(scheduler).__name__, STEPS, output_correction=output_correction)
    for m in qmodules(unet).values():
        for k in range(len(scheduler.timesteps)):
            m.input_quant.set_step(k, torch.tensor(-3.0 + 0.5 * k), torch.tensor(3.0 - 0.5 * k))
    if output_correction:
        for k in range(len(scheduler.timesteps)):
            unet.conv_out.set_step(k, torch.full((4,), 1.0 + 0.1 * k), torch.full((4,), -0.05 * k))
    meta = {"scheduler": dict(scheduler.config), "num_inference_steps": STEPS}
    save_quantized(unet, QuantMap(qmap.num_steps, qmap.weight_observer, qmap.act_observer, qmap.layers,
                                  output_correction=qmap.output_correction, meta=meta), out, scheduler)
    return out


def _images(pipe, **kw):
    noise = torch.randn((len(PROMPTS), 4, 8, 8), generator=torch.Generator().manual_seed(0))
    return np.asarray(pipe(PROMPTS, latents=noise, num_inference_steps=STEPS, guidance_scale=4.0, output_type="np", **kw).images)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_load_pipeline_returns_the_stock_pipeline_with_the_quantized_unet(family, tiny_sd_dir, tiny_sdxl_dir, tmp_path):
    model_dir = tiny_sd_dir if family == "sd" else tiny_sdxl_dir
    quantized = _export(model_dir, tmp_path / "quantized")
    pipe = pcr.load_pipeline(model_dir, quantized)
    assert type(pipe) is (StableDiffusionPipeline if family == "sd" else StableDiffusionXLPipeline)
    assert len(qmodules(pipe.unet)) == len(QuantMap.load(quantized / QUANT_CONFIG).layers)
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.skip_prk_steps
    images = _images(pipe)
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()
    float_pipe = (StableDiffusionPipeline if family == "sd" else StableDiffusionXLPipeline).from_pretrained(model_dir)
    float_pipe.scheduler = pipe.scheduler
    assert 0 < np.abs(_images(float_pipe) - images).max() < 0.5  # quantized: close to FP32, not identical
    with pytest.raises(ValueError, match="T=4 steps of PNDMScheduler.*num_inference_steps=3"):
        pipe(PROMPTS, num_inference_steps=7, output_type="np")


@pytest.mark.parametrize("output_correction", [False, True])
def test_fullgraph_compile_runs_a_generation_once_without_breaks(tiny_sd_dir, tmp_path, output_correction):
    import torch._dynamo
    from torch._dynamo.utils import counters

    quantized = _export(tiny_sd_dir, tmp_path / "quantized", output_correction=output_correction)
    pipe = pcr.load_pipeline(tiny_sd_dir, quantized)
    eager = _images(pipe)
    if output_correction:  # the per-step correction is in the loaded model and changes its images
        assert pipe.unet.conv_out.out_gain[2, 0].item() == pytest.approx(1.2)
        plain = pcr.load_pipeline(tiny_sd_dir, _export(tiny_sd_dir, tmp_path / "plain"))
        assert np.abs(_images(plain) - eager).max() > 0.01
    torch._dynamo.reset()
    counters.clear()
    pipe.unet = torch.compile(pipe.unet, fullgraph=True, backend=BACKEND)  # fullgraph: any graph break raises
    compiled = _images(pipe)
    again = _images(pipe)  # a second generation reuses the graph
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])  # not one per step (T=4 calls per generation)
    assert not counters["graph_break"]
    assert np.abs(compiled * 255 - eager * 255).max() <= 1.0  # same images, up to float reordering by inductor
    assert np.array_equal(compiled, again)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)  # images in [0, 1]


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_int_kernels_give_the_fake_images(family, tiny_sd_dir, tiny_sdxl_dir, tmp_path, capsys):
    model_dir = tiny_sd_dir if family == "sd" else tiny_sdxl_dir
    quantized = _export(model_dir, tmp_path / "quantized")
    fake = _images(pcr.load_pipeline(model_dir, quantized))
    pipe = pcr.load_pipeline(model_dir, quantized, kernels="int")
    n = len(qmodules(pipe.unet))
    assert pipe.unet.pcr_kernels == {"int": n, "fake": 0, "fallback": {}}
    assert f"kernels=int: {n} quantized layers on integer kernels" in capsys.readouterr().out
    images = _images(pipe)
    assert _psnr(images, fake) >= 45, _psnr(images, fake)
    with pytest.raises(ValueError, match="kernels='int4' is not allowed"):
        pcr.load_pipeline(model_dir, quantized, kernels="int4")


def test_fullgraph_compile_of_the_int_unet_runs_a_generation(tiny_sd_dir, tmp_path):
    import torch._dynamo
    from torch._dynamo.utils import counters

    quantized = _export(tiny_sd_dir, tmp_path / "quantized")
    pipe = pcr.load_pipeline(tiny_sd_dir, quantized, kernels="int")
    eager = _images(pipe)
    torch._dynamo.reset()
    counters.clear()
    # aot_eager: the same graph capture and functionalization as inductor, without its minutes of codegen on this
    # machine (~190 s for the tiny UNet); benchmarks/int_pipeline.py times the inductor-compiled int UNet
    pipe.unet = torch.compile(pipe.unet, fullgraph=True, backend="aot_eager")
    compiled = _images(pipe)
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])  # one graph serves every step
    assert not counters["graph_break"]
    assert _psnr(compiled, eager) >= 45
