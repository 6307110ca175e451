"""Session fixture: one tiny random CLIP directory for all metrics tests."""

import pytest
from metrics_testlib import make_clip_dir


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return make_clip_dir(tmp_path_factory.mktemp("clip"))
