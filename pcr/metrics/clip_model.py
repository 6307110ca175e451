"""Load a local CLIP directory (model, image processor, tokenizer) and adapt it to transformers 5.

One place that knows how a CLIP directory is laid out, shared by the CLIP feature extractor for
FID/KID (`features.py`) and the CLIP score (`clip_score.py`).

Without torchvision, transformers 5's `CLIPImageProcessor` name resolves to the PIL implementation
`CLIPImageProcessorPil` and warns that it does so, on every run. torchvision is not a dependency here (its
builds pin a torch version), so we ask for the PIL class by name, which is what the warning suggests.

transformers 5 changed `CLIPModel.get_image_features` / `get_text_features` to return a
`BaseModelOutputWithPooling` (the projected embedding is its `pooler_output`) instead of a tensor;
transformers 4 returns the tensor itself. `ClipEmbeddings` hides the difference, per instance,
without patching transformers or torchmetrics.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import transformers
from torch import Tensor, nn
from transformers import AutoTokenizer, CLIPModel, CLIPProcessor

from pcr.errors import ConfigError

PREPROCESSOR_FILE = "preprocessor_config.json"
# OpenAI CLIP's normalisation, used when a directory carries no preprocessor_config.json.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_processor_class() -> type:
    """`CLIPImageProcessorPil` when torchvision is absent and transformers has it, else `CLIPImageProcessor`."""
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "CLIPImageProcessorPil"):
        return transformers.CLIPImageProcessorPil
    return transformers.CLIPImageProcessor


def _as_tensor(features: Tensor | object, what: str) -> Tensor:
    """The projected embedding: a tensor (transformers 4) or the output's `pooler_output` (transformers 5)."""
    if isinstance(features, Tensor):
        return features
    pooled = getattr(features, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise TypeError(
        f"CLIP {what} features: expected a Tensor or an output with pooler_output, got {type(features)}"
    )


class ClipEmbeddings(nn.Module):
    """A `CLIPModel` whose `get_image_features` / `get_text_features` always return tensors [N, D].

    Exposes `config` so that torchmetrics' CLIPScore can read `text_config.max_position_embeddings`.
    """

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model.eval()

    @property
    def config(self):  # noqa: ANN201 - a transformers CLIPConfig
        return self.model.config

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    def get_image_features(self, pixel_values: Tensor, *args, **kwargs) -> Tensor:
        # pixel_values: [N, 3, S, S] normalised -> [N, D]
        return _as_tensor(self.model.get_image_features(pixel_values, *args, **kwargs), "image")

    def get_text_features(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *args, **kwargs
    ) -> Tensor:
        # input_ids: [N, L] -> [N, D]
        out = self.model.get_text_features(input_ids, attention_mask, *args, **kwargs)
        return _as_tensor(out, "text")


def _require_dir(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise ConfigError(f"{what} needs a local CLIP directory, got None")
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{what}: CLIP directory {path} does not exist")
    return path


def load_clip_model(path: str | Path | None, device: str | torch.device = "cpu") -> ClipEmbeddings:
    """A local `CLIPModel` directory, offline, in eval mode on `device`, adapted to return tensors."""
    path = _require_dir(path, "CLIP model")
    model = CLIPModel.from_pretrained(path, local_files_only=True)
    return ClipEmbeddings(model).to(device).eval()


def load_clip_image_processor(path: str | Path | None, model: ClipEmbeddings | None = None):
    """The saved CLIP image processor of `path` (see `image_processor_class`); without one, resize/crop to the vision tower's size.

    The fallback uses OpenAI CLIP's mean and std and `vision_config.image_size` of the model.
    """
    path = _require_dir(path, "CLIP image processor")
    if (path / PREPROCESSOR_FILE).is_file():
        return image_processor_class().from_pretrained(path, local_files_only=True)
    if model is None:
        raise FileNotFoundError(
            f"{path} has no {PREPROCESSOR_FILE}; pass the loaded model to size the processor"
        )
    side = int(model.config.vision_config.image_size)
    return image_processor_class()(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )


def load_clip_processor(path: str | Path | None, model: ClipEmbeddings | None = None) -> CLIPProcessor:
    """Image processor + tokenizer of a local CLIP directory, as one `CLIPProcessor`."""
    path = _require_dir(path, "CLIP processor")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return CLIPProcessor(image_processor=load_clip_image_processor(path, model), tokenizer=tokenizer)
