"""Relaxed steps: parameters from stored statistics (pcr) against recalibrating at the relaxed bitwidth (official).

pcr calibrates every step at quant.act_bits and gives the relaxed steps their range at relax.bits from the
stored statistics, so relax never reruns calibration. The official code calibrates the relaxed steps at
the relaxed bitwidth inside the progressive sweep, so the steps after them see a slightly different x̂.
This script runs both on the same collected trajectories and compares parameters and images.

    python benchmarks/relax_calibration.py [--params params.yaml] [--fraction 0.2] [--where x0] [--out benchmarks/relax_calibration.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pcr.calibrate.run import prepare
from pcr.calibrate.sweep import sweep
from pcr.collect import collect
from pcr.config import eval_prompt_sets, load_params
from pcr.distributed import batches
from pcr.metrics.image import psnr_per_image
from pcr.metrics.qdiffbench import qdiffbench
from pcr.models.conditioning import select
from pcr.quant.quantize import set_activation_step
from pcr.relax import make_schedule
from pcr.sampling import conditioning, decode, load_sampler, sample
from pcr.stores import open_store


def images(pipe, sampler, params, prompts):
    cond = conditioning(pipe, prompts, params.model, sampler)
    e, out = params.eval, []
    for b in batches(len(prompts), e.batch_size):
        out.append(decode(pipe, sample(sampler, select(cond, b), [e.seed + i for i in range(b.start, b.stop)])))
    return np.concatenate(out)


def _paired(d: np.ndarray) -> dict:
    """Mean of per-image differences with a normal 95% interval (the images pair up by prompt and seed)."""
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    return {"mean": float(d.mean()), "ci95": [float(d.mean() - half), float(d.mean() + half)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--where", default="x0")
    ap.add_argument("--out", default="benchmarks/relax_calibration.json")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    params = load_params(args.params)
    params = dataclasses.replace(params, relax=dataclasses.replace(params.relax, fraction=args.fraction, where=args.where))
    prompts = eval_prompt_sets(params)["standard"]
    with tempfile.TemporaryDirectory() as tmp:
        traj_path = Path(tmp) / "traj.zarr"
        collect(params, traj_path, progress=False)
        traj = open_store(traj_path, "trajectories")
        pipe, _, cal = prepare(params, traj)
        T = cal.sampler.num_steps
        schedule = make_schedule(params.relax, T, params.quant.act_bits)
        float_pipe, float_sampler = load_sampler(params.model)
        ref = images(float_pipe, float_sampler, params, prompts)

        # pcr: calibrate at act_bits, then relaxed steps from the statistics each step was fixed from
        stats = {}
        x_T = torch.from_numpy(traj["x"][0])
        t0 = time.perf_counter()
        sweep(cal, "progressive", x_T, on_step=lambda r: stats.__setitem__(r.k, r.stats), progress=False)
        for k in schedule.relaxed_steps:
            set_activation_step(cal.qlayers, cal.observer, stats[k], k, schedule.bits[k])
        t_pcr = time.perf_counter() - t0
        ours = images(pipe, cal.sampler, params, prompts)

        # official: the sweep itself runs the relaxed steps at the relaxed bitwidth
        pipe2, _, cal2 = prepare(params, traj)
        cal2.bits = schedule.bits
        t0 = time.perf_counter()
        sweep(cal2, "progressive", x_T, progress=False)
        t_official = time.perf_counter() - t0
        official = images(pipe2, cal2.sampler, params, prompts)

        rel = []
        for name in cal.qlayers:
            a, b = cal.qlayers[name].input_quant.scale, cal2.qlayers[name].input_quant.scale
            rel.append(((a - b).abs() / b).max().item())
        bench = dict(feature=params.score.feature, feature_path=params.score.feature_path, clip_path=None,
                     kid_subset_size=params.score.kid_subset_size)
        result = {
            "relax": dataclasses.asdict(params.relax), "steps": T, "relaxed_steps": list(schedule.relaxed_steps),
            "prompts": len(prompts), "max_relative_scale_difference": max(rel),
            "median_relative_scale_difference": float(np.median(rel)),
            "pcr_from_stats": qdiffbench(ours, ref, None, prompts, **bench),
            "official_recalibrated": qdiffbench(official, ref, None, prompts, **bench),
            "psnr_difference_pcr_minus_official": _paired(psnr_per_image(ours, ref) - psnr_per_image(official, ref)),
            "images_identical": bool(np.array_equal(ours, official)),
            "mean_abs_pixel_difference": float(np.abs(ours.astype(int) - official.astype(int)).mean()),
            "calibration_seconds": {"pcr": t_pcr, "official": t_official},
        }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
