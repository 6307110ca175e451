import pytest

from pcr.quant.kernels import int_supported


def test_supported_layer():
    assert int_supported(weight_bits=4, act_bits=[8, 10, 8], reduction=2880, kind="conv2d", kernel_size=3) == (True, "")


@pytest.mark.parametrize("kwargs,why", [
    ({"weight_bits": 9}, "weight_bits=9"),
    ({"act_bits": [8, 16]}, "step 1 runs 16-bit"),
    ({"reduction": 40000}, "K=40000"),
    ({"kind": "conv3d"}, "conv3d"),
    ({"kind": "conv2d", "padding": "same", "kernel_size": 2}, "same"),
    ({"kind": "conv2d", "groups": 2, "out_channels": 12, "device": "cuda"}, "multiple of 8"),
])
def test_unsupported_layers_say_why(kwargs, why):
    ok, reason = int_supported(**{"weight_bits": 8, "act_bits": [8], "reduction": 64, **kwargs})
    assert not ok and why in reason
