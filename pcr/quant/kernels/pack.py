"""4-bit codes packed two per byte: byte i = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4 over the flat codes.

    packed = pack_int4(codes)                      # [ceil(n / 2)] uint8
    codes = unpack_int4(packed, shape, symmetric)  # int8 (symmetric, sign-extended) or uint8
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def pack_int4(codes: Tensor) -> Tensor:
    """Flat uint8 [ceil(n / 2)] of 4-bit codes (int8 in [-8, 7] or uint8 in [0, 15]), low nibble first."""
    flat = codes.reshape(-1).to(torch.int16) & 0xF
    flat = F.pad(flat, (0, flat.numel() % 2))
    return (flat[0::2] | (flat[1::2] << 4)).to(torch.uint8)


def unpack_int4(packed: Tensor, shape: tuple[int, ...] | torch.Size, symmetric: bool) -> Tensor:
    """Codes of `shape` from pack_int4's bytes: int8 sign-extended if symmetric, else uint8."""
    p = packed.reshape(-1).to(torch.int16)
    flat = torch.stack([p & 0xF, p >> 4], 1).reshape(-1)[: math.prod(shape)]
    if symmetric:
        return (flat - ((flat & 0x8) << 1)).to(torch.int8).reshape(shape)
    return flat.to(torch.uint8).reshape(shape)
