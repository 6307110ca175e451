"""Feature extractors for FID/KID: a name -> factory registry.

A factory takes (path, device) and returns an `nn.Module` mapping uint8 images [N, 3, H, W] to float
features [N, D]; the module carries `num_features = D` (torchmetrics reads it instead of probing).

- "clip": the image tower of a local `CLIPModel` directory; images are resized and normalised in torch
  per the directory's saved `CLIPImageProcessor` (or the vision tower's image size); features are the
  projected image embeddings (`get_image_features`).
- "inception": the FID InceptionV3 of torch-fidelity (as torchmetrics uses it by default), with user
  weights on disk. Optional extra: `pip install pcr[inception]`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcr.errors import ConfigError
from pcr.metrics.clip_model import ClipEmbeddings, load_clip_image_processor, load_clip_model

FeatureFactory = Callable[[Path | None, str | torch.device], nn.Module]
FEATURES: dict[str, FeatureFactory] = {}

U8_MAX = 255.0
INCEPTION_DIM = 2048
INCEPTION_EXTRA_HINT = "pip install 'pcr[inception]'"


def register_feature(name: str) -> Callable[[FeatureFactory], FeatureFactory]:
    """Decorator: register a feature factory under `name`."""

    def deco(factory: FeatureFactory) -> FeatureFactory:
        if name in FEATURES:
            raise ValueError(f"feature extractor {name!r} is already registered")
        FEATURES[name] = factory
        return factory

    return deco


def build_feature(name: str, path: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The feature extractor registered as `name`, in eval mode on `device`."""
    if name not in FEATURES:
        raise ValueError(f"unknown feature extractor {name!r}; allowed: {sorted(FEATURES)}")
    module = FEATURES[name](Path(path) if path is not None else None, device)
    return module.eval()


def _edge(size: dict, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value is not None else None


class ClipImageFeatures(nn.Module):
    """uint8 [N, 3, H, W] -> CLIP image embeddings [N, D], preprocessing in torch.

    Mirrors CLIPImageProcessor: shortest edge resized to `resize` (bicubic, antialiased, rounded to
    uint8 levels as PIL does), centre crop to `crop`, scale to [0, 1], normalise with mean/std.
    """

    def __init__(
        self,
        clip: ClipEmbeddings,
        *,
        resize: int | None,
        crop: tuple[int, int] | None,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.clip = clip
        self.resize = resize
        self.crop = crop
        self.num_features = clip.embed_dim
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: Tensor) -> Tensor:
        # images: uint8 [N, 3, H, W] -> pixel values float [N, 3, S, S]
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        x = images.float()
        h, w = x.shape[-2:]
        if self.resize is not None and min(h, w) != self.resize:
            scale = self.resize / min(h, w)
            out_hw = (self.resize, int(w * scale)) if h <= w else (int(h * scale), self.resize)
            x = F.interpolate(x, size=out_hw, mode="bicubic", antialias=True, align_corners=False)
            x = x.round().clamp(0.0, U8_MAX)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:
                raise ValueError(f"CLIP crop {self.crop} exceeds resized image {(h, w)}")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        return (x / U8_MAX - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        # images: uint8 [N, 3, H, W] -> [N, D]
        return self.clip.get_image_features(self.preprocess(images)).float()


def clip_image_features(clip: ClipEmbeddings, path: Path | None) -> ClipImageFeatures:
    """The FID feature module over a CLIP model already loaded from `path` (shared with the CLIP score)."""
    proc = load_clip_image_processor(path, clip)
    resize = _edge(proc.size, "shortest_edge") if proc.do_resize else None
    if proc.do_resize and resize is None:  # {"height", "width"} sizes: resize to the square crop size
        resize = _edge(proc.size, "height")
    crop = (_edge(proc.crop_size, "height"), _edge(proc.crop_size, "width")) if proc.do_center_crop else None
    mean = tuple(proc.image_mean) if proc.do_normalize else (0.0, 0.0, 0.0)
    std = tuple(proc.image_std) if proc.do_normalize else (1.0, 1.0, 1.0)
    device = next(clip.parameters()).device
    return ClipImageFeatures(clip, resize=resize, crop=crop, mean=mean, std=std).to(device)


@register_feature("clip")
def clip_features(path: Path | None, device: str | torch.device = "cpu") -> nn.Module:
    return clip_image_features(load_clip_model(path, device), path)


class InceptionFeatures(nn.Module):
    """torch-fidelity's FID InceptionV3 (2048-d pool features), uint8 [N, 3, H, W] -> [N, 2048]."""

    def __init__(self, weights: Path) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(INCEPTION_DIM)],
            feature_extractor_weights_path=str(weights),
        )
        self.num_features = INCEPTION_DIM

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).float()


@register_feature("inception")
def inception_features(path: Path | None, device: str | torch.device = "cpu") -> nn.Module:
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ConfigError(
            f"feature 'inception' needs torch-fidelity, an optional extra: {INCEPTION_EXTRA_HINT}"
        )
    if path is None or not Path(path).is_file():
        raise ConfigError(
            f"feature 'inception' needs the FID InceptionV3 weights file on disk (nothing is downloaded), got {path}"
        )
    return InceptionFeatures(Path(path)).to(device)
