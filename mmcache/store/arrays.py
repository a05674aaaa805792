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
    except Exception as e:  # noqa: BLE001 - a damaged or crafted header also raises tokenize.TokenError,
        # SyntaxError or MemoryError (a shape of petabytes), which escaped verify and plain reads
        raise CacheError(f"{where}: not a plain .npy array ({type(e).__name__}: {e})") from None
    if arr.dtype.kind not in ALLOWED_KINDS:
        raise CacheError(f"{where}: refusing .npy with dtype {arr.dtype}")
    return arr
