"""Tiny randomly initialised SD and SDXL pipelines, built offline from configs.

They have the structure of the real families (cross-attention UNet, KL VAE, CLIP text encoders; for
SDXL two encoders, pooled text embeds and time ids through `addition_embed_type="text_time"`) at a
size where a 32 px image in a few steps takes milliseconds on CPU. Saved with `save_pretrained` in
the standard layout, so they go through `inspect_model_dir` and `load_pipeline` like a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from pcr.demo.tokenizer import build_clip_tokenizer

TINY_WORDS = (
    "a", "an", "the", "photo", "of", "red", "green", "blue", "gray", "circle", "square", "cat", "dog",
    "on", "at", "top", "left", "right", "bottom", "small", "large", "background",
)  # fmt: skip
MAX_TOKENS = 16  # tokenizer max_length and text encoder positions
LATENT_CHANNELS = 4
VAE_CHANNELS = (8, 16, 16)  # 3 blocks: vae_scale_factor 4
UNET_CHANNELS = (16, 32)  # 2 blocks: 1 down-sampling stage
LATENT_SIZE = 8  # native 8 × 4 = 32 px
NORM_GROUPS = 8
TEXT_WIDTH = 16  # hidden size of each text encoder
TIME_EMBED_DIM = 8  # SDXL addition_time_embed_dim
N_TIME_IDS = 6  # original size (2), crop top-left (2), target size (2)
# SD 1.x noise schedule ("scaled_linear"), PLMS as in the paper
SCHEDULER_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
)  # fmt: skip


def _vae() -> AutoencoderKL:
    n = len(VAE_CHANNELS)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=NORM_GROUPS,
        sample_size=LATENT_SIZE * 2 ** (n - 1),
    )


def _unet(cross_attention_dim: int, **extra) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        # as in SD: cross-attention in the high-resolution blocks, a plain block at the bottom
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        norm_num_groups=NORM_GROUPS,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=(2, 4),
        **extra,
    )


def _text_config(tokenizer, projection_dim: int | None = None) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=projection_dim or TEXT_WIDTH,
        hidden_act="gelu",
    )


def _save(pipe, path: str | Path) -> Path:
    out = Path(path)
    pipe.save_pretrained(out, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):
        if (out / sub).is_dir():  # add vocab.json + merges.txt, as in hub checkpoints
            build_clip_tokenizer(TINY_WORDS, out / sub, max_length=MAX_TOKENS)
    return out


def build_tiny_sd(path: str | Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionPipeline saved at `path` (32 px native, VAE factor 4)."""
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(TINY_WORDS, max_length=MAX_TOKENS)
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer)).eval(),
        tokenizer=tokenizer,
        unet=_unet(cross_attention_dim=TEXT_WIDTH),
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, path)


def build_tiny_sdxl(path: str | Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionXLPipeline saved at `path`: two text encoders, text_time added conditioning."""
    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(TINY_WORDS, max_length=MAX_TOKENS)
    tokenizer_2 = build_clip_tokenizer(TINY_WORDS, max_length=MAX_TOKENS)
    projection_dim = TEXT_WIDTH
    unet = _unet(
        # SDXL concatenates the penultimate hidden states of both encoders
        cross_attention_dim=2 * TEXT_WIDTH,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=N_TIME_IDS * TIME_EMBED_DIM + projection_dim,
        transformer_layers_per_block=(1, 2),
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer)).eval(),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer_2, projection_dim)).eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
    )
    return _save(pipe, path)


CLIP_WORDS = ("a", "red", "green", "blue", "circle", "square", "on", "gray", "background", "small", "big")
CLIP_IMAGE_SIDE = 32
CLIP_TEXT_POSITIONS = 12
CLIP_EMBED_DIM = 16


def build_tiny_clip(path: str | Path, seed: int = 0, *, with_processor: bool = True) -> Path:
    """A tiny randomly initialised CLIPModel (text + image towers, 32 px) with tokenizer and processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = build_clip_tokenizer(CLIP_WORDS, path, max_length=CLIP_TEXT_POSITIONS)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=CLIP_TEXT_POSITIONS, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=CLIP_IMAGE_SIDE, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=CLIP_EMBED_DIM,
    )
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path)
    if with_processor:
        side = CLIP_IMAGE_SIDE
        CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(path)
    return Path(path)
