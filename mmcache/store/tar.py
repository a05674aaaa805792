"""WebDataset tar shards: members <key>.npy (T x D) and <key>.ts.npy (T x 2, seconds).

Headers are fixed (mtime 0, uid/gid 0, no user names, mode 0644) so that the same features give
byte-identical shards; stock `webdataset.WebDataset(url)` reads them.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .arrays import npy_bytes, npy_header
from .atomic import publish, temp_path

KEY_RE = re.compile(r"^[0-9a-f]{8,64}$")
MEMBER_RE = re.compile(r"^([0-9a-f]{8,64})\.(npy|ts\.npy)$")


class TarShardWriter:
    """Streams samples into a temp tar; `close()` publishes it atomically."""

    suffix = ".tar"

    def __init__(self, path: Path, dim: int, dtype: str = "float16"):
        self.path, self.dim = path, dim
        self.tmp = temp_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        self.keys: list[str] = []
        self.steps = 0

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))

    def add(self, key: str, feats: np.ndarray, ts: np.ndarray) -> None:
        self._member(f"{key}.npy", npy_bytes(feats))
        self._member(f"{key}.ts.npy", npy_bytes(ts))
        self.keys.append(key)
        self.steps += len(feats)

    def finish(self) -> Path:
        """Complete the temp file without publishing it: the two zero blocks that end a tar, and no
        padding to tarfile's 10 KiB record size (readers do not need it; it costs up to 10 KiB a shard)."""
        if not self.tar.closed:
            self.tar.fileobj.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
            self.tar.closed = True  # tarfile.close() would pad to RECORDSIZE; we close the file ourselves
            self.tar.fileobj.close()
        return self.tmp

    def close(self) -> None:
        publish(self.finish(), self.path)

    def abort(self) -> None:
        self.finish()
        self.tmp.unlink(missing_ok=True)


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
    """Pairs <key>.npy with <key>.ts.npy in whatever order they come."""

    def __init__(self, label: str):
        self.label, self.pending, self.out = label, {}, []

    def add(self, key: bytes, ext: bytes, arr: np.ndarray) -> Sample | None:
        other = self.pending.pop(key, None)
        if other is None:
            self.pending[key] = (ext, arr)
            return None
        if other[0] == ext:
            raise CacheError(f"{self.label}: member {key.decode()}.{ext.decode()} appears twice")
        feats, ts = (arr, other[1]) if ext == b"npy" else (other[1], arr)
        return key.decode("ascii"), feats, ts

    def finish(self) -> None:
        if self.pending:
            raise CacheError(f"{self.label}: sample {next(iter(self.pending)).decode()} lacks its pair member")


def parse_tar(buf: bytes | bytearray, label: str) -> list[Sample]:
    """Every sample of a whole tar shard held in `buf`, in file order; the arrays are views of `buf`
    (writable when it is a bytearray). Every header and payload is checked before anything is
    returned; an error names `label`."""
    n = len(buf)
    if n == 0:
        raise CacheError(f"{label}: not a readable tar (empty file)")
    offs: list[int] = []
    sizes: list[int] = []
    out: list[Sample] = []
    pending: dict[bytes, tuple[bytes, np.ndarray]] = {}  # members whose pair has not come yet
    # per extension, the last member's size field and .npy header: a shard repeats them, so most
    # members are checked by comparing bytes instead of parsing
    memo: dict[bytes, tuple[bytes, int, bytes, np.dtype, tuple, int]] = {}
    match = _MEMBER_B.fullmatch
    feats_key = feats = None  # the <key>.npy just read, whose <key>.ts.npy normally comes next
    ts_name = b""
    off = 0
    while True:
        if off + BLOCK > n:
            _header(bytes(buf[off:n]), label, off)  # raises: cut header, or no end-of-archive block
        if not buf[off]:  # no name: the end-of-archive block, or a header the checks refuse
            if buf[off : off + BLOCK] == _ZERO:
                break
            _header(bytes(buf[off : off + BLOCK]), label, off)
            raise _corrupt(label, f"unnamed member at byte {off}")  # not reached: _header refuses it
        if feats_key is not None and buf.startswith(ts_name, off):  # name is exactly <that key>.ts.npy
            key, ext = feats_key, b"ts.npy"
        else:
            nul = buf.find(0, off, off + 100)
            m = match(buf, off, nul if nul >= 0 else off + 100)
            if m is None:
                _header(bytes(buf[off : off + BLOCK]), label, off)  # names the problem
                raise _corrupt(label, f"unreadable header at byte {off}")  # not reached
            key, ext = m.group(1, 2)
        if buf[off + 156] not in _REGULAR or buf[off + 345]:  # not a regular file, or a USTAR path prefix
            _header(bytes(buf[off : off + BLOCK]), label, off)
            raise _corrupt(label, f"unreadable header at byte {off}")  # not reached
        start = off + BLOCK
        last = memo.get(ext)
        if last is not None and buf.startswith(last[0], off + 124) and buf.startswith(last[2], start):
            size, dtype, shape, head = last[1], last[3], last[4], last[5]
            end = start + size
            if end > n:
                raise _corrupt(label, f"the member at byte {off} ends past the end of the file ({n} bytes)")
            arr = np.ndarray(shape, dtype, buf, start + head)
        else:
            try:  # tarfile's "%011o\0"; int() also takes e.g. signs, which _check_headers refuses
                size = int(buf[off + 124 : off + 135], 8)
            except ValueError:
                size = _octal(bytes(buf[off + 124 : off + 136]))
                if size is None:
                    _header(bytes(buf[off : off + BLOCK]), label, off)
                    raise _corrupt(label, f"bad size field at byte {off}") from None
            end = start + size
            if end > n:
                raise _corrupt(label, f"the member at byte {off} ends past the end of the file ({n} bytes)")
            info = npy_header(buf, start, end)
            if type(info) is str or info[2] or info[3] == end:  # refused, Fortran order, or empty
                arr = _array(buf, start, end, label, key + b"." + ext)
            else:
                dtype, shape, _, data = info
                arr = np.ndarray(shape, dtype, buf, data)
                size_field, npy_head = bytes(buf[off + 124 : off + 136]), bytes(buf[start:data])
                memo[ext] = (size_field, size, npy_head, dtype, shape, data - start)
        if ext == b"npy" and feats_key is None and key not in pending:
            feats_key, feats, ts_name = key, arr, key + b".ts.npy\0"
        elif key == feats_key and ext == b"ts.npy":
            out.append((key.decode(), feats, arr))
            feats_key = feats = None
        else:  # members out of the usual order: pair them by key
            if feats_key is not None:
                pending[feats_key] = (b"npy", feats)
                feats_key = feats = None
            other = pending.pop(key, None)
            if other is None:
                pending[key] = (ext, arr)
            elif other[0] == ext:
                raise CacheError(f"{label}: member {key.decode()}.{ext.decode()} appears twice")
            else:
                out.append((key.decode(), arr, other[1]) if ext == b"npy" else (key.decode(), other[1], arr))
        offs.append(off)
        sizes.append(size)
        off = start + ((size + BLOCK - 1) & -BLOCK)
    if feats_key is not None:
        pending[feats_key] = (b"npy", feats)
    if pending:
        raise CacheError(f"{label}: sample {next(iter(pending)).decode()} lacks its pair member")
    if offs:
        _check_headers(buf, offs, sizes, label)
    return out


def _check_headers(buf, offs: list[int], sizes: list[int], label: str) -> None:
    """Checksums and size fields of every header at once. A header not in tarfile's canonical form
    ("%06o\0 " checksum, "%011o\0" size) or failing the check goes through the reference check,
    which raises, or accepts it (a signed-char checksum, spaces around a number) if it reads the
    same size."""
    n = len(buf)
    blocks = np.frombuffer(buf, np.uint8, (n // BLOCK) * BLOCK).reshape(-1, BLOCK)
    hdr = blocks[np.asarray(offs) // BLOCK]
    stored = hdr[:, 148:154].astype(np.int64) - 48
    size_digits = hdr[:, 124:135]
    total = hdr.sum(1, dtype=np.uint32).astype(np.int64) - hdr[:, 148:156].sum(1, dtype=np.int64) + 8 * 32
    ok = (
        (stored >= 0).all(1)
        & (stored <= 7).all(1)
        & (hdr[:, 154] == 0)
        & (hdr[:, 155] == 32)
        & (stored @ _CHK_WEIGHTS == total)
        & (size_digits >= 48).all(1)
        & (size_digits <= 55).all(1)
        & (hdr[:, 135] == 0)
    )
    for i in np.flatnonzero(~ok).tolist():
        if _header(hdr[i].tobytes(), label, offs[i])[2] != sizes[i]:
            raise _corrupt(label, f"bad size field at byte {offs[i]}")


def read_file(path: Path | str) -> bytearray:
    """A whole file in one read into a bytearray (so arrays viewing it are writable)."""
    try:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            got = 0
            with memoryview(buf) as view:
                while got < len(buf) and (k := f.readinto(view[got:])):
                    got += k
    except OSError as e:
        raise CacheError(f"{path}: cannot read ({e.strerror or e})") from None
    del buf[got:]  # a file that shrank meanwhile reads as cut, which the parser reports
    return buf


def read_tar(path: Path | str) -> list[Sample]:
    """Every sample of a local tar shard (one read, then `parse_tar`)."""
    return parse_tar(read_file(path), str(path))


def _read_exact(f, n: int, label: str) -> bytes:
    chunks, got = [], 0
    while got < n:
        try:
            b = f.read(n - got)
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
        sample = pairs.add(key, ext, _array(data, 0, size, label, key + b"." + ext))
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
    read): random access without reading the payloads."""
    found: dict[bytes, dict[bytes, tuple[int, int]]] = {}
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
