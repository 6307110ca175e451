"""Integer weight codes as stored: one code per byte up to 8 bits, two per byte at 4 bits or fewer.

    bits <= 4   packed [C_out, ceil(K / 2)] uint8: code 2j in the low nibble, 2j+1 in the high one
                (symmetric codes are offset by 2^(b-1) into [0, 2^b - 1] first)
    bits <= 8   [C_out, ...] uint8 (asymmetric) / int8 (symmetric), the weight's own shape
    bits > 8    int32 / int16 (affine.code_dtype)

K = prod(weight.shape[1:]) is the fan-in: packing is along a flattened row, so a row never shares a
byte with the next output channel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pcr.quant.affine import code_dtype
from pcr.quant.bits import check_bits

PACK_BITS = 4  # codes of at most this many bits are packed two per byte


def packed(bits: int) -> bool:
    return check_bits(bits) <= PACK_BITS


def storage_shape(weight_shape: tuple[int, ...], bits: int) -> tuple[int, ...]:
    if not packed(bits):
        return tuple(weight_shape)
    fan_in = math.prod(weight_shape[1:])
    return (weight_shape[0], -(-fan_in // 2))


def storage_dtype(bits: int, symmetric: bool) -> torch.dtype:
    return torch.uint8 if packed(bits) else code_dtype(bits, symmetric)


def pack(codes: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Integer codes [C_out, ...] -> their storage (see the module docstring)."""
    if not packed(bits):
        return codes.to(code_dtype(bits, symmetric)).contiguous()
    offset = 2 ** (bits - 1) if symmetric else 0
    rows = (codes.reshape(codes.shape[0], -1).to(torch.int16) + offset).to(torch.uint8)  # [C_out, K] in [0, 15]
    if rows.shape[1] % 2:
        rows = torch.nn.functional.pad(rows, (0, 1))
    return (rows[:, 0::2] | (rows[:, 1::2] << 4)).contiguous()


def unpack(stored: Tensor, bits: int, symmetric: bool, weight_shape: tuple[int, ...]) -> Tensor:
    """Storage -> integer codes in the weight's shape (int16 when unpacked from nibbles)."""
    if not packed(bits):
        return stored
    offset = 2 ** (bits - 1) if symmetric else 0
    low, high = stored & 0x0F, stored >> 4
    rows = torch.stack([low, high], dim=-1).reshape(stored.shape[0], -1)  # [C_out, 2 * ceil(K / 2)]
    fan_in = math.prod(weight_shape[1:])
    return (rows[:, :fan_in].to(torch.int16) - offset).reshape(weight_shape)
