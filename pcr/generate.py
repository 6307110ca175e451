"""generate: the exported quantized model on the evaluation prompts, paired with reference.

It runs exactly the artifact users load (`outputs/quantized`, through the stock pipeline's components),
so what is scored is what ships. Prompt sets and seeds come from reference.zarr, so generated image i and
reference image i share both. The image writing (batches, processes, resume) is pcr.images'.
"""

from __future__ import annotations

from pathlib import Path

from pcr.config import Params
from pcr.distributed import process_state
from pcr.errors import ConfigError
from pcr.images import load_for_process, write_images
from pcr.models.load import resolve_device
from pcr.pipeline import load_scheduler, load_unet_on
from pcr.quant.kernels.layers import WHOLE_UNET, describe, use_kernels
from pcr.quant.qmap import QuantMap
from pcr.quant.serialize import ARTIFACT_FILES, QUANT_CONFIG, load_quantized
from pcr.quant.step import check_timesteps
from pcr.stores import open_store


def generate(params: Params, quantized: str | Path, reference_path: str | Path, out: str | Path, progress: bool = True) -> None:
    reference_store = open_store(reference_path, "reference")
    whole = params.generate.kernels in WHOLE_UNET  # the CPU route: the whole UNet compiled from the artifact
    if whole and resolve_device(params.model.device).type != "cpu":
        raise ConfigError(f"generate.kernels={params.generate.kernels!r} runs the UNet on the CPU, but model.device="
                          f"{params.model.device!r} is {resolve_device(params.model.device)}: set model.device: cpu")
    precision = params.generate.openvino_precision  # the CPU route's float parts (read always: dvc.yaml lists it)
    unet = load_unet_on(params.generate.kernels, quantized, precision=precision) if whole else load_quantized(quantized)
    qmap = QuantMap.load(Path(quantized) / QUANT_CONFIG)
    pipe, sampler = load_for_process(params, unet=unet, scheduler=load_scheduler(quantized))
    check_timesteps(unet, sampler.timesteps, str(quantized), f"model.steps={params.model.steps} gives", "export")
    # after load_sampler: on the model's device; the CPU route's summary names its float precision (metrics.json shows it)
    kernels = {**unet.pcr_kernels, "precision": unet.precision} if whole else use_kernels(pipe.unet, params.generate.kernels)
    if process_state(params.model.device).is_main_process:
        print(describe(kernels, params.generate.kernels))
    schedule = qmap.meta["schedule"]
    weight_bits = max(spec.weight_bits for spec in qmap.layers.values())
    write_images(params, pipe, sampler, out, "generated", reference_store.attrs["prompts"], reference_store.attrs["seed"],
                 progress, inputs=[Path(quantized) / f for f in ARTIFACT_FILES], schedule=schedule["bits"],
                 average_bits=schedule["average_bits"], weight_bits=weight_bits, kernels=params.generate.kernels,
                 kernels_summary=kernels)
