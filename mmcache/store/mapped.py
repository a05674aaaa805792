"""Local shard files mapped into memory instead of read into it.

A tar shard is parsed into arrays that view its bytes. Read into a fresh buffer, every byte is copied
out of the page cache and every page of the new buffer is faulted in and zeroed first: on a warm page
cache that costs 3-4x the read itself. Mapped, the arrays view the page cache directly: nothing is
copied and nothing is zeroed. On Linux every page is mapped at once (MADV_POPULATE_READ), so I/O
errors surface here as a failed mapping (the file is then read, and the read names the error) rather
than later as a fault.

The mapping is private and writable (copy-on-write), so the arrays are writable like np.load's and a
write never reaches the file. It is made with libc's mmap through ctypes rather than the `mmap`
module, which keeps a duplicate file descriptor open per mapping until 3.13: a trainer holding
every shard of a large cache would run out of descriptors. The descriptor is closed at once; the
mapping lives as long as any array viewing it, and is unmapped when the last one is collected.

Cache files are never changed in place (they are published by atomic rename, and a replaced file
keeps its old inode for whoever maps it). A file truncated by someone else while mapped would make
reading the lost pages fail with SIGBUS, as with numpy.memmap. `MMCACHE_MAP_SHARDS=0` reads files
into memory instead (for file systems where mapping is slow or unsupported); where mapping is not
available or fails, files are read.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import sys
import threading
import weakref
from pathlib import Path

from ..errors import CacheError


def _libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.restype = ctypes.c_int
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.madvise.restype = ctypes.c_int
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE
    except (OSError, AttributeError, TypeError):  # no C library to call (Windows), or no mmap in it
        return None


_LIBC = _libc()
# a FIFO opened without O_NONBLOCK waits for a writer; with it, the open returns and the size check refuses it
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_FAILED = ctypes.c_void_p(-1).value
# MADV_POPULATE_READ (Linux 5.14+): map every page now, reading what is not cached (older kernels: EINVAL,
# and the pages are mapped on first use instead)
_POPULATE_READ = 22 if sys.platform.startswith("linux") else None


def enabled() -> bool:
    return _LIBC is not None and os.environ.get("MMCACHE_MAP_SHARDS", "1") != "0"


def read_file(path: Path | str) -> bytearray:
    """A whole file in one read into a bytearray (so arrays viewing it are writable)."""
    return _by_path(path, read_fd)


def _by_path(path: Path | str, use):
    """use(fd, path) on the file at `path`, opened for reading (non-blocking: a FIFO is refused, not waited on)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        raise CacheError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return use(fd, path)
    finally:
        os.close(fd)


def read_fd(fd: int, path: Path | str) -> bytearray:
    """`read_file` of an open descriptor (left open); `path` names it in errors."""
    try:
        buf = bytearray(_regular_size(fd, path))
        got = 0
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f, memoryview(buf) as view:
            f.seek(0)
            while got < len(buf) and (k := f.readinto(view[got:])):
                got += k
    except OSError as e:
        raise CacheError(f"{path}: cannot read ({e.strerror or e})") from None
    del buf[got:]  # a file that shrank meanwhile reads as cut, which the parser reports
    return buf


def _regular_size(fd: int, path) -> int:
    """The size of a regular file; anything else (a FIFO, a device: endless or blocking) is refused."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CacheError(f"{path}: not a regular file: refused")
    return st.st_size


def map_file(path: Path | str):
    """The bytes of a local file as a writable buffer: a private copy-on-write mapping (a ctypes
    array, unmapped once nothing views it), or a bytearray when mapping is off, unavailable or fails,
    and for an empty file. Only a regular file is read."""
    return _by_path(path, map_fd)


def map_fd(fd: int, path: Path | str):
    """`map_file` of an open descriptor (left open); `path` names it in errors and prefetch hints."""
    if not enabled():
        return read_fd(fd, path)
    size = _regular_size(fd, path)
    if size > sys.maxsize:  # more than this process can address (32-bit): the read says so
        return read_fd(fd, path)
    with _LOCK:
        asked = str(path) in _PREFETCHED
        _PREFETCHED.pop(str(path), None)
    if size and not asked:
        _fadvise_willneed(fd)  # what is not cached: read in large requests, now
    libc, prot, flags = _LIBC
    addr = libc.mmap(None, size, prot, flags, fd, 0) if size else None
    if addr is None or addr == _FAILED:  # empty, or the file system cannot map it: read it
        return read_fd(fd, path)
    if _POPULATE_READ and libc.madvise(addr, size, _POPULATE_READ) != 0 and ctypes.get_errno() != errno.EINVAL:
        libc.munmap(addr, size)  # an I/O error, or no memory: the plain read says which
        return read_fd(fd, path)
    buf = (ctypes.c_char * size).from_address(addr)
    # unmapped when the last view goes; never at exit, when arrays may still be read (atexit handlers,
    # __del__ of globals, daemon threads): the process's end unmaps it
    weakref.finalize(buf, libc.munmap, addr, size).atexit = False
    return buf


_PREFETCHED: dict[str, None] = {}  # files prefetched and not mapped yet (map_file need not ask again)
_LOCK = threading.Lock()


def _fadvise_willneed(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:  # a hint: a file system that does not take it reads on demand
            pass


def prefetch(path: Path | str, fd: int) -> None:
    """Ask the kernel to start reading the open file `path` into the page cache now (asynchronously),
    so that a reader parsing the shard before it does not wait for the disk; silent when it cannot."""
    if not hasattr(os, "posix_fadvise"):
        return
    with _LOCK:
        while len(_PREFETCHED) >= 64:  # files prefetched and never mapped: forget the oldest
            del _PREFETCHED[next(iter(_PREFETCHED))]
        _PREFETCHED[str(path)] = None
    _fadvise_willneed(fd)
