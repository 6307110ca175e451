"""The text-image judge: a small CNN that reads colour, shape and background off an image.

Independent of every part of the generator (not the text encoder, not CLIP): trained on rendered
images with noise/blur/colour augmentation, so that slightly imperfect generations still read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from pcr.demo.data import ATTRIBUTES, VALUES, Pool, labels_to_index, to_model_range
from pcr.demo.loop import LoopConfig, train
from pcr.demo.render import parse_caption
from pcr.errors import StoreError

WEIGHTS, CONFIG = "judge.safetensors", "judge.json"
DEFAULT_JUDGE_DIR = Path("data/demo/judge")
NOISE_STD = 0.08  # max Gaussian noise std, in [-1, 1] units
COLOR_SHIFT = 0.06  # max per-channel offset, in [-1, 1] units
BLUR_PROB = 0.3


@dataclass(frozen=True)
class JudgeConfig:
    width: int = 24
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.width < 4 or self.batch_size < 1:
            raise ValueError(
                f"JudgeConfig width={self.width} must be >= 4, batch_size={self.batch_size} >= 1"
            )


class Judge(nn.Module):
    """[N, 3, 32, 32] in [-1, 1] -> logits per attribute."""

    def __init__(self, cfg: JudgeConfig) -> None:
        super().__init__()
        w = cfg.width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(),  # [N, w, 32, 32]
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),  # [N, 2w, 16, 16]
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),  # [N, 4w, 8, 8]
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.GELU(),
        )  # fmt: skip
        # Mean and max pooling: max keeps the shape's colour even when the background dominates.
        self.heads = nn.ModuleDict({a: nn.Linear(8 * w, len(VALUES[a])) for a in ATTRIBUTES})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # [N, 8w]
        return {a: head(pooled) for a, head in self.heads.items()}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Noise, colour offset and occasional blur, as generated images may show."""
    n = x.shape[0]
    noise = torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * NOISE_STD
    shift = (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1) * COLOR_SHIFT
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel2d = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel2d, groups=3)
    use_blur = (torch.rand(n, 1, 1, 1, generator=gen) < BLUR_PROB).float()
    x = use_blur * blurred + (1 - use_blur) * x
    return (x + noise + shift).clamp(-1, 1)


def train_judge(pool: Pool, cfg: JudgeConfig, loop: LoopConfig, ckpt: Path | None, seed: int = 0) -> Judge:
    torch.manual_seed(seed)
    model = Judge(cfg)
    labels = torch.from_numpy(pool.labels)

    def step(i: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        idx = torch.randint(len(pool), (cfg.batch_size,), generator=gen)
        x = augment(to_model_range(pool.images[idx.numpy()]), gen)
        logits = model(x)
        return sum(F.cross_entropy(logits[a], labels[idx, k]) for k, a in enumerate(ATTRIBUTES))

    return train("judge", model, step, loop, ckpt)


def save_judge(model: Judge, cfg: JudgeConfig, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / WEIGHTS)
    (out / CONFIG).write_text(json.dumps({"config": asdict(cfg), "values": VALUES}, indent=2))


def load_judge(out_dir: str | Path) -> Judge:
    """The judge saved under `out_dir` (judge.safetensors + judge.json), in eval mode."""
    out = Path(out_dir)
    meta = json.loads((out / CONFIG).read_text())
    if {k: tuple(v) for k, v in meta["values"].items()} != VALUES:
        raise StoreError(f"judge at {out} was trained on other attribute values: {meta['values']}")
    model = Judge(JudgeConfig(**meta["config"]))
    model.load_state_dict(load_file(out / WEIGHTS))
    return model.eval()


@torch.no_grad()
def predict(judge: Judge, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 [N, 32, 32, 3] -> [N, 3] predicted indices per ATTRIBUTES."""
    out = []
    for s in range(0, len(images), batch_size):
        logits = judge(to_model_range(images[s : s + batch_size]))
        out.append(torch.stack([logits[a].argmax(1) for a in ATTRIBUTES], dim=1))
    return torch.cat(out).numpy() if out else np.zeros((0, len(ATTRIBUTES)), dtype=np.int64)


def attribute_hits(
    images: np.ndarray, captions: list[str], judge: Judge | str | Path = DEFAULT_JUDGE_DIR
) -> dict[str, np.ndarray]:
    """Per image [N] bool: colour / shape / background read as the caption says, and all three at once."""
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, 32, 32, 3], got {images.dtype} {images.shape}")
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not isinstance(judge, Judge):
        judge = load_judge(judge)
    want = np.stack([labels_to_index(parse_caption(c)) for c in captions])  # [N, 3]
    hit = predict(judge, images) == want
    result = {f"{a}_acc": hit[:, k] for k, a in enumerate(ATTRIBUTES)}
    result["all_acc"] = hit.all(axis=1)
    return result


def attribute_accuracy(
    images: np.ndarray, captions: list[str], judge: Judge | str | Path = DEFAULT_JUDGE_DIR
) -> dict[str, float]:
    """Fraction of images whose colour / shape / background match their caption, and all three at once."""
    return {k: float(v.mean()) for k, v in attribute_hits(images, captions, judge).items()}
