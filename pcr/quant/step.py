"""Which sampling step the quantized UNet is running: a counter inside the model.

PCR's activation quantizers have one row of parameters per sampling step k (k = 0 is the first step,
from x_T; k = T - 1 the last). The stock diffusers pipelines call the UNet once per step, both CFG
branches in one call, and tell it only the diffusers timestep t. So the UNet counts its own calls:

    call 0 of a generation   t == t_0            -> k = 0
    call k                   t == t_k            -> k
    a call with t == t_0 when t_0 is not expected next starts a new generation

Count, don't map t to k: PNDM (PLMS) repeats one timestep. Each call's t is checked against the
calibrated timesteps, so a pipeline with another step count or scheduler fails at its first call.

The step index k lives in a tensor buffer `index [1]` that every quantizer reads with `index_select`:
no ContextVar, no Python int that torch.compile would guard on, so one compiled graph serves every
step. The bookkeeping runs in a forward pre-hook outside the compiled region (`torch.compiler.disable`).
Calibration pins the step explicitly: `with at_step(unet, k): unet(x, t_k, ...)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pcr.errors import StoreError

STEP_COUNTER = "pcr_step"  # attribute name of the counter on the quantized UNet


class StepCounter(nn.Module):
    """Buffers: `timesteps [T]` (the calibrated diffusers timesteps, saved), `index [1]` (k, not saved)."""

    def __init__(self, timesteps: Tensor | list[float], scheduler: str = "unknown", num_inference_steps: int | None = None):
        super().__init__()
        ts = torch.as_tensor(timesteps, dtype=torch.float64).reshape(-1)
        if ts.numel() < 1:
            raise ValueError("a step counter needs at least one calibrated timestep")
        self.register_buffer("timesteps", ts)
        self.register_buffer("index", torch.zeros(1, dtype=torch.long), persistent=False)
        self.scheduler = scheduler  # class name of the calibrated scheduler, for error messages
        self.num_inference_steps = num_inference_steps or ts.numel()  # what to ask the pipeline for (PNDM: T - 1)
        self.calls = 0  # UNet calls so far in the current generation (host-side bookkeeping)
        self.pinned: int | None = None

    @property
    def num_steps(self) -> int:
        return self.timesteps.numel()

    def _describe(self) -> str:
        ts = [f"{t:g}" for t in self.timesteps.tolist()]
        shown = ", ".join(ts if len(ts) <= 6 else [*ts[:3], "...", *ts[-2:]])
        return f"calibrated for T={self.num_steps} steps of {self.scheduler} (timesteps {shown})"

    def check_step(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_steps:
            raise ValueError(f"sampling step {k!r} is not allowed: the quantized UNet has steps 0..{self.num_steps - 1}")
        return k

    def advance(self, t: float) -> int:
        """The step k of a call with timestep t; counts the call. Raises if t is not the calibrated t_k."""
        ts = self.timesteps
        if self.pinned is not None:
            k = self.pinned
            if float(ts[k]) != t:
                raise ValueError(f"the UNet runs step {k} with timestep t={t:g}, but step {k} was calibrated at t={float(ts[k]):g}; "
                                 f"{self._describe()}")
        else:
            k = self.calls
            expected = float(ts[k]) if k < self.num_steps else None
            if t != expected:
                if t != float(ts[0]):
                    where = f"call {k} of a generation" if expected is not None else "a call after the last step"
                    raise ValueError(
                        f"quantized UNet {self._describe()}; {where} got timestep t={t:g}"
                        + (f" where t={expected:g} was calibrated" if expected is not None else "")
                        + f". Run the pipeline with num_inference_steps={self.num_inference_steps} and the calibrated scheduler "
                        "(pcr.load_pipeline sets it), or re-export for this schedule.")
                k = 0  # t_0 again: a new generation (an aborted one leaves calls mid-way)
            self.calls = (k + 1) % self.num_steps
        self.index.fill_(k)
        return k

    def reset(self) -> None:
        self.calls = 0

    @contextmanager
    def pin(self, k: int) -> Iterator[int]:
        """Run every call inside the block as step k (calibration's observe and advance passes)."""
        self.check_step(k)
        before, self.pinned = self.pinned, k
        self.index.fill_(k)  # layers called on their own (no UNet hook) see step k too
        try:
            yield k
        finally:
            self.pinned = before

    def extra_repr(self) -> str:
        return f"steps={self.num_steps}, scheduler={self.scheduler}"


def _timestep_arg(args: tuple, kwargs: dict) -> float:
    t = args[1] if len(args) > 1 else kwargs.get("timestep")
    if t is None:
        raise ValueError("the quantized UNet needs its timestep argument to know the sampling step")
    t = torch.as_tensor(t).reshape(-1)
    if t.numel() > 1 and not bool((t == t[0]).all()):
        raise ValueError(f"one UNet call must run one sampling step, got timesteps {t.tolist()}")
    return float(t[0])


@torch.compiler.disable
def _count_call(unet: nn.Module, args: tuple, kwargs: dict) -> None:
    getattr(unet, STEP_COUNTER).advance(_timestep_arg(args, kwargs))


def attach_step_counter(unet: nn.Module, timesteps: Tensor | list[float], scheduler: str = "unknown",
                        num_inference_steps: int | None = None) -> StepCounter:
    """Give `unet` a step counter (a submodule, so it moves with `.to()`) and the hook that drives it."""
    counter = StepCounter(timesteps, scheduler, num_inference_steps).to(next(unet.parameters()).device)
    setattr(unet, STEP_COUNTER, counter)
    unet.register_forward_pre_hook(_count_call, with_kwargs=True)
    return counter


def step_counter(model: nn.Module) -> StepCounter:
    if isinstance(model, StepCounter):
        return model
    counter = getattr(getattr(model, "_orig_mod", model), STEP_COUNTER, None)  # torch.compile wraps the UNet
    if counter is None:
        raise ValueError("this model has no step counter: quantize it with pcr.quant.quantize_model or load it with pcr.load_quantized")
    return counter


def check_timesteps(model: nn.Module, timesteps: Tensor, what: str, given: str, rerun: str) -> None:
    """Refuse a sampler whose timesteps are not the ones `what` (a file) was calibrated at."""
    calibrated = step_counter(model).timesteps.cpu()
    if not torch.equal(calibrated, timesteps.double().cpu()):
        raise StoreError(f"{what} was calibrated at timesteps {calibrated.tolist()}, {given} {timesteps.tolist()}: "
                         f"rerun {rerun}")


@contextmanager
def at_step(model: nn.Module, k: int) -> Iterator[int]:
    """Pin the quantized UNet (or its counter) to sampling step k inside the block."""
    with step_counter(model).pin(k) as k:
        yield k
