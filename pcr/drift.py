"""Drift: how far the activations on the quantized trajectory depart from those on the FP32 trajectory, in the
units a quantizer sees. It tells, before anything is generated, whether progressive calibration has anything
to follow on a model at a bitwidth.

For step k and quantized layer l, the FP32 trajectory's input range [lo_k, hi_k] (collect) and the quantized
trajectory's [lô_k, hô_k] (a progressive calibration's observed statistics) give, at b bits,

    s_k       = (hi_k - lo_k) / (2^b - 1)                     the FP32-calibrated quantizer's step (1 LSB)
    drift_kl  = max(|lô_k - lo_k|, |hô_k - hi_k|) / s_k        how far the range moved, in LSB
    clip_kl   = (max(0, lo_k - lô_k) + max(0, hô_k - hi_k)) / s_k
                                                               how much of x̂'s range the FP32 quantizer clips, in LSB

A range that moves by less than half an LSB changes few codes: the FP32 trajectory's parameters then fit x̂ as
well as progressive ones can, and ranges alone have nothing to follow. The latent drift ||x̂_k - x_k|| / ||x_k||
(score's step_error) can be large while the ranges stay put: the error is then in *where* values fall, not in
their range, which an output objective (pcr.calibrate.objectives) can correct and a range cannot.

Only a progressive calibration observes x̂ (the fp32 and shared modes fix their parameters from FP32
statistics): for those, `drift` returns None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcr.stores import open_store

HALF_LSB = 0.5  # a range moved by less than this changes the rounding of few codes
MIN_RANGE = 1e-12


@dataclass(frozen=True)
class Drift:
    bits: int
    layers: list[str]
    drift_lsb: np.ndarray  # [T, L]
    clip_lsb: np.ndarray  # [T, L]
    latent: np.ndarray  # [T] ||x̂_{k+1} - x_{k+1}|| / ||x_{k+1}||, mean over samples

    def summary(self) -> dict:
        d, c = self.drift_lsb, self.clip_lsb
        return {"bits": self.bits, "median_lsb": float(np.median(d)), "p90_lsb": float(np.quantile(d, 0.9)),
                "share_over_half_lsb": float((d > HALF_LSB).mean()), "clip_median_lsb": float(np.median(c)),
                "latent_final": float(self.latent[-1])}

    def per_step(self) -> list[dict]:
        return [{"step": k, "median_lsb": float(np.median(self.drift_lsb[k])), "p90_lsb": float(np.quantile(self.drift_lsb[k], 0.9)),
                 "clip_median_lsb": float(np.median(self.clip_lsb[k])), "latent": float(self.latent[k])}
                for k in range(self.drift_lsb.shape[0])]

    def top_layers(self, n: int) -> list[tuple[str, float]]:
        mean = self.drift_lsb.mean(0)
        return [(self.layers[i], float(mean[i])) for i in np.argsort(-mean, kind="stable")[:n]]


def latent_drift(traj, calib) -> np.ndarray:
    """[T]: mean over samples of ||x̂_{k+1} - x_{k+1}|| / ||x_{k+1}||, k = 0..T-1."""
    n = calib["x"].shape[1]
    out = []
    for k in range(1, calib["x"].shape[0]):
        x, x_hat = traj["x"][k, :n], calib["x"][k]
        out.append(float((np.linalg.norm((x_hat - x).reshape(n, -1), axis=1) / np.linalg.norm(x.reshape(n, -1), axis=1)).mean()))
    return np.asarray(out)


def drift(traj_path: str | Path, calib_path: str | Path) -> Drift | None:
    """The drift of a progressive calibration (None for fp32/shared, which observe no x̂), at its bits."""
    traj, calib = open_store(traj_path, "trajectories"), open_store(calib_path, "calibration")
    if calib.attrs.get("mode") != "progressive":
        return None
    names = calib.attrs["layers"]
    idx = [traj.attrs["layers"].index(n) for n in names]
    lo, hi = traj["stats/min"][:][:, idx], traj["stats/max"][:][:, idx]  # [T, L]
    lo_hat, hi_hat = calib["stats/min"][:], calib["stats/max"][:]
    bits = int(calib.attrs["act_bits"])
    lsb = np.maximum(hi - lo, MIN_RANGE) / (2**bits - 1)
    moved = np.maximum(np.abs(lo_hat - lo), np.abs(hi_hat - hi)) / lsb
    clipped = (np.maximum(0.0, lo - lo_hat) + np.maximum(0.0, hi_hat - hi)) / lsb
    return Drift(bits, list(names), moved, clipped, latent_drift(traj, calib))


def describe(d: Drift | None, layers: int = 5) -> str:
    """A few lines for the terminal: per step, the summary, the layers that move most, and what it means."""
    if d is None:
        return "no drift measured: only a progressive calibration observes the quantized trajectory (calibrate.mode)"
    s = d.summary()
    lines = [f"drift of the quantized trajectory's layer-input ranges from the FP32 ones, in LSB at A{d.bits}",
             "step  median  p90    clip   latent"]
    lines += [f"{r['step']:>4}  {r['median_lsb']:6.2f} {r['p90_lsb']:6.2f} {r['clip_median_lsb']:6.2f} {r['latent']:7.4f}"
              for r in d.per_step()]
    lines.append(f"all steps and layers: median {s['median_lsb']:.2f} LSB, p90 {s['p90_lsb']:.2f}, "
                 f"{100 * s['share_over_half_lsb']:.0f}% over half an LSB; final latent error {s['latent_final']:.4f}")
    lines += [f"  moves most: {name} ({v:.2f} LSB on average)" for name, v in d.top_layers(layers)]
    lines.append("ranges have little to follow (most move under half an LSB): progressive ranges alone will match fp32"
                 if s["share_over_half_lsb"] < 0.5 else
                 "ranges move by more than half an LSB at most steps and layers: progressive ranges have drift to follow")
    return "\n".join(lines)
