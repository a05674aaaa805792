"""A local folder of files fetched from remote caches, named by their sha256 (`--cache-dir`,
`MMCACHE_CACHE_DIR`). A file enters only after its bytes matched the manifest's size and sha256, and is
found again only by that sha256: when the remote file changes, its manifest names a new digest and the
old copy is never served. Several caches (and several processes) can share one folder: files are
written to a temp name in the folder and renamed into place.

Layout: `<dir>/sha256/<first 2 hex>/<remaining 62 hex>`. Nothing is evicted; delete the folder (or
any file in it) whenever you like.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import CacheError

_SHA = re.compile(r"[0-9a-f]{64}")


class FetchedFiles:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def path_of(self, entry: dict) -> Path:
        sha = entry["sha256"]
        if not _SHA.fullmatch(sha):  # the manifest schema admits only these; never form another path
            raise CacheError(f"{entry['path']}: not a sha256 digest: {sha!r}")
        return self.root / "sha256" / sha[:2] / sha[2:]

    def get(self, entry: dict) -> Path | None:
        """The local copy of a listed file when there is one of the listed size (the caller still
        compares the bytes it reads with the sha256)."""
        path = self.path_of(entry)
        try:
            st = path.lstat()
        except OSError:
            return None
        return path if path.is_file() and not path.is_symlink() and st.st_size == entry["bytes"] else None

    def drop(self, entry: dict) -> None:
        """Forget a copy whose bytes did not match (damaged on this disk)."""
        with contextlib.suppress(OSError):
            self.path_of(entry).unlink()

    @contextlib.contextmanager
    def temp(self, entry: dict) -> Iterator[Path]:
        """A temp file beside where `entry`'s copy goes; deleted afterwards unless `keep` published it."""
        final = self.path_of(entry)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"fetch cache {self.root}: cannot create {final.parent} ({e.strerror or e})") from None
        fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=final.parent)
        os.close(fd)
        try:
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def keep(self, entry: dict, tmp: Path) -> Path:
        """Publish a temp file whose bytes matched `entry` under its sha256."""
        final = self.path_of(entry)
        os.replace(tmp, final)
        return final

    def put(self, entry: dict, data) -> None:
        """Keep bytes that matched `entry` (a full disk only means no copy is kept)."""
        try:
            with self.temp(entry) as tmp:
                tmp.write_bytes(data)
                self.keep(entry, tmp)
        except OSError:
            pass
