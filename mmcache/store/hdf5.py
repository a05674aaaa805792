"""Reading HDF5 shards: feats[T_total, D], ts[T_total, 2], offsets[N+1], keys[N] (ragged concat, no
vlen), as `hdf5_writer.H5ShardWriter` writes them. Whole files (`read_h5`) and random access by key
(`H5Shard`); readers open files lazily in their own process."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError
from . import mapped
from .arrays import ALLOWED_KINDS
from .keys import KEY_RE

_ERRORS = (OSError, KeyError, UnicodeDecodeError, AttributeError, TypeError, ValueError, RuntimeError)
# AttributeError/TypeError/ValueError: a crafted file with e.g. integer keys or a group named feats
# escaped as a foreign exception from verify and plain reads


def _unreadable(path, e: Exception) -> CacheError:
    return CacheError(f"{path}: not a readable mmcache HDF5 shard ({e})")


def _layout(f: h5py.File, path, size: int | None = None) -> tuple[h5py.Dataset, h5py.Dataset, np.ndarray, list[str]]:
    """feats, ts, offsets and keys of an open shard, checked: plain dtypes, offsets that cover feats
    in order, one key per sample, keys that are hex digests. `size`: the file's, when not on disk."""
    feats, ts = _own_dataset(f, "feats", path), _own_dataset(f, "ts", path)
    file_size = size if size is not None else os.fstat(f.id.get_vfd_handle()).st_size if f.driver == "sec2" else None
    for ds in (feats, ts, _own_dataset(f, "offsets", path), _own_dataset(f, "keys", path)):
        _check_stored(ds, file_size, path)
    if f["keys"].dtype.kind != "S" or f["offsets"].dtype.kind not in "iu":  # vlen keys: bytes on a heap
        raise CacheError(f"{path}: malformed HDF5 shard (keys {f['keys'].dtype}, offsets {f['offsets'].dtype})")
    offsets = np.asarray(f["offsets"][()], np.int64)
    keys = [k.decode("ascii") for k in f["keys"][()]]
    if (
        feats.dtype.kind not in ALLOWED_KINDS
        or ts.dtype.kind not in ALLOWED_KINDS
        or feats.ndim != 2
        or offsets.ndim != 1
        or len(offsets) != len(keys) + 1
    ):
        raise CacheError(
            f"{path}: malformed HDF5 shard (dtype {feats.dtype}, {len(offsets)} offsets for {len(keys)} keys)"
        )
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(feats) or len(ts) != len(feats):
        raise CacheError(f"{path}: offsets do not cover feats ({offsets[-1]} vs {len(feats)} rows)")
    for key in keys:
        if not KEY_RE.fullmatch(key):
            raise CacheError(f"{path}: bad key {key!r}")
    return feats, ts, offsets, keys


_LAYOUTS = {h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked", h5py.h5d.COMPACT: "compact"}
# deflate, the strongest filter h5py ships, expands at most ~1032x: a filtered dataset declaring more
# than this many bytes per stored byte cannot hold real data
MAX_EXPANSION = 1100


def _own_dataset(f: h5py.File, name: str, path) -> h5py.Dataset:
    """Dataset `name` of the file's root group, whose bytes are stored in this file: a hard link to a
    dataset with contiguous, chunked or compact storage, and no external raw storage. Soft and
    external links, virtual datasets (whose rows come from other files) and external storage (raw
    bytes in any file named, e.g. /etc/passwd) would make verified bytes and read bytes differ."""
    link = f.get(name, getlink=True)
    if link is None:
        raise CacheError(f"{path}: malformed HDF5 shard (no dataset {name!r})")
    if not isinstance(link, h5py.HardLink):
        raise CacheError(f"{path}: {name!r} is a {type(link).__name__}, not a dataset stored in the file: refused")
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise CacheError(f"{path}: malformed HDF5 shard ({name!r} is not a dataset)")
    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if layout not in _LAYOUTS:
        what = "a virtual dataset" if layout == h5py.h5d.VIRTUAL else f"storage layout {layout}"
        raise CacheError(f"{path}: {name!r} is {what}, whose bytes live outside the file: refused")
    if plist.get_external_count():
        raise CacheError(f"{path}: {name!r} has external raw storage (bytes read from other files): refused")
    return ds


def _check_stored(ds: h5py.Dataset, file_size: int | None, path) -> None:
    """Refuse a dataset that declares more bytes than it stores, before anything is read (reading it
    would allocate the declared size: 10^9 rows in a 4 KB file). Unfiltered, a dataset stores every
    byte it declares (an unwritten chunk would read as fill values: refused too); filtered, at most
    MAX_EXPANSION bytes per stored byte. Stored bytes cannot exceed the file."""
    declared = math.prod(ds.shape) * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if file_size is not None and stored > file_size:
        raise CacheError(f"{path}: {ds.name!r} claims {stored} stored bytes in a {file_size}-byte file")
    limit = stored * MAX_EXPANSION if ds.id.get_create_plist().get_nfilters() else stored
    if declared > limit:
        raise CacheError(
            f"{path}: {ds.name!r} declares {ds.shape} {ds.dtype} ({declared} bytes) but stores {stored}: refused"
        )


def read_h5(path: Path | str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every (key, feats, ts) of a shard in file order: each dataset is read whole, once, and the
    samples are views of it. A dataset whose rows lie in one run of the file (uncompressed, its chunks
    in order back to back: what H5ShardWriter writes) is a view of the mapped file instead of a copy
    (see mapped.py; MMCACHE_MAP_SHARDS=0 reads it with h5py)."""
    runs, arrays, shapes, offsets, keys = _whole(path, path, None, mapped.enabled())
    return _samples(
        mapped.map_file(path) if any(at is not None for at in runs) else None, path, runs, arrays, shapes, offsets, keys
    )


def parse_h5(buf, label: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`read_h5` of a whole shard held in memory (a remote file fetched and checked): no temp file; the
    rows are views of `buf` where they lie in one run, as read_h5's are of the mapped file."""
    runs, arrays, shapes, offsets, keys = _whole(_Buffer(buf), label, len(buf), True)
    return _samples(buf, label, runs, arrays, shapes, offsets, keys)


def _whole(source, label, size: int | None, views: bool):
    """The checked layout of a whole shard (a path or a file object): where feats and ts lie in the
    file when `views` may use that (else None: read here), their shapes, offsets and keys."""
    try:
        with h5py.File(source, "r") as f:
            feats, ts, offsets, keys = _layout(f, label, size)
            runs = (_run(feats), _run(ts)) if views else (None, None)
            arrays = [ds[()] if at is None else None for ds, at in zip((feats, ts), runs, strict=True)]
            shapes = [(ds.shape, ds.dtype) for ds in (feats, ts)]
    except _ERRORS as e:
        raise _unreadable(label, e) from None
    return runs, arrays, shapes, offsets, keys


def _samples(buf, path, runs, arrays, shapes, offsets, keys) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per-sample views of the whole feats and ts (taken from `buf` where `runs` says they lie there)."""
    if buf is not None:
        for i, at in enumerate(runs):
            if at is not None:
                (shape, dtype), end = shapes[i], at + math.prod(shapes[i][0]) * shapes[i][1].itemsize
                if end > len(buf):
                    raise CacheError(f"{path}: truncated HDF5 shard (data up to byte {end}, {len(buf)} bytes)")
                arrays[i] = np.ndarray(shape, dtype, buf, at)
    all_feats, all_ts = arrays
    bounds = offsets.tolist()
    return [(k, all_feats[a:b], all_ts[a:b]) for k, a, b in zip(keys, bounds, bounds[1:], strict=False)]


class _Buffer(io.RawIOBase):
    """A read-only file over bytes in memory, for h5py (no copy, unlike io.BytesIO of a bytearray)."""

    def __init__(self, buf):
        self.view, self.pos = memoryview(buf).cast("B"), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = max(0, min(len(b), len(self.view) - self.pos))
        b[:n] = self.view[self.pos : self.pos + n]
        self.pos += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, (0, self.pos, len(self.view))[whence] + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos


def _run(ds: h5py.Dataset) -> int | None:
    """Byte offset in the file of a 2-d dataset's rows when they lie there in order, back to back and
    unfiltered; None otherwise (compressed, chunks in another order or not all written, other shapes)."""
    if ds.ndim != 2 or ds.shape[0] == 0 or ds.id.get_create_plist().get_nfilters():
        return None
    row = ds.shape[1] * ds.dtype.itemsize
    if ds.chunks is None:  # contiguous layout
        return ds.id.get_offset()
    rows = ds.chunks[0]
    if ds.chunks[1] != ds.shape[1] or ds.id.get_num_chunks() != -(-ds.shape[0] // rows):
        return None
    first = ds.id.get_chunk_info(0)
    for i in range(ds.id.get_num_chunks()):
        info = ds.id.get_chunk_info(i)
        if info.chunk_offset != (i * rows, 0) or info.byte_offset != first.byte_offset + i * rows * row:
            return None
        if info.size != rows * row or info.filter_mask:
            return None
    return first.byte_offset


def iter_h5(path: Path | str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (key, feats, ts) in file order, checking offsets and keys (the shard is read first)."""
    yield from read_h5(path)


class H5Shard:
    """One shard file kept open for random access by key (`read(key)` reads only that sample's rows)."""

    def __init__(self, path: Path | str):
        self.path = path
        try:
            self.f = h5py.File(path, "r")
        except _ERRORS as e:
            raise _unreadable(path, e) from None
        try:
            self.feats, self.ts, offsets, keys = _layout(self.f, path)
        except _ERRORS as e:
            self.f.close()
            raise _unreadable(path, e) from None
        except CacheError:
            self.f.close()
            raise
        bounds = offsets.tolist()
        self.index = {k: (a, b) for k, a, b in zip(keys, bounds, bounds[1:], strict=False)}
        if len(self.index) != len(keys):
            self.f.close()
            raise CacheError(f"{path}: a key appears twice")

    def __len__(self) -> int:
        return len(self.index)

    def read(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.index[key]
        try:
            return self.feats[a:b], self.ts[a:b]
        except _ERRORS as e:
            raise _unreadable(self.path, e) from None

    def close(self) -> None:
        self.f.close()
