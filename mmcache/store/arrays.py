"""The two payload types of the cache: .npy (never pickled) and JSON."""

from __future__ import annotations

import io

import numpy as np

from ..errors import CacheError

ALLOWED_KINDS = "fiub"  # float, signed int, unsigned int, bool: never object arrays


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes, where: str) -> np.ndarray:
    """Decode .npy bytes with pickling disabled; object or structured dtypes are refused."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CacheError(f"{where}: not a plain .npy array ({e})") from None
    if arr.dtype.kind not in ALLOWED_KINDS:
        raise CacheError(f"{where}: refusing .npy with dtype {arr.dtype}")
    return arr
