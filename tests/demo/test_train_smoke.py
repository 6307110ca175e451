"""One training step of each component on tiny configs, then a full export that stock diffusers loads."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPModel, CLIPProcessor

from pcr.demo.clip import CLIPDemoConfig, pixel_values, save_clip, train_clip
from pcr.demo.data import build_pool, to_model_range
from pcr.demo.judge import JudgeConfig, attribute_accuracy, load_judge, save_judge, train_judge
from pcr.demo.loop import LoopConfig
from pcr.demo.unet import UNetConfig, train_and_export_unet
from pcr.demo.vae import VAEConfig, train_vae

ONE_STEP = LoopConfig(steps=1, lr=1e-3, warmup=1)


@pytest.fixture(scope="module")
def pool():
    return build_pool(per_combo=1, seed=0)


def test_judge_step_save_load(pool, tmp_path):
    cfg = JudgeConfig(width=4, batch_size=4)
    model = train_judge(pool, cfg, ONE_STEP, tmp_path / "judge.ckpt")
    save_judge(model, cfg, tmp_path / "judge")
    acc = attribute_accuracy(
        pool.images[:8], [pool_caption(pool, i) for i in range(8)], load_judge(tmp_path / "judge")
    )
    assert set(acc) >= {"color_acc", "shape_acc", "background_acc"}


def pool_caption(pool, i):
    from pcr.demo.render import caption

    return caption(pool.label(i))


def test_vae_clip_unet_steps_and_export(pool, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    train_vae(pool, VAEConfig(batch_size=2), ONE_STEP, work / "vae.ckpt")
    clip_cfg = CLIPDemoConfig(hidden=32, layers=1, heads=2, projection_dim=16, batch_size=4)
    save_clip(train_clip(pool, clip_cfg, ONE_STEP, work / "clip.ckpt"), clip_cfg, out / "clip")
    unet_cfg = UNetConfig(block_out_channels=(16, 16), norm_num_groups=8, attention_head_dim=2,
                          cross_attention_dim=32, batch_size=2)  # fmt: skip
    train_and_export_unet(pool, unet_cfg, ONE_STEP, work, out)
    assert (work / "unet.ckpt").exists()

    clip = CLIPModel.from_pretrained(out / "clip", local_files_only=True)
    processor = CLIPProcessor.from_pretrained(out / "clip", local_files_only=True)
    batch = processor(text=["a red circle on a gray background"], images=list(pool.images[:2]), return_tensors="pt",
                      padding="max_length")  # fmt: skip
    expected = pixel_values(to_model_range(pool.images[:2]))
    assert torch.allclose(batch["pixel_values"], expected, atol=1e-4)
    assert clip(**batch).logits_per_image.shape == (2, 1)

    pipe = StableDiffusionPipeline.from_pretrained(out / "pipeline", local_files_only=True)
    image = pipe("a red circle on a gray background", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
