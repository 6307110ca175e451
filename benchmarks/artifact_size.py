"""Size of the exported artifact against the float UNet's safetensors, at W8 and W4 (int) and W8 fp8 (E4M3 weights).

    OMP_NUM_THREADS=1 python benchmarks/artifact_size.py [--rows W8fp8]  # the table; saves cases.artifact_size in results.json

- demo: the demo UNet is quantized and exported for real (pcr.quant.save_quantized, T=25 steps, per-step
  ranges set by hand: sizes do not depend on the values); the figure is bytes on disk of the artifact's
  quantized_unet.safetensors + its JSON files over the demo's own diffusion_pytorch_model.safetensors.
- SD 1.4 and SDXL: the UNets are built from their published configs on the meta device (nothing allocated)
  and quantized there; the figure is the exact byte count of the state_dict that save_quantized writes
  (tensor bytes + the safetensors JSON header) over the fp32 / fp16 state_dict's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from memory_estimate import SD14_UNET, SDXL_UNET  # noqa: E402
from run import record_case  # noqa: E402

from pcr.config import QuantConfig  # noqa: E402
from pcr.quant import qmodules, quantize_model, save_quantized  # noqa: E402

STEPS = 25
TIMESTEPS = [float(t) for t in range(961, 0, -40)]  # 25 DDIM steps over 1000 (values do not change sizes)
DEMO = ROOT / "data/demo/pipeline/unet"


ROWS = {"W8": (8, "int"), "W4": (4, "int"), "W8fp8": (8, "fp8")}  # row suffix: (weight bits, quant.format)


def _quantize(unet, bits: int, fmt: str = "int"):
    qmap = quantize_model(unet, QuantConfig(weight_bits=bits, act_bits=8, weight_observer="minmax", format=fmt), TIMESTEPS,
                          "DDIMScheduler", STEPS)
    if unet.device.type != "meta":
        for m in qmodules(unet).values():
            for k in range(STEPS):
                m.input_quant.set_step(k, torch.tensor(-1.0), torch.tensor(1.0))
    return qmap


def safetensors_bytes(state: dict[str, torch.Tensor]) -> int:
    """Exact size of a safetensors file of `state`: 8-byte length, JSON header (padded to 8), tensor bytes."""
    header, offset = {}, 0
    for k, v in sorted(state.items()):
        n = v.numel() * v.element_size()
        header[k] = {"dtype": "X", "shape": list(v.shape), "data_offsets": [offset, offset + n]}
        offset += n
    h = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + h + (-h) % 8 + offset


def demo_row(bits: int, fmt: str = "int") -> dict:
    unet = UNet2DConditionModel.from_pretrained(DEMO).eval()
    qmap = _quantize(unet, bits, fmt)
    fp32 = (DEMO / "diffusion_pytorch_model.safetensors").stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        save_quantized(unet, qmap, Path(tmp) / "q")
        files = {p.name: p.stat().st_size for p in (Path(tmp) / "q").rglob("*") if p.is_file()}
    total = sum(files.values())
    return {"fp32_bytes": fp32, "artifact_bytes": total, "ratio_fp32": total / fp32, "ratio_fp16": total / (fp32 / 2), "files": files}


def meta_row(config: dict, bits: int, fmt: str = "int") -> dict:
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    fp32 = safetensors_bytes(unet.state_dict())
    _quantize(unet, bits, fmt)
    q = safetensors_bytes(unet.state_dict())
    return {"fp32_bytes": fp32, "artifact_bytes": q, "ratio_fp32": q / fp32, "ratio_fp16": q / (fp32 / 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {list(ROWS)}")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = {}
    for row in args.rows.split(","):
        bits, fmt = ROWS[row]
        rows[f"demo_{row}"] = demo_row(bits, fmt)
        rows[f"sd14_{row}"] = meta_row(SD14_UNET, bits, fmt)
        rows[f"sdxl_{row}"] = meta_row(SDXL_UNET, bits, fmt)
    print("| model | weights | artifact | fp32 UNet | artifact / fp32 | artifact / fp16 |\n| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        model, w = name.split("_")
        print(f"| {model} | {w} | {r['artifact_bytes'] / 2**20:,.1f} MiB | {r['fp32_bytes'] / 2**20:,.1f} MiB | {r['ratio_fp32']:.3f} | {r['ratio_fp16']:.3f} |")
    if not args.no_save:
        record_case(ROOT / "benchmarks/results.json", "artifact_size", rows, "artifact_size.py")


if __name__ == "__main__":
    main()
