"""Per-step activation calibration along the quantized trajectory.

Modes (one code path):
- `progressive` (PCR): at step k the input x̂_k already carries the error of the quantized steps
  before it. (1) observe: run step k on x̂_k with activations quantized at the starting parameters,
  recording each layer's input statistics; (2) fix step k's parameters from them; (3) advance:
  run step k again with those parameters, giving x̂_{k+1}. Two UNet passes per step: O(T).
- `fp32`: step k's parameters from the FP32 trajectory's statistics (collect's); one pass per step.
- `shared`: one parameter set from the FP32 statistics of all steps (Q-Diffusion); one pass.

Then the objective (`calibrate.objective`, pcr.calibrate.objectives) fits step k's output correction, on
the quantized trajectory in progressive mode (no extra pass: the advance pass's output is corrected) and
on the FP32 trajectory in the fp32 and shared modes (one quantized pass on x_k).

`naive_progressive` is the official code's loop, which reruns every prompt from x_T for each k
(about T²/2 passes); it exists to show both give the same parameters, and for benchmarks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pcr.calibrate.objectives import apply_correction, get_fit, step_target
from pcr.distributed import batches
from pcr.models.conditioning import select
from pcr.quant.correction import StepAffineConv2d
from pcr.quant.modules import QModuleMixin
from pcr.quant.observers import Observer
from pcr.quant.quantize import set_activation_step
from pcr.sampling import Sampler
from pcr.stats.record import AllRecorded, StatsRecorder, merge_stats
from pcr.stats.running import EMA_CONSTANT, RunningStats

MODES = ("progressive", "fp32", "shared")
StepStats = dict[str, RunningStats]


@dataclass
class StepResult:
    k: int
    x_next: Tensor  # x̂_{k+1} [N, C, h, w]
    eps: Tensor  # guided model output at step k [N, C, h, w], corrected by the objective's fit
    stats: StepStats  # the statistics step k's parameters were fixed from
    correction: tuple[Tensor, Tensor] | None = None  # step k's output (gain, shift) [C], objectives that fit one
    captured: dict[str, Tensor] = field(default_factory=dict)  # layer -> inputs of the first samples


@dataclass
class Calibration:
    """What a sweep needs; the quantized layers are inside `sampler.unet`."""

    sampler: Sampler
    qlayers: dict[str, QModuleMixin]
    cond: dict[str, Tensor]  # [N, 2, ...]
    starting_stats: Callable[[int], StepStats]  # FP32 statistics of step k
    observer: Observer
    bits: int | tuple[int, ...]  # activation bits, one for all steps or one per step (the official relaxed calibration)
    batch_size: int
    capture_layers: tuple[str, ...] = ()
    capture_samples: int = 0
    ema_constant: float = EMA_CONSTANT  # the ema_minmax observer's averaging constant (quant.ema_constant)
    objective: str = "ranges"  # calibrate.objective: what a step fits after its ranges (pcr.calibrate.objectives)
    output: StepAffineConv2d | None = None  # the corrected output layer (objectives other than ranges)
    fp32_x: Callable[[int], Tensor] | None = None  # state k of the FP32 trajectory [N, C, h, w] (collect's)
    fp32_eps: Callable[[int], Tensor] | None = None  # FP32's guided output at step k [N, C, h, w]
    histogram: bool = True  # record activation histograms (the observer reads them at some bitwidth this run serves)
    _inputs_per_pass: int | None = field(default=None, init=False, repr=False)  # recorded inputs of one full UNet pass

    @property
    def batches(self) -> list[slice]:
        return batches(next(iter(self.cond.values())).shape[0], self.batch_size)

    def bits_at(self, k: int) -> int:
        return self.bits if isinstance(self.bits, int) else self.bits[k]

    def set_params(self, stats: StepStats, k: int) -> None:
        set_activation_step(self.qlayers, self.observer, stats, k, self.bits_at(k))

    def observe(self, rec: StatsRecorder, k: int, x: Tensor, schedulers: list) -> StepStats:
        """Input statistics of step k on x (activations quantized at step k's current parameters).

        A pass stops at the last layer's input (AllRecorded) once one full pass has counted the inputs:
        the rest of the UNet changes no statistic, and the output is not used."""
        rec.recording, rec.capture_rows = True, None
        rec.start()
        for b, sched in zip(self.batches, schedulers, strict=True):
            rec.recorded, rec.stop_after = 0, self._inputs_per_pass
            try:
                self.sampler.eps(x[b], k, select(self.cond, b), sched)
                self._inputs_per_pass = rec.recorded
            except AllRecorded:
                pass
        rec.recording, rec.stop_after = False, None
        return rec.stats

    def advance(self, rec: StatsRecorder, k: int, x: Tensor, schedulers: list, mode: str = "progressive"
                ) -> tuple[Tensor, Tensor, dict, tuple[Tensor, Tensor] | None]:
        """x̂_k -> (x̂_{k+1}, eps_k, captured inputs, correction): the objective's fit (on x̂_k in progressive mode,
        on the FP32 x_k otherwise) corrects eps_k before the scheduler steps. Captures the first samples'
        (conditional branch) layer inputs."""
        rec.recording, rec.captured = False, {}
        fit, correction = get_fit(self.objective), None
        if fit is not None:  # the fit is of the uncorrected output: step k's row back to the identity first
            self.output.set_step(k, torch.ones_like(self.output.out_gain[k]), torch.zeros_like(self.output.out_shift[k]))
        eps = []
        for i, (b, sched) in enumerate(zip(self.batches, schedulers, strict=True)):
            n_b = b.stop - b.start
            s = min(self.capture_samples, n_b)
            rec.capture_rows = slice(n_b, n_b + s) if i == 0 and s > 0 else None  # CFG rows: [uncond; cond]
            eps.append(self.sampler.eps(x[b], k, select(self.cond, b), sched))
        rec.capture_rows = None
        captured = dict(rec.captured)
        if fit is not None:
            correction = fit(*self.fit_data(k, x, eps, schedulers, mode))
            self.output.set_step(k, *correction)
            eps = [apply_correction(e, *(c.to(e.device) for c in correction)) for e in eps]
        xs = [self.sampler.step(sched, e, k, x[b]).cpu() for e, b, sched in zip(eps, self.batches, schedulers, strict=True)]
        return torch.cat(xs), torch.cat([e.cpu() for e in eps]), captured, correction

    def fit_data(self, k: int, x: Tensor, eps: list[Tensor], schedulers: list, mode: str) -> tuple[Tensor, Tensor]:
        """(ε̂_k, ε*_k) [N, C, h, w] that step k's correction is fitted on (pcr.calibrate.objectives)."""
        if self.output is None or self.fp32_x is None or self.fp32_eps is None:
            raise ValueError(f"calibrate.objective={self.objective!r} needs the corrected output layer and the FP32 trajectory")
        if mode == "progressive":  # closed loop: from x̂_k to the FP32 trajectory's next state
            x_next = self.fp32_x(k + 1)
            targets = [step_target(lambda sch, e, b=b: self.sampler.step(sch, e, k, x[b]), sched, eps_b, x_next[b])
                       for eps_b, b, sched in zip(eps, self.batches, schedulers, strict=True)]
            return torch.cat([e.cpu() for e in eps]), torch.cat([t.cpu() for t in targets])
        x_k = self.fp32_x(k)  # open loop: the quantized step on FP32's own input, against FP32's output
        eps_q = [self.sampler.eps(x_k[b], k, select(self.cond, b), copy.deepcopy(sched))  # step k's row: the identity
                 for b, sched in zip(self.batches, schedulers, strict=True)]
        return torch.cat([e.cpu() for e in eps_q]), self.fp32_eps(k)

    def recorder(self) -> StatsRecorder:
        rec = StatsRecorder(self.sampler.unet, list(self.qlayers), histogram=self.histogram,
                            ema_constant=self.ema_constant)
        rec.capture_layers = set(self.capture_layers)
        return rec


def sweep(cal: Calibration, mode: str, x: Tensor, *, start: int = 0, schedulers: list | None = None,
          on_step: Callable[[StepResult], None] | None = None, progress: bool = True) -> Tensor:
    """Calibrate steps start..T-1 from x = x̂_start; returns x̂_T. `on_step` sees every finished step."""
    if mode not in MODES:
        raise ValueError(f"calibrate.mode={mode!r} is not allowed: choose one of {list(MODES)}")
    s = cal.sampler
    schedulers = schedulers or [s.new_scheduler() for _ in cal.batches]
    shared = merge_stats([cal.starting_stats(k) for k in range(s.num_steps)], list(cal.qlayers)) if mode == "shared" else None
    with cal.recorder() as rec:
        for k in tqdm(range(start, s.num_steps), desc=f"calibrate ({mode})", disable=not progress, initial=start, total=s.num_steps):
            if mode == "progressive":
                cal.set_params(cal.starting_stats(k), k)
                stats = cal.observe(rec, k, x, schedulers)
            else:
                stats = shared if mode == "shared" else cal.starting_stats(k)
            cal.set_params(stats, k)
            x_next, eps, captured, correction = cal.advance(rec, k, x, schedulers, mode)
            if on_step is not None:
                on_step(StepResult(k, x_next, eps, stats, captured=captured, correction=correction))
            x = x_next
    return x


def naive_progressive(cal: Calibration, x_T: Tensor, progress: bool = False) -> None:
    """The official code's progressive loop: for each k, rerun from x_T through the calibrated steps."""
    s = cal.sampler
    with cal.recorder() as rec:
        for k in tqdm(range(s.num_steps), desc="calibrate (naive)", disable=not progress):
            schedulers = [s.new_scheduler() for _ in cal.batches]
            x = x_T
            for j in range(k):
                x = cal.advance(rec, j, x, schedulers)[0]
            cal.set_params(cal.starting_stats(k), k)
            cal.set_params(cal.observe(rec, k, x, schedulers), k)


def replay_schedulers(cal: Calibration, xs: Callable[[int], Tensor], eps: Callable[[int], Tensor], steps: int) -> list:
    """Scheduler states after `steps` finished steps, rebuilt from the stored x̂_j and eps_j (no UNet)."""
    schedulers = [cal.sampler.new_scheduler() for _ in cal.batches]
    for j in range(steps):
        x_j, e_j = xs(j), eps(j)
        for b, sched in zip(cal.batches, schedulers, strict=True):
            sched.scale_model_input(x_j[b], cal.sampler.timesteps[j])
            cal.sampler.step(sched, e_j[b], j, x_j[b])
    return schedulers
