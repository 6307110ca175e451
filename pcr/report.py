"""The README's evidence table: one `dvc exp run` per row, metrics and per-sample data read back from each run.

Rows (`rows()`): W8 weights with A ∈ {8, 6, 4} × mode {shared, fp32, progressive}; W8A8 progressive relaxed
at 20% (x0, xT, auto) and 5% (x0, auto); W4A8 progressive with rtn and with AdaRound weights. Every row is a
DVC experiment, so `dvc exp show` lists them too. Every figure carries its 95% interval (score's, from
metrics.json). Under the table, the paired differences behind the paper's claims (`CLAIMS`), with their
intervals and significance, from each row's per-sample data (`pcr.metrics.intervals`, as `pcr compare`).

The protocol (`PROTOCOL`, applied to every row): 100 prompts × 10 seeds = 1,000 images per prompt set, the
number at which a 0.2 dB PSNR difference is detected (README, "Error bars and power"). `--only` runs a subset
of rows (fnmatch on labels) so that parts can run side by side; `pcr report --from-json A.json B.json` merges
their results into one table, and `--readme` writes it between the README's evidence markers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

from pcr.errors import StoreError

PROTOCOL = {"eval.num_prompts": 100, "eval.images_per_prompt": 10}
BLOCKS = ("evidence", "objectives", "paper")  # README blocks the report writes: <!-- NAME:start --> ... <!-- NAME:end -->
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
    ("drift.median_lsb", "x̂ range drift, LSB", "{:.2f}"),
    ("paraphrase.fid_fp32", "paraphrase FID to FP32 ↓", "{:.4f}"),
    ("paraphrase.psnr_fp32", "paraphrase PSNR ↑", "{:.2f}"),
    ("paraphrase.clip_score", "paraphrase CLIP ↑", "{:.2f}"),
)


PAPER = {"quant.weight_observer": "minmax", "quant.act_observer": "ema_minmax", "quant.ema_constant": 0.01}  # the official preset
PAPER_SETTINGS = ((8, 8), (8, 6), (8, 4), (4, 8))  # (weight bits, activation bits)
PAPER_STEPS = (25, 50)


CLAIMS = (  # (row A, row B): the difference A - B says whether A is better
    *((f"W8A{a} progressive", f"W8A{a} {b}") for a in (8, 6, 4) for b in ("fp32", "shared")),
    *(("W8A8 progressive + relax 20% " + w, "W8A8 progressive") for w in ("x0", "xT", "auto")),
    ("W8A8 progressive + relax 20% auto", "W8A8 progressive + relax 20% x0"),
    ("W8A8 progressive + relax 20% auto", "W8A8 progressive + relax 20% xT"),
    ("W8A8 progressive + relax 5% auto", "W8A8 progressive + relax 5% x0"),
    ("W4A8 progressive adaround", "W4A8 progressive"),
    ("W4A8 progressive", "W4A8 fp32"),
    *((f"W{w}A{a} progressive {o}", f"W{w}A{a} fp32 {o}") for w, a, o in
      ((8, 4, "affine"), (4, 8, "affine"), (8, 8, "affine"), (8, 6, "affine"), (8, 4, "bias"), (8, 4, "mse"),
       (8, 4, "affine mse"), (8, 6, "mse"), (8, 6, "affine mse"))),
    ("W8A4 progressive affine", "W8A4 fp32"), ("W8A4 progressive affine", "W8A4 progressive"),
    ("W4A8 progressive affine", "W4A8 fp32"), ("W4A8 progressive affine", "W4A8 progressive"),
    ("W8A8 progressive affine", "W8A8 fp32"), ("W8A6 progressive affine", "W8A6 fp32"),
    ("W8A4 progressive affine", "W8A4 fp32 mse"), ("W8A4 progressive affine", "W8A4 fp32 bias"),
    ("W8A4 progressive affine mse", "W8A4 fp32 mse"), ("W8A4 progressive affine mse", "W8A4 progressive mse"),
    ("W8A6 progressive affine mse", "W8A6 fp32 mse"), ("W8A6 progressive affine mse", "W8A6 progressive affine"),
    ("W8A8 progressive fp8", "W8A8 progressive"), ("W4A8 progressive fp8", "W4A8 progressive"),
    *((f"paper W{w}A{a} T{t} progressive", f"paper W{w}A{a} T{t} fp32") for t in PAPER_STEPS for w, a in PAPER_SETTINGS),
    # pcr's default below 8 bits (progressive, affine, auto = MSE ranges) against the paper preset's two calibrations
    *((f"W8A{a} progressive affine mse", f"paper W8A{a} T25 {mode}") for a in (4, 6) for mode in ("fp32", "progressive")),
)
CLAIM_FIGURES = ("fid_fp32", "kid_fp32", "psnr_fp32", "ssim_fp32", "clip_score", "all_acc")
SAMPLES = Path("outputs/samples")
ADAROUND_ITERATIONS = 2000  # the official code's (the default of quant.recon.iterations): set so no row inherits another's


ROW_BASE = {  # every setting any row changes, so no row inherits the last one's (`dvc exp run -S` leaves it in params.yaml)
    "model.steps": 25, "quant.format": "int", "quant.weight_bits": 8, "quant.act_bits": 8, "quant.weight_method": "rtn",
    "quant.weight_observer": "mse", "quant.act_observer": "minmax", "quant.ema_constant": 0.01,
    "calibrate.mode": "progressive", "calibrate.objective": "ranges", "relax.fraction": 0.0, "relax.where": "x0",
    "generate.kernels": "fake", "generate.openvino_precision": "f32", "quant.weight_symmetric": False,
    "quant.recon.iterations": ADAROUND_ITERATIONS,
}


def _row(label: str, overrides: dict[str, object]) -> tuple[str, dict[str, object]]:
    return label, {**ROW_BASE, **overrides}


def rows() -> list[tuple[str, dict[str, object]]]:
    out = []
    for a in (8, 6, 4):
        out += [_row(f"W8A{a} {mode}", {"quant.act_bits": a, "calibrate.mode": mode}) for mode in ("shared", "fp32", "progressive")]
    out.append(_row("W8A8 progressive (openvino kernels)", {"generate.kernels": "openvino"}))  # as a CPU user runs it
    bf16 = {"generate.kernels": "openvino", "generate.openvino_precision": "bf16"}  # the fast CPU route (issue 22)
    out += [_row("W8A8 progressive (openvino kernels, bf16)", bf16), _row("W8A8 progressive symmetric weights", {"quant.weight_symmetric": True}),
            _row("W8A8 progressive symmetric weights (openvino kernels, bf16)", {**bf16, "quant.weight_symmetric": True})]
    for fraction, wheres in ((0.2, ("x0", "xT", "auto")), (0.05, ("x0", "auto"))):
        out += [_row(f"W8A8 progressive + relax {round(fraction * 100)}% {w}", {"relax.fraction": fraction, "relax.where": w})
                for w in wheres]
    out += [_row("W4A8 progressive", {"quant.weight_bits": 4}), _row("W4A8 fp32", {"quant.weight_bits": 4, "calibrate.mode": "fp32"}),
            _row("W4A8 progressive adaround", {"quant.weight_bits": 4, "quant.weight_method": "adaround"})]
    out += [_row("W8A8 progressive fp8", {"quant.format": "fp8"}),
            _row("W4A8 progressive fp8", {"quant.weight_bits": 4, "quant.format": "fp8"})]  # E4M3 activations (W4: integer weights)
    return out + objective_rows() + paper_rows()


def objective_rows() -> list[tuple[str, dict[str, object]]]:
    """Issue 20's study: each objective (and MSE range search) in both modes, every row differing from its pair in
    calibrate.mode only, so a difference is progressive calibration's and not the objective's. `quant.act_observer:
    auto` (the default) is the `mse` rows below 8 activation bits and the min/max rows at 8."""
    out = []
    for w, a in ((8, 4), (4, 8), (8, 8), (8, 6)):
        variants = [("affine", {"calibrate.objective": "affine"})]
        if a < 8:
            variants += [("mse", {"quant.act_observer": "mse"}),
                         ("affine mse", {"calibrate.objective": "affine", "quant.act_observer": "mse"})]
        if (w, a) == (8, 4):
            variants.append(("bias", {"calibrate.objective": "bias"}))
        for name, v in variants:
            out += [_row(f"W{w}A{a} {mode} {name}", {"quant.weight_bits": w, "quant.act_bits": a, **v, "calibrate.mode": mode})
                    for mode in ("progressive", "fp32")]
    return out


def paper_rows() -> list[tuple[str, dict[str, object]]]:
    """The official PCR preset (per-channel min/max weights, moving-average min/max activations, c = 0.01, ranges
    only), progressive against fp32, at 25 and 50 DDIM steps: the paper's claim in its own configuration."""
    return [_row(f"paper W{w}A{a} T{t} {mode}", {**PAPER, "model.steps": t, "quant.weight_bits": w, "quant.act_bits": a,
                                                 "calibrate.mode": mode})
            for t in PAPER_STEPS for w, a in PAPER_SETTINGS for mode in ("progressive", "fp32")]


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


LOWER_IS_BETTER = ("fid_fp32", "kid_fp32")


def claim_results(samples: dict[str, Path], replicates: int = 1000, seed: int = 0) -> list[tuple[str, str, dict]]:
    """(A, B, compare_dirs(A, B)) of every claim whose two rows are in `samples` (label -> samples directory)."""
    from pcr.metrics.intervals import compare_dirs

    return [(a, b, compare_dirs(samples[a], samples[b], replicates, seed)) for a, b in CLAIMS if a in samples and b in samples]


def verdict(diffs: dict) -> str:
    """'A better' / 'B better' when every significant figure of CLAIM_FIGURES favours one side, 'mixed' when
    they disagree, 'no significant difference' when none is significant."""
    sides = set()
    for key in (k for k in CLAIM_FIGURES if k in diffs and diffs[k]["significant"]):
        sides.add("A" if (diffs[key]["diff"] < 0) == (key in LOWER_IS_BETTER) else "B")
    return {frozenset(): "no significant difference", frozenset("A"): "A better", frozenset("B"): "B better"}.get(
        frozenset(sides), "mixed")


def claims_markdown(results: list[tuple[str, str, dict]], n: dict[str, int] | None = None) -> str:
    """Per claim and prompt set: the verdict, then every figure's paired difference with its interval; with `n`
    (label -> images per set, given when rows differ in it), a column of each pair's images per set."""
    extra = ("images per set",) if n else ()
    lines = ["| A | B | set | " + "".join(f"{h} | " for h in extra) + "verdict | "
             + " | ".join(f"{k} A − B [95% CI]" for k in CLAIM_FIGURES) + " |",
             "|" + " --- |" * (4 + len(extra) + len(CLAIM_FIGURES))]
    for a, b, per_set in results:
        for name, diffs in per_set.items():
            cells = []
            for key in CLAIM_FIGURES:
                d = diffs.get(key)
                if d is None:
                    cells.append("–")
                    continue
                lo, hi = d["ci95"]
                cells.append(f"{d['diff']:+.3g} [{lo:+.3g}, {hi:+.3g}]" + (" *" if d["significant"] else ""))
            size = f"{n[a]} | " if n else ""
            lines.append(f"| {a} | {b} | {name} | {size}{verdict(diffs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_results(paths: list[Path]) -> dict[str, dict]:
    """label -> {"metrics", "samples", "overrides"} of one or more results files `run` wrote (merged in order)."""
    merged: dict[str, dict] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        if "rows" not in data:
            raise StoreError(f"{path} is not a results file of `pcr report` (no 'rows')")
        for label, row in data["rows"].items():
            merged[label] = {**row, "samples": str((Path(path).parent / row["samples"]).resolve())}
    return merged


def document(results: dict[str, dict], replicates: int = 1000, seed: int = 0) -> str:
    """The table (rows in `rows()` order), then the claims' paired differences and verdicts (from the rows'
    samples directories; without them, the table alone)."""
    order = [label for label, _ in rows() if label in results] + [label for label in results if label not in dict(rows())]
    first = results[order[0]]["metrics"]
    table = markdown([("FP32", fp32_row(first)), *((label, results[label]["metrics"]) for label in order)])
    samples = {label: Path(results[label]["samples"]) for label in order}
    missing = [label for label, p in samples.items() if not (p / "standard" / "meta.json").is_file()]
    if missing:
        return table + f"\n\n(paired differences need the rows' samples directories; missing for {missing})"
    claims = claim_results(samples, replicates, seed)
    n = {label: json.loads((p / "standard" / "meta.json").read_text())["n"] for label, p in samples.items()}
    same = len(set(n.values())) == 1
    size = f"{n[order[0]]} images per set" if same else "images per set in their column"
    return (table + f"\n\nPaired differences A − B over the same prompts and seeds ({size}; 95% "
            "interval of a bootstrap over prompts; * significant):\n\n" + claims_markdown(claims, None if same else n))


def from_json(paths: list[Path]) -> str:
    """The evidence document of results files `run` wrote (no experiment is run)."""
    return document(load_results(paths))


def write_readme(readme: Path, text: str, block: str = "evidence") -> None:
    if block not in BLOCKS:
        raise StoreError(f"--block {block!r} is not allowed: choose one of {list(BLOCKS)}")
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    body = readme.read_text()
    if body.count(start) != 1 or body.count(end) != 1 or body.index(start) > body.index(end):
        raise StoreError(f"{readme} must hold the markers {start} and {end} once each, in that order")
    head, _, rest = body.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


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
        only: tuple[str, ...] = ("*",), extra: tuple[str, ...] = ()) -> str:
    """Run the rows matching `only` as `dvc exp run -S ...` (PROTOCOL and `extra` on top), keep each one's metrics
    and samples, write results.json (rows so far, after every row) and the markdown document; return it."""
    todo = [(label, o) for label, o in rows() if any(fnmatch(label, p) for p in only)]
    if not todo:
        raise StoreError(f"--only {list(only)} matches no row: rows are {[label for label, _ in rows()]}")
    keep = out.parent / "report_samples"
    results: dict[str, dict] = {}
    bad = [e for e in extra if "=" not in e]
    if bad:
        raise StoreError(f"--set {bad[0]!r} is not KEY=VALUE")
    for label, overrides in todo:
        settings = {**PROTOCOL, **overrides, **dict(e.split("=", 1) for e in extra)}
        args = [arg for k, v in settings.items() for arg in ("-S", f"{k}={v}")]
        print(f"== {label}: dvc exp run {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "dvc", "exp", "run", *args], check=True)
        kept = keep / label.replace(" ", "_").replace("%", "pc").replace("+", "and")
        if kept.exists():
            shutil.rmtree(kept)
        shutil.copytree(SAMPLES, kept)
        results[label] = {"metrics": json.loads(metrics_path.read_text()), "samples": str(kept.relative_to(out.parent)),
                          "overrides": settings}
        out.with_suffix(".json").write_text(json.dumps({"rows": results}, indent=1))
    text = from_json([out.with_suffix(".json")])
    out.write_text(text + "\n")
    return text
