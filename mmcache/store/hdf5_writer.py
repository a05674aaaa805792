"""Writing HDF5 shards: feats[T_total, D], ts[T_total, 2], offsets[N+1], keys[N] (ragged concat, no
vlen). One file per field per shard, one writer per file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .atomic import publish, temp_path
from .keys import check_key

CHUNK_ROWS = 1024


class H5ShardWriter:
    """Appends samples to resizable datasets in a temp file; `close()` publishes it atomically."""

    suffix = ".h5"

    def __init__(self, path: Path, dim: int, dtype: str = "float16"):
        self.path, self.dim = path, dim
        self.tmp = temp_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.tmp, "w")
        chunks = (CHUNK_ROWS, dim)
        self.feats = self.f.create_dataset(
            "feats", (0, dim), dtype, maxshape=(None, dim), chunks=chunks, track_times=False
        )
        self.ts = self.f.create_dataset(
            "ts", (0, 2), "float64", maxshape=(None, 2), chunks=(CHUNK_ROWS, 2), track_times=False
        )
        self.keys: list[str] = []
        self.offsets = [0]
        self.steps = 0

    def add(self, key: str, feats: np.ndarray, ts: np.ndarray) -> None:
        check_key(key, self.path)
        n = len(feats)
        for ds, arr in ((self.feats, feats), (self.ts, ts)):
            ds.resize(self.steps + n, axis=0)
            ds[self.steps : self.steps + n] = arr
        self.steps += n
        self.keys.append(key)
        self.offsets.append(self.steps)

    def finish(self) -> Path:
        """Complete the temp file (offsets, keys) without publishing it."""
        if self.f:
            self.f.create_dataset("offsets", data=np.asarray(self.offsets, np.int64), track_times=False)
            width = max([len(k) for k in self.keys] + [1])
            self.f.create_dataset("keys", data=np.asarray(self.keys, f"S{width}").reshape(-1), track_times=False)
            # flush first: a close whose flush fails (disk full) leaves HDF5 to retry at interpreter
            # exit, which crashes the process; a failed flush() raises here and abort() cleans up
            self.f.flush()
            f, self.f = self.f, None  # a close that fails still leaves the file closed: never again
            f.close()
        return self.tmp

    def close(self) -> None:
        publish(self.finish(), self.path)

    def abort(self) -> None:
        f, self.f = self.f, None  # h5py crashes on a second use of a file whose close failed
        try:
            if f:
                f.close()
        finally:
            self.tmp.unlink(missing_ok=True)
