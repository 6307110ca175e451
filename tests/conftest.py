"""Session-wide test fixtures: one torch thread, and tiny SD / SDXL pipeline directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pcr.models.tiny import build_tiny_sd, build_tiny_sdxl


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
