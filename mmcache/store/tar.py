"""WebDataset tar shards: members <key>.npy (T x D) and <key>.ts.npy (T x 2, seconds).

Headers are fixed (mtime 0, uid/gid 0, no user names, mode 0644) so that the same features give
byte-identical shards; stock `webdataset.WebDataset(url)` reads them.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CacheError
from .arrays import load_npy, npy_bytes
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


def iter_tar(path: Path | str, fileobj=None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (key, feats, ts) in file order; any member that is not <hex key>.npy/.ts.npy, or a
    link, directory or path, is an error (nothing can escape the cache directory)."""
    try:
        tar = tarfile.open(path if fileobj is None else None, "r|", fileobj=fileobj)
    except (tarfile.TarError, OSError) as e:
        raise CacheError(f"{path}: not a readable tar ({e})") from None
    pending: dict[str, tuple[str, np.ndarray]] = {}
    try:
        for member in tar:
            m = MEMBER_RE.match(member.name)
            if not member.isfile() or m is None:
                raise CacheError(f"{path}: unexpected member {member.name!r}")
            data = tar.extractfile(member).read()
            arr = load_npy(data, f"{path}:{member.name}")
            key, ext = m.groups()
            other = pending.pop(key, None)
            if other is None:
                pending[key] = (ext, arr)
                continue
            feats, ts = (arr, other[1]) if ext == "npy" else (other[1], arr)
            yield key, feats, ts
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CacheError(f"{path}: truncated or corrupt tar ({e})") from None
    finally:
        tar.close()
    if pending:
        raise CacheError(f"{path}: sample {next(iter(pending))} lacks its pair member")
