"""Writing WebDataset tar shards: members <key>.npy (T x D) and <key>.ts.npy (T x 2, seconds).

Headers are fixed (mtime 0, uid/gid 0, no user names, mode 0644) so that the same features give
byte-identical shards; stock `webdataset.WebDataset(url)` reads them.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from .arrays import npy_bytes
from .atomic import publish, temp_path
from .keys import check_key


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
        check_key(key, self.path)
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
        """Drop the temp file: close it without writing the end blocks (which could fail again on a
        full disk) and unlink it."""
        if not self.tar.closed:
            self.tar.closed = True
            self.tar.fileobj.close()
        self.tmp.unlink(missing_ok=True)
