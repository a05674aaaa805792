"""Run one encoder over a list of videos: decode in a thread, encode in batches that span video
boundaries, hand back each video's features in input order.

Decoding (ffmpeg processes fed through a bounded queue) overlaps encoding, so the pipeline runs at
close to the harmonic combination of decode and encode speed on shared cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .encoders import Encoder
from .errors import DecodeError, FieldAbsent, MMCacheError
from .probe import ProbeInfo
from .readers import READERS
from .types import VideoInput

_DONE = object()


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


@dataclass
class _Acc:
    steps: int = 0  # steps queued for encoding
    feats: list = field(default_factory=list)
    ts: list = field(default_factory=list)
    end: str | None = None  # None while decoding, else ok | absent | failed
    reason: str | None = None


def _produce(encoder: Encoder, jobs: list[Job], q: queue.Queue, timeout: float, stop: threading.Event) -> None:
    reader = READERS[encoder.input.kind]

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    for i, job in enumerate(jobs):
        end, reason = "ok", None
        try:
            for step in reader(job.video, job.info, encoder.input, timeout):
                if not put((i, step)):
                    return
        except FieldAbsent as e:
            end, reason = "absent", str(e)
        except DecodeError as e:
            end, reason = "failed", str(e)
        except Exception as e:  # noqa: BLE001 - one bad video never ends the run; the reason is kept
            end, reason = "failed", f"{job.video.source}: {type(e).__name__}: {e}"
        if not put((i, (end, reason))):
            return
    put(_DONE)


def run_encoder(
    encoder: Encoder, jobs: list[Job], timeout: float = 120.0, on_steps: Callable[[int], None] | None = None
) -> Iterator[Outcome]:
    """Yield one Outcome per job, in job order."""
    q: queue.Queue = queue.Queue(maxsize=max(2 * encoder.batch_size, 8))
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(encoder, jobs, q, timeout, stop), daemon=True)
    producer.start()
    accs = [_Acc() for _ in jobs]
    batch: list[tuple[int, object]] = []
    emitted = 0
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            i, payload = item
            if isinstance(payload, tuple):  # end of video i
                accs[i].end, accs[i].reason = payload
            else:
                batch.append((i, payload))
                accs[i].steps += 1
                if len(batch) >= encoder.batch_size:
                    _encode(encoder, batch, accs, on_steps)
                    batch = []
            emitted = yield from _finished(jobs, accs, emitted)
        if batch:
            _encode(encoder, batch, accs, on_steps)
        yield from _finished(jobs, accs, emitted)
    finally:
        stop.set()
        producer.join(timeout=timeout + 5)


def _encode(encoder: Encoder, batch: list, accs: list[_Acc], on_steps) -> None:
    out = encoder.encode([s.payload for _, s in batch])  # (N, D)
    if out.shape != (len(batch), encoder.dim):
        raise MMCacheError(
            f"encoder {encoder.field} returned shape {out.shape}, expected ({len(batch)}, {encoder.dim})"
        )
    for (i, step), row in zip(batch, out, strict=True):
        accs[i].feats.append(row)
        accs[i].ts.append((step.start, step.end))
    if on_steps:
        on_steps(len(batch))


def _finished(jobs: list[Job], accs: list[_Acc], emitted: int):
    """Yield outcomes for videos whose decoding ended and whose steps are all encoded, in order."""
    while emitted < len(jobs):
        acc = accs[emitted]
        if acc.end is None or len(acc.feats) < acc.steps:
            break
        job = jobs[emitted]
        if acc.end == "ok" and acc.feats:
            yield Outcome(
                job, "ok", np.stack(acc.feats).astype(np.float32), np.asarray(acc.ts, np.float64).reshape(-1, 2)
            )
        elif acc.end == "ok":
            yield Outcome(job, "failed", reason=f"{job.video.source}: decoded no steps")
        else:
            yield Outcome(job, acc.end, reason=acc.reason)
        accs[emitted] = _Acc(end="released")
        emitted += 1
    return emitted
