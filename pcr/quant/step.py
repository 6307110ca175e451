"""The step context: which sampling step the UNet is running, so each quantizer picks its row.

    with timestep(k):          # k = 0 is the first sampling step (x_T), k = T - 1 the last
        eps = unet(x_t, t, ...)

A ContextVar, not module attributes: nothing to walk per step, and safe across threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_STEP: ContextVar[int | None] = ContextVar("pcr_timestep", default=None)


@contextmanager
def timestep(k: int) -> Iterator[int]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"timestep index {k!r} must be a non-negative integer")
    token = _STEP.set(k)
    try:
        yield k
    finally:
        _STEP.reset(token)


def current_step() -> int:
    k = _STEP.get()
    if k is None:
        raise RuntimeError("no sampling step is set: run the quantized UNet inside `with pcr.quant.timestep(k):`")
    return k
