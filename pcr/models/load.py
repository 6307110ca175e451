"""Load a local diffusers Stable Diffusion (1.x/2.x) or SDXL pipeline directory.

`inspect_model_dir` checks the layout from `model_index.json` and the component configs only (no
weights), so a bad `model.path` fails in milliseconds with a message saying what is wrong.
`load_pipeline` then builds the stock diffusers pipeline: the same code path serves the demo model on
CPU and a user's checkpoint on a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from pcr.errors import ModelError
from pcr.models.schedulers import make_scheduler, scheduler_class

Family = Literal["sd", "sdxl"]

MODEL_INDEX = "model_index.json"
PIPELINE_FAMILIES: dict[str, Family] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
}
PIPELINE_CLASSES: dict[Family, type[DiffusionPipeline]] = {
    "sd": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
}
# component subfolder -> the config file it must hold
SD_COMPONENTS = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": "tokenizer_config.json",
    "scheduler": "scheduler_config.json",
}
SDXL_COMPONENTS = {**SD_COMPONENTS, "text_encoder_2": "config.json", "tokenizer_2": "tokenizer_config.json"}
FAMILY_COMPONENTS: dict[Family, dict[str, str]] = {"sd": SD_COMPONENTS, "sdxl": SDXL_COMPONENTS}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
HALF_DTYPES = (torch.float16, torch.bfloat16)
try:  # diffusers renamed from_pretrained's torch_dtype to dtype (torch_dtype is deprecated since then)
    from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401

    DTYPE_KWARG = "dtype"
except ImportError:
    DTYPE_KWARG = "torch_dtype"


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    family: Family
    pipeline_class: str
    vae_scale_factor: int  # pixels per latent pixel
    sample_size: int  # native resolution in pixels
    unet_downsamples: int = 0  # down-sampling stages of the UNet
    latent_channels: int = 4

    @property
    def resolution_multiple(self) -> int:
        """Height and width must be multiples of this many pixels."""
        return self.vae_scale_factor * 2**self.unet_downsamples


def _read_json(path: Path, root: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{root}: cannot read {what} {path.name} ({e})") from None


def inspect_model_dir(path: str | Path) -> ModelInfo:
    """Family, pipeline class and geometry of a diffusers pipeline directory, from its configs only."""
    root = Path(path)
    if not root.is_dir():
        raise ModelError(f"{root} is not a directory; model.path must be a diffusers pipeline directory")
    index_path = root / MODEL_INDEX
    if not index_path.is_file():
        raise ModelError(f"{root} is not a diffusers pipeline directory: no {MODEL_INDEX}")
    index = _read_json(index_path, root, "pipeline index")
    class_name = index.get("_class_name")
    if class_name not in PIPELINE_FAMILIES:
        allowed = ", ".join(f"{c} ({f})" for c, f in PIPELINE_FAMILIES.items())
        raise ModelError(
            f"{root}: unsupported pipeline class {class_name!r} in {MODEL_INDEX}; supported: {allowed}"
        )
    family = PIPELINE_FAMILIES[class_name]
    for sub, config_name in FAMILY_COMPONENTS[family].items():
        if not (root / sub).is_dir():
            raise ModelError(
                f"{root}: missing component folder {sub!r} ({class_name} needs {', '.join(FAMILY_COMPONENTS[family])})"
            )
        if not (root / sub / config_name).is_file():
            raise ModelError(f"{root}: component {sub!r} has no {config_name}")
    unet = _read_json(root / "unet" / "config.json", root, "UNet config")
    vae = _read_json(root / "vae" / "config.json", root, "VAE config")
    vae_scale_factor = 2 ** (len(vae.get("block_out_channels", (64,))) - 1)  # diffusers default (64,)
    # UNet2DConditionModel down-samples after every down block but the last.
    n_down = len(unet.get("down_block_types", unet.get("block_out_channels", ()))) - 1
    sample = unet.get("sample_size", 64)
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    return ModelInfo(
        path=root,
        family=family,
        pipeline_class=class_name,
        vae_scale_factor=vae_scale_factor,
        sample_size=int(sample) * vae_scale_factor,
        unet_downsamples=max(n_down, 0),
        latent_channels=int(unet.get("in_channels", 4)),
    )


def check_resolution(info: ModelInfo, height: int, width: int) -> None:
    """Raise ModelError unless the VAE and UNet can produce a height × width image."""
    multiple = info.resolution_multiple
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value <= 0 or value % multiple:
            raise ModelError(
                f"{name} {value!r} is not possible for {info.path}: it must be a positive multiple of {multiple} "
                f"(VAE factor {info.vae_scale_factor} × 2^{info.unet_downsamples} UNet down-samplings); "
                f"native resolution is {info.sample_size}"
            )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`"auto"` is cuda when available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(name: str, device: str | torch.device = "auto") -> torch.dtype:
    """A torch dtype from its config name; half precisions are refused off CUDA."""
    if name not in DTYPES:
        raise ModelError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    dev = resolve_device(device)
    if dtype in HALF_DTYPES and dev.type != "cuda":
        raise ModelError(f"dtype {name!r} needs a CUDA device, got {dev.type}; use float32 on CPU")
    return dtype


def model_scheduler(info: ModelInfo, name: str):
    """Scheduler `name` built over the model folder's own scheduler config (its noise schedule kept)."""
    scheduler_class(name)  # fail on a bad name before reading anything
    return make_scheduler(name, _read_json(info.path / "scheduler" / "scheduler_config.json", info.path, "scheduler config"))


def load_pipeline(
    path: str | Path,
    *,
    scheduler=None,
    dtype: torch.dtype = torch.float32,
    device: str = "auto",
    variant: str | None = None,
    **components,
) -> DiffusionPipeline:
    """The stock diffusers pipeline of `path`, local files only, with its scheduler optionally swapped.

    `scheduler`: a name (rebuilt from the model's own scheduler config) or a scheduler object. Either way it
    goes into the pipeline's constructor, which applies the config fixes diffusers makes there (SD pipelines
    force `clip_sample=False` and `steps_offset=1`), exactly as when a user passes `scheduler=` themselves.

    `variant` picks weight files such as `diffusion_pytorch_model.fp16.safetensors` (`variant="fp16"`).
    `components` (e.g. `unet=`) replace the pipeline's own, whose weights are then not read.
    """
    info = inspect_model_dir(path)
    if isinstance(scheduler, str):
        scheduler = model_scheduler(info, scheduler)  # before loading any weights
    if scheduler is not None:
        components["scheduler"] = scheduler
    dev = resolve_device(device)
    if dtype in HALF_DTYPES and dev.type != "cuda":
        raise ModelError(f"dtype {dtype} needs a CUDA device, got {dev.type}; use torch.float32 on CPU")
    kwargs: dict[str, Any] = {"local_files_only": True, DTYPE_KWARG: dtype, **components}
    if variant is not None:
        kwargs["variant"] = variant
    if info.family == "sd":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = PIPELINE_CLASSES[info.family].from_pretrained(info.path, **kwargs)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe
