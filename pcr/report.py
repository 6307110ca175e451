"""The README's results table: one `dvc exp run` per row, metrics read back from each run.

Rows: FP32, then for W8A8 and W4A8: shared, fp32, progressive, progressive + relax 20% near x0,
progressive + relax 20% near x_T. Every row is a DVC experiment, so `dvc exp show` lists them too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def markdown(table: list[tuple[str, dict]]) -> str:
    head = "| config | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 1)]
    for label, m in table:
        cells = []
        for key, _, fmt in COLUMNS:
            v = _get(m, key)
            cells.append("–" if v is None else fmt.format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def from_json(path: Path) -> str:
    """The markdown table of a results.json that `run` wrote (no experiment is run)."""
    results = json.loads(Path(path).read_text())
    first = next(iter(results.values()))
    return markdown([("FP32", fp32_row(first)), *results.items()])


def run(metrics_path: Path = Path("outputs/metrics.json"), out: Path = Path("outputs/results.md"),
        weight_bits: tuple[int, ...] = (8, 4), extra: tuple[str, ...] = ()) -> str:
    """Run every row as `dvc exp run -S ...`, collect its metrics, write and return the markdown table."""
    table: list[tuple[str, dict]] = []
    results = {}
    for label, overrides in rows(weight_bits):
        args = [arg for k, v in overrides.items() for arg in ("-S", f"{k}={v}")] + [arg for e in extra for arg in ("-S", e)]
        print(f"== {label}: dvc exp run {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *args], check=True)
        metrics = json.loads(metrics_path.read_text())
        if not table:
            table.append(("FP32", fp32_row(metrics)))
        table.append((label, metrics))
        results[label] = metrics
    text = markdown(table)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return text
