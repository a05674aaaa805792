"""Run one encoder over a list of videos: N decode threads (each driving its own ffmpeg processes) feed
one encoder in batches that span video boundaries; each video's features come back in input order.

Decoder k decodes jobs k, k+N, k+2N, ... into its own bounded buffer. The consumer takes job 0's
steps from its decoder's buffer up to job 0's end marker, then job 1's from the next decoder, and so
on. So the sequence of steps the encoder sees, and with it every batch, is the same for any number
of decoders: the features are byte-identical to a single decoder's by construction, and decoding
(in ffmpeg processes, and in threads that release the GIL while they wait on them) overlaps encoding.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .decode import FRAMES
from .encoders import Encoder
from .errors import DecodeError, FieldAbsent, MMCacheError
from .probe import ProbeInfo
from .readers import READERS
from .types import Step, VideoInput

# With several decoders, the ones ahead of the video being encoded buffer what they decode, up to this
# many bytes of decoded steps in total (each decoder also always holds up to max(2 x batch_size, 8)).
READAHEAD_BYTES = 512 << 20
MAX_DECODERS = 32


@dataclass
class Job:
    key: str
    video: VideoInput
    info: ProbeInfo


@dataclass
class Outcome:
    """One video's result for one field: features, or absent/failed with a reason."""

    job: Job
    status: str  # ok | absent | failed
    feats: np.ndarray | None = None  # (T, D) float32
    ts: np.ndarray | None = None  # (T, 2) float64 seconds
    reason: str | None = None


@dataclass(frozen=True)
class End:
    """The marker after a job's last step: ok, or absent/failed with the reason."""

    status: str
    reason: str | None = None


@dataclass
class PipelineStats:
    """Where the time of one run_encoder call went (filled in as it runs; final once it has ended)."""

    decoders: int = 0
    steps: int = 0
    batches: int = 0
    encode_s: float = 0.0  # wall time inside encoder.encode
    wait_s: float = 0.0  # wall time the consumer waited for decoded steps
    wall_s: float = 0.0  # from the first step asked for to the end (or the generator's close)

    @property
    def busy(self) -> float:
        """Share of the wall time the encoder spent encoding."""
        return self.encode_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class _Acc:
    steps: int = 0  # steps queued for encoding
    done: int = 0  # steps encoded: the first `done` rows of `feats`
    feats: np.ndarray | None = None  # (capacity, D) float32, doubled when full
    ts: list = field(default_factory=list)
    end: str | None = None  # None while decoding, else ok | absent | failed
    reason: str | None = None

    def add(self, rows: np.ndarray) -> None:
        """Copy encoded rows in. One array per video, grown by doubling, rather than each batch's
        output kept alive until the video ends: blocks living that long, allocated between each
        batch's freed activations, kept the heap from being reused and grew it with the length."""
        if self.feats is None or self.done + len(rows) > len(self.feats):
            grown = np.empty((max(64, 2 * (self.done + len(rows))), rows.shape[1]), np.float32)
            if self.feats is not None:
                grown[: self.done] = self.feats[: self.done]
            self.feats = grown
        self.feats[self.done : self.done + len(rows)] = rows
        self.done += len(rows)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_decoders(encoder: Encoder) -> int:
    """The encoder's `decoders` option as a number: auto = 1 on CPU, min(4, CPUs) on CUDA."""
    value = encoder.options.get("decoders", "auto")
    if value != "auto":
        return int(value)
    device = getattr(encoder, "device", None) or encoder.options.get("device", "cpu")
    if device == "auto":
        from .encoders.base import resolve_device

        device = resolve_device(device)
    return min(4, cpu_count()) if str(device).startswith("cuda") else 1


def _nbytes(item) -> int:
    payload = item.payload if isinstance(item, Step) else None
    if isinstance(payload, np.ndarray):
        return max(payload.nbytes, 1)
    if isinstance(payload, str):
        return max(len(payload), 1)
    return 1


class _Buffer:
    """A FIFO that takes a new item while it holds fewer than `min_items`, or while its decoded bytes
    stay within `max_bytes`; a blocked put gives up once `stop` is set."""

    def __init__(self, min_items: int, max_bytes: int, stop: threading.Event):
        self.min_items, self.max_bytes, self.stop = min_items, max_bytes, stop
        self.items: deque = deque()
        self.nbytes = 0
        self.cond = threading.Condition()

    def put(self, item) -> bool:
        size = _nbytes(item)
        with self.cond:
            while len(self.items) >= self.min_items and self.nbytes + size > self.max_bytes:
                if self.stop.is_set():
                    return False
                self.cond.wait(0.1)
            if self.stop.is_set():
                return False
            self.items.append((item, size))
            self.nbytes += size
            self.cond.notify_all()
            return True

    def get(self, timeout: float):
        """The next item, or None when none came within `timeout` seconds."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.items, timeout):
                return None
            item, size = self.items.popleft()
            self.nbytes -= size
            self.cond.notify_all()
            return item

    def clear(self) -> None:
        with self.cond:
            self.items.clear()
            self.nbytes = 0
            self.cond.notify_all()


def _produce(encoder: Encoder, jobs: list[Job], mine: range, buf: _Buffer, timeout: float) -> None:
    """One decoder: the steps of jobs[i] for i in `mine`, each job followed by its End marker."""
    reader = READERS[encoder.input.kind]
    for i in mine:
        job = jobs[i]
        end = End("ok")
        steps = None
        try:
            steps = reader(job.video, job.info, encoder.input, timeout)
            for step in steps:
                if not buf.put(step):
                    return  # stopped: the finally below ends this video's ffmpeg now
        except FieldAbsent as e:
            end = End("absent", str(e))
        except DecodeError as e:
            end = End("failed", str(e))
        except Exception as e:  # noqa: BLE001 - one bad video never ends the run; the reason is kept
            end = End("failed", f"{job.video.source}: {type(e).__name__}: {e}")
        finally:
            if steps is not None and hasattr(steps, "close"):
                steps.close()
        if not buf.put(end):
            return


def iter_steps(
    encoder: Encoder,
    jobs: list[Job],
    timeout: float = 120.0,
    decoders: int | None = None,
    *,
    readahead_bytes: int = READAHEAD_BYTES,
    stats: PipelineStats | None = None,
) -> Iterator[tuple[int, Step | End]]:
    """(job index, Step) for every decoded step and (job index, End) after each job's last, in job
    order, decoded by `decoders` threads (default: the encoder's option). Closing the generator
    stops every decoder and its ffmpeg processes before close() returns."""
    n = max(1, min(resolve_decoders(encoder) if decoders is None else int(decoders), len(jobs)))
    if n > MAX_DECODERS:
        raise MMCacheError(f"decoders={n}: at most {MAX_DECODERS}")
    if stats is not None:
        stats.decoders = n
    if not jobs:
        return
    stop = threading.Event()
    min_items = max(2 * encoder.batch_size, 8)
    bufs = [_Buffer(min_items, 0 if n == 1 else readahead_bytes // n, stop) for _ in range(n)]
    threads = [
        threading.Thread(
            target=_produce,
            args=(encoder, jobs, range(k, len(jobs), n), bufs[k], timeout),
            name=f"mmcache-decoder-{k}",
            daemon=True,
        )
        for k in range(n)
    ]
    for t in threads:
        t.start()
    try:
        for i in range(len(jobs)):
            buf, thread = bufs[i % n], threads[i % n]
            while True:
                t0 = time.perf_counter()
                item = buf.get(0.5)
                if stats is not None:
                    stats.wait_s += time.perf_counter() - t0
                if item is None:
                    if not thread.is_alive() and not buf.items:
                        raise MMCacheError(f"decoder thread {thread.name} ended before {jobs[i].video.source}")
                    continue
                yield i, item
                if isinstance(item, End):
                    break
    finally:
        stop.set()
        for b in bufs:
            b.clear()
        deadline = time.monotonic() + timeout + 5
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))


def run_encoder(
    encoder: Encoder,
    jobs: list[Job],
    timeout: float = 120.0,
    on_steps: Callable[[int], None] | None = None,
    *,
    decoders: int | None = None,
    readahead_bytes: int = READAHEAD_BYTES,
    stats: PipelineStats | None = None,
) -> Iterator[Outcome]:
    """Yield one Outcome per job, in job order. `decoders` overrides the encoder's option; `stats`
    (a PipelineStats) is filled with the time spent encoding and waiting."""
    stats = stats if stats is not None else PipelineStats()
    t_start = time.perf_counter()
    steps = iter_steps(encoder, jobs, timeout, decoders, readahead_bytes=readahead_bytes, stats=stats)
    accs = [_Acc() for _ in jobs]
    batch: list[tuple[int, Step]] = []
    emitted = 0
    try:
        for i, item in steps:
            if isinstance(item, End):
                accs[i].end, accs[i].reason = item.status, item.reason
            else:
                batch.append((i, item))
                accs[i].steps += 1
                if len(batch) < encoder.batch_size:
                    continue
                _encode(encoder, batch, accs, on_steps, stats)
                batch = []
            emitted = yield from _finished(jobs, accs, emitted)
        if batch:
            _encode(encoder, batch, accs, on_steps, stats)
        yield from _finished(jobs, accs, emitted)
    finally:
        steps.close()
        stats.wall_s = time.perf_counter() - t_start


def _encode(encoder: Encoder, batch: list, accs: list[_Acc], on_steps, stats: PipelineStats) -> None:
    t0 = time.perf_counter()
    out = encoder.encode([s.payload for _, s in batch])  # (N, D)
    stats.encode_s += time.perf_counter() - t0
    stats.steps += len(batch)
    stats.batches += 1
    if out.shape != (len(batch), encoder.dim):
        raise MMCacheError(
            f"encoder {encoder.field} returned shape {out.shape}, expected ({len(batch)}, {encoder.dim})"
        )
    rows = np.asarray([i for i, _ in batch])
    cuts = np.flatnonzero(np.diff(rows)) + 1  # a batch holds runs of steps of one video each
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(batch)], strict=True):
        accs[batch[lo][0]].add(out[lo:hi])
    for i, step in batch:
        accs[i].ts.append((step.start, step.end))
    if encoder.copies_payloads:  # the decoders fill these arrays again
        FRAMES.give([s.payload for _, s in batch])
    if on_steps:
        on_steps(len(batch))


def _finished(jobs: list[Job], accs: list[_Acc], emitted: int):
    """Yield outcomes for videos whose decoding ended and whose steps are all encoded, in order."""
    while emitted < len(jobs):
        acc = accs[emitted]
        if acc.end is None or acc.done < acc.steps:
            break
        job = jobs[emitted]
        if acc.end == "ok" and acc.done:
            yield Outcome(job, "ok", acc.feats[: acc.done], np.asarray(acc.ts, np.float64).reshape(-1, 2))
        elif acc.end == "ok":
            yield Outcome(job, "failed", reason=f"{job.video.source}: decoded no steps")
        else:
            yield Outcome(job, acc.end, reason=acc.reason)
        accs[emitted] = _Acc(end="released")
        emitted += 1
    return emitted
