"""benchmarks/gpu.py in its tiny CPU configuration: it runs, agrees with fake quantization, and writes its JSON."""

from __future__ import annotations

import json

from scripts import load_script


def test_gpu_script_tiny_configuration_runs_and_reports(tmp_path, capsys):
    bench = load_script("benchmarks/gpu.py")
    out = tmp_path / "gpu.json"
    assert bench.main(["--tiny", "--backend", "none", "--repeats", "1", "--out", str(out)]) == 0
    tiny = json.loads(out.read_text())["models"]["tiny"]
    for kernels in ("int", "fp8"):
        assert tiny[kernels]["summary"]["fake"] == 0 and tiny[kernels]["summary"][kernels] > 0
        assert tiny[kernels]["agreement_with_fake"]["rel_l2"] < 3e-2  # whole-UNet outputs: see test_use_kernels
        assert tiny["speedup_vs_fp16"][kernels] > 0 and tiny["memory"][f"{kernels}_vs_fp16"] < 1
    assert "speedup int8" in capsys.readouterr().out
    assert bench.main(["--models", "sd15"]) == 2 or bench.torch.cuda.is_available()  # no GPU here: a clear refusal
