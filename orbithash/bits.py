"""Packing between sign vectors and byte codes (numpy.packbits order, as the proto states)."""

from __future__ import annotations

import numpy as np


def code_bytes(bits: int) -> int:
    return (bits + 7) // 8


def pack_signs(u: np.ndarray) -> np.ndarray:
    """Real-valued hash outputs (N×K) → packed codes (N×ceil(K/8) uint8), bit = u > 0."""
    return np.packbits(np.asarray(u) > 0, axis=-1)


def unpack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packed codes → N×K array of {0, 1} uint8."""
    return np.unpackbits(np.asarray(codes, np.uint8), axis=-1, count=bits)


def codes_to_pm1(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packed codes → N×K float32 in {-1, +1}."""
    return unpack_codes(codes, bits).astype(np.float32) * 2 - 1


def padding_is_zero(code: bytes, bits: int) -> bool:
    """True when the unused low bits of the last byte are zero (a well-formed code)."""
    spare = code_bytes(bits) * 8 - bits
    return spare == 0 or (code[-1] & ((1 << spare) - 1)) == 0
