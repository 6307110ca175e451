"""score: QDiffBench on the generated images, per prompt set, plus the per-step trajectory error.

metrics.json (flat keys for the standard set, a nested block per other set):
    fid_fp32, kid_fp32, fid_real, kid_real, clip_score, clip_score_fp32, psnr_fp32, ssim_fp32,
    color_acc / shape_acc / background_acc / all_acc on the demo (the judge), average_bits,
    feature_network, kernels and kernels_summary (layers run int / fake, fallback reasons); `fp32`: the same metrics of the FP32 images themselves (the table's FP32 row)
plots/step_error.csv: relative L2 error of the quantized calibration trajectory per step,
    ||x̂_k - x_k|| / ||x_k||, against the FP32 one (the accumulated error PCR targets).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pcr.config import ConfigError, Params
from pcr.metrics.qdiffbench import qdiffbench
from pcr.stores import StoreError, open_store

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
FP32_ROW_KEYS = ("fid_fp32", "kid_fp32", "fid_real", "kid_real", "clip_score")


def real_images(source: str, prompts: list[str], seeds: list[int], size: tuple[int, int]) -> np.ndarray | None:
    """Real images for FID to real: the demo renderer's ground truth, or a folder's images resized."""
    if source == "render":
        from pcr.demo.render import render_caption

        return np.stack([render_caption(p, s) for p, s in zip(prompts, seeds, strict=True)])
    folder = Path(source)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ConfigError(f"score.real={source!r} is not allowed: use 'render', null, or a folder holding images ({sorted(IMAGE_SUFFIXES)})")
    h, w = size
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BICUBIC)) for f in files])


def step_error(traj_path: str | Path, calib_path: str | Path) -> list[dict]:
    traj, calib = open_store(traj_path, "trajectories"), open_store(calib_path, "calibration")
    n = calib["x"].shape[1]
    rows = []
    for k in range(1, calib["x"].shape[0]):
        x, x_hat = traj["x"][k, :n], calib["x"][k]
        err = np.linalg.norm((x_hat - x).reshape(n, -1), axis=1) / np.linalg.norm(x.reshape(n, -1), axis=1)
        rows.append({"step": k, "relative_error": float(err.mean())})
    return rows


def score(params: Params, reference_path: str | Path, generated_path: str | Path, traj_path: str | Path,
          calib_path: str | Path, metrics_out: str | Path, plots_dir: str | Path) -> dict:
    cfg = params.score
    ref, gen = open_store(reference_path, "reference"), open_store(generated_path, "generated")
    metrics: dict = {}
    for name, prompts in gen.attrs["prompts"].items():  # refuse holes and mismatches before computing anything
        for store, path in ((ref, reference_path), (gen, generated_path)):
            done = store[f"done/{name}"][:]
            if not done.all():
                raise StoreError(f"{path}: images/{name} has {int((~done).sum())} unfinished samples; rerun its stage")
        if ref.attrs["prompts"].get(name) != prompts or ref.attrs["seed"] != gen.attrs["seed"]:
            raise StoreError(f"{reference_path} and {generated_path} hold different prompts or seeds for set {name!r}: rerun reference")
    for name, prompts in gen.attrs["prompts"].items():
        quant, fp32 = gen[f"images/{name}"][:], ref[f"images/{name}"][:]
        seeds = [gen.attrs["seed"] + i for i in range(len(prompts))]
        real = real_images(cfg.real, prompts, seeds, quant.shape[1:3]) if cfg.real else None
        bench = dict(feature=cfg.feature, feature_path=Path(cfg.feature_path) if cfg.feature_path else None,
                     clip_path=Path(cfg.clip_path) if cfg.clip_path else None, kid_subset_size=cfg.kid_subset_size,
                     real_paired=cfg.real == "render")
        m = qdiffbench(quant, fp32, real, prompts, **bench)
        # the FP32 row of the results table: the same metrics of the FP32 images (fid_fp32 is 0 by definition)
        fp32_row = {k: v for k, v in qdiffbench(fp32, fp32, real, prompts, **bench).items() if k in FP32_ROW_KEYS}
        if cfg.judge:
            from pcr.demo.judge import attribute_accuracy, load_judge

            judge = load_judge(cfg.judge)
            m.update(attribute_accuracy(quant, prompts, judge))
            fp32_row.update(attribute_accuracy(fp32, prompts, judge))
        m["fp32"] = fp32_row
        if name == "standard":
            metrics.update(m)
        else:
            metrics[name] = m
    metrics["average_bits"] = gen.attrs["average_bits"]
    metrics["weight_bits"] = gen.attrs["weight_bits"]
    if "kernels_summary" in gen.attrs:  # stores generated before the int kernels lack it
        metrics["kernels"] = gen.attrs["kernels"]
        metrics["kernels_summary"] = gen.attrs["kernels_summary"]
    plots = Path(plots_dir)
    plots.mkdir(parents=True, exist_ok=True)
    rows = step_error(traj_path, calib_path)
    (plots / "step_error.csv").write_text("step,relative_error\n" + "".join(f"{r['step']},{r['relative_error']:.6g}\n" for r in rows))
    metrics["final_step_error"] = rows[-1]["relative_error"]
    tmp = Path(str(metrics_out) + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=1, sort_keys=True))
    tmp.replace(metrics_out)
    return metrics
