"""Activation relaxing: a small share of sampling steps runs its activations at a higher bitwidth.

    n = round(fraction * T) steps at `bits`, the rest at quant.act_bits
    where = "x0": the last n steps (near x_0: image fidelity)
    where = "xT": the first n steps (near x_T: text-image matching)
    where = "auto": the steps whose measured sensitivity S_k (pcr.sensitivity) is significant, the largest
                    first; the rest of the n from the x0 end

With 5% of steps at 10 bits over 8, the average bitwidth is 8.1. export applies the schedule, deriving the
relaxed steps' ranges from the calibration statistics (no recalibration), unless relax.recalibrate had
calibrate run them at their bits already (the official loop, x0/xT).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pcr.config import RelaxConfig
from pcr.errors import StoreError
from pcr.files import atomic_path
from pcr.quant.qmap import QuantMap

SCHEDULE_VERSION = 1
SENSITIVITY_COLUMNS = ("step", "timestep", "gain_db", "stderr_db", "samples", "bits")
SIGNIFICANT = 3.0  # a step counts as sensitive when its gain exceeds this many standard errors (8 samples: t ≈ one-sided 99%)


@dataclass(frozen=True)
class Sensitivity:
    """S_k: the mean per-sample dB of final-output error to FP32 that running step k alone at `bits` removes,
    with its standard error over the samples (pcr.sensitivity measures it; sensitivity.csv holds it)."""

    timesteps: np.ndarray  # [T] t_k
    gain_db: np.ndarray  # [T] S_k
    stderr_db: np.ndarray  # [T]
    samples: int
    bits: int  # the relaxed bitwidth step k ran at

    def sensitive(self) -> list[int]:
        """Steps whose gain is significant (S_k > SIGNIFICANT · stderr_k), the largest first."""
        order = np.argsort(-self.gain_db, kind="stable")
        return [int(k) for k in order if self.gain_db[k] > SIGNIFICANT * self.stderr_db[k]]

    def choose(self, n: int) -> tuple[int, ...]:
        """n steps: the significantly sensitive ones, the largest first; the rest of the budget from the x0 end
        (the paper's fidelity choice), where the measurement cannot tell steps apart."""
        chosen = self.sensitive()[:n]
        rest = [k for k in reversed(range(len(self.timesteps))) if k not in chosen]  # from x0 towards x_T
        return tuple(sorted(chosen + rest[: n - len(chosen)]))

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(SENSITIVITY_COLUMNS)
            for k, (t, g, e) in enumerate(zip(self.timesteps, self.gain_db, self.stderr_db, strict=True)):
                w.writerow([k, f"{t:.9g}", f"{g:.6g}", f"{e:.6g}", self.samples, self.bits])

    @classmethod
    def load(cls, path: str | Path) -> Sensitivity:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        if tuple(reader.fieldnames or ()) != SENSITIVITY_COLUMNS:
            raise StoreError(f"{path} is not a sensitivity table (columns {list(SENSITIVITY_COLUMNS)}): rerun the sensitivity stage")
        col = {c: np.array([float(r[c]) for r in rows]) for c in SENSITIVITY_COLUMNS}
        first = rows[0] if rows else {"samples": 0, "bits": 0}  # no rows: not measured (relax.where was not auto)
        return cls(col["timestep"], col["gain_db"], col["stderr_db"], int(first["samples"]), int(first["bits"]))


@dataclass(frozen=True)
class Schedule:
    bits: tuple[int, ...]  # activation bits of step k = 0 (x_T) .. T-1
    base_bits: int
    relaxed_steps: tuple[int, ...]
    fraction: float
    where: str
    sensitivity: tuple[float, ...] | None = None  # S_k (dB) the auto schedule ranked (where = auto)

    @property
    def average_bits(self) -> float:
        return sum(self.bits) / len(self.bits)

    def to_json(self) -> str:
        return json.dumps({"format_version": SCHEDULE_VERSION, "bits": list(self.bits), "base_bits": self.base_bits,
                           "relaxed_steps": list(self.relaxed_steps), "fraction": self.fraction, "where": self.where,
                           "average_bits": round(self.average_bits, 6),
                           **({"sensitivity": list(self.sensitivity)} if self.sensitivity is not None else {})}, indent=1)

    def bits_csv(self) -> str:
        """The bit schedule as a plot: step, activation bits."""
        return "step,act_bits\n" + "".join(f"{k},{b}\n" for k, b in enumerate(self.bits))

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        d = json.loads(Path(path).read_text())
        if d.get("format_version") != SCHEDULE_VERSION:
            raise StoreError(f"{path}: schedule format_version={d.get('format_version')!r}, this pcr reads {SCHEDULE_VERSION}")
        sens = tuple(d["sensitivity"]) if "sensitivity" in d else None
        return cls(tuple(d["bits"]), d["base_bits"], tuple(d["relaxed_steps"]), d["fraction"], d["where"], sens)


def make_schedule(cfg: RelaxConfig, num_steps: int, base_bits: int, sensitivity: Sensitivity | None = None) -> Schedule:
    n = round(cfg.fraction * num_steps)
    scores = None
    if cfg.where == "auto":
        if sensitivity is None or len(sensitivity.timesteps) != num_steps:
            got = "none" if sensitivity is None else f"{len(sensitivity.timesteps)} steps"
            raise StoreError(f"relax.where='auto' needs the sensitivity of all {num_steps} steps, got {got}: rerun the sensitivity stage")
        relaxed = sensitivity.choose(n)
        scores = tuple(float(v) for v in sensitivity.gain_db)
    else:
        relaxed = tuple(range(num_steps - n, num_steps) if cfg.where == "x0" else range(n))
    bits = tuple(cfg.bits if k in relaxed else base_bits for k in range(num_steps))
    return Schedule(bits, base_bits, relaxed, cfg.fraction, cfg.where, scores)


def relax(cfg: RelaxConfig, qconfig: str | Path, out: str | Path, sensitivity: str | Path | None = None,
          bits_plot: str | Path | None = None) -> Schedule:
    """Write schedule.json for the calibrated model described by `qconfig` (`sensitivity`: the sensitivity
    stage's table, read for where = auto; `bits_plot`: the schedule as CSV for `dvc plots`)."""
    qmap = QuantMap.load(qconfig)
    base = {spec.act_bits for spec in qmap.layers.values()}
    if len(base) != 1:
        raise StoreError(f"{qconfig}: layers have different activation bits {sorted(base)}; relax needs one base bitwidth")
    sens = Sensitivity.load(sensitivity) if cfg.where == "auto" and sensitivity is not None else None
    if sens is not None and len(sens.timesteps) and sens.bits != cfg.bits:
        raise StoreError(f"{sensitivity} measured relaxed steps at {sens.bits} bits, relax.bits={cfg.bits}: rerun the sensitivity stage")
    schedule = make_schedule(cfg, qmap.num_steps, base.pop(), sens)
    with atomic_path(out) as tmp:
        tmp.write_text(schedule.to_json())
    if bits_plot is not None:
        with atomic_path(bits_plot) as tmp:
            tmp.write_text(schedule.bits_csv())
    return schedule
