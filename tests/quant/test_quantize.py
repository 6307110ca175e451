import dataclasses

import pytest
import torch
from quant_testlib import tiny_unet, unet_inputs

from pcr.config import ConfigError, QuantConfig
from pcr.errors import StoreError
from pcr.models.layers import candidate_layers
from pcr.quant import (
    QConv2d,
    QLinear,
    QuantMap,
    load_quantized,
    qmodules,
    quantize_model,
    save_quantized,
    timestep,
)


def test_quantize_swaps_matching_layers_and_keeps_float(unet, qcfg):
    n_candidates = len(candidate_layers(unet))
    qmap = quantize_model(unet, qcfg, num_steps=4)
    q = qmodules(unet)
    assert "conv_in" not in q and "conv_out" not in q
    assert len(q) == n_candidates - 2 == len(qmap.layers)
    assert isinstance(unet.conv_in, torch.nn.Conv2d) and not isinstance(unet.conv_in, QConv2d)
    assert isinstance(unet.get_submodule("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"), QLinear)
    assert all(m.input_quant.scale.shape == (4,) for m in q.values())


def test_include_exclude_patterns(unet):
    cfg = QuantConfig(include=("down_blocks.*",), exclude=("*.attn2.*",), keep_float=())
    qmap = quantize_model(unet, cfg, num_steps=2)
    assert qmap.layers and all(n.startswith("down_blocks.") and ".attn2." not in n for n in qmap.layers)


def test_pattern_matching_nothing_names_the_pattern(unet):
    with pytest.raises(ValueError, match=r"quant.include pattern 'encoder.\*' matches no Conv2d/Linear layer"):
        quantize_model(unet, QuantConfig(include=("encoder.*",)), num_steps=2)


@pytest.mark.parametrize("key,value,msg", [
    ("weight_bits", 0, r"quant.weight_bits=0 is not allowed: bits must be an integer from 2 to 16"),
    ("act_bits", 17, r"quant.act_bits=17 is not allowed"),
    ("act_observer", "kmeans", r"quant.act_observer='kmeans' is not allowed: choose one of \['ema_minmax', 'minmax', 'mse', 'percentile'\]"),
])
def test_bad_config_names_key_value_and_allowed(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        QuantConfig(**{key: value})


def test_weights_are_fake_quantized_once(unet, qcfg):
    quantize_model(unet, qcfg, num_steps=2)
    layer = unet.get_submodule("down_blocks.0.resnets.0.conv1")
    per_channel_levels = [len(torch.unique(layer.weight[c])) for c in range(layer.weight.shape[0])]
    assert max(per_channel_levels) <= 2**4  # 4-bit codes


def _calibrate(unet, steps):
    for name, m in qmodules(unet).items():
        for k in range(steps):
            m.input_quant.set_step(k, torch.tensor(-1.0 - k - len(name) % 3), torch.tensor(2.0 + k), bits=8 + k)


def test_save_load_roundtrip_without_forward(tmp_path, unet, qcfg):
    qmap = quantize_model(unet, qcfg, num_steps=3)
    _calibrate(unet, 3)
    save_quantized(unet, qmap, tmp_path / "qparams.safetensors", tmp_path / "qconfig.json")
    fresh = tiny_unet()
    loaded_map = load_quantized(fresh, tmp_path / "qparams.safetensors", tmp_path / "qconfig.json")
    assert loaded_map == qmap
    a, b = unet.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x, ehs = unet_inputs()
    for k in range(3):
        with timestep(k):
            assert torch.equal(unet(x, 10, ehs).sample, fresh(x, 10, ehs).sample)
    assert fresh.get_submodule("mid_block.attentions.0.proj_in").input_quant.bits.tolist() == [8, 9, 10]


def test_load_rejects_other_format_version_and_missing_layers(tmp_path, unet, qcfg):
    qmap = quantize_model(unet, qcfg, num_steps=1)
    save_quantized(unet, qmap, tmp_path / "q.safetensors", tmp_path / "q.json")
    (tmp_path / "v2.json").write_text(dataclasses.replace(qmap, format_version=2).to_json())
    with pytest.raises(StoreError, match="format_version=2 is not supported"):
        load_quantized(tiny_unet(), tmp_path / "q.safetensors", tmp_path / "v2.json")
    bad = dataclasses.replace(qmap, layers={"nope.layer": next(iter(qmap.layers.values()))})
    (tmp_path / "bad.json").write_text(bad.to_json())
    with pytest.raises(StoreError, match="names layer 'nope.layer'"):
        load_quantized(tiny_unet(), tmp_path / "q.safetensors", tmp_path / "bad.json")
    assert QuantMap.load(tmp_path / "q.json") == qmap
