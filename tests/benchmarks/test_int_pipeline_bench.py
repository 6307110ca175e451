"""benchmarks/int_pipeline.py: resident weight bytes (each storage once) and the shared quantized twin."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from pcr.config import QuantConfig
from pcr.quant import qmodules, quantize_model
from pcr.quant.kernels import use_kernels

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/quant"))
from quant_testlib import tiny_unet, unet_inputs  # noqa: E402
from scripts import load_script  # noqa: E402


def test_resident_bytes_count_each_storage_once():
    bench = load_script("benchmarks/int_pipeline.py")
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 4))
    assert bench.resident_bytes(m) == 4 * (12 + 3 + 12 + 4)
    m[1].weight = torch.nn.Parameter(m[0].weight.t())  # a view of the same storage
    assert bench.resident_bytes(m) == 4 * (12 + 3 + 4)


@torch.no_grad()
def test_shared_twin_runs_int_on_the_same_codes_with_the_weights_once():
    bench = load_script("benchmarks/int_pipeline.py")
    fp32, q = tiny_unet(), tiny_unet()
    qmap = quantize_model(q, QuantConfig(weight_bits=8, act_bits=8, weight_observer="minmax"), [999.0, 1.0])
    for m in qmodules(q).values():
        for k in range(2):
            m.input_quant.set_step(k, torch.tensor(-3.0), torch.tensor(3.0))
    twin = bench.shared_twin(q, qmap)
    assert all(twin.state_dict()[k].data_ptr() == v.data_ptr() for k, v in q.state_dict().items())
    use_kernels(twin, "int")
    x, cond = unet_inputs()
    ref = q(x, 999.0, encoder_hidden_states=cond).sample
    assert float((twin(x, 999.0, encoder_hidden_states=cond).sample - ref).norm() / ref.norm()) < 3e-2
    quantized_weights = sum(m.weight.numel() for n, m in fp32.named_modules() if n in qmodules(q))
    mem = bench.memory(fp32, twin)
    # 3 bytes saved per quantized weight, less the int8 padding, per-channel and per-step tables
    assert mem["fp32_bytes"] - 3 * quantized_weights < mem["int_bytes"] < mem["fp32_bytes"] - 2 * quantized_weights
