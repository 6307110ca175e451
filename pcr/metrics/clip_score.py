"""CLIP score of images against their prompts, from a local CLIP directory.

The dataset score is torchmetrics' `CLIPScore`: max(mean_i 100 * cos(E_img_i, E_txt_i), 0).
torchmetrics 1.9 breaks on transformers 5 (Lightning-AI/torchmetrics#3407): its `_get_features` uses the
return value of `CLIPModel.get_image_features` / `get_text_features` as a tensor, but transformers 5
returns a `BaseModelOutputWithPooling` (AttributeError: ... has no attribute 'norm'). We hand CLIPScore
a model factory (its documented `model_name_or_path` callable) returning `ClipEmbeddings`, an adapter
that unwraps `pooler_output`; nothing global is patched, and torchmetrics releases with the fix work
unchanged.

Per-image scores (for plots) are the raw 100 * cos(E_img, E_txt), not clipped at 0, so that
`clip_score == max(per_image.mean(), 0)` exactly as torchmetrics aggregates.

Prompts longer than the text tower's positions are truncated by the tokenizer (keeping the end token,
whose state CLIP pools) before torchmetrics sees them: torchmetrics would slice the end token away.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchmetrics.multimodal.clip_score import CLIPScore
from transformers import CLIPProcessor

from pcr.metrics.clip_model import ClipEmbeddings, load_clip_model, load_clip_processor
from pcr.metrics.image import to_nchw_u8

CLIP_SCORE_SCALE = 100.0
DEFAULT_BATCH_SIZE = 64


def fit_prompts(processor: CLIPProcessor, prompts: Sequence[str], max_tokens: int) -> list[str]:
    """Prompts whose tokens (with start/end) exceed `max_tokens`, cut to fit; the others unchanged."""
    tok = processor.tokenizer
    fitted = []
    for prompt in prompts:
        if len(tok(prompt, verbose=False).input_ids) <= max_tokens:
            fitted.append(prompt)
            continue
        ids = tok(prompt, truncation=True, max_length=max_tokens).input_ids
        fitted.append(tok.decode(ids, skip_special_tokens=True).strip())
    return fitted


class ClipScorer:
    """A loaded CLIP model + processor scoring uint8 images against prompts."""

    def __init__(
        self, clip: ClipEmbeddings, processor: CLIPProcessor, *, batch_size: int = DEFAULT_BATCH_SIZE
    ):
        self.clip = clip.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.max_tokens = int(clip.config.text_config.max_position_embeddings)

    @classmethod
    def from_dir(cls, path: str | Path | None, device: str | torch.device = "cpu", **kwargs) -> ClipScorer:
        clip = load_clip_model(path, device)
        return cls(clip, load_clip_processor(path, clip), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def _inputs(self, images: np.ndarray | Tensor, prompts: Sequence[str]) -> tuple[Tensor, list[str]]:
        x = to_nchw_u8(images)  # [N, 3, H, W] uint8
        if len(prompts) != len(x):
            raise ValueError(f"{len(x)} images but {len(prompts)} prompts")
        if len(x) == 0:
            raise ValueError("no images to score")
        return x, fit_prompts(self.processor, prompts, self.max_tokens)

    @torch.no_grad()
    def score(self, images: np.ndarray | Tensor, prompts: Sequence[str]) -> float:
        """torchmetrics CLIPScore over all pairs: max(mean 100 * cos, 0)."""
        x, texts = self._inputs(images, prompts)
        metric = CLIPScore(model_name_or_path=lambda: (self.clip, self.processor))
        for i in range(0, len(x), self.batch_size):
            metric.update(x[i : i + self.batch_size].to(self.device), texts[i : i + self.batch_size])
        return float(metric.compute())

    @torch.no_grad()
    def text_features(self, prompts: Sequence[str]) -> Tensor:
        """Projected text embeddings [N, D] float64 on the model's device (prompts cut to fit)."""
        texts = fit_prompts(self.processor, prompts, self.max_tokens)
        out = []
        for i in range(0, len(texts), self.batch_size):
            tokens = self.processor(text=texts[i : i + self.batch_size], return_tensors="pt", padding=True,
                                    truncation=True, max_length=self.max_tokens)
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            out.append(self.clip.get_text_features(ids, mask).double())
        return torch.cat(out)

    @torch.no_grad()
    def image_scores(self, images: np.ndarray | Tensor, text: Tensor) -> np.ndarray:
        """Raw 100 * cos(image_i, text_i) [N] float64 of images against text features [N, D]."""
        x = to_nchw_u8(images)  # [N, 3, H, W] uint8
        if len(x) != len(text):
            raise ValueError(f"{len(x)} images but {len(text)} prompts")
        out = []
        for i in range(0, len(x), self.batch_size):
            batch = list(x[i : i + self.batch_size])  # [3, H, W] uint8 each, as torchmetrics passes them
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            img = self.clip.get_image_features(pixels.to(self.device)).double()  # [B, D]
            cos = torch.nn.functional.cosine_similarity(img, text[i : i + self.batch_size], dim=-1)  # [B]
            out.append(CLIP_SCORE_SCALE * cos.cpu())
        return torch.cat(out).numpy()

    def per_image(self, images: np.ndarray | Tensor, prompts: Sequence[str]) -> np.ndarray:
        """Raw 100 * cos(image, prompt) of each pair, [N] float64 (not clipped at 0)."""
        x, _ = self._inputs(images, prompts)
        return self.image_scores(x, self.text_features(prompts))


def clip_score(
    images: np.ndarray | Tensor,
    prompts: Sequence[str],
    clip_path: str | Path,
    *,
    device: str | torch.device = "cpu",
) -> float:
    """CLIP score (0..100) of uint8 images [N, H, W, 3] against their prompts, CLIP loaded from `clip_path`."""
    return ClipScorer.from_dir(clip_path, device).score(images, prompts)
