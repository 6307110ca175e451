"""Model families through the pipeline: a tiny SDXL end to end under DVC, and bad model inputs that every
model-loading stage refuses (exit 2, one clear line) before it writes anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from depgraph import ROOT
from e2e_project import STAGES, assert_stock_pipeline_reproduces_generate, dvc, make_project, ran
from scripts import load_script
from tiny_models import build_tiny_sd, build_tiny_sdxl


@pytest.mark.slow
def test_sdxl_dvc_repro_end_to_end(tmp_path):
    # euler: the SDXL preset's scheduler; 3 steps, 4 prompts
    project = make_project(tmp_path / "project", build_tiny_sdxl, model={"scheduler": "euler"})
    root, _ = project
    assert ran(dvc(project, "repro")) == set(STAGES)
    metrics = json.loads((root / "outputs/metrics.json").read_text())
    assert np.isfinite(metrics["fid_fp32"]) and "clip_score" in metrics
    traj = zarr.open_group(str(root / "outputs/trajectories.zarr"), mode="r")
    assert traj["cond/time_ids"].metadata.dimension_names == ("sample", "branch", "time_ids_0")
    assert traj.attrs["complete"]
    hidden, pooled, time_ids = traj["cond/encoder_hidden_states"], traj["cond/text_embeds"], traj["cond/time_ids"]
    assert hidden.shape[:2] == pooled.shape[:2] == time_ids.shape[:2] == (4, 2)  # [N, CFG branch, ...]
    assert hidden.shape[-1] == 32  # both tiny encoders' hidden states, concatenated (2 × 16)
    assert pooled.shape[-1] == 16  # text_encoder_2's projection
    assert (time_ids[:] == [32, 32, 0, 0, 32, 32]).all()  # original size, crop top-left, target size
    assert np.isfinite(traj["x"][:]).all()
    images = zarr.open_group(str(root / "outputs/generated.zarr"), mode="r")["images/standard"]
    assert images.shape == (4, 32, 32, 3)
    assert_stock_pipeline_reproduces_generate(root, root / "data/tiny")


def _stage_main(name: str):
    return load_script(f"stages/{name}.py").main


def _not_a_pipeline(tmp: Path) -> Path:
    d = tmp / "weights"
    d.mkdir()
    (d / "unet.safetensors").write_bytes(b"")
    return d


def _unsupported_class(tmp: Path) -> Path:
    d = build_tiny_sd(tmp / "upscaler")
    index = json.loads((d / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionUpscalePipeline"
    (d / "model_index.json").write_text(json.dumps(index))
    return d


def _missing_component(tmp: Path) -> Path:
    d = build_tiny_sdxl(tmp / "sdxl")
    shutil.rmtree(d / "text_encoder_2")
    return d


BAD_MODELS = {
    "not_a_pipeline_dir": (_not_a_pipeline, {}, "not a diffusers pipeline directory: no model_index.json"),
    "unsupported_class": (_unsupported_class, {}, "unsupported pipeline class 'StableDiffusionUpscalePipeline'"),
    "missing_component": (_missing_component, {}, "missing component folder 'text_encoder_2'"),
    "bad_resolution": (lambda tmp: build_tiny_sd(tmp / "sd"), {"height": 36}, "height 36 is not possible"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
@pytest.mark.parametrize("stage", ["collect", "reference"])
def test_bad_model_fails_before_writing(case, stage, tmp_path, capsys):
    build, model, message = BAD_MODELS[case]
    model_dir = build(tmp_path)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square\n")
    params["model"].update(path=str(model_dir), device="cpu", steps=2, **model)
    params["collect"]["prompts"] = params["eval"]["prompts"] = params["eval"]["paraphrase_prompts"] = str(tmp_path / "prompts.txt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "outputs" / f"{stage}.zarr"
    prompts = ["a red circle", "a blue square"]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts if stage == "collect" else {"standard": prompts}))
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()  # the model builder's own output ("Writing model shards")
    with pytest.raises(SystemExit) as exit_info:
        _stage_main(stage)([str(tmp_path / "params.yaml"), str(tmp_path / "prompts.json"), str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before  # no store, no .partial, no outputs folder


def test_sdxl_fp16_vae_decodes_in_float32(tiny_sdxl_dir, tiny_sd_dir):
    """The stock SDXL pipeline upcasts an fp16 VAE with force_upcast before decoding; so does decode()."""
    import torch

    from pcr.models.load import load_pipeline
    from pcr.sampling import decode

    latents = torch.randn(1, 4, 8, 8)
    for path, expected in ((tiny_sdxl_dir, torch.float32), (tiny_sd_dir, torch.float16)):  # SD 1.x decodes as loaded
        pipe = load_pipeline(path, device="cpu")
        pipe.vae.to(torch.float16)  # fp16 is refused on CPU at load time: cast afterwards to test decode alone
        assert pipe.vae.config.force_upcast
        images = decode(pipe, latents)
        assert pipe.vae.dtype == expected and images.shape == (1, 32, 32, 3) and images.dtype == "uint8"
