"""Session-wide test fixtures: one torch thread, and tiny SD / SDXL pipeline directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny_sd, build_tiny_sdxl


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU the OpenMP spin of two
    threads slows them tenfold; restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "sdxl")


@pytest.fixture
def small_params(tmp_path):
    """A factory of validated Params for a tiny model: short prompt files in tmp_path, few steps."""
    import yaml

    from pcr.config import Params

    def make(model_dir: Path, **sections) -> Params:
        words = ["a red circle", "a blue square", "a green triangle", "a gray circle", "a small red square", "a blue circle"]
        (tmp_path / "cal.txt").write_text("\n".join(words) + "\n")
        (tmp_path / "eval.txt").write_text("\n".join(reversed(words)) + "\n")
        (tmp_path / "para.txt").write_text("\n".join(w.replace("a ", "one ") for w in words) + "\n")
        d = {
            "model": {"path": str(model_dir), "steps": 4, "scheduler": "ddim", "device": "cpu"},
            "collect": {"prompts": str(tmp_path / "cal.txt"), "num_prompts": 5, "batch_size": 3},
            "quant": {"weight_observer": "minmax", "act_observer": "minmax"},
            "calibrate": {"batch_size": 3, "store": {"layers": ["down_blocks.0.resnets.0.conv1", "*.attn1.to_q"], "samples": 2}},
            "eval": {"prompts": str(tmp_path / "eval.txt"), "paraphrase_prompts": str(tmp_path / "para.txt"), "num_prompts": 4, "batch_size": 3},
            "score": {"feature_path": None, "clip_path": None, "judge": None, "real": None},
        }
        for name, values in sections.items():
            d.setdefault(name, {}).update(values)
        return Params.from_dict(yaml.safe_load(yaml.safe_dump(d)))

    return make
