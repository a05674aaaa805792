"""Keep the heap of a long extraction from growing with fragmentation.

A CNN forward pass allocates and frees activations of several MB per batch. glibc's malloc raises
its mmap threshold after the first such block is freed (up to 32 MiB), so later blocks come from the
heap, which fragments and is not returned to the kernel: extracting a 10-minute 720p video with
resnet18 peaked about 0.4 GB higher than needed (benchmarks/profile_pipeline.py `memory`). Pinning
the threshold at 128 KiB makes large blocks mmap'ed and unmapped on free; the speed cost measured
side by side was within noise. Set MMCACHE_MMAP_THRESHOLD=0 to keep glibc's own behaviour, or to a
number of bytes for another threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
DEFAULT_THRESHOLD = 128 * 1024
_applied: int | None = None


def bound_heap() -> int | None:
    """Apply the mmap threshold once per process (glibc only); returns the threshold in effect, or
    None where it was not set (not glibc, or disabled)."""
    global _applied
    if _applied is not None:
        return _applied or None
    raw = os.environ.get("MMCACHE_MMAP_THRESHOLD", str(DEFAULT_THRESHOLD))
    try:
        threshold = int(raw)
    except ValueError:
        threshold = DEFAULT_THRESHOLD
    _applied = 0
    if threshold <= 0:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return None
    if mallopt(M_MMAP_THRESHOLD, threshold) == 1:
        _applied = threshold
    return _applied or None
