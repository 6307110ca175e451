"""Tiny UNet and config fixtures for the quantization-core tests (a uniquely named module, importable)."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from pcr.config import QuantConfig


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
    ).eval()


@pytest.fixture
def unet():
    return tiny_unet()


@pytest.fixture
def qcfg():
    return QuantConfig(weight_bits=4, act_bits=8, weight_observer="minmax", act_observer="minmax")


def unet_inputs(seed: int = 0, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 5, 16, generator=g)
