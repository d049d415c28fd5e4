"""The rules for what a code, an id, a label and a code length may be: checked here and only here.

Every boundary that takes them from outside (the gateway, a shard, the Redis store, the Hamming
index) calls these functions, so a rule changes in one place and every layer answers with the
same message. Messages name the offending item by its position in the request and never echo a
long value whole (an id of a megabyte must not make the error itself too large to send).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orbithash import InvalidInput
from orbithash.bits import code_bytes

MIN_BITS = 8
MAX_BITS = 256
MAX_ID_BYTES = 256
NO_LABEL = -1  # stored for an item without a label; real labels are 0..2^31-1
MAX_LABEL = int(np.iinfo(np.int32).max)
RERANK_POOL_FACTOR = 4  # re-ranking looks at this many times k Hamming candidates by default
_SHOWN_CHARS = 40


def shown(value: str) -> str:
    """``repr`` of a value for an error message, cut to a readable length."""
    return repr(value) if len(value) <= _SHOWN_CHARS else repr(value[:_SHOWN_CHARS]) + f"… ({len(value)} chars)"


def check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not MIN_BITS <= bits <= MAX_BITS:
        raise InvalidInput(f"bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return int(bits)


def padding_mask(bits: int) -> int:
    """The unused low bits of a code's last byte, which must be zero."""
    return (1 << (code_bytes(bits) * 8 - bits)) - 1


def as_code_array(codes: Sequence[bytes] | np.ndarray, bits: int, what: str = "codes",
                  n: int | None = None) -> np.ndarray:
    """Packed codes (a sequence of byte strings or an (n, bytes) uint8 array) as a checked uint8 array.

    Each code must have ceil(bits / 8) bytes with the padding bits after bit ``bits`` zero;
    ``n``, when given, is the number of codes the caller expects.
    """
    width = code_bytes(bits)
    if isinstance(codes, np.ndarray):
        arr = codes
        if arr.dtype != np.uint8 or arr.ndim != 2 or arr.shape[1] != width:
            raise InvalidInput(f"{what} must be uint8 of shape (n, {width}) for {bits}-bit codes, "
                               f"got {arr.dtype} {arr.shape}")
    else:
        for i, code in enumerate(codes):
            if not isinstance(code, bytes | bytearray) or len(code) != width:
                size = len(code) if isinstance(code, bytes | bytearray) else type(code).__name__
                raise InvalidInput(f"{what} {i}: {size} bytes, a {bits}-bit code has {width}")
        arr = np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), width)
    if n is not None and arr.shape[0] != n:
        raise InvalidInput(f"{arr.shape[0]} {what} for {n} items")
    mask = padding_mask(bits)
    if mask and arr.shape[0]:
        bad = np.flatnonzero(arr[:, -1] & np.uint8(mask))
        if bad.size:
            raise InvalidInput(f"{what} {int(bad[0])}: the {mask.bit_length()} padding bits after bit {bits} "
                               "must be zero")
    return arr


def check_id(item_id: object, position: int | str) -> bytes:
    """One id as UTF-8 bytes: a non-empty str of at most MAX_ID_BYTES bytes."""
    if not isinstance(item_id, str) or not item_id:
        raise InvalidInput(f"item {position}: the id must be a non-empty string, got {shown(str(item_id))}")
    try:
        raw = item_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"item {position}: the id is not valid UTF-8 ({exc.reason})") from exc
    if len(raw) > MAX_ID_BYTES:
        raise InvalidInput(f"item {position}: the id {shown(item_id)} has {len(raw)} bytes, at most "
                           f"{MAX_ID_BYTES} are allowed")
    return raw


def check_ids(ids: Sequence[object]) -> list[bytes]:
    """Every id checked (see ``check_id``); their UTF-8 bytes in order."""
    return [check_id(item_id, i) for i, item_id in enumerate(ids)]


def check_labels(labels: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """n labels as int32, each NO_LABEL or 0..MAX_LABEL."""
    arr = np.asarray(labels)
    if arr.shape != (n,) or (n and arr.dtype.kind not in "iu"):
        raise InvalidInput(f"labels must be {n} integers, got {arr.dtype} {arr.shape}")
    if n and (int(arr.min()) < NO_LABEL or int(arr.max()) > MAX_LABEL):
        raise InvalidInput(f"labels must be in {NO_LABEL}..{MAX_LABEL} ({NO_LABEL} = none)")
    return arr.astype(np.int32)


def check_k(k: int, max_k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= max_k:
        raise InvalidInput(f"k must be in 1..{max_k}, got {k!r}")
    return int(k)


def rerank_pool(k: int, candidates: int, max_k: int) -> int:
    """How many Hamming candidates re-ranking looks at: ``candidates`` or RERANK_POOL_FACTOR·k, ≥ k."""
    return min(max(candidates or RERANK_POOL_FACTOR * k, k), max_k)
