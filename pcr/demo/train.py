"""Train every part of the demo model and export it: `pcr demo train`.

Stages, each resumable from its checkpoint in the work dir (a rerun after a kill resumes, a
finished stage is reloaded, not retrained):
  pool   render the training images                      -> work/pool.npz
  judge  CNN attribute classifier                        -> data/demo/judge/
  vae    AutoencoderKL 32x32x3 <-> 4x8x8                  -> work/vae.ckpt
  clip   CLIPModel, contrastive on captions and images   -> data/demo/clip/
  unet   UNet2DConditionModel on the frozen CLIP text    -> data/demo/pipeline/

Measured on the shared 2-core CPU, 1 torch thread, colleagues' jobs running beside it:
judge 5.5 min, vae 8.3 min, clip 11 min, unet 11-26 min (2.3-1.2 steps/s): about 40-50 min in all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from pcr.demo.data import Pool, load_or_build_pool
from pcr.demo.loop import LoopConfig

STAGES = ("judge", "vae", "clip", "unet")
DEFAULT_WORK_DIR = Path.home() / ".cache" / "pcr" / "demo-train"
DEFAULT_OUT_DIR = Path("data/demo")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    pool_per_combo: int = 80  # 288 combinations x 80 jittered renders
    judge_loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=800, lr=2e-3, warmup=50))
    vae_loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=1200, lr=1e-3, warmup=50))
    clip_loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=1000, lr=1e-3, warmup=100, weight_decay=0.01)
    )
    unet_loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(steps=2500, lr=6e-4, warmup=200, ema_decay=0.999, ckpt_every=250)
    )

    def __post_init__(self) -> None:
        if self.pool_per_combo < 1:
            raise ValueError(f"TrainConfig.pool_per_combo={self.pool_per_combo} must be >= 1")


def _pool(cfg: TrainConfig, work: Path) -> Pool:
    return load_or_build_pool(work / "pool.npz", cfg.pool_per_combo, cfg.seed)


def stage_judge(cfg: TrainConfig, work: Path, out: Path) -> None:
    from pcr.demo.judge import JudgeConfig, save_judge, train_judge

    jcfg = JudgeConfig()
    model = train_judge(_pool(cfg, work), jcfg, cfg.judge_loop, work / "judge.ckpt", cfg.seed)
    save_judge(model, jcfg, out / "judge")


def stage_vae(cfg: TrainConfig, work: Path, out: Path) -> None:
    from pcr.demo.vae import VAEConfig, train_vae

    train_vae(_pool(cfg, work), VAEConfig(), cfg.vae_loop, work / "vae.ckpt", cfg.seed)


def stage_clip(cfg: TrainConfig, work: Path, out: Path) -> None:
    from pcr.demo.clip import CLIPDemoConfig, save_clip, train_clip

    ccfg = CLIPDemoConfig()
    model = train_clip(_pool(cfg, work), ccfg, cfg.clip_loop, work / "clip.ckpt", cfg.seed)
    save_clip(model, ccfg, out / "clip")


def stage_unet(cfg: TrainConfig, work: Path, out: Path) -> None:
    from pcr.demo.unet import UNetConfig, train_and_export_unet

    train_and_export_unet(_pool(cfg, work), UNetConfig(), cfg.unet_loop, work, out, cfg.seed)


def run(stages: tuple[str, ...] = STAGES, work_dir: Path = DEFAULT_WORK_DIR, out_dir: Path = DEFAULT_OUT_DIR,
        threads: int = 1, cfg: TrainConfig | None = None) -> None:  # fmt: skip
    """Run the named stages in order (the unet stage needs vae and clip done before it)."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; expected some of {STAGES}")
    cfg = cfg or TrainConfig()
    torch.set_num_threads(threads)
    work_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    fns = {"judge": stage_judge, "vae": stage_vae, "clip": stage_clip, "unet": stage_unet}
    for name in STAGES:
        if name in stages:
            fns[name](cfg, work_dir, out_dir)
