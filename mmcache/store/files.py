"""Opening a cache's listed files: regular files reached without a symlink, read no further than the
manifest says.

A cache is a directory of files the manifest lists by relative path. Verified bytes must be the bytes
read, so every listed file is opened component by component from the cache root with O_NOFOLLOW: a
symlinked shard, field folder or samples folder (even one pointing at identical bytes) is refused, and
so is anything but a regular file (a FIFO would block the reader forever, /dev/zero never ends). The
cache root itself may be a symlink: that is where the user chose to point, not something inside it.

h5py opens files by path: `checked_path` makes the same checks first and hands the path on. Files
are never changed in place (publish = rename), so the window between the check and h5py's open only
matters to someone who can already write into the cache directory.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import CacheError

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO for reading would wait for a writer; with it, the open returns and fstat refuses it
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_KINDS.update({stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink"})


class MissingFile(CacheError):
    """A listed file does not exist (no such file, HTTP 404)."""


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_listed(root: Path | str, rel: str) -> int:
    """A read-only descriptor of the regular file `root/rel`, reached without following a symlink in
    any component of `rel`; a CacheError naming the path otherwise (MissingFile when it is absent)."""
    root = Path(root)
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):  # manifests are validated; this is the last guard
        raise CacheError(f"{root / rel}: not a path inside the cache")
    try:
        fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingFile(f"{root}: missing") from None
    except OSError as e:
        raise CacheError(f"{root}: cannot read ({e.strerror or e})") from None
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            parent, fd = fd, _step(fd, part, _FILE_FLAGS if last else _DIR_FLAGS, root, "/".join(parts[: i + 1]))
            os.close(parent)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise CacheError(f"{root / rel}: {_kind(mode)}, not a regular file: refused")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _step(parent: int, name: str, flags: int, root: Path, upto: str) -> int:
    """Open `name` under the directory `parent`; the error names root/upto."""
    try:
        return os.open(name, flags, dir_fd=parent)
    except FileNotFoundError:
        raise MissingFile(f"{root / upto}: missing") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                mode = os.lstat(name, dir_fd=parent).st_mode
            except OSError:
                mode = 0
            if stat.S_ISLNK(mode):
                raise CacheError(f"{root / upto}: a symlink inside the cache: refused") from None
            if stat.S_ISREG(mode):  # a file where the path needs a folder
                raise CacheError(f"{root / upto}: a regular file, not a directory: refused") from None
            raise CacheError(f"{root / upto}: {_kind(mode)}, not a directory or regular file: refused") from None
        raise CacheError(f"{root / upto}: cannot read ({e.strerror or e})") from None


def checked_path(root: Path | str, rel: str, size: int | None = None) -> Path:
    """`root/rel` after `open_listed`'s checks, and with `size` bytes when given (for readers that open
    by path, like h5py)."""
    fd = open_listed(root, rel)
    try:
        if size is not None:
            check_size(fd, size, Path(root) / rel)
    finally:
        os.close(fd)
    return Path(root) / rel


def check_size(fd: int, size: int, label) -> int:
    """The file's size, which must be `size` (the manifest's bytes): compared before anything is read."""
    got = os.fstat(fd).st_size
    if got != size:
        raise CacheError(f"{label}: {got} bytes, manifest says {size} (truncated or replaced)")
    return got


def read_listed(root: Path | str, rel: str, limit: int) -> bytes:
    """The whole regular file `root/rel`, refused when it holds more than `limit` bytes (no read of a
    file larger than what the caller can accept)."""
    fd = open_listed(root, rel)
    label = Path(root) / rel
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise CacheError(f"{label}: {size} bytes, more than the {limit} expected: refused")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(size + 1)  # read(n) allocates n at once: ask for what the file holds
    except OSError as e:
        raise CacheError(f"{label}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > size:  # grew meanwhile (published files never change: someone is writing it in place)
        raise CacheError(f"{label}: changed while read: refused")
    return data
