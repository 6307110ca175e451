"""Procedural captioned images for the demo model: one coloured shape on a coloured background.

Deterministic by seed. 32x32 RGB uint8. Captions come from one standard template (training,
calibration, evaluation) and a few paraphrase templates (a prompt-generalisation evaluation that
calibration never sees). `parse_caption` inverts every template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges
BASE_RADIUS = 10.0  # half the shape's extent, pixels at 32x32
RADIUS_JITTER = 1.0  # +- pixels
CENTER_JITTER = 2.0  # +- pixels

# Bright, saturated shape colours, far apart in RGB.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (40, 190, 50),
    "blue": (40, 70, 235),
    "yellow": (240, 220, 40),
    "cyan": (40, 215, 225),
    "magenta": (220, 45, 210),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
# Dark or muted backgrounds, each clearly apart from every shape colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "brown": (110, 70, 35),
    "navy": (20, 25, 90),
    "maroon": (100, 20, 35),
    "teal": (20, 95, 95),
    "plum": (80, 45, 95),
}

STANDARD_TEMPLATE = "a {color} {shape} on a {background} background"
PARAPHRASE_TEMPLATES: tuple[str, ...] = (
    "a {shape}, {color}, over a {background} backdrop",
    "{color} {shape}; background {background}",
    "a {background} background with a {color} {shape}",
    "{color} {shape} against {background}",
    "picture of a {color} {shape} on {background}",
)
TEMPLATES: tuple[str, ...] = (STANDARD_TEMPLATE, *PARAPHRASE_TEMPLATES)


@dataclass(frozen=True)
class Labels:
    """What a caption says about its image."""

    color: str
    shape: str
    background: str

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("color", self.color, tuple(COLORS)),
            ("shape", self.shape, SHAPES),
            ("background", self.background, tuple(BACKGROUNDS)),
        ):
            if value not in allowed:
                raise ValueError(f"Labels.{field}={value!r} is not one of {allowed}")


def all_labels() -> list[Labels]:
    """Every combination, in a fixed order (colour, shape, background)."""
    return [Labels(c, s, b) for c in COLORS for s in SHAPES for b in BACKGROUNDS]


def sample_labels(rng: np.random.Generator) -> Labels:
    """One uniformly drawn combination."""
    return Labels(
        color=str(rng.choice(list(COLORS))),
        shape=str(rng.choice(list(SHAPES))),
        background=str(rng.choice(list(BACKGROUNDS))),
    )


def caption(labels: Labels, template: str = STANDARD_TEMPLATE) -> str:
    """The caption of `labels` in `template` (one of TEMPLATES)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown caption template {template!r}; expected one of {TEMPLATES}")
    return template.format(color=labels.color, shape=labels.shape, background=labels.background)


def _template_regex(template: str) -> re.Pattern[str]:
    groups = {
        "color": "|".join(COLORS),
        "shape": "|".join(SHAPES),
        "background": "|".join(BACKGROUNDS),
    }
    pattern = re.escape(template)
    for name, alternatives in groups.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{alternatives})")
    pattern = pattern.replace(r"\ ", r"\s+")
    return re.compile(pattern)


_REGEXES = [_template_regex(t) for t in TEMPLATES]


def parse_caption(text: str) -> Labels:
    """Labels of a caption written by any template; ValueError naming the caption otherwise."""
    normalised = " ".join(text.lower().split())
    for regex in _REGEXES:
        match = regex.fullmatch(normalised)
        if match:
            return Labels(**match.groupdict())
    raise ValueError(
        f"cannot parse caption {text!r}: expected one of the templates {TEMPLATES} "
        f"with color in {tuple(COLORS)}, shape in {SHAPES}, background in {tuple(BACKGROUNDS)}"
    )


def vocabulary() -> list[str]:
    """Every word any template can produce (punctuation is left to the tokenizer's byte alphabet)."""
    words = set(COLORS) | set(SHAPES) | set(BACKGROUNDS)
    for template in TEMPLATES:
        words |= set(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", template)))
    return sorted(words)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of a polygonal shape centred at (cx, cy) with half-extent r (None for the circle)."""
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "cross":
        w = r * 0.38
        return [
            (cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
            (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
            (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.1, r * 0.45)
        return [(cx + rr * np.cos(a), cy + rr * np.sin(a)) for a, rr in zip(angles, radii, strict=True)]
    return None


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1], [32, 32] float32."""
    big = IMAGE_SIZE * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    k = SUPERSAMPLE
    poly = _shape_polygon(shape, cx * k, cy * k, r * k)
    if poly is None:
        draw.ellipse([cx * k - r * k, cy * k - r * k, cx * k + r * k, cy * k + r * k], fill=255)
    else:
        draw.polygon(poly, fill=255)
    small = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(labels: Labels, seed: int) -> np.ndarray:
    """[32, 32, 3] uint8 image of `labels`; position and size jitter drawn from `seed`."""
    rng = np.random.default_rng(seed)
    cx, cy = IMAGE_SIZE / 2 + rng.uniform(-CENTER_JITTER, CENTER_JITTER, size=2)
    r = BASE_RADIUS + rng.uniform(-RADIUS_JITTER, RADIUS_JITTER)
    mask = shape_mask(labels.shape, cx, cy, r)[..., None]  # [32, 32, 1]
    fg = np.asarray(COLORS[labels.color], dtype=np.float32)
    bg = np.asarray(BACKGROUNDS[labels.background], dtype=np.float32)
    image = bg * (1.0 - mask) + fg * mask  # [32, 32, 3]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_caption(text: str, seed: int) -> np.ndarray:
    """render(parse_caption(text), seed)."""
    return render(parse_caption(text), seed)


PROMPT_SEED = 20231111
N_CALIBRATION, N_EVAL, N_PARAPHRASE = 64, 200, 100


def prompt_sets() -> dict[str, list[str]]:
    """Calibration and evaluation captions: disjoint combinations, standard template; plus paraphrases."""
    rng = np.random.default_rng(PROMPT_SEED)
    combos = all_labels()
    order = rng.permutation(len(combos))
    if N_CALIBRATION + N_EVAL > len(combos):
        raise ValueError(f"need {N_CALIBRATION + N_EVAL} distinct combinations, have {len(combos)}")
    calib = [caption(combos[i]) for i in order[:N_CALIBRATION]]
    evals = [caption(combos[i]) for i in order[N_CALIBRATION : N_CALIBRATION + N_EVAL]]
    para_idx = rng.choice(len(combos), size=N_PARAPHRASE, replace=False)
    para = [
        caption(combos[i], PARAPHRASE_TEMPLATES[j % len(PARAPHRASE_TEMPLATES)])
        for j, i in enumerate(para_idx)
    ]
    return {"calibration": calib, "eval": evals, "eval_paraphrase": para}


def write_prompt_files(out_dir: str | Path = "data/prompts") -> dict[str, Path]:
    """Write calibration.txt, eval.txt and eval_paraphrase.txt (one caption per line)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, lines in prompt_sets().items():
        paths[name] = out / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths
