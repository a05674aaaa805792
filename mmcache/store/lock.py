"""The cache writer lock (no torch import: merge/stats use it too)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import CacheError


class CacheLock:
    """An exclusive flock: a second writer refuses at once; a crash releases it."""

    def __init__(self, root: Path, name: str = ".lock"):
        self.path = root / name

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only or full file system, a folder that vanished
            raise CacheError(f"{self.path}: cannot open the cache lock ({e.strerror or e})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise CacheError(
                f"cache {self.path.parent} is being written by another mmcache process (wait for it to finish)"
            ) from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
