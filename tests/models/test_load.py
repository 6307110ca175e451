import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from tiny_models import build_tiny_sd

from pcr.models.load import (
    ModelError,
    ModelInfo,
    check_resolution,
    inspect_model_dir,
    load_pipeline,
    resolve_device,
    resolve_dtype,
)


def _copy(src, tmp_path, name="model"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_family_detection_sd(tiny_sd_dir):
    info = inspect_model_dir(tiny_sd_dir)
    assert info == ModelInfo(
        path=tiny_sd_dir,
        family="sd",
        pipeline_class="StableDiffusionPipeline",
        vae_scale_factor=4,
        sample_size=32,
        unet_downsamples=1,
        latent_channels=4,
    )
    assert info.resolution_multiple == 8


def test_family_detection_sdxl(tiny_sdxl_dir):
    info = inspect_model_dir(str(tiny_sdxl_dir))
    assert (info.family, info.pipeline_class) == ("sdxl", "StableDiffusionXLPipeline")
    assert (info.vae_scale_factor, info.sample_size, info.resolution_multiple) == (4, 32, 8)


def test_not_a_directory(tmp_path):
    for bad in (tmp_path / "absent", tmp_path / "file.txt"):
        if bad.name == "file.txt":
            bad.write_text("x")
        with pytest.raises(ModelError, match="is not a directory") as err:
            inspect_model_dir(bad)
        assert str(bad) in str(err.value)


def test_no_model_index(tmp_path):
    with pytest.raises(ModelError, match="not a diffusers pipeline directory: no model_index.json"):
        inspect_model_dir(tmp_path)


def test_unsupported_class_lists_supported(tiny_sd_dir, tmp_path):
    model = _copy(tiny_sd_dir, tmp_path)
    index = json.loads((model / "model_index.json").read_text())
    (model / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelError, match="unsupported pipeline class 'KandinskyPipeline'") as err:
        inspect_model_dir(model)
    assert "StableDiffusionPipeline (sd)" in str(err.value)
    assert "StableDiffusionXLPipeline (sdxl)" in str(err.value)


@pytest.mark.parametrize(
    "family, component",
    [
        ("sd", "tokenizer"),
        ("sd", "scheduler"),
        ("sd", "unet"),
        ("sdxl", "text_encoder_2"),
        ("sdxl", "tokenizer_2"),
    ],
)
def test_missing_component(family, component, tiny_sd_dir, tiny_sdxl_dir, tmp_path):
    model = _copy(tiny_sd_dir if family == "sd" else tiny_sdxl_dir, tmp_path)
    shutil.rmtree(model / component)
    with pytest.raises(ModelError, match=f"missing component folder '{component}'") as err:
        inspect_model_dir(model)
    assert str(model) in str(err.value)


@pytest.mark.parametrize(
    "component, config", [("vae", "config.json"), ("tokenizer", "tokenizer_config.json")]
)
def test_missing_component_config(component, config, tiny_sd_dir, tmp_path):
    model = _copy(tiny_sd_dir, tmp_path)
    (model / component / config).unlink()
    with pytest.raises(ModelError, match=f"component '{component}' has no {config}"):
        inspect_model_dir(model)


@pytest.mark.parametrize("height, width", [(32, 32), (64, 48), (8, 128)])
def test_resolution_ok(tiny_sd_dir, height, width):
    check_resolution(inspect_model_dir(tiny_sd_dir), height, width)


@pytest.mark.parametrize(
    "height, width, bad", [(36, 32, "height 36"), (32, 20, "width 20"), (0, 32, "height 0")]
)
def test_bad_resolution_names_value(tiny_sd_dir, height, width, bad):
    with pytest.raises(ModelError, match=f"{bad} is not possible.*multiple of 8"):
        check_resolution(inspect_model_dir(tiny_sd_dir), height, width)


def test_resolve_dtype():
    assert resolve_dtype("fp32", "cpu") is resolve_dtype("float32", "cpu") is torch.float32
    assert resolve_dtype("bf16", "cuda") is torch.bfloat16  # no GPU needed to resolve the name
    assert resolve_dtype("float16", "cuda:0") is torch.float16


@pytest.mark.parametrize("name", ["fp16", "float16", "bf16", "bfloat16"])
def test_half_precision_refused_on_cpu(name):
    with pytest.raises(ModelError, match=f"dtype '{name}' needs a CUDA device"):
        resolve_dtype(name, "cpu")


def test_unknown_dtype():
    with pytest.raises(ModelError, match="unknown dtype 'int8'; allowed: float32, fp32"):
        resolve_dtype("int8", "cpu")


def test_auto_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_load_pipeline(family, tiny_sd_dir, tiny_sdxl_dir):
    pipe = load_pipeline(tiny_sd_dir if family == "sd" else tiny_sdxl_dir, device="cpu")
    assert type(pipe) is (StableDiffusionPipeline if family == "sd" else StableDiffusionXLPipeline)
    assert isinstance(pipe.scheduler, PNDMScheduler)
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe._progress_bar_config == {"disable": True}
    if family == "sd":
        assert pipe.safety_checker is None


def test_load_pipeline_swaps_scheduler(tiny_sd_dir):
    pipe = load_pipeline(tiny_sd_dir, scheduler="ddim", device="cpu")
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"


def test_load_pipeline_refuses_bad_scheduler_and_half_on_cpu(tiny_sd_dir):
    with pytest.raises(ValueError, match="unknown scheduler 'plms'"):
        load_pipeline(tiny_sd_dir, scheduler="plms", device="cpu")
    with pytest.raises(ModelError, match="needs a CUDA device"):
        load_pipeline(tiny_sd_dir, dtype=torch.float16, device="cpu")


def test_unreadable_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read pipeline index model_index.json"):
        inspect_model_dir(tmp_path)


def test_load_weight_variant(tmp_path):
    pipe = load_pipeline(build_tiny_sd(tmp_path / "sd"), device="cpu")
    pipe.save_pretrained(tmp_path / "variant", variant="fp16")
    assert (tmp_path / "variant" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = load_pipeline(tmp_path / "variant", variant="fp16", device="cpu")
    assert torch.equal(loaded.unet.conv_in.weight, pipe.unet.conv_in.weight)


def test_swapped_scheduler_gets_the_config_fixes_of_the_stock_pipeline(tiny_sd_dir):
    from pcr.models.schedulers import as_sd_pipeline_would, make_scheduler

    config = json.loads((tiny_sd_dir / "scheduler/scheduler_config.json").read_text())
    own = make_scheduler("ddim", config)
    assert own.config.clip_sample is True  # DDIM's default, the tiny config does not set it
    pipe = load_pipeline(tiny_sd_dir, scheduler="ddim", device="cpu")
    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, scheduler=own, safety_checker=None)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.clip_sample is stock.scheduler.config.clip_sample is False  # SD's constructor turns it off
    assert as_sd_pipeline_would(make_scheduler("ddim", config)).config.clip_sample is False
