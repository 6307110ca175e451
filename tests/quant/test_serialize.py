"""The artifact: the whole quantized UNet through state_dict, loaded on a meta model; damaged ones refused."""

import dataclasses
import json
import shutil

import pytest
import torch
from quant_testlib import tiny_unet, unet_inputs
from safetensors.torch import load_file, save_file

from pcr.config import QuantConfig
from pcr.errors import StoreError
from pcr.quant import (
    at_step,
    load_quant_state,
    load_quantized,
    qmodules,
    quantize_model,
    save_quant_state,
    save_quantized,
)
from pcr.quant.qmap import QuantMap
from pcr.quant.serialize import QUANT_CONFIG, WEIGHTS

TIMESTEPS = [900.0, 500.0, 100.0]


def _calibrated(qcfg, seed=0):
    unet = tiny_unet(seed)
    qmap = quantize_model(unet, qcfg, TIMESTEPS, "DDIMScheduler")
    for name, m in qmodules(unet).items():
        for k in range(3):
            m.input_quant.set_step(k, torch.tensor(-1.0 - k - len(name) % 3), torch.tensor(2.0 + k), bits=8 + k)
    return unet, qmap


@pytest.fixture
def artifact(tmp_path, qcfg):
    unet, qmap = _calibrated(qcfg)
    save_quantized(unet, qmap, tmp_path / "quantized")
    return tmp_path / "quantized", unet, qmap


def test_artifact_roundtrip_through_state_dict_on_a_meta_model(artifact):
    path, unet, qmap = artifact
    loaded = load_quantized(path)
    a, b = unet.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert QuantMap.load(path / QUANT_CONFIG) == qmap
    assert load_file(str(path / WEIGHTS))["down_blocks.0.resnets.0.conv1.weight_codes"].dtype == torch.uint8
    x, ehs = unet_inputs()
    for t in TIMESTEPS:
        assert torch.equal(unet(x, t, ehs).sample, loaded(x, t, ehs).sample)  # each counts its own calls
    assert loaded.get_submodule("mid_block.attentions.0.proj_in").input_quant.bits.tolist() == [8, 9, 10]
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])


def test_calibration_state_applies_onto_the_float_unet(tmp_path, qcfg):
    unet, qmap = _calibrated(qcfg)
    save_quant_state(unet, qmap, tmp_path / "q.safetensors", tmp_path / "q.json")
    fresh = tiny_unet()
    assert load_quant_state(fresh, tmp_path / "q.safetensors", tmp_path / "q.json") == qmap
    x, ehs = unet_inputs()
    with at_step(unet, 1), at_step(fresh, 1):
        assert torch.equal(unet(x, 500.0, ehs).sample, fresh(x, 500.0, ehs).sample)


def _damage_missing(path):
    state = load_file(str(path / WEIGHTS))
    del state["up_blocks.1.attentions.0.proj_out.input_quant.scale"]
    save_file(state, str(path / WEIGHTS))
    return r"lacks tensor 'up_blocks.1.attentions.0.proj_out.input_quant.scale'"


def _damage_version(path):
    qmap = QuantMap.load(path / QUANT_CONFIG)
    (path / QUANT_CONFIG).write_text(dataclasses.replace(qmap, format_version=99).to_json())
    return "format_version=99 is not supported"


def _damage_other_model(path):
    other = tiny_unet()
    cfg = json.loads((path / "config.json").read_text())
    cfg["block_out_channels"] = [24, 32]  # another model's shapes
    (path / "config.json").write_text(json.dumps(cfg))
    del other
    return r"quantized_unet.safetensors: tensor '[\w.]+' has shape \(\d+(, \d+)*\), this model's is"


def _damage_truncated(path):
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])
    return "quantized_unet.safetensors is damaged or truncated"


def _damage_file_gone(path):
    (path / WEIGHTS).unlink()
    return "quantized_unet.safetensors is missing"


@pytest.mark.parametrize("damage", [_damage_missing, _damage_version, _damage_other_model, _damage_truncated, _damage_file_gone])
def test_damaged_artifact_fails_naming_file_and_tensor(artifact, damage):
    path, _, _ = artifact
    message = damage(path)
    with pytest.raises(StoreError, match=message):
        load_quantized(path)


def test_save_replaces_atomically(artifact, qcfg):
    path, _, _ = artifact
    unet, qmap = _calibrated(qcfg, seed=1)
    save_quantized(unet, qmap, path)
    assert not path.with_name(path.name + ".partial").exists()
    assert torch.equal(load_quantized(path).conv_in.weight, unet.conv_in.weight)
    shutil.rmtree(path)


def test_a_format_2_map_without_output_correction_still_loads():
    from pcr.quant.qmap import QuantMap

    unet = tiny_unet()
    qmap = quantize_model(unet, QuantConfig(), [900.0, 500.0])
    d = json.loads(qmap.to_json())
    del d["output_correction"]
    d["format_version"] = 2
    old = QuantMap.from_json(json.dumps(d))
    assert old.output_correction is None and old.layers == qmap.layers and old.format_version == 3
    d["output_correction"] = "conv_out"  # a field version 2 never had is still read as version 3's
    d["unknown"] = 1
    with pytest.raises(StoreError, match="does not fit format_version=2"):
        QuantMap.from_json(json.dumps(d))
