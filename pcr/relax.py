"""Activation relaxing: a small share of sampling steps runs its activations at a higher bitwidth.

    n = round(fraction * T) steps at `bits`, the rest at quant.act_bits
    where = "x0": the last n steps (near x_0: image fidelity)
    where = "xT": the first n steps (near x_T: text-image matching)

With 5% of steps at 10 bits over 8, the average bitwidth is 8.1. The schedule is applied at
generation time from the calibration statistics: no recalibration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pcr.config import RelaxConfig
from pcr.errors import StoreError
from pcr.files import atomic_path
from pcr.quant.qmap import QuantMap

SCHEDULE_VERSION = 1


@dataclass(frozen=True)
class Schedule:
    bits: tuple[int, ...]  # activation bits of step k = 0 (x_T) .. T-1
    base_bits: int
    relaxed_steps: tuple[int, ...]
    fraction: float
    where: str

    @property
    def average_bits(self) -> float:
        return sum(self.bits) / len(self.bits)

    def to_json(self) -> str:
        return json.dumps({"format_version": SCHEDULE_VERSION, "bits": list(self.bits), "base_bits": self.base_bits,
                           "relaxed_steps": list(self.relaxed_steps), "fraction": self.fraction, "where": self.where,
                           "average_bits": round(self.average_bits, 6)}, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        d = json.loads(Path(path).read_text())
        if d.get("format_version") != SCHEDULE_VERSION:
            raise StoreError(f"{path}: schedule format_version={d.get('format_version')!r}, this pcr reads {SCHEDULE_VERSION}")
        return cls(tuple(d["bits"]), d["base_bits"], tuple(d["relaxed_steps"]), d["fraction"], d["where"])


def make_schedule(cfg: RelaxConfig, num_steps: int, base_bits: int) -> Schedule:
    n = round(cfg.fraction * num_steps)
    relaxed = range(num_steps - n, num_steps) if cfg.where == "x0" else range(n)
    bits = tuple(cfg.bits if k in relaxed else base_bits for k in range(num_steps))
    return Schedule(bits, base_bits, tuple(relaxed), cfg.fraction, cfg.where)


def relax(cfg: RelaxConfig, qconfig: str | Path, out: str | Path) -> Schedule:
    """Write schedule.json for the calibrated model described by `qconfig`."""
    qmap = QuantMap.load(qconfig)
    base = {spec.act_bits for spec in qmap.layers.values()}
    if len(base) != 1:
        raise StoreError(f"{qconfig}: layers have different activation bits {sorted(base)}; relax needs one base bitwidth")
    schedule = make_schedule(cfg, qmap.num_steps, base.pop())
    with atomic_path(out) as tmp:
        tmp.write_text(schedule.to_json())
    return schedule
