"""QDiffBench figures with 95% intervals, and paired differences between two experiments.

score, `pcr compare` and the report all go through here, so their intervals are one computation.

metrics.json carries, next to each figure X, `X_ci95: [lo, hi]` and the scalars `X_ci95_lo`, `X_ci95_hi`
(`dvc exp show` and `dvc metrics show` leave lists out of their tables).

Two experiments pair up when their samples come from the same prompts and seeds (the same eval set):
then both are resampled with the same indices, and the interval of A - B is paired; the FP32 and real
images are the same in both, so their variation between prompts cancels. A difference is significant
when its interval excludes 0. With several images per prompt (eval.images_per_prompt), replicates draw
prompts, each with all its images (a cluster bootstrap): images of one prompt are not independent.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pcr.metrics.bootstrap import LEVEL, difference, full, intervals
from pcr.metrics.qdiffbench import figures, statistics
from pcr.metrics.samples import Samples, groups_of, load

CI = "ci95"
PAIRING_KEYS = ("n", "seed", "prompts_sha256", "feature_network", "paired_real")


def _real_count(s: Samples) -> int | None:
    return None if s.meta.get("paired_real") or "features" not in s.real else len(s.real["features"])


def add_interval(figs: dict, key: str, lo: float, hi: float) -> None:
    figs[f"{key}_{CI}"] = [lo, hi]
    figs[f"{key}_{CI}_lo"], figs[f"{key}_{CI}_hi"] = lo, hi


def scored(s: Samples, replicates: int, seed: int, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(figures of the quantized images, the FP32 row), each figure with its interval when replicates > 0."""
    figs, row = figures(s)
    if replicates:
        stats, row_stats = statistics(s, device)
        for target, st in ((figs, stats), (row, row_stats)):
            for key, (_, lo, hi) in intervals(st, s.n, replicates, seed, _real_count(s), LEVEL, groups_of(s)).items():
                add_interval(target, key, lo, hi)
    return figs, row


def check_pairing(a: Samples, b: Samples, names: tuple[str, str] = ("A", "B")) -> None:
    for key in PAIRING_KEYS:
        if a.meta.get(key) != b.meta.get(key):
            raise ValueError(f"{names[0]} and {names[1]} do not pair up: {key} is {a.meta.get(key)!r} vs "
                             f"{b.meta.get(key)!r} (compare experiments of one eval set and feature network)")


def differences(a: Samples, b: Samples, replicates: int, seed: int,
                device: str | torch.device = "cpu") -> dict[str, dict]:
    """Per figure of both: a, b, diff = a - b, its paired interval, and whether it excludes 0.

    a and b are the statistics on all samples: the figures of metrics.json, except KID, whose whole-set
    U-statistic here replaces the mean over random subsets there (the same expectation).
    """
    check_pairing(a, b)
    sa, sb = statistics(a, device)[0], statistics(b, device)[0]
    one = full(a.n, _real_count(a))
    diffs = {k: difference(sa[k], sb[k]) for k in sa if k in sb}
    out = {}
    for key, (est, lo, hi) in intervals(diffs, a.n, replicates, seed, _real_count(a), LEVEL, groups_of(a)).items():
        out[key] = {"a": float(sa[key](one)[0]), "b": float(sb[key](one)[0]), "diff": est, CI: [lo, hi],
                    "significant": bool(lo > 0 or hi < 0)}
    return out


def compare_dirs(a: str | Path, b: str | Path, replicates: int, seed: int,
                 device: str | torch.device = "cpu") -> dict[str, dict]:
    """Paired differences per prompt set of two samples directories (score's `outputs/samples`)."""
    a, b = Path(a), Path(b)
    sets = sorted(p.name for p in a.iterdir() if (p / "meta.json").is_file()) if a.is_dir() else []
    if not sets:
        raise FileNotFoundError(f"{a} holds no prompt set's samples (score writes <set>/meta.json under it)")
    missing = [s for s in sets if not (b / s / "meta.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{b} has no samples of set(s) {missing} that {a} has")
    return {s: differences(load(a / s), load(b / s), replicates, seed, device) for s in sets}


def markdown(result: dict[str, dict], labels: tuple[str, str] = ("A", "B")) -> str:
    """A table per prompt set: figure, A, B, A - B with its 95% interval, significant or not."""
    lines = []
    for name, diffs in result.items():
        lines += [f"### {name}", "", f"| figure | {labels[0]} | {labels[1]} | {labels[0]} − {labels[1]} | 95% CI | significant |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for key, d in diffs.items():
            lo, hi = d[CI]
            lines.append(f"| {key} | {d['a']:.5g} | {d['b']:.5g} | {d['diff']:+.4g} | [{lo:+.4g}, {hi:+.4g}] | "
                         f"{'yes' if d['significant'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)
