"""Reading WebDataset tar shards: members <key>.npy (T x D) and <key>.ts.npy (T x 2, seconds), as
`tar_writer.TarShardWriter` writes them. Whole files (`read_tar`, `parse_tar`), streams (`iter_tar`
with a fileobj) and random access by key (`TarShard`)."""

from __future__ import annotations

import ctypes
import math
import os
import re
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .arrays import MAGIC, npy_header
from .mapped import map_file

# -- reading --------------------------------------------------------------------------------------
#
# The reader parses the 512-byte headers itself instead of using tarfile: a whole local shard is read
# with one system call and every .npy payload becomes a view of that buffer. It enforces what
# tarfile + np.load did and more: a valid header checksum, only regular files named <hex key>.npy or
# <hex key>.ts.npy (no links, directories, paths, pax or GNU extension headers), plain numeric .npy
# payloads of exactly their header's size, complete pairs, and an end-of-archive block, so a file
# cut anywhere (even at a member boundary, which tarfile reads as a clean end) is an error.

BLOCK = 512
_ZERO = bytes(BLOCK)
_MEMBER_B = re.compile(rb"([0-9a-f]{8,64})\.(npy|ts\.npy)")
_REGULAR = (ord("0"), 0, ord("7"))  # typeflags of a regular file (REGTYPE, AREGTYPE, CONTTYPE)
_CHK_WEIGHTS = 8 ** np.arange(5, -1, -1, dtype=np.int64)

Sample = tuple[str, np.ndarray, np.ndarray]  # key, feats (T x D), ts (T x 2)


def _octal(field: bytes) -> int | None:
    """A tar number field as tarfile reads it (octal digits up to the first NUL, spaces around); None
    when it is not one (base-256 and signs are not accepted: no member of a cache needs them)."""
    s = field.split(b"\0", 1)[0].strip()
    if not s:
        return 0
    if not s.isdigit() or b"8" in s or b"9" in s:
        return None
    return int(s, 8)


def _checksums(hdr: bytes) -> tuple[int, int]:
    """Unsigned and signed header sums with the checksum field counted as spaces (as tarfile)."""
    return 256 + sum(struct.unpack_from("148B8x356B", hdr)), 256 + sum(struct.unpack_from("148b8x356b", hdr))


def _corrupt(label: str, what: str) -> CacheError:
    return CacheError(f"{label}: truncated or corrupt tar ({what})")


def _header(hdr: bytes, label: str, offset: int) -> tuple[bytes, bytes, int] | None:
    """Check one header block: (key, extension, size) of a member, None for an end-of-archive block.
    The reference for every check; the whole-buffer parser does the same checks in bulk."""
    if len(hdr) < BLOCK:
        what = f"header cut at byte {offset + len(hdr)}" if hdr else f"no end-of-archive block at byte {offset}"
        raise _corrupt(label, what)
    if hdr == _ZERO:
        return None
    chksum = _octal(hdr[148:156])
    if chksum is None or chksum not in _checksums(hdr):
        raise _corrupt(label, f"bad header checksum at byte {offset}")
    name = hdr[:100].split(b"\0", 1)[0]
    prefix = hdr[345:500].split(b"\0", 1)[0]
    if prefix:  # a USTAR long name: always a path
        name = prefix + b"/" + name
    m = _MEMBER_B.fullmatch(name)
    if m is None or hdr[156] not in _REGULAR:
        raise CacheError(f"{label}: unexpected member {name.decode('utf-8', 'backslashreplace')!r}")
    size = _octal(hdr[124:136])
    if size is None:
        raise _corrupt(label, f"bad size field at byte {offset}")
    return m[1], m[2], size


def _array(buf, start: int, end: int, label: str, name: bytes) -> np.ndarray:
    """The .npy payload buf[start:end] as an array viewing `buf`; errors name the member."""
    info = npy_header(buf, start, end)
    if type(info) is str:
        where = f"{label}:{name.decode('utf-8', 'backslashreplace')}"
        if info.startswith("refusing"):
            raise CacheError(f"{where}: {info}")
        raise CacheError(f"{where}: not a plain .npy array ({info})")
    dtype, shape, fortran, data = info
    order = "F" if fortran else "C"
    return np.empty(shape, dtype, order=order) if data == end else np.ndarray(shape, dtype, buf, data, order=order)


class _Pairs:
    """Pairs <key>.npy with <key>.ts.npy in whatever order they come; a member seen twice, or a
    sample seen twice, is an error."""

    def __init__(self, label: str):
        self.label, self.pending, self.done = label, {}, set()

    def add(self, key: str, ts: bool, arr: np.ndarray) -> Sample | None:
        other = self.pending.pop(key, None)
        if other is None and key not in self.done:
            self.pending[key] = (ts, arr)
            return None
        if other is None or other[0] == ts:
            raise CacheError(f"{self.label}: member {key}.{'ts.npy' if ts else 'npy'} appears twice")
        self.done.add(key)
        return (key, other[1], arr) if ts else (key, arr, other[1])

    def finish(self) -> None:
        if self.pending:
            raise CacheError(f"{self.label}: sample {next(iter(self.pending))} lacks its pair member")


def parse_tar(buf, label: str) -> list[Sample]:
    """Every sample of a whole tar shard held in `buf` (bytes, a bytearray or a mapped file), in file
    order; the arrays are views of `buf` (writable when it is). Every header and payload is checked
    before anything is returned; an error names `label`.

    Two passes: a walk that reads only each header's size field, to find the next header (the one
    step that cannot be done out of order), then every check of every header and .npy preamble at
    once in numpy. Members whose headers or preambles differ from the shard's common form go one by
    one through the reference checks (`_header`, `npy_header`), which raise or accept them."""
    mv = memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    n = mv.nbytes
    if n == 0:
        raise CacheError(f"{label}: not a readable tar (empty file)")
    u8 = np.frombuffer(mv, np.uint8)
    # the walk slices headers out as bytes: what `buf` itself does when it is bytes, a bytearray or a mapping
    as_bytes = isinstance(buf, (bytes, bytearray)) or (isinstance(buf, ctypes.Array) and buf._type_ is ctypes.c_char)
    offs, sizes = _walk(buf if as_bytes else mv.tobytes(), u8, n, label)
    if not offs:
        return []
    at = np.asarray(offs, np.int64)
    hdr = u8[: (n // BLOCK) * BLOCK].reshape(-1, BLOCK)[at // BLOCK]
    keys, is_ts = _names(hdr, offs, sizes, label)
    arrays = _payloads(mv, u8, at + BLOCK, np.asarray(sizes, np.int64), is_ts, keys, label)
    if not is_ts[0::2].any() and is_ts[1::2].all() and len(keys) % 2 == 0 and keys[0::2] == keys[1::2]:
        if len(set(keys[0::2])) == len(keys) // 2:  # <key>.npy then <key>.ts.npy, as written, each key once
            return list(zip(keys[0::2], arrays[0::2], arrays[1::2], strict=True))
    return _pair(keys, is_ts.tolist(), arrays, label)


def _walk(raw, u8: np.ndarray, n: int, label: str) -> tuple[list[int], list[int]]:
    """Offsets and sizes of every member header, from their size fields alone, up to the
    end-of-archive block; a cut file or a member running past the end is an error here.

    Header by header, except where the shard repeats itself: after two pairs of members with the same
    sizes (clips of one length), the rest of that run is predicted at once and confirmed in bulk by
    comparing every predicted header's size field with the last pair's. What the prediction accepts
    is exactly what the header-by-header walk would find; everything else about each header is
    checked afterwards, as for any other."""
    offs: list[int] = []
    sizes: list[int] = []
    add_off, add_size = offs.append, sizes.append
    off = 0
    try_at, backoff = 4, 4  # predict when this many members are known; after a short run, wait longer
    while True:
        if off + BLOCK > n:
            _header(bytes(raw[off:n]), label, off)  # raises: cut header, or no end-of-archive block
        h = raw[off : off + 136]
        if not h[0]:  # no name: the end-of-archive block, or a header the checks refuse
            if raw[off : off + BLOCK] == _ZERO:
                break
            _header(bytes(raw[off : off + BLOCK]), label, off)
            raise _corrupt(label, f"unnamed member at byte {off}")  # not reached: _header refuses it
        try:  # tarfile's "%011o\0"; int() also takes e.g. "_" or spaces, which the header checks refuse
            size = -1 if h[135] else int(h[124:135], 8)  # 12 digits and no NUL: the reference reads it
        except ValueError:
            size = -1
        if size < 0:
            size = _header(bytes(raw[off : off + BLOCK]), label, off)[2]  # raises, or a valid odd form
        start = off + BLOCK
        if start + size > n:
            raise _corrupt(label, f"the member at byte {off} ends past the end of the file ({n} bytes)")
        add_off(off)
        add_size(size)
        off = start + ((size + BLOCK - 1) & -BLOCK)
        if len(offs) >= try_at and sizes[-1] == sizes[-3] and sizes[-2] == sizes[-4]:
            got = _predict(u8, n, off, offs[-2], offs[-1], sizes[-2], sizes[-1])
            if got:
                offs.extend(got)
                sizes.extend([sizes[-2], sizes[-1]] * (len(got) // 2))
                off = got[-1] + BLOCK + ((sizes[-1] + BLOCK - 1) & -BLOCK)  # the header after the last pair
            backoff = 4 if len(got) >= 16 else backoff * 2
            try_at = len(offs) + backoff
    return offs, sizes


def _predict(u8: np.ndarray, n: int, off: int, a: int, b: int, size_a: int, size_b: int) -> list[int]:
    """Offsets of the pairs from `off` on that repeat the pair of headers at `a` and `b` (a name, and
    the same size fields byte for byte): the run up to the first header that differs, compared in
    chunks that double while the run lasts (a run that ends soon costs little)."""
    step_a = BLOCK + ((size_a + BLOCK - 1) & -BLOCK)
    period = step_a + BLOCK + ((size_b + BLOCK - 1) & -BLOCK)
    count = (n - off) // period  # pairs that fit before the end of the file
    ref = np.stack([u8[a + 124 : a + 136], u8[b + 124 : b + 136]])
    runs: list[np.ndarray] = []
    done, chunk = 0, 64
    while done < count:
        m = min(count - done, chunk)
        first = off + period * np.arange(done, done + m)
        at = np.stack([first, first + step_a], 1).reshape(-1)
        same = (u8[at[:, None] + _SIZE_FIELD].reshape(m, 2, 12) == ref).all(2).reshape(-1) & (u8[at] != 0)
        if not same.all():
            stop = int(same.argmin())
            runs.append(at[: stop - stop % 2])
            break
        runs.append(at)
        done, chunk = done + m, chunk * 2
    return np.concatenate(runs).tolist() if runs else []


_SIZE_FIELD = np.arange(124, 136)
_U64 = np.dtype("<u8")
_TS_NAME = np.frombuffer(b".ts.npy\0", np.uint8)
_NPY_NAME = np.frombuffer(b".npy\0", np.uint8)
_TYPEFLAGS = np.zeros(256, bool)
_TYPEFLAGS[list(_REGULAR)] = True
_NPY_V1 = int.from_bytes(MAGIC + b"\x01", "little")  # magic and major version 1, the first 7 bytes of a word


def _is_hex(chars: np.ndarray) -> np.ndarray:
    return (((chars >= 48) & (chars <= 57)) | ((chars >= 97) & (chars <= 102))).all(1)


def _is_octal(digits: np.ndarray) -> np.ndarray:
    return ((digits >= 48) & (digits <= 55)).all(1)


def _names(hdr: np.ndarray, offs: list[int], sizes: list[int], label: str) -> tuple[list[str], np.ndarray]:
    """Keys, and which members are <key>.ts.npy, with every header checked as `_header` checks it
    (checksum, size field, name, type, no path prefix): in bulk for headers in tarfile's canonical
    form whose keys have the first member's length. Any other header (another tar writer's, or a
    damaged one) goes through `_header` on its own, which raises or accepts it."""
    m = len(hdr)
    keys: list[str] = [""] * m
    ok = np.zeros(m, bool)
    is_ts = np.zeros(m, bool)
    nul = hdr[0, :100] == 0
    end = int(nul.argmax()) if nul.any() else 0  # the first member's name length
    key_len = end - (7 if hdr[0, max(end - 7, 0) : end].tobytes() == b".ts.npy" else 4)
    if 8 <= key_len <= 64:
        suffix = hdr[:, key_len : key_len + 8]
        is_ts = (suffix == _TS_NAME).all(1)
        chk = hdr[:, 148:154]
        total = hdr.sum(1, dtype=np.uint32).astype(np.int64) - hdr[:, 148:156].sum(1, dtype=np.int64) + 8 * 32
        ok = (
            (is_ts | (suffix[:, :5] == _NPY_NAME).all(1))  # <key>.ts.npy or <key>.npy, then a NUL
            & _is_hex(hdr[:, :key_len])
            & _TYPEFLAGS[hdr[:, 156]]
            & (hdr[:, 345] == 0)  # no path prefix
            & _is_octal(hdr[:, 124:135])
            & (hdr[:, 135] == 0)
            & _is_octal(chk)
            & (hdr[:, 154] == 0)
            & (hdr[:, 155] == 32)
            & ((chk.astype(np.int64) - 48) @ _CHK_WEIGHTS == total)
        )
        is_ts &= ok
        if ok.any():
            rows = np.flatnonzero(ok)
            found = [k.decode("ascii") for k in np.ascontiguousarray(hdr[rows, :key_len]).view(f"S{key_len}").ravel()]
            if len(rows) == m:
                keys = found
            else:
                for i, k in zip(rows.tolist(), found, strict=True):
                    keys[i] = k
    for i in np.flatnonzero(~ok).tolist():
        head = _header(hdr[i].tobytes(), label, offs[i])
        if head is None:  # the walk stops at an end-of-archive block: not reached
            raise _corrupt(label, f"end-of-archive block inside the archive at byte {offs[i]}")
        key, ext, size = head
        if size != sizes[i]:
            raise _corrupt(label, f"bad size field at byte {offs[i]}")
        keys[i], is_ts[i] = key.decode("ascii"), ext == b"ts.npy"
    return keys, is_ts


def _payloads(mv, u8: np.ndarray, start: np.ndarray, size: np.ndarray, is_ts: np.ndarray, keys, label) -> list:
    """Every member's .npy payload as an array viewing `mv`. Members of one extension and size whose
    .npy headers are byte for byte the first such member's (a shard repeats them) share its parsed
    header; any other goes through `npy_header` on its own."""
    words = u8[: len(u8) // 8 * 8].view(_U64)  # payloads start on 512-byte blocks
    at = start // 8
    first_two = words[np.minimum(at[:, None] + np.arange(2), len(words) - 1)]
    v1 = (size >= 16) & ((first_two[:, 0] & 0xFFFFFFFFFFFFFF) == _NPY_V1)
    head_len = np.where(v1, 10 + (first_two[:, 1] & 0xFFFF).astype(np.int64), 0)
    _, first, inverse = np.unique((size << 1) | is_ts, return_index=True, return_inverse=True)
    by_group = np.argsort(inverse.reshape(-1), kind="stable")  # members of each group, in file order
    bounds = np.cumsum(np.bincount(inverse.reshape(-1), minlength=len(first))).tolist()
    out: list = [None] * len(start)
    starts, ends = start.tolist(), (start + size).tolist()
    for g, i in enumerate(first.tolist()):
        members = by_group[(bounds[g - 1] if g else 0) : bounds[g]]
        hl = int(head_len[i])
        info = npy_header(mv, starts[i], ends[i]) if 0 < hl < size[i] and hl % 8 == 0 else None
        same = members[:0]
        if info is not None and type(info) is not str and not info[2]:  # else: one by one
            span = at[members, None] + np.arange(hl // 8)
            same = members[(words[span] == words[at[i] : at[i] + hl // 8]).all(1)]
            _views(mv, info[0], info[1], start[same] + hl, same.tolist(), out)
        if len(same) < len(members):
            for j in np.setdiff1d(members, same).tolist():
                name = (keys[j] + (".ts.npy" if is_ts[j] else ".npy")).encode()
                out[j] = _array(mv, starts[j], ends[j], label, name)
    return out


def _views(mv, dtype: np.dtype, shape: tuple, data: np.ndarray, where: list[int], out: list) -> None:
    """out[where[i]] = the C-order array (shape, dtype) at byte data[i] of `mv`. Evenly spaced arrays
    (samples of one length written in a row) are the rows of one strided view, which is cheaper than
    making each one."""
    if len(data) > 2 and 0 < len(shape) < 32:  # rows of a 1-d view would be scalars; numpy caps dimensions
        gaps = np.diff(data)
        if (gaps == gaps[0]).all():
            strides = tuple(math.prod(shape[k + 1 :]) * dtype.itemsize for k in range(len(shape)))
            rows = np.ndarray((len(data), *shape), dtype, mv, int(data[0]), (int(gaps[0]), *strides))
            for j, arr in zip(where, rows, strict=True):
                out[j] = arr
            return
    for j, at in zip(where, data.tolist(), strict=True):
        out[j] = np.ndarray(shape, dtype, mv, at)


def _pair(keys: list[str], is_ts: list[bool], arrays: list, label: str) -> list[Sample]:
    """Samples from members in any order: each <key>.npy with its <key>.ts.npy."""
    pairs = _Pairs(label)
    out = [s for s in map(pairs.add, keys, is_ts, arrays) if s is not None]
    pairs.finish()
    return out


def read_tar(path: Path | str) -> list[Sample]:
    """Every sample of a local tar shard (mapped, or read in one call; then `parse_tar`)."""
    return parse_tar(map_file(path), str(path))


def _read_exact(f, n: int, label: str) -> bytes:
    chunks, got = [], 0
    while got < n:
        try:
            b = f.read(min(n - got, 1 << 20))  # a size field claiming 8 GiB allocates only what arrives
        except (OSError, EOFError) as e:
            raise CacheError(f"{label}: truncated or corrupt tar ({e})") from None
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def _stream_tar(fileobj, label: str) -> Iterator[Sample]:
    """Samples of a tar read member by member from a stream (remote shards: nothing is seeked, and
    only one member is held at a time besides the samples the caller keeps)."""
    pairs = _Pairs(label)
    off = 0
    while True:
        hdr = _read_exact(fileobj, BLOCK, label)
        if off == 0 and not hdr:
            raise CacheError(f"{label}: not a readable tar (empty file)")
        head = _header(hdr, label, off)
        if head is None:
            break
        key, ext, size = head
        padded = (size + BLOCK - 1) & -BLOCK
        data = bytearray(_read_exact(fileobj, padded, label))
        if len(data) < padded:
            end = off + BLOCK + len(data)
            raise _corrupt(label, f"the member at byte {off} ends past the end of the file ({end} bytes)")
        off += BLOCK + padded
        sample = pairs.add(key.decode("ascii"), ext == b"ts.npy", _array(data, 0, size, label, key + b"." + ext))
        if sample is not None:
            yield sample
    pairs.finish()


def iter_tar(path: Path | str, fileobj=None) -> Iterator[Sample]:
    """Yield (key, feats, ts) in file order; any member that is not <hex key>.npy/.ts.npy, or a
    link, directory or path, is an error (nothing can escape the cache directory). A local file is
    read whole and checked before the first sample; a `fileobj` (a remote stream) member by member."""
    if fileobj is not None:
        yield from _stream_tar(fileobj, str(path))
        return
    yield from read_tar(path)


def tar_index(f, label: str) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """key -> ((offset, size) of <key>.npy's payload, (offset, size) of <key>.ts.npy's) of an open
    shard file, from its headers alone (one small read per member, each header checked as in a full
    read): random access without reading the payloads. A member that would run past the end of the
    file is an error here, before any payload is read or allocated."""
    found: dict[bytes, dict[bytes, tuple[int, int]]] = {}
    total = os.fstat(f.fileno()).st_size
    off = 0
    while True:
        f.seek(off)
        hdr = f.read(BLOCK)
        if off == 0 and not hdr:
            raise CacheError(f"{label}: not a readable tar (empty file)")
        head = _header(hdr, label, off)
        if head is None:
            break
        key, ext, size = head
        if off + BLOCK + size > total:
            raise _corrupt(label, f"the member at byte {off} ends past the end of the file ({total} bytes)")
        members = found.setdefault(key, {})
        if ext in members:
            raise CacheError(f"{label}: member {key.decode()}.{ext.decode()} appears twice")
        members[ext] = (off + BLOCK, size)
        off += BLOCK + ((size + BLOCK - 1) & -BLOCK)
    out = {}
    for key, members in found.items():
        if len(members) != 2:
            raise CacheError(f"{label}: sample {key.decode()} lacks its pair member")
        out[key.decode("ascii")] = (members[b"npy"], members[b"ts.npy"])
    return out


class TarShard:
    """One shard file kept open for random access by key: its headers are indexed once, then
    `read(key)` reads only that sample's two members."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        try:
            self.f = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise CacheError(f"{path}: cannot read ({e.strerror or e})") from None
        if not stat.S_ISREG(os.fstat(self.f.fileno()).st_mode):
            self.f.close()
            raise CacheError(f"{path}: not a regular file: refused")
        try:
            self.index = tar_index(self.f, self.path)
        except BaseException:
            self.f.close()
            raise

    def __len__(self) -> int:
        return len(self.index)

    def read(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        (feats_at, feats_size), (ts_at, ts_size) = self.index[key]
        return (
            self._member(feats_at, feats_size, key.encode() + b".npy"),
            self._member(ts_at, ts_size, key.encode() + b".ts.npy"),
        )

    def _member(self, offset: int, size: int, name: bytes) -> np.ndarray:
        data = bytearray(size)
        try:
            self.f.seek(offset)
            got = self.f.readinto(data)
        except OSError as e:
            raise CacheError(f"{self.path}: cannot read ({e.strerror or e})") from None
        if got != size:
            raise _corrupt(self.path, f"the member at byte {offset - BLOCK} ends past the end of the file")
        return _array(data, 0, size, self.path, name)

    def close(self) -> None:
        self.f.close()
