"""Process settings of extraction work, whatever engine runs it: how many threads torch and ffmpeg
use (`use_threads`), and how the heap of a long extraction is kept from fragmenting (`bound_heap`).

Heap: Keep the heap of a long extraction from growing with fragmentation.

A CNN forward pass allocates and frees activations of several MB per batch. glibc's malloc raises
its mmap threshold after the first such block is freed (up to 32 MiB), so later blocks come from the
heap, which fragments: with glibc's default, extracting a 720p video with resnet18 peaked at 1.23 GB
after 5 minutes of video and 1.36-1.55 GB after 10, still growing with the video's length. Pinning the
threshold at 128 KiB makes large blocks mmap'ed and unmapped on free: the peak stays flat (1.04 GB at
5 and at 10 minutes), for about 10% less extraction speed (the page faults of fresh mappings;
benchmarks/profile_pipeline.py memory, docs/performance.md). Bounded memory on a 2-hour video is
worth that by default; MMCACHE_MMAP_THRESHOLD=0 keeps glibc's behaviour (faster on short videos), a
number of bytes sets another threshold (1 MiB measured the same as 128 KiB; malloc_trim every few
batches barely helped).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from .errors import InputError

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


def use_threads(n: int | None) -> None:
    """Keep this process's work on `n` threads (`--threads`, a Snakemake job's `threads:`, one per dask
    task): torch's intra-op threads (and inter-op ones while torch still allows it) and each ffmpeg's
    decode and filter threads. The decode thread of the pipeline still overlaps encoding. Features do
    not depend on it (not part of any fingerprint). None leaves torch's and ffmpeg's defaults (all cores).
    """
    if n is None:
        return
    if n < 1:
        raise InputError(f"threads must be at least 1, not {n}")
    import torch

    from . import decode

    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only before the first inter-op parallel work of the process
            pass
    decode.set_threads(n)


def threads_in_use() -> str:
    """What this process runs on, for logs: torch intra-op / inter-op threads and ffmpeg's."""
    import torch

    from . import decode

    ffmpeg_threads = decode.get_threads()
    return (
        f"torch {torch.get_num_threads()} thread(s) ({torch.get_num_interop_threads()} inter-op), "
        f"ffmpeg {ffmpeg_threads or 'default'} thread(s)"
    )


def torch_device(name: str) -> str:
    """The torch device for a `device` option: `auto` is cuda when torch sees a GPU, else cpu; `cpu`
    as is; `cuda` / `cuda:N` only when torch sees that GPU (else one line saying what to use instead,
    not a driver traceback from the first tensor moved there)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if kind != "cuda":
        return name
    if not torch.cuda.is_available():
        built = f"torch {torch.__version__}" + (f", built for CUDA {torch.version.cuda}" if torch.version.cuda else "")
        raise InputError(f"device {name!r}: torch finds no CUDA GPU on this machine ({built}); use cpu or auto")
    count = torch.cuda.device_count()
    if index and (not index.isdigit() or int(index) >= count):
        raise InputError(f"device {name!r}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    return name
