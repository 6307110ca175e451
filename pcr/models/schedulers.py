"""Samplers by name: a small registry of stock diffusers schedulers.

A scheduler is rebuilt from the pipeline's own scheduler config (`Cls.from_config(pipe.scheduler.config)`),
so the noise schedule of the model (betas, prediction type, steps offset, ...) is kept and only the
solver changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from pcr.errors import ConfigError

# name -> (scheduler class, config overrides applied on top of the model's scheduler config)
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    # PLMS, the sampler of the paper for SD 1.x: diffusers' PNDM without its Runge-Kutta warm-up steps.
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    # DPM-Solver++ (2M): diffusers' default algorithm_type for this class, set explicitly.
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}


def scheduler_names() -> list[str]:
    """The names accepted by `make_scheduler`, sorted."""
    return sorted(SCHEDULERS)


def scheduler_class(name: str) -> type[SchedulerMixin]:
    """The diffusers class registered under `name`; ValueError naming the value and the allowed names."""
    try:
        return SCHEDULERS[name][0]
    except KeyError:
        raise ConfigError(f"unknown scheduler {name!r}; allowed: {', '.join(scheduler_names())}") from None


def make_scheduler(name: str, config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler of kind `name` built from a (model's) scheduler config."""
    cls = scheduler_class(name)
    overrides = SCHEDULERS[name][1]
    return cls.from_config(dict(config), **overrides)


def as_sd_pipeline_would(scheduler: SchedulerMixin) -> SchedulerMixin:
    """The scheduler with the config fixes StableDiffusionPipeline.__init__ applies (`steps_offset=1`,
    `clip_sample=False`), for a scheduler saved on its own that the pipeline will later be given."""
    fixes = {k: v for k, v in (("steps_offset", 1), ("clip_sample", False)) if k in scheduler.config and scheduler.config[k] != v}
    if not fixes:
        return scheduler
    config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}  # else from_config keeps the defaults
    return type(scheduler).from_config({**config, **fixes})
