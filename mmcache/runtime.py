"""Process settings of extraction work, whatever engine runs it: how many threads torch and ffmpeg
use (`use_threads`), and how the heap of a long extraction is kept from fragmenting (`bound_heap`).

Heap: glibc's malloc is left as it is by default. A CNN forward pass allocates and frees blocks of
several MB every batch, and glibc raises its mmap threshold after the first such block is freed, so
later ones come from a heap that grows when blocks that live long are allocated between them. The
extraction therefore allocates nothing per batch that outlives the batch, and reuses what it can:
the stacked uint8 batch and its float32 copies (about 80 MB per 32 frames at 224x224) live in
buffers kept from batch to batch (`TorchEncoder.pixels`); decoded frames and clips go back to the
decoders once encoded (`decode.FramePool`); and each video's features are copied into one array
grown by doubling (`pipeline._Acc`) rather than each batch's output being kept until the video ends.
With these the peak stays flat with the video's length without slowing torch. Earlier versions
pinned the mmap threshold at 128 KiB instead, which made every mid-sized block a fresh mapping and
cost about 15% of extraction speed in page faults (bench_extract measures speed and peak RSS against
a plain ffmpeg + torchvision script; numbers in docs/performance.md). `MMCACHE_MMAP_THRESHOLD=N`
(bytes) still pins it, for a machine where a lower peak matters more than speed (`bound_heap`,
called when an encoder is built).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from .errors import InputError

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
DEFAULT_THRESHOLD = 0  # glibc's own dynamic threshold; MMCACHE_MMAP_THRESHOLD=131072 pins it
_applied: int | None = None


def bound_heap() -> int | None:
    """Apply MMCACHE_MMAP_THRESHOLD once per process (glibc only); returns the threshold in effect,
    or None where none was set (the default, not glibc, or 0)."""
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
