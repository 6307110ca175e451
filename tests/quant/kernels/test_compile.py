"""torch.compile(fullgraph=True) of the int kernels: one graph for every step (k is a 0-d tensor)."""

import pytest
import torch
from kernels_testlib import STEP_BITS, act_state, assert_agrees, weight_state
from torch._dynamo.testing import CompileCounterWithBackend

from pcr.quant.kernels import int_conv2d, int_linear, onednn_available, prepare_conv2d, prepare_linear


def _check(fn, x, p, spec, b):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(lambda x, k: fn(x, k, p, spec, b), fullgraph=True, backend=counter)
    for k in (0, 1, 2, 1):  # 8-bit, 10-bit (torch.cond's other branch), 6-bit, back again
        step = torch.tensor(k)
        assert_agrees(compiled(x, step), fn(x, step, p, spec, b))  # inductor fuses: float order differs
    assert counter.frame_count == 1  # no recompilation when the step's value changes


def test_compiled_int_linear_runs_every_step_in_one_graph():
    torch.manual_seed(0)
    codes, w_scale, w_zp = weight_state(torch.randn(16, 24), 8, False)  # asymmetric: the d_w term too
    p, spec = prepare_linear(codes, w_scale, w_zp, *act_state(STEP_BITS), weight_bits=8, weight_symmetric=False,
                             act_symmetric=False)
    _check(int_linear, torch.randn(3, 5, 24), p, spec, torch.randn(16))


@pytest.mark.parametrize("route", ["im2col"] + (["onednn"] if onednn_available() else []))
def test_compiled_int_conv2d_runs_every_step_in_one_graph(route):
    torch.manual_seed(0)
    codes, w_scale, w_zp = weight_state(torch.randn(16, 8, 3, 3), 8, False)
    p, spec = prepare_conv2d(codes, w_scale, w_zp, *act_state(STEP_BITS), weight_bits=8, weight_symmetric=False,
                             act_symmetric=False, padding=1, route=route)
    _check(int_conv2d, torch.randn(2, 8, 9, 9), p, spec, torch.randn(16))
