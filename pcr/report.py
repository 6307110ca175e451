"""The README's results table: one `dvc exp run` per row, metrics read back from each run.

Rows: FP32, then for W8A8 and W4A8: shared, fp32, progressive, progressive + relax 20% near x0,
progressive + relax 20% near x_T. Every row is a DVC experiment, so `dvc exp show` lists them too.
Every figure carries its 95% interval (score's, from metrics.json). Under the table, the paired
differences behind the paper's claims (progressive vs fp32 and shared, relaxed vs not), with their
intervals and significance, from each row's per-sample data (`pcr.metrics.intervals`, as `pcr compare`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pcr.errors import StoreError

RELAX = 0.2
COLUMNS = (  # (metrics key, header, format)
    ("average_bits", "avg A bits", "{:.2f}"),
    ("fid_fp32", "FID to FP32 ↓", "{:.4f}"),
    ("kid_fp32", "KID to FP32 ↓", "{:.5f}"),
    ("fid_real", "FID to real ↓", "{:.3f}"),
    ("clip_score", "CLIP ↑", "{:.2f}"),
    ("psnr_fp32", "PSNR to FP32 ↑", "{:.2f}"),
    ("ssim_fp32", "SSIM to FP32 ↑", "{:.4f}"),
    ("color_acc", "colour acc ↑", "{:.3f}"),
    ("shape_acc", "shape acc ↑", "{:.3f}"),
    ("final_step_error", "calib. x̂ error ↓", "{:.4f}"),
    ("paraphrase.fid_fp32", "paraphrase FID to FP32 ↓", "{:.4f}"),
    ("paraphrase.psnr_fp32", "paraphrase PSNR ↑", "{:.2f}"),
    ("paraphrase.clip_score", "paraphrase CLIP ↑", "{:.2f}"),
)


CLAIMS = (  # (row A, row B) suffixes of one weight group: the difference A - B says whether A is better
    ("progressive", "fp32"),
    ("progressive", "shared"),
    ("progressive + relax 20% x0", "progressive"),
    ("progressive + relax 20% xT", "progressive"),
)
CLAIM_FIGURES = ("fid_fp32", "kid_fp32", "psnr_fp32", "ssim_fp32", "clip_score", "all_acc")
SAMPLES = Path("outputs/samples")


def rows(weight_bits: tuple[int, ...] = (8, 4), act_bits: int = 8) -> list[tuple[str, dict[str, object]]]:
    out = []
    for w in weight_bits:
        base = {"quant.weight_bits": w, "quant.act_bits": act_bits, "relax.fraction": 0.0}
        tag = f"W{w}A{act_bits}"
        out += [
            (f"{tag} shared", {**base, "calibrate.mode": "shared"}),
            (f"{tag} fp32", {**base, "calibrate.mode": "fp32"}),
            (f"{tag} progressive", {**base, "calibrate.mode": "progressive"}),
            (f"{tag} progressive + relax 20% x0", {**base, "calibrate.mode": "progressive", "relax.fraction": RELAX, "relax.where": "x0"}),
            (f"{tag} progressive + relax 20% xT", {**base, "calibrate.mode": "progressive", "relax.fraction": RELAX, "relax.where": "xT"}),
        ]
    return out


def _get(metrics: dict, key: str):
    for part in key.split("."):
        if not isinstance(metrics, dict) or part not in metrics:
            return None
        metrics = metrics[part]
    return metrics


def fp32_row(metrics: dict) -> dict:
    """The FP32 images' own metrics (score's `fp32` block), in the table's keys."""
    row = {f"{k}": v for k, v in metrics.get("fp32", {}).items()}
    row["average_bits"] = 32.0
    row["psnr_fp32"], row["ssim_fp32"] = None, 1.0
    for sub in ("paraphrase",):
        if sub in metrics:
            row[sub] = metrics[sub].get("fp32", {})
    return row


def _cell(m: dict, key: str, fmt: str) -> str:
    v = _get(m, key)
    if v is None:
        return "–"
    ci = _get(m, f"{key}_ci95")
    return fmt.format(v) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


def markdown(table: list[tuple[str, dict]]) -> str:
    head = "| config | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for label, m in table:
        lines.append(f"| {label} | " + " | ".join(_cell(m, key, fmt) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def claims_markdown(samples: dict[str, Path], replicates: int = 1000, seed: int = 0) -> str:
    """Paired differences A − B of the CLAIMS between rows whose samples directories are given (by label)."""
    from pcr.metrics.intervals import compare_dirs

    lines = ["| A − B | set | figure | A | B | A − B [95% CI] | significant |", "|" + " --- |" * 7]
    for label_a, path_a in samples.items():
        tag, _, suffix = label_a.partition(" ")
        for a, b in CLAIMS:
            label_b = f"{tag} {b}"
            if suffix != a or label_b not in samples:
                continue
            for name, diffs in compare_dirs(path_a, samples[label_b], replicates, seed).items():
                for key in (k for k in CLAIM_FIGURES if k in diffs):
                    d = diffs[key]
                    lo, hi = d["ci95"]
                    lines.append(f"| {label_a} − {b} | {name} | {key} | {d['a']:.5g} | {d['b']:.5g} | "
                                 f"{d['diff']:+.4g} [{lo:+.4g}, {hi:+.4g}] | {'yes' if d['significant'] else 'no'} |")
    return "\n".join(lines)


def from_json(path: Path) -> str:
    """The markdown table of a results.json that `run` wrote (no experiment is run)."""
    results = json.loads(Path(path).read_text())
    first = next(iter(results.values()))
    return markdown([("FP32", fp32_row(first)), *results.items()])


@contextmanager
def samples_at(ref: str | Path, samples: Path = SAMPLES) -> Iterator[Path]:
    """A samples directory: `ref` itself when it is one, else `samples` of a DVC experiment name or Git rev."""
    if Path(ref).is_dir():
        yield Path(ref)
        return
    from dvc.api import DVCFileSystem

    with tempfile.TemporaryDirectory() as tmp:
        try:
            DVCFileSystem(".", rev=str(ref)).get(str(samples), f"{tmp}/samples", recursive=True)
        except Exception as e:  # dvc's errors for unknown revs and missing outputs vary between versions
            raise StoreError(f"{ref!r} is neither a samples directory nor a DVC experiment or rev holding "
                                    f"{samples}: {e}") from None
        yield Path(tmp) / "samples"


def run(metrics_path: Path = Path("outputs/metrics.json"), out: Path = Path("outputs/results.md"),
        weight_bits: tuple[int, ...] = (8, 4), extra: tuple[str, ...] = ()) -> str:
    """Run every row as `dvc exp run -S ...`, collect its metrics and samples, write and return the markdown
    table and the claims' paired differences."""
    table: list[tuple[str, dict]] = []
    results, kept = {}, {}
    keep = out.parent / "report_samples"
    for label, overrides in rows(weight_bits):
        args = [arg for k, v in overrides.items() for arg in ("-S", f"{k}={v}")] + [arg for e in extra for arg in ("-S", e)]
        print(f"== {label}: dvc exp run {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *args], check=True)
        metrics = json.loads(metrics_path.read_text())
        if not table:
            table.append(("FP32", fp32_row(metrics)))
        table.append((label, metrics))
        results[label] = metrics
        kept[label] = keep / label.replace(" ", "_").replace("%", "pc").replace("+", "and")
        if kept[label].exists():
            shutil.rmtree(kept[label])
        shutil.copytree(SAMPLES, kept[label])
    text = markdown(table) + "\n\nPaired differences (A − B over the same prompts and seeds):\n\n" + claims_markdown(kept)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return text
