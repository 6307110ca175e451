import pytest

from pcr.errors import StoreError
from pcr.report import CLAIMS, COLUMNS, fp32_row, load_results, markdown, rows


def test_rows_cover_the_issue_table():
    table = dict(rows())
    assert {f"W8A{a} {m}" for a in (8, 6, 4) for m in ("shared", "fp32", "progressive")} <= set(table)
    assert {f"W8A8 progressive + relax 20% {w}" for w in ("x0", "xT", "auto")} <= set(table)
    assert {"W4A8 progressive", "W4A8 progressive adaround"} <= set(table)
    assert table["W8A8 progressive + relax 20% xT"]["relax.where"] == "xT"
    fast = table["W8A8 progressive symmetric weights (openvino kernels, bf16)"]  # the CPU route as the fast user runs it
    assert (fast["generate.kernels"], fast["generate.openvino_precision"], fast["quant.weight_symmetric"]) == ("openvino", "bf16", True)
    keys = set().union(*table.values())
    assert all(set(o) == keys for o in table.values())  # every row sets what any row changes: rows don't inherit
    paper = table["paper W4A8 T50 fp32"]
    assert (paper["quant.weight_observer"], paper["quant.act_observer"], paper["model.steps"]) == ("minmax", "ema_minmax", 50)
    assert {k: v for k, v in table["W8A4 fp32 affine mse"].items() if k != "calibrate.mode"} == \
        {k: v for k, v in table["W8A4 progressive affine mse"].items() if k != "calibrate.mode"}  # pairs differ in the mode only
    assert all(a in table and b in table for a, b in CLAIMS)


def test_markdown_table_formats_nested_keys_and_missing_values():
    m = {"fid_fp32": 1.234, "average_bits": 8.4, "paraphrase": {"fid_fp32": 2.5}, "fp32": {"fid_real": 9.0, "clip_score": 30.0}}
    text = markdown([("FP32", fp32_row(m)), ("W8A8", m)])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].count("|") == len(COLUMNS) + 2
    assert "| W8A8 | 8.40 | 1.2340 |" in text and "2.5000" in text
    assert lines[2].startswith("| FP32 | 32.00 | – |")


def _samples(root, psnr_shift: float, n: int = 60):
    """A samples directory whose PSNR is the base one shifted (everything else alike): a known difference."""
    import numpy as np

    from pcr.metrics.samples import Samples, save

    rng = np.random.default_rng(0)
    meta = {"n": n, "seed": 1, "prompts_sha256": "x", "feature_network": "clip:t", "paired_real": True, "kid_subset_size": 10,
            "prompt_groups": np.repeat(np.arange(n // 3), 3).tolist()}
    f = rng.normal(size=(n, 4)).astype(np.float32)
    psnr = 40 + rng.normal(0, 1, n) + psnr_shift
    ssim = np.full(n, 0.99)
    save(Samples(meta, quant={"features": f, "psnr_fp32": psnr, "ssim_fp32": ssim}, fp32={"features": f}), root / "standard")
    return root


def test_document_merges_parts_and_gives_verdicts(tmp_path):
    import json

    from pcr.report import document, from_json, verdict, write_readme

    base = {"fid_fp32": 0.1, "psnr_fp32": 40.0, "average_bits": 8.0}
    parts = {"A": {"W8A8 progressive": 0.0, "W8A8 fp32": -2.0}, "B": {"W8A8 shared": 0.0}}
    paths = []
    for name, part in parts.items():
        rows_ = {label: {"metrics": base, "samples": f"s/{label}", "overrides": {}} for label in part}
        for label, shift in part.items():
            _samples(tmp_path / name / "s" / label, shift)
        (tmp_path / name / "r.json").write_text(json.dumps({"rows": rows_}))
        paths.append(tmp_path / name / "r.json")
    text = from_json(paths)
    assert text.index("| W8A8 shared |") < text.index("| W8A8 fp32 |") < text.index("| W8A8 progressive |")  # rows() order
    claims = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| W8A8 progressive | ")}
    assert "A better" in claims["W8A8 fp32"]  # +2 dB PSNR, significant
    assert "no significant difference" in claims["W8A8 shared"]  # identical samples
    assert "60 images per set" in text
    d = {"psnr_fp32": {"diff": 1.0, "significant": True}, "fid_fp32": {"diff": 0.1, "significant": True}}
    assert verdict(d) == "mixed" and verdict({"fid_fp32": {"diff": -0.1, "significant": True}}) == "A better"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- evidence:start -->\nold\n<!-- evidence:end -->\nrest\n")
    write_readme(readme, "new")
    assert readme.read_text() == "intro\n<!-- evidence:start -->\nnew\n<!-- evidence:end -->\nrest\n"
    readme.write_text(readme.read_text() + "<!-- objectives:start -->\n<!-- objectives:end -->\n")
    write_readme(readme, "study", "objectives")  # another block: the evidence block stays
    assert readme.read_text().endswith("new\n<!-- evidence:end -->\nrest\n<!-- objectives:start -->\nstudy\n<!-- objectives:end -->\n")
    with pytest.raises(StoreError, match=r"--block 'x' is not allowed: choose one of \['evidence', 'objectives', 'paper'\]"):
        write_readme(readme, "new", "x")
    readme.write_text("no markers")
    with pytest.raises(StoreError, match="must hold the markers"):
        write_readme(readme, "new")
    assert document(load_results(paths[:1]), replicates=200).count("\n| W8A8") >= 2


def test_document_gives_each_pairs_sample_size_when_rows_differ_in_it(tmp_path):
    import json

    from pcr.report import from_json

    sizes = {"paper W8A8 T25 progressive": 60, "paper W8A8 T25 fp32": 60, "paper W8A8 T50 progressive": 30,
             "paper W8A8 T50 fp32": 30}
    rows_ = {label: {"metrics": {"psnr_fp32": 40.0}, "samples": f"s/{label}", "overrides": {}} for label in sizes}
    for label, n in sizes.items():
        _samples(tmp_path / "s" / label, 0.0, n)
    (tmp_path / "r.json").write_text(json.dumps({"rows": rows_}))
    text = from_json([tmp_path / "r.json"])
    assert "images per set in their column" in text and "| set | images per set | verdict |" in text
    assert "| paper W8A8 T25 progressive | paper W8A8 T25 fp32 | standard | 60 | no significant difference |" in text
    assert "| paper W8A8 T50 progressive | paper W8A8 T50 fp32 | standard | 30 | no significant difference |" in text
