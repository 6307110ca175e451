"""benchmarks/int_kernels.py: the SD 1.5 layer census and the memory figure (meta device: no weights, no timing)."""

from __future__ import annotations

import torch
from scripts import load_script


def test_sd15_census_and_weight_memory():
    bench = load_script("benchmarks/int_kernels.py")
    unet = bench.sd15_unet()
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD 1.5's UNet
    layers = bench.layer_shapes(unet)
    modules = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert sum(la["count"] for la in layers) == len(modules) - len(bench.KEEP_FLOAT)  # each layer runs once
    assert {la["type"] for la in layers} == {"conv3x3", "conv1x1", "linear"}
    mem = bench.weight_memory(unet, steps=25)
    assert mem["fp32_bytes"] == 4 * 859_520_964
    assert 0.25 < mem["ratio_w8"] < 0.3 and 0.125 < mem["ratio_w4_packed"] < mem["ratio_w8"]
