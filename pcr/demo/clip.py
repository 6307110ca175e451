"""The demo's CLIPModel (32x32 images), trained contrastively on rendered images and captions.

It gives the demo its CLIP score and FID features, and its frozen text tower is the pipeline's
text encoder (as in Stable Diffusion). Captions mix the standard template with paraphrases so
that the paraphrase evaluation probes quantization, not an unseen wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTextModel, CLIPTokenizer

from pcr.demo.data import Pool, random_captions, to_model_range
from pcr.demo.judge import augment
from pcr.demo.loop import LoopConfig, train
from pcr.demo.render import vocabulary
from pcr.demo.tokenizer import build_clip_tokenizer

MAX_LENGTH = 16  # longest caption is 9 words + BOS + EOS
CLIP_MEAN = (
    0.48145466,
    0.4578275,
    0.40821073,
)  # OpenAI CLIP's normalisation, as CLIPImageProcessor's default
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPDemoConfig:
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    projection_dim: int = 64
    patch_size: int = 4
    batch_size: int = 96
    paraphrase_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"CLIPDemoConfig.hidden={self.hidden} must be a multiple of heads={self.heads}")
        if 32 % self.patch_size:
            raise ValueError(f"CLIPDemoConfig.patch_size={self.patch_size} must divide 32")
        if not 0.0 <= self.paraphrase_prob <= 1.0:
            raise ValueError(f"CLIPDemoConfig.paraphrase_prob={self.paraphrase_prob} must be in [0, 1]")


def demo_tokenizer(out_dir: str | Path | None = None) -> CLIPTokenizer:
    return build_clip_tokenizer(vocabulary(), out_dir, max_length=MAX_LENGTH)


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def build_clip(cfg: CLIPDemoConfig, tokenizer: CLIPTokenizer) -> CLIPModel:
    common = {"hidden_size": cfg.hidden, "intermediate_size": 2 * cfg.hidden, "num_hidden_layers": cfg.layers,
              "num_attention_heads": cfg.heads}  # fmt: skip
    text = dict(common, vocab_size=len(tokenizer), max_position_embeddings=MAX_LENGTH,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    vision = dict(common, image_size=32, patch_size=cfg.patch_size)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim)
    return CLIPModel(config)


def pixel_values(images_m11: torch.Tensor) -> torch.Tensor:
    """[N, 3, 32, 32] in [-1, 1] -> CLIP-normalised pixel values, as CLIPImageProcessor computes."""
    x = (images_m11 + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """[N, MAX_LENGTH] input ids, padded as StableDiffusionPipeline pads."""
    return tokenizer(
        captions, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids


def contrastive_loss(
    model: CLIPModel, images_m11: torch.Tensor, ids: torch.Tensor, same: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with the same labels counts as positive (same: [N, N] bool)."""
    img = F.normalize(
        model.get_image_features(pixel_values=pixel_values(images_m11)).pooler_output, dim=-1
    )  # [N, P]
    txt = F.normalize(model.get_text_features(input_ids=ids).pooler_output, dim=-1)  # [N, P]
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # [N, N]
    target = same.float() / same.float().sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T))


def train_clip(
    pool: Pool, cfg: CLIPDemoConfig, loop: LoopConfig, ckpt: Path | None, seed: int = 0
) -> CLIPModel:
    torch.manual_seed(seed)
    tokenizer = demo_tokenizer()
    model = build_clip(cfg, tokenizer)

    def step(i: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen).numpy()
        labels = pool.labels[idx]  # [B, 3]
        caps = random_captions(labels, np.random.default_rng([seed, i]), cfg.paraphrase_prob)
        same = torch.from_numpy((labels[:, None, :] == labels[None, :, :]).all(-1))  # [B, B]
        x = augment(to_model_range(pool.images[idx]), gen)
        return contrastive_loss(model, x, tokenize(tokenizer, caps), same)

    return train("clip", model, step, loop, ckpt)


def save_clip(model: CLIPModel, cfg: CLIPDemoConfig, out_dir: str | Path) -> None:
    """save_pretrained + tokenizer + image processor: CLIPProcessor.from_pretrained(out_dir) works offline."""
    out = Path(out_dir)
    model.save_pretrained(out)
    demo_tokenizer(out)
    image_processor().save_pretrained(out)


def text_encoder_from(model: CLIPModel) -> CLIPTextModel:
    """The CLIP text tower as the CLIPTextModel Stable Diffusion pipelines expect."""
    encoder = CLIPTextModel(model.config.text_config)
    # transformers 5 keeps CLIPTextModel flat; older releases nest a CLIPTextTransformer as .text_model.
    getattr(encoder, "text_model", encoder).load_state_dict(model.text_model.state_dict())
    return encoder.eval()
