"""Affine quantization against torch's own fake_quantize kernels, and its error bounds."""

import pytest
import torch

from pcr.quant.affine import code_dtype, dequantize, fake_quantize, params_from_range, qrange, quantize

BITS = [2, 3, 4, 6, 8, 10, 12, 16]


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_per_tensor_matches_torch_bit_exact(bits, symmetric):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(4096, generator=g) * 3 + 0.5
    scale, zp = params_from_range(x.min() * 0.8, x.max() * 0.8, bits, symmetric)  # some values clamp
    q_min, q_max = qrange(bits, symmetric)
    ref = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), q_min, q_max)
    ours = dequantize(quantize(x, scale, zp, bits, symmetric), scale, zp)
    assert torch.equal(ours, ref)
    assert torch.equal(fake_quantize(x, scale, zp, bits, symmetric), ref)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_per_channel_matches_torch_bit_exact(bits, symmetric):
    g = torch.Generator().manual_seed(100 + bits)
    w = torch.randn(6, 5, 3, 3, generator=g) * torch.linspace(0.1, 4, 6).view(6, 1, 1, 1)
    flat = w.reshape(6, -1)
    scale, zp = params_from_range(flat.amin(1), flat.amax(1), bits, symmetric)
    q_min, q_max = qrange(bits, symmetric)
    ref = torch.fake_quantize_per_channel_affine(w, scale, zp, 0, q_min, q_max)
    codes = quantize(w, scale, zp, bits, symmetric, axis=0)
    assert codes.dtype == code_dtype(bits, symmetric)
    assert int(codes.min()) >= q_min and int(codes.max()) <= q_max
    assert torch.equal(dequantize(codes, scale, zp, axis=0), ref)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_error_is_half_a_step_inside_and_clamps_outside(bits, symmetric):
    lo, hi = torch.tensor(-1.5), torch.tensor(2.5)
    scale, zp = params_from_range(lo, hi, bits, symmetric)
    inside = torch.linspace(-1.5, 2.5, 10001)
    if symmetric:  # the symmetric grid spans [-amax, amax - s]
        inside = inside[inside <= 2.5 - float(scale)]
    err = (fake_quantize(inside, scale, zp, bits, symmetric) - inside).abs()
    float_eps = 4 * torch.finfo(torch.float32).eps * 2.5  # float32 rounding of x / s itself
    assert float(err.max()) <= float(scale) / 2 + float_eps
    q_min, q_max = qrange(bits, symmetric)
    top, bottom = (q_max - float(zp)) * float(scale), (q_min - float(zp)) * float(scale)
    far = torch.tensor([-1e6, 1e6])
    assert fake_quantize(far, scale, zp, bits, symmetric).tolist() == pytest.approx([bottom, top])


def test_zero_is_exact_and_range_widens_to_hold_it():
    scale, zp = params_from_range(torch.tensor(0.3), torch.tensor(2.0), 8, False)
    assert float(fake_quantize(torch.zeros(1), scale, zp, 8, False)) == 0.0
    assert int(zp) == 0  # lo widened to 0


def test_constant_tensor_does_not_divide_by_zero():
    x = torch.zeros(10)
    scale, zp = params_from_range(x.min(), x.max(), 8, False)
    assert torch.isfinite(fake_quantize(x, scale, zp, 8, False)).all()


@pytest.mark.parametrize("bits", [0, 1, 17, 8.0, True])
def test_bits_out_of_range_raise(bits):
    with pytest.raises(ValueError, match=r"bits=.* from 2 to 16"):
        qrange(bits, False)


@pytest.mark.parametrize("bits", [2, 4, 8, 10, 16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_hot_path_fake_quant_matches_torch_kernel_bit_exact(bits, symmetric):
    from pcr.quant.affine import fake_quantize_at

    g = torch.Generator().manual_seed(7 + bits)
    x = torch.randn(3, 17, 9, generator=g) * 5
    x[0, 0, :3] = torch.tensor([0.5, -0.5, 1.5])  # ties: half-to-even
    scale, zp = params_from_range(x.min() * 0.7, x.max() * 0.9, bits, symmetric)
    q_min, q_max = qrange(bits, symmetric)
    s, z = scale.reshape(1), zp.reshape(1).int()
    ours = fake_quantize_at(x, s, q_min - int(z), q_max - int(z))
    assert torch.equal(ours, torch.fake_quantize_per_tensor_affine(x, s, z, q_min, q_max))
