"""The presets under params/ are valid params files and follow the PCR paper's protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pcr.config import SECTIONS, load_params

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "params").glob("**/*.yaml"))


def test_there_are_presets():
    assert {p.name for p in PRESETS} >= {"sd-v1-4.yaml", "sdxl.yaml"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_loads_and_is_complete(path):
    params = load_params(path)
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == set(SECTIONS), "a preset spells out every section, like params.yaml"
    # DVC templates these into deps (dvc.yaml): a null would break `dvc repro`
    for value in (params.model.path, params.collect.prompts, params.eval.prompts, params.eval.paraphrase_prompts,
                  params.score.feature_path, params.score.clip_path):
        assert isinstance(value, str) and value


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_follows_the_paper_protocol(path):
    p = load_params(path)
    assert (p.model.steps, p.model.guidance_scale) == (50, 7.5)
    assert (p.model.dtype, p.model.device) == ("float16", "auto")
    assert p.collect.num_prompts == 200 and p.calibrate.mode == "progressive"
    assert (p.quant.weight_bits, p.quant.act_bits) == (8, 8)  # W4A8: -S quant.weight_bits=4
    assert (p.relax.fraction, p.relax.bits) == (0.2, 10)
    assert p.eval.num_prompts == 5000
    assert p.score.feature == "inception" and p.score.judge is None
    assert p.score.real not in (None, "render")  # a folder of real COCO images
    assert p.collect.prompts != p.eval.prompts  # calibration and evaluation prompts differ (COCO train / val)
    for batch in (p.collect.batch_size, p.calibrate.batch_size, p.eval.batch_size):
        assert 1 <= batch <= 64


def test_sd_v1_4_preset():
    p = load_params(ROOT / "params/sd-v1-4.yaml")
    assert p.model.scheduler == "pndm"  # PLMS, the paper's sampler for SD 1.x
    assert (p.model.height, p.model.width) == (None, None)  # native 512
    assert p.relax.where == "x0"


def test_sdxl_preset():
    p = load_params(ROOT / "params/sdxl.yaml")
    assert p.model.scheduler == "euler"  # SDXL base's own scheduler, kept by the official code
    assert (p.model.height, p.model.width) == (768, 768)  # the official code's SDXL resolution
    assert p.relax.where == "xT"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_weight_bits_override(path):
    """What `dvc exp run -S quant.weight_bits=4` produces is valid too."""
    from pcr.config import Params

    raw = yaml.safe_load(path.read_text())
    raw["quant"]["weight_bits"] = 4
    assert Params.from_dict(raw).quant.weight_bits == 4
