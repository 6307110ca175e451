"""Per-sample QDiffBench data of one prompt set: what every figure and its interval are computed from.

score streams each image set through the models once, in batches, and saves what comes out; the
figures, their intervals, `pcr compare` and the report read it back and never run a network.

A samples directory (score writes one per prompt set, `outputs/samples/<set>/`) holds one .npy per
array, so that DVC stores the `fp32/` and `real/` files, identical across experiments of one eval set, once:

    meta.json               n, seed (sample i: prompt i, seed + i), prompts_sha256, prompt_groups (sample
                            i's prompt, numbered by first appearance: the bootstrap's clusters),
                            feature_network, paired_real, kid_subset_size
    quant/features.npy      [N, D] float32  feature-network embeddings of the quantized images
    quant/psnr_fp32.npy     [N] float64     PSNR (dB, capped at 100) to the FP32 image of the same sample
    quant/ssim_fp32.npy     [N] float64
    quant/clip_score.npy    [N] float64     raw 100 cos(image, prompt) (with a CLIP model)
    quant/<a>_acc.npy       [N] bool        the demo judge read attribute a right (color, shape, background, all)
    fp32/...                the same of the FP32 images (features, clip_score, <a>_acc)
    real/features.npy       [M, D] float32  real images; M = N and paired when rendered from the prompts
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pcr.metrics.clip_model import load_clip_processor
from pcr.metrics.clip_score import ClipScorer
from pcr.metrics.features import build_feature
from pcr.metrics.image import psnr_per_image, ssim_per_image, to_nchw_u8

META = "meta.json"
SIDES = ("quant", "fp32", "real")
Judge = Callable[[np.ndarray, Sequence[str]], dict[str, np.ndarray]]  # images, prompts -> {key: [B] bool}


def feature_network_name(feature: str, feature_path: Path | None) -> str:
    """'<registry name>:<file or directory name>' (or the bare name without a path)."""
    return f"{feature}:{Path(feature_path).name}" if feature_path is not None else feature


def prompts_digest(prompts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(prompts).encode()).hexdigest()


def prompt_groups(prompts: Sequence[str]) -> list[int]:
    """Sample i's prompt as a number 0..G-1 in order of first appearance (eval.images_per_prompt repeats them)."""
    first: dict[str, int] = {}
    return [first.setdefault(p, len(first)) for p in prompts]


def groups_of(samples: Samples) -> np.ndarray | None:
    """The bootstrap's clusters: the prompts, when some prompt has several images; else None (per sample)."""
    g = samples.meta.get("prompt_groups")
    return np.asarray(g) if g is not None and max(g) + 1 < len(g) else None


@dataclass
class Models:
    """The feature network and the CLIP scorer, each loaded once for every image set of a run."""

    feature: nn.Module
    clip: ClipScorer | None
    feature_network: str

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        # uint8 [B, H, W, 3] -> [B, D] float32 (the networks' own precision)
        device = next(self.feature.parameters(), torch.empty(0)).device
        return self.feature(to_nchw_u8(images).to(device)).float().cpu().numpy()


def load_models(feature: str, feature_path: str | Path | None, clip_path: str | Path | None,
                device: str | torch.device = "cpu") -> Models:
    """Feature network and CLIP scorer on `device`; FID features from the CLIP score's own directory share
    its model (one load)."""
    fpath = Path(feature_path) if feature_path is not None else None
    cpath = Path(clip_path) if clip_path is not None else None
    extractor = build_feature(feature, fpath, device)
    if cpath is None:
        clip = None
    elif feature == "clip" and fpath is not None and fpath.resolve() == cpath.resolve():
        clip = ClipScorer(extractor.clip, load_clip_processor(cpath, extractor.clip))
    else:
        clip = ClipScorer.from_dir(cpath, device)
    return Models(extractor, clip, feature_network_name(feature, fpath))


@dataclass
class Samples:
    """Per-sample values of one prompt set: `quant`, `fp32` and `real` arrays by name, and `meta`."""

    meta: dict
    quant: dict[str, np.ndarray] = field(default_factory=dict)
    fp32: dict[str, np.ndarray] = field(default_factory=dict)
    real: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.quant["features"])


def _check_batch(name: str, images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} images must be a uint8 numpy array [N, H, W, 3], got "
                         f"{type(images).__name__} {getattr(images, 'shape', None)}")


def extract(models: Models, pairs: Iterable[tuple[np.ndarray, np.ndarray, Sequence[str]]],
            real: Iterable[np.ndarray] | None = None, judge: Judge | None = None, **meta) -> Samples:
    """Stream (quantized, FP32, prompts) batches, paired by sample, and real batches through the models.

    Each image goes through each network once; the prompts' text embeddings serve both sides of a pair.
    """
    acc: dict[str, list[np.ndarray]] = defaultdict(list)
    for quant, fp32, prompts in pairs:
        _check_batch("quantized", quant)
        _check_batch("FP32", fp32)
        if quant.shape != fp32.shape:
            raise ValueError(f"quantized and FP32 images must pair up, got shapes {quant.shape} and {fp32.shape}")
        if len(prompts) != len(quant):
            raise ValueError(f"{len(quant)} images but {len(prompts)} prompts")
        acc["quant/features"].append(models.features(quant))
        acc["fp32/features"].append(models.features(fp32))
        acc["quant/psnr_fp32"].append(psnr_per_image(quant, fp32))
        acc["quant/ssim_fp32"].append(ssim_per_image(quant, fp32))
        if models.clip is not None:
            text = models.clip.text_features(prompts)
            acc["quant/clip_score"].append(models.clip.image_scores(quant, text))
            acc["fp32/clip_score"].append(models.clip.image_scores(fp32, text))
        if judge is not None:
            for side, images in (("quant", quant), ("fp32", fp32)):
                for key, hit in judge(images, prompts).items():
                    acc[f"{side}/{key}"].append(hit)
    if not acc:
        raise ValueError("no images to score")
    for batch in real if real is not None else ():
        _check_batch("real", batch)
        acc["real/features"].append(models.features(batch))
    out = Samples(meta={"feature_network": models.feature_network, **meta})
    for key, parts in acc.items():
        side, name = key.split("/")
        getattr(out, side)[name] = np.concatenate(parts)
    out.meta["n"] = out.n
    return out


def save(samples: Samples, path: str | Path) -> None:
    """One .npy per array under `path/<side>/`, and meta.json (see the module docstring)."""
    root = Path(path)
    for side in SIDES:
        for name, arr in getattr(samples, side).items():
            (root / side).mkdir(parents=True, exist_ok=True)
            np.save(root / side / f"{name}.npy", arr, allow_pickle=False)
    (root / META).write_text(json.dumps(samples.meta, indent=1, sort_keys=True) + "\n")


def load(path: str | Path) -> Samples:
    root = Path(path)
    if not (root / META).is_file():
        raise FileNotFoundError(f"{root} is not a samples directory (no {META}); score writes one per prompt set")
    out = Samples(meta=json.loads((root / META).read_text()))
    for side in SIDES:
        for f in sorted((root / side).glob("*.npy")):
            getattr(out, side)[f.stem] = np.load(f, allow_pickle=False)
    return out
