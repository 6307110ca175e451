"""Drift of the quantized trajectory's layer-input ranges, in LSB, on hand-built stores with known ranges."""

import numpy as np
import pytest
from store_testlib import trajectory_store

from pcr.drift import describe, drift

T, BITS = 2, 4
LSB = 15  # 2^4 - 1 codes: a range of width 15 has an LSB of 1


@pytest.fixture
def stores(tmp_path):
    x = np.ones((T + 1, 2, 1, 2, 2), dtype=np.float32)
    lo, hi = np.zeros((T, 2)), np.full((T, 2), float(LSB))  # layers a, b: FP32 range [0, 15] at every step
    trajectory_store(tmp_path / "traj.zarr", "trajectories", x, ["a", "b"], lo, hi)
    x_hat = x.copy()
    x_hat[-1] *= 1.5  # the last state 50% off
    lo_hat = np.array([[0.0, -0.25], [-2.0, 0.0]])  # b and a at steps 0 and 1: the range moved down
    hi_hat = np.array([[15.0, 15.0], [15.0, 18.0]])  # ... b's top moved up 3 LSB at step 1
    trajectory_store(tmp_path / "prog.zarr", "calibration", x_hat, ["b", "a"], lo_hat, hi_hat, mode="progressive", act_bits=BITS)
    trajectory_store(tmp_path / "fp32.zarr", "calibration", x_hat, ["b", "a"], lo_hat, hi_hat, mode="fp32", act_bits=BITS)
    return tmp_path


def test_drift_is_the_range_shift_in_lsb_of_the_fp32_quantizer(stores):
    d = drift(stores / "traj.zarr", stores / "prog.zarr")
    np.testing.assert_allclose(d.drift_lsb, [[0.0, 0.25], [2.0, 3.0]])  # max(|d lo|, |d hi|) / LSB, layers as calibrated
    np.testing.assert_allclose(d.clip_lsb, [[0.0, 0.25], [2.0, 3.0]])  # every move here widens the range: all clipped
    np.testing.assert_allclose(d.latent, [0.0, 0.5])
    s = d.summary()
    assert s["bits"] == BITS and s["median_lsb"] == pytest.approx(1.125) and s["share_over_half_lsb"] == 0.5
    assert d.top_layers(1) == [("a", pytest.approx(1.625))]
    assert "moves most: a (1.62 LSB" in describe(d) and "A4" in describe(d)


def test_modes_that_observe_no_quantized_trajectory_have_no_drift(stores):
    assert drift(stores / "traj.zarr", stores / "fp32.zarr") is None
    assert "only a progressive calibration" in describe(None)
