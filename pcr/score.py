"""score: QDiffBench on the generated images, per prompt set, with 95% intervals, plus the per-step
trajectory error.

Each model (feature network, CLIP, the demo judge) is loaded once per run, on `score.device`; each image
set (quantized, FP32, real) goes through it once, streamed from the stores `score.batch_size` images at a
time. What comes out per sample is saved (`pcr.metrics.samples`), and every figure and interval is
computed from it (`pcr.metrics.intervals`).

metrics.json (flat keys for the standard set, a nested block per other set):
    fid_fp32, kid_fp32, fid_real, kid_real, clip_score, clip_score_fp32, psnr_fp32, ssim_fp32,
    color_acc / shape_acc / background_acc / all_acc on the demo (the judge), each X with X_ci95 [lo, hi],
    X_ci95_lo and X_ci95_hi (paired bootstrap, `score.bootstrap` replicates); average_bits, weight_bits,
    final_step_error, feature_network, kernels and kernels_summary (layers run int / fake, fallback
    reasons); `fp32`: the FP32 images' own figures (the table's FP32 row)
samples/<set>/: the per-sample data (layout in pcr/metrics/samples.py), for `pcr compare`.
plots/step_error.csv: relative L2 error of the quantized calibration trajectory per step,
    ||x̂_k - x_k|| / ||x_k||, against the FP32 one (the accumulated error PCR targets).
plots/drift.csv: per step, how far the layer-input ranges on the quantized trajectory moved from the FP32 ones, in
    LSB of the FP32-calibrated quantizer (median and p90 over layers; pcr.drift); metrics.json's `drift` summarises
    it (progressive calibrations only).
plots/ranges/<layer>.csv: per step, the input range (max - min) of a layer on the FP32 trajectory and on the
    calibration's (what its parameters were fixed from), for the RANGE_LAYERS layers whose ranges differ most.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pcr.config import ConfigError, Params
from pcr.drift import drift, latent_drift
from pcr.files import atomic_path
from pcr.metrics.intervals import scored
from pcr.metrics.samples import Judge, extract, load_models, prompt_groups, prompts_digest, save
from pcr.stores import StoreError, open_store

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
RANGE_LAYERS = 3


def resolve_device(name: str) -> torch.device:
    """`auto`: cuda when there is one (pcr.models.load has the same, but imports diffusers)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)


def _real_files(source: str) -> list[Path]:
    folder = Path(source)
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ConfigError(f"score.real={source!r} is not allowed: use 'render', null, or a folder holding images ({sorted(IMAGE_SUFFIXES)})")
    return files


def real_batches(source: str, prompts: list[str], seeds: list[int], size: tuple[int, int],
                 batch_size: int) -> Iterator[np.ndarray]:
    """Real images for FID to real, a batch at a time: the demo renderer's ground truth of each prompt and
    seed, or a folder's images resized to `size`."""
    if source == "render":
        from pcr.demo.render import render_caption

        for i in range(0, len(prompts), batch_size):
            yield np.stack([render_caption(p, s) for p, s in zip(prompts[i : i + batch_size], seeds[i : i + batch_size], strict=True)])
        return
    files, (h, w) = _real_files(source), size
    for i in range(0, len(files), batch_size):
        yield np.stack([np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BICUBIC)) for f in files[i : i + batch_size]])


def real_images(source: str, prompts: list[str], seeds: list[int], size: tuple[int, int]) -> np.ndarray:
    """All real images at once (see `real_batches`)."""
    return np.concatenate(list(real_batches(source, prompts, seeds, size, max(len(prompts), 1))))


def load_judge_hits(path: str) -> Judge:
    from pcr.demo.judge import attribute_hits, load_judge

    judge = load_judge(path)
    return lambda images, prompts: attribute_hits(images, list(prompts), judge)


def activation_ranges(traj_path: str | Path, calib_path: str | Path, layers: int = RANGE_LAYERS) -> dict[str, np.ndarray]:
    """layer -> [T, 2] input range (max - min) per step, FP32 trajectory and calibration, of the `layers` layers
    whose calibration ranges depart most from the FP32 ones (largest mean |log ratio|)."""
    traj, calib = open_store(traj_path, "trajectories"), open_store(calib_path, "calibration")
    names = calib.attrs["layers"]
    idx = [traj.attrs["layers"].index(n) for n in names]
    fp32 = traj["stats/max"][:][:, idx] - traj["stats/min"][:][:, idx]  # [T, L]
    cal = calib["stats/max"][:] - calib["stats/min"][:]  # [T, L]
    drift = np.abs(np.log(np.maximum(cal, 1e-12) / np.maximum(fp32, 1e-12))).mean(0)  # [L]
    top = np.argsort(-drift, kind="stable")[:layers]
    return {names[i]: np.stack([fp32[:, i], cal[:, i]], axis=1) for i in top}


def _write_json(path: str | Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def score(params: Params, reference_path: str | Path, generated_path: str | Path, traj_path: str | Path,
          calib_path: str | Path, metrics_out: str | Path, plots_dir: str | Path,
          samples_dir: str | Path | None = None) -> dict:
    cfg = params.score
    ref, gen = open_store(reference_path, "reference"), open_store(generated_path, "generated")
    for name, prompts in gen.attrs["prompts"].items():  # refuse holes and mismatches before computing anything
        for store, path in ((ref, reference_path), (gen, generated_path)):
            done = store[f"done/{name}"][:]
            if not done.all():
                raise StoreError(f"{path}: images/{name} has {int((~done).sum())} unfinished samples; rerun its stage")
        if ref.attrs["prompts"].get(name) != prompts or ref.attrs["seed"] != gen.attrs["seed"]:
            raise StoreError(f"{reference_path} and {generated_path} hold different prompts or seeds for set {name!r}: rerun reference")
    device = resolve_device(cfg.device)
    models = load_models(cfg.feature, cfg.feature_path, cfg.clip_path, device)
    judge = load_judge_hits(cfg.judge) if cfg.judge else None
    samples_out = Path(samples_dir) if samples_dir is not None else None
    if samples_out is not None and samples_out.exists():
        shutil.rmtree(samples_out)
    metrics: dict = {}
    bs = cfg.batch_size
    for name, prompts in gen.attrs["prompts"].items():
        quant, fp32 = gen[f"images/{name}"], ref[f"images/{name}"]  # zarr arrays: read a batch at a time
        seeds = [gen.attrs["seed"] + i for i in range(len(prompts))]
        pairs = ((quant[i : i + bs], fp32[i : i + bs], prompts[i : i + bs]) for i in range(0, len(prompts), bs))
        real = real_batches(cfg.real, prompts, seeds, tuple(quant.shape[1:3]), bs) if cfg.real else None
        samples = extract(models, pairs, real, judge, seed=gen.attrs["seed"], prompts_sha256=prompts_digest(prompts),
                          prompt_groups=prompt_groups(prompts),
                          paired_real=cfg.real == "render", kid_subset_size=cfg.kid_subset_size)
        if samples_out is not None:
            save(samples, samples_out / name)
        m, fp32_row = scored(samples, cfg.bootstrap, cfg.seed, device)
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
    d = drift(traj_path, calib_path)  # its latent drift is the step error: the stores' x is read once
    latent = d.latent if d is not None else latent_drift(open_store(traj_path, "trajectories"), open_store(calib_path, "calibration"))
    (plots / "step_error.csv").write_text("step,relative_error\n" + "".join(f"{k + 1},{e:.6g}\n" for k, e in enumerate(latent)))
    metrics["final_step_error"] = float(latent[-1])
    if d is not None:  # progressive calibrations only: the others observe no x̂
        metrics["drift"] = d.summary()
        (plots / "drift.csv").write_text("step,median_lsb,p90_lsb,clip_median_lsb\n" + "".join(
            f"{r['step']},{r['median_lsb']:.6g},{r['p90_lsb']:.6g},{r['clip_median_lsb']:.6g}\n" for r in d.per_step()))
    (plots / "ranges").mkdir(exist_ok=True)
    for layer, r in activation_ranges(traj_path, calib_path).items():
        (plots / "ranges" / f"{layer}.csv").write_text("step,fp32,calibrated\n" + "".join(f"{k},{a:.6g},{b:.6g}\n" for k, (a, b) in enumerate(r)))
    _write_json(metrics_out, metrics)
    return metrics
