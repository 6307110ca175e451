"""benchmarks/run.py --quick on a tiny pipeline writes results.json with every figure. Never asserts a time."""

from __future__ import annotations

import json
import math

import pytest
from scripts import load_script
from tiny_models import build_tiny_sd


def _load_run():
    return load_script("benchmarks/run.py")


def test_fit_exponent_and_paired_ratio():
    run = _load_run()
    assert math.isclose(run.fit_exponent([1, 2, 4], [3, 6, 12]), 1.0)
    assert math.isclose(run.fit_exponent([1, 2, 4], [1, 4, 16]), 2.0)
    assert run.paired_ratio([2.0, 9.0, 4.0], [1.0, 3.0, 4.0]) == 2.0
    assert run.paired_ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == [2.0, 2.0]  # one ratio every round: no spread
    ratios = [0.9, 0.95, 1.0, 1.05, 1.1, 0.97, 1.02]
    lo, hi = run.paired_ratio_ci(ratios, [1.0] * len(ratios))
    assert 0.9 <= lo < run.paired_ratio(ratios, [1.0] * len(ratios)) < hi <= 1.1


def test_quick_in_process_cases_write_all_keys(tmp_path):
    """The cheap in-process cases (scaling loads six pipelines; memory and cache start subprocesses and a DVC
    repo: minutes, not run here; fit_exponent is tested above)."""
    run = _load_run()
    model = build_tiny_sd(tmp_path / "tiny")
    out = tmp_path / "results.json"
    code = run.main(["--model", str(model), "--quick", "--only", "calibration_cost,generation,store",
                     "--out", str(out), "--work", str(tmp_path / "work")])
    assert code == 0
    r = json.loads(out.read_text())
    assert r["machine"]["flush_denormal"] is True and r["repeats"] >= 3
    c = r["cases"]
    assert set(c) == {"calibration_cost", "generation", "store"}
    assert c["calibration_cost"]["ratio"] > 0 and c["calibration_cost"]["naive"]["naive_passes"] > 0
    assert c["calibration_cost"]["ratio_affine_a4"] > 0  # the A4 default (MSE ranges) is timed too
    assert all(len(v) >= 3 for v in c["calibration_cost"]["times_s"].values())
    assert c["generation"]["ratio"] > 0
    assert 0 < c["store"]["bytes_per_element"] < 4 and c["store"]["write_mb_per_s_per_step"] > 0
    assert set(r["targets"]) == {"calibration_cost", "generation", "store"}
    assert "| measure |" in r["table_markdown"]


def test_rejects_fewer_than_three_repeats(tmp_path):
    run = _load_run()
    with pytest.raises(SystemExit):
        run.main(["--model", str(tmp_path), "--repeats", "2"])
