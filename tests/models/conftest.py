"""Tiny SD and SDXL pipeline directories, built once per test session (well under a second each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcr.models.tiny import build_tiny_sd, build_tiny_sdxl


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "sdxl")
