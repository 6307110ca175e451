"""benchmarks/openvino_attention.py on a few tokens: every variant compiles, runs and is recorded."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import openvino_attention as bench  # noqa: E402


def test_every_variant_is_timed_with_its_kernels_and_saved(tmp_path):
    out = tmp_path / "attention.json"
    assert bench.main(["--repeats", "2", "--tokens", "16", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["ms"]) == set(r["kernels"]) == set(bench.VARIANTS)
    assert all(len(t) == 2 for t in r["times_s"].values())
    assert r["ratio_to_float"]["float"] == 1.0
    lo, hi = r["ratio_to_float_ci95"]["int8_step_decomp"]
    assert lo <= r["ratio_to_float"]["int8_step_decomp"] <= hi
    assert r["tokens"] == 16 and r["command"].endswith("--out " + str(out))


def test_the_variants_compute_attention_at_the_given_step():
    import torch

    q, k, v = (torch.randn(bench.BATCH, 8, bench.WIDTH) for _ in range(3))
    step = torch.tensor([3])
    ref = bench.Attention("float")(q, k, v, step)
    assert ref.shape == (bench.BATCH, 8, bench.WIDTH)
    a = bench.Attention("int8_step_sdpa")
    # the SDPA and written-out forms of the per-step variant are the same computation
    torch.testing.assert_close(a(q, k, v, step), bench.Attention("int8_step_decomp")(q, k, v, step), rtol=1e-4, atol=1e-5)
    # and it reads the step: another step's scale gives other codes
    assert not torch.allclose(a(q, k, v, step), a(q, k, v, torch.tensor([4])))
