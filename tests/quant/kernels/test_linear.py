import pytest
import torch
from kernels_testlib import STEP_BITS, act_state, assert_agrees, linear_ref, weight_state

from pcr.quant.affine import params_from_range
from pcr.quant.kernels import int_linear, prepare_linear


@pytest.mark.parametrize("w_bits,w_sym,a_sym", [(8, False, False), (8, True, False), (4, False, False),
                                                (4, True, True), (8, False, True)])
@pytest.mark.parametrize("shape", [(2, 3, 37, 21), (1, 17, 64, 40), (5, 1, 9, 3)])  # (lead..., K, C_out), odd sizes
def test_int_linear_matches_fake_reference(shape, w_bits, w_sym, a_sym):
    *lead, k_in, c_out = shape
    g = torch.Generator().manual_seed(k_in)
    x, w, b = 3 * torch.randn(*lead, k_in, generator=g), torch.randn(c_out, k_in, generator=g), torch.randn(c_out, generator=g)
    codes, w_scale, w_zp = weight_state(w, w_bits, w_sym)
    a_scale, a_zp, a_bits = act_state(STEP_BITS, a_sym)
    p, spec = prepare_linear(codes, w_scale, w_zp, a_scale, a_zp, a_bits, weight_bits=w_bits,
                             weight_symmetric=w_sym, act_symmetric=a_sym)
    assert spec.wide and spec.weight_zp == (w_bits == 8 and not w_sym)
    for k in range(len(STEP_BITS)):
        ref = linear_ref(x, w, b, w_scale=w_scale, w_zp=w_zp, w_bits=w_bits, w_sym=w_sym, a_scale=a_scale,
                         a_zp=a_zp, a_bits=a_bits, a_sym=a_sym, k=k)
        assert_agrees(int_linear(x, torch.tensor(k), p, spec, b), ref)


def test_int_linear_without_bias_and_all_narrow_steps():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 24, generator=g), torch.randn(8, 24, generator=g)
    codes, w_scale, w_zp = weight_state(w, 8, False)
    a_scale, a_zp, a_bits = act_state((8, 8))
    p, spec = prepare_linear(codes, w_scale, w_zp, a_scale, a_zp, a_bits, weight_bits=8, weight_symmetric=False,
                             act_symmetric=False)
    assert not spec.wide
    ref = linear_ref(x, w, None, w_scale=w_scale, w_zp=w_zp, w_bits=8, w_sym=False, a_scale=a_scale, a_zp=a_zp,
                     a_bits=a_bits, a_sym=False, k=1)
    assert_agrees(int_linear(x, torch.tensor(1), p, spec), ref)


@pytest.mark.parametrize("w_sym", [False, True])
def test_int_linear_large_k_skewed_activations(w_sym):
    """SD-sized K with mostly positive inputs (z_x near 0, large d_x): the corrections are large and cancel."""
    g = torch.Generator().manual_seed(2)
    x = torch.nn.functional.gelu(3 * torch.randn(64, 2560, generator=g))
    w, b = 0.02 * torch.randn(40, 2560, generator=g), torch.randn(40, generator=g)
    codes, w_scale, w_zp = weight_state(w, 8, w_sym)
    a_bits = torch.tensor([8, 10], dtype=torch.int32)
    a_scale, a_zp = (torch.stack(t) for t in zip(*(params_from_range(x.min(), x.max(), b, False) for b in (8, 10)),
                                                   strict=True))
    assert int(a_zp[0]) < 16  # d_x = 128 - z_x > 112
    p, spec = prepare_linear(codes, w_scale, w_zp, a_scale, a_zp, a_bits, weight_bits=8, weight_symmetric=w_sym,
                             act_symmetric=False)
    for k in range(2):
        ref = linear_ref(x, w, b, w_scale=w_scale, w_zp=w_zp, w_bits=8, w_sym=w_sym, a_scale=a_scale, a_zp=a_zp,
                         a_bits=a_bits, a_sym=False, k=k)
        assert_agrees(int_linear(x, torch.tensor(k), p, spec, b), ref)
