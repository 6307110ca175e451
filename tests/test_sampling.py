"""load_sampler silences diffusers' and transformers' loading bars only while it loads."""

import diffusers
import pytest
import transformers

import pcr.sampling
from pcr.config import ModelConfig

LIBS = (diffusers.utils.logging, transformers.utils.logging)


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_setting_is_left_as_found(tiny_sd_dir, enabled, monkeypatch):
    seen = []
    original = pcr.sampling.load_pipeline

    def spy(*args, **kwargs):
        seen.append([lib.is_progress_bar_enabled() for lib in LIBS])
        return original(*args, **kwargs)

    monkeypatch.setattr(pcr.sampling, "load_pipeline", spy)
    for lib in LIBS:
        lib.enable_progress_bar() if enabled else lib.disable_progress_bar()
    try:
        pcr.sampling.load_sampler(ModelConfig(path=str(tiny_sd_dir), steps=2, device="cpu"))
        after = [lib.is_progress_bar_enabled() for lib in LIBS]
    finally:
        for lib in LIBS:
            lib.enable_progress_bar()  # the libraries' default, for the other tests
    assert seen == [[False, False]]  # quiet while loading
    assert after == [enabled, enabled]  # and as found afterwards: the process's other users keep their bars
