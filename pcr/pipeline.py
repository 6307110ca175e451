"""The quantized model in the stock diffusers pipeline.

    pipe = pcr.load_pipeline("path/to/sd-model", "outputs/quantized", kernels="int")
    images = pipe(prompt, num_inference_steps=pipe.unet.pcr_step.num_inference_steps).images

The text encoders, tokenizers and VAE come from the float model's folder; the UNet and the calibrated
scheduler from the artifact (the float UNet's weights are never read). kernels="int" runs the
quantized layers on integer kernels (pcr.quant.kernels.use_kernels; "fake", the default, is the
reference); the summary is printed and kept as `pipe.unet.pcr_kernels`. kernels="openvino" (the CPU route,
`pip install 'pcr[openvino]'`) runs the UNet as one compiled OpenVINO model exported from the artifact
(pcr.quant.kernels.openvino; the IR is cached by the artifact's hash, or kept in `openvino_dir`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, SchedulerMixin

from pcr.errors import StoreError
from pcr.models.load import DTYPE_KWARG, PIPELINE_CLASSES, inspect_model_dir
from pcr.quant.kernels.layers import KERNELS, WHOLE_UNET, describe, use_kernels
from pcr.quant.qmap import QuantMap
from pcr.quant.serialize import QUANT_CONFIG, SCHEDULER_CONFIG, SCHEDULER_DIR, load_quantized


def load_scheduler(quantized_path: str | Path) -> SchedulerMixin:
    """The calibrated scheduler saved in the artifact, of its own class."""
    import diffusers

    folder = Path(quantized_path) / SCHEDULER_DIR
    try:
        config = json.loads((folder / SCHEDULER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{folder}: cannot read the calibrated scheduler ({e})") from None
    cls = getattr(diffusers, config.get("_class_name", ""), None)
    if cls is None:
        raise StoreError(f"{folder}: unknown scheduler class {config.get('_class_name')!r}")
    return cls.from_config(config)


def load_pipeline(model_path: str | Path, quantized_path: str | Path, kernels: str = "fake",
                  openvino_dir: str | Path | None = None, openvino_precision: str = "auto",
                  **from_pretrained_kwargs: Any) -> DiffusionPipeline:
    """A stock StableDiffusionPipeline / StableDiffusionXLPipeline with the quantized UNet and calibrated scheduler.

    from_pretrained_kwargs go to the pipeline's `from_pretrained` (e.g. `torch_dtype=torch.float16`);
    the UNet is cast to that dtype too, its quantization scales stay float32. Local files only.
    kernels: "fake" | "int" (layers the int path cannot run stay fake, named in the printed summary) |
    "openvino" (float32 pipeline on the CPU; openvino_dir: where the IR is written / read; openvino_precision: the
    UNet's float parts, "auto" (OpenVINO's default for the CPU: bf16 where it has AVX512-BF16 or AMX), "f32" or "bf16",
    as `OpenVINOUNet.load`).
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r} is not allowed: choose one of {list(KERNELS)}")
    info = inspect_model_dir(model_path)
    QuantMap.load(Path(quantized_path) / QUANT_CONFIG)  # a bad artifact fails before any weight is read
    dtype = from_pretrained_kwargs.get(DTYPE_KWARG, from_pretrained_kwargs.get("torch_dtype"))
    if kernels in WHOLE_UNET:
        unet = load_unet_on(kernels, quantized_path, openvino_dir, openvino_precision)
    else:
        unet = load_quantized(quantized_path, dtype=dtype if isinstance(dtype, torch.dtype) else None)
    kwargs: dict[str, Any] = {"local_files_only": True, **from_pretrained_kwargs}
    if info.family == "sd":
        kwargs.setdefault("safety_checker", None)
        kwargs.setdefault("requires_safety_checker", False)
    pipe = PIPELINE_CLASSES[info.family].from_pretrained(info.path, unet=unet, scheduler=load_scheduler(quantized_path), **kwargs)
    if kernels not in WHOLE_UNET:
        pipe.unet.pcr_kernels = use_kernels(pipe.unet, kernels)  # after loading: derived buffers on the final device
    print(describe(pipe.unet.pcr_kernels, kernels))
    return pipe


def load_unet_on(kernels: str, quantized_path: str | Path, ir_dir: str | Path | None = None,
                 precision: str = "auto") -> torch.nn.Module:
    """The UNet of a whole-UNet backend (kernels in WHOLE_UNET), compiled from the artifact."""
    from pcr.quant.kernels.openvino import load_openvino_unet

    return load_openvino_unet(quantized_path, ir_dir, threads=torch.get_num_threads(), precision=precision)
