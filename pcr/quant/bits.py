"""Bitwidth limits and code ranges: plain Python, so configuration can check bits without importing torch."""

from pcr.config import MAX_BITS, MIN_BITS  # noqa: F401 (re-exported: the limits params check)


def check_bits(bits: int, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what}={bits!r} is not allowed: use an integer from {MIN_BITS} to {MAX_BITS}")
    return bits


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """(q_min, q_max) of a b-bit code: [0, 2^b - 1] asymmetric, [-2^(b-1), 2^(b-1) - 1] symmetric."""
    check_bits(bits)
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1
