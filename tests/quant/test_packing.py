import pytest
import torch

from pcr.quant.affine import qrange
from pcr.quant.packing import pack, storage_shape, unpack


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("shape", [(5, 7), (3, 2, 3, 3), (4, 1)])
def test_pack_unpack_roundtrip(bits, symmetric, shape):
    q_min, q_max = qrange(bits, symmetric)
    codes = torch.randint(q_min, q_max + 1, shape, generator=torch.Generator().manual_seed(bits))
    stored = pack(codes, bits, symmetric)
    assert tuple(stored.shape) == storage_shape(shape, bits)
    if bits <= 4:  # two codes per byte: half the bytes of one per byte
        assert stored.dtype == torch.uint8 and stored.numel() == shape[0] * -(-codes[0].numel() // 2)
    assert torch.equal(unpack(stored, bits, symmetric, shape).long(), codes)
