"""The two payload types of the cache: .npy (never pickled) and JSON.

`.npy` payloads are decoded here without `np.load`: the header is parsed with numpy's own safe
parser (`ast.literal_eval` of a dict of literals, never unpickling), only plain numeric dtypes are
accepted, the payload must be exactly the header plus shape x itemsize bytes, and the array is a
view of the caller's buffer (no copy). Parsed headers are memoised by their bytes: a shard holds
thousands of members whose headers repeat.
"""

from __future__ import annotations

import io
import math

import numpy as np
from numpy.lib import format as npy_format

from ..errors import CacheError

ALLOWED_KINDS = "fiub"  # float, signed int, unsigned int, bool: never object arrays
MAGIC = b"\x93NUMPY"
_HEADER_CACHE: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int] | str] = {}
_HEADER_CACHE_MAX = 8192


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_header(buf, start: int, end: int) -> tuple[np.dtype, tuple[int, ...], bool, int] | str:
    """(dtype, shape, fortran_order, data start) of the .npy payload buf[start:end], or why it is refused.
    `buf` is bytes or a bytearray."""
    if end - start < 10 or buf[start : start + 6] != MAGIC:
        return "no .npy magic"
    major = buf[start + 6]
    if major == 1:
        head = 10 + (buf[start + 8] | buf[start + 9] << 8)
    elif major == 2 and end - start >= 12:
        head = 12 + int.from_bytes(buf[start + 8 : start + 12], "little")
    else:
        return f"unsupported .npy version {major}.{buf[start + 7]}"
    if start + head > end:
        return "header longer than the payload"
    raw = bytes(buf[start : start + head])
    info = _HEADER_CACHE.get(raw)
    if info is None:
        info = _parse_header(raw, major)
        if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[raw] = info
    if isinstance(info, str):
        return info
    dtype, shape, fortran, nbytes = info
    if head + nbytes != end - start:
        return f"{end - start - head} data bytes for shape {shape} {dtype} ({nbytes} expected)"
    return dtype, shape, fortran, start + head


def _parse_header(raw: bytes, major: int) -> tuple[np.dtype, tuple[int, ...], bool, int] | str:
    """numpy's own header parser (literal_eval, never unpickling) plus the cache's dtype rules."""
    fp = io.BytesIO(raw[8:])
    try:
        read = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
        shape, fortran, dtype = read(fp)
    except Exception as e:  # noqa: BLE001 - a damaged or crafted header also raises tokenize.TokenError,
        # SyntaxError or MemoryError, which must not escape verify or plain reads
        return f"{type(e).__name__}: {e}"
    if dtype.hasobject:
        return "object arrays are never loaded: they would be unpickled"
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        return f"refusing .npy with dtype {dtype}"
    if any(d < 0 for d in shape):
        return f"negative shape {shape}"
    # what numpy could not make (65 dimensions, or no elements of 2**70 columns); a non-empty array of
    # impossible size fails the payload size check instead
    if len(shape) > 32 or (0 in shape and any(d > 2**40 for d in shape)):
        return f"refusing .npy with shape {shape if len(shape) <= 8 else f'of {len(shape)} dimensions'}"
    return dtype, shape, fortran, math.prod(shape) * dtype.itemsize


def npy_view(buf, start: int, end: int, where: str) -> np.ndarray:
    """The .npy payload buf[start:end] as an array viewing `buf` (writable when `buf` is a bytearray)."""
    info = npy_header(buf, start, end)
    if isinstance(info, str):
        if info.startswith("refusing"):
            raise CacheError(f"{where}: {info}")
        raise CacheError(f"{where}: not a plain .npy array ({info})")
    dtype, shape, fortran, data = info
    if end == data:  # no elements: nothing to view
        return np.empty(shape, dtype, order="F" if fortran else "C")
    return np.ndarray(shape, dtype, buf, data, order="F" if fortran else "C")


def load_npy(data: bytes, where: str) -> np.ndarray:
    """Decode .npy bytes with pickling disabled; object or structured dtypes are refused. The array
    owns a writable copy of the data (as np.load's would)."""
    return npy_view(bytearray(data), 0, len(data), where)
