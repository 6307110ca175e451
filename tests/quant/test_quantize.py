
import pytest
import torch

from pcr.config import ConfigError, QuantConfig
from pcr.models.layers import candidate_layers
from pcr.quant import QConv2d, QLinear, qmodules, quantize_model


def test_quantize_swaps_matching_layers_and_keeps_float(unet, qcfg):
    n_candidates = len(candidate_layers(unet))
    qmap = quantize_model(unet, qcfg, [4.0, 3.0, 2.0, 1.0])
    q = qmodules(unet)
    assert "conv_in" not in q and "conv_out" not in q
    assert len(q) == n_candidates - 2 == len(qmap.layers)
    assert isinstance(unet.conv_in, torch.nn.Conv2d) and not isinstance(unet.conv_in, QConv2d)
    assert isinstance(unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"), QLinear)
    assert all(m.input_quant.scale.shape == (4,) for m in q.values())


def test_include_exclude_patterns(unet):
    cfg = QuantConfig(include=("down_blocks.*",), exclude=("*.attn2.*",), keep_float=())
    qmap = quantize_model(unet, cfg, [2.0, 1.0])
    assert qmap.layers and all(n.startswith("down_blocks.") and ".attn2." not in n for n in qmap.layers)


def test_pattern_matching_nothing_names_the_pattern(unet):
    with pytest.raises(ValueError, match=r"quant.include pattern 'encoder.\*' matches no Conv2d/Linear layer"):
        quantize_model(unet, QuantConfig(include=("encoder.*",)), [2.0, 1.0])


@pytest.mark.parametrize("key,value,msg", [
    ("weight_bits", 0, r"quant.weight_bits=0 is not allowed: bits must be an integer from 2 to 16"),
    ("act_bits", 17, r"quant.act_bits=17 is not allowed"),
    ("act_observer", "kmeans", r"quant.act_observer='kmeans' is not allowed: choose one of \['auto', 'ema_minmax', 'minmax', 'mse', 'percentile'\]"),
])
def test_bad_config_names_key_value_and_allowed(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        QuantConfig(**{key: value})


def test_weights_become_codes_on_the_observers_grid(unet, qcfg):
    w = unet.get_submodule("down_blocks.0.resnets.0.conv1").weight.detach().clone()
    quantize_model(unet, qcfg, [2.0, 1.0])
    layer = unet.get_submodule("down_blocks.0.resnets.0.conv1")
    codes = layer.codes()
    assert codes.shape == w.shape and 0 <= int(codes.min()) and int(codes.max()) <= 15  # 4-bit codes
    w_hat = layer.dequantized_weight()
    assert ((w_hat - w).abs().amax(dim=(1, 2, 3)) <= layer.weight_scale / 2 + 1e-6).all()  # min/max: error <= s/2
