"""Round to nearest vs AdaRound weights on the demo model: the weights stage's time, its per-unit output error,
and the images' fidelity to FP32 after the rest of the pipeline (calibrate, relax, generate, score).

Until calibrate reads weights.safetensors itself, this script swaps the weights stage's codes into the UNet right
after calibrate quantizes it (everything else is the pipeline's own code). Reuses weights files named
<dir>/w<bits>_<method>.safetensors (and .csv) when present, else runs the weights stage.

    python benchmarks/weights_demo.py [--params params.yaml] [--trajectories outputs/trajectories.zarr] [--dir outputs/weights_demo]
        [--bits 4 8] [--methods rtn adaround] [--out benchmarks/weights_demo.json]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import torch

import pcr.calibrate.run as calibrate_run
from pcr.calibrate.run import calibrate
from pcr.config import load_params
from pcr.generate import generate, reference
from pcr.quant.quantize import qmodules
from pcr.relax import relax
from pcr.score import score
from pcr.weights.codes import load_weights
from pcr.weights.run import weights

KEYS = ("psnr_fp32", "ssim_fp32", "fid_fp32", "kid_fp32")
QUANTIZE_MODEL = calibrate_run.quantize_model


def with_weights(path: Path):
    """calibrate's quantize_model, followed by swapping in the codes of `path`."""
    def quantize_model(unet, cfg, *args):
        qmap = QUANTIZE_MODEL(unet, cfg, *args)
        codes = load_weights(path)
        with torch.no_grad():
            for name, q in qmodules(unet).items():
                c = codes[name]
                q.set_codes(c.codes, c.scale, c.zero_point)
        return qmap

    return quantize_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--trajectories", default="outputs/trajectories.zarr")
    ap.add_argument("--dir", default="outputs/weights_demo")
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--methods", nargs="+", default=["rtn", "adaround"])
    ap.add_argument("--out", default="benchmarks/weights_demo.json")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    base, d = load_params(args.params), Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    ref = d / "reference.zarr"
    if not ref.exists():
        reference(base, ref, progress=False)
    results = {}
    for bits in args.bits:
        for method in args.methods:
            tag = f"w{bits}_{method}"
            params = dataclasses.replace(base, quant=dataclasses.replace(base.quant, weight_bits=bits, weight_method=method))
            w, losses = d / f"{tag}.safetensors", d / f"{tag}.csv"
            seconds = None
            if not w.exists():
                t0 = time.perf_counter()
                weights(params, args.trajectories, w, losses)
                seconds = time.perf_counter() - t0
            calibrate_run.quantize_model = with_weights(w)
            try:
                calibrate(params, args.trajectories, d / f"{tag}_calib.zarr", d / f"{tag}_q.safetensors", d / f"{tag}_q.json", progress=False)
            finally:
                calibrate_run.quantize_model = QUANTIZE_MODEL
            relax(params.relax, d / f"{tag}_q.json", d / f"{tag}_schedule.json")
            generate(params, d / f"{tag}_q.safetensors", d / f"{tag}_q.json", d / f"{tag}_calib.zarr", d / f"{tag}_schedule.json",
                     ref, d / f"{tag}_gen.zarr", d / f"{tag}_grid.png", progress=False)
            m = score(params, ref, d / f"{tag}_gen.zarr", args.trajectories, d / f"{tag}_calib.zarr", d / f"{tag}_metrics.json", d / f"{tag}_plots")
            rows = list(csv.DictReader(open(losses))) if losses.exists() else []
            results[tag] = {k: m[k] for k in KEYS} | {"paraphrase_" + k: m["paraphrase"][k] for k in KEYS if "paraphrase" in m}
            results[tag]["weights_stage_seconds"] = seconds
            if rows:
                rtn_mse = [float(r["mse_rtn"]) for r in rows]
                ada_mse = [float(r["mse_adaround"]) for r in rows]
                results[tag]["units"] = len(rows)
                results[tag]["units_improved"] = sum(a < r for a, r in zip(ada_mse, rtn_mse, strict=True))
                results[tag]["median_unit_mse_ratio"] = sorted(a / r for a, r in zip(ada_mse, rtn_mse, strict=True))[len(rows) // 2]
            print(tag, json.dumps(results[tag]))
    out = Path(args.out)
    old = json.loads(out.read_text())["results"] if out.exists() else {}
    out.write_text(json.dumps({"params": args.params, "results": old | results}, indent=1))


if __name__ == "__main__":
    main()
