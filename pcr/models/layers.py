"""The layers quantization can apply to, named on the float model (no quantization code is read here).

collect records per-step input statistics of exactly these layers; `pcr.quant.quantize` chooses
among them with fnmatch patterns. Exact types: subclasses (LoRA wrappers, quantized twins) are not
candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from pcr.errors import ConfigError

QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def candidate_layers(model: nn.Module) -> list[str]:
    """Qualified names of every nn.Conv2d and nn.Linear of `model`, in module order."""
    return [name for name, m in model.named_modules() if type(m) in QUANTIZABLE]


def match_layers(names: Sequence[str], patterns: Sequence[str], key: str, what: str = "Conv2d/Linear layer") -> list[str]:
    """The names matching some fnmatch pattern, in order; a pattern that matches none is refused by name."""
    for p in patterns:
        if not any(fnmatchcase(n, p) for n in names):
            raise ConfigError(f"{key} pattern {p!r} matches no {what}; layer names look like {list(names[:3])} ... {list(names[-2:])}")
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]
