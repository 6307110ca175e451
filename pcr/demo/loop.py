"""A small resumable training loop: AdamW, linear warm-up then cosine decay, optional EMA, tqdm.

The step function receives the step index and must derive its batch from it alone, so that a run
killed and restarted from its last checkpoint continues exactly as if it had not stopped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class LoopConfig:
    steps: int
    lr: float
    warmup: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.0  # 0: no EMA copy
    grad_clip: float = 1.0
    ckpt_every: int = 200

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"LoopConfig.steps={self.steps} must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"LoopConfig.lr={self.lr} must be > 0")
        if not 0 <= self.warmup:
            raise ValueError(f"LoopConfig.warmup={self.warmup} must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"LoopConfig.ema_decay={self.ema_decay} must be in [0, 1)")
        if self.ckpt_every < 1:
            raise ValueError(f"LoopConfig.ckpt_every={self.ckpt_every} must be >= 1")


def lr_factor(step: int, cfg: LoopConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train(
    name: str,
    model: torch.nn.Module,
    step_fn: Callable[[int], torch.Tensor],
    cfg: LoopConfig,
    ckpt_path: Path | None,
) -> torch.nn.Module:
    """Train `model` for cfg.steps; return the EMA copy if cfg.ema_decay else the model itself."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay else None
    start = 0
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start = int(state["step"])
    model.train()
    bar = tqdm(range(start, cfg.steps), desc=name, initial=start, total=cfg.steps, mininterval=2.0)
    running = None
    for step in bar:
        loss = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm.detach(), 1.0 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.1e}", refresh=False)
        done = step + 1
        if ckpt_path is not None and (done % cfg.ckpt_every == 0 or done == cfg.steps):
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "step": done,
            }
            if ema is not None:
                state["ema"] = ema.state_dict()
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(ckpt_path)
    model.eval()
    return ema if ema is not None else model
