"""Candidate layers (named on the float model) and layer patterns refused by name."""

import pytest
from torch import nn

from pcr.errors import ConfigError
from pcr.models.layers import QUANTIZABLE, candidate_layers, match_layers
from pcr.quant.modules import QMODULES


def test_candidates_are_the_layers_quantization_has_twins_for():
    assert set(QUANTIZABLE) == set(QMODULES)  # collect's statistics cover exactly what can be quantized
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    assert candidate_layers(model) == ["0", "2.0"]
    twin = QMODULES[nn.Linear].from_module(nn.Linear(4, 4), num_steps=1, weight_bits=8, act_bits=8, weight_symmetric=False,
                                           act_symmetric=False)
    assert candidate_layers(nn.Sequential(twin)) == []  # a quantized twin is no float candidate


def test_patterns_select_in_order_and_unmatched_ones_are_named():
    names = ["down.0.conv", "down.0.attn.to_q", "mid.attn.to_q", "up.0.conv"]
    assert match_layers(names, ["*.to_q", "up.*"], "calibrate.store.layers") == ["down.0.attn.to_q", "mid.attn.to_q", "up.0.conv"]
    with pytest.raises(ConfigError, match=r"calibrate.store.layers pattern 'mid.attn.to_k' matches no quantized layer; "
                                          r"layer names look like \['down.0.conv'"):
        match_layers(names, ["*.to_q", "mid.attn.to_k"], "calibrate.store.layers", "quantized layer")
