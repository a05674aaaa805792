"""Streaming decode through ffmpeg (commands built with ffmpeg-python, run as argument lists).

Frames come out of ffmpeg's filter graph already on the time grid, resized and cropped; each
frame's timestamp and size are read from the `showinfo` filter, i.e. from the decoded frame, never
from header counts. Audio comes out mono float32 at the requested rate. Everything is read in
bounded chunks, and a read that stalls longer than `timeout` seconds kills ffmpeg.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from .errors import DecodeError
from .probe import FFMPEG, ProbeInfo, ffmpeg_input, ffmpeg_reason

_SHOWINFO = re.compile(rb"Parsed_showinfo.*?\bpts_time:\s*(-?[\d.e+-]+|NOPTS).*?\bs:(\d+)x(\d+)")
_GLOBAL_ARGS = ("-hide_banner", "-nostats", "-nostdin", "-loglevel", "info")


class FFmpegPipe:
    """One running ffmpeg: exact-size reads from stdout, stderr drained in a thread.

    The stderr thread keeps the last lines (for error messages) and the (pts_time, w, h) of every
    frame that passed `showinfo`. A watchdog kills ffmpeg when one read waits longer than `timeout`
    (a stalled input such as a named pipe); time spent waiting on the consumer does not count.
    """

    def __init__(self, args: list[str], path: Path, timeout: float):
        self.path, self.timeout = path, timeout
        self.frames: list[tuple[float | None, int, int]] = []
        self.tail: deque[str] = deque(maxlen=8)
        self.timed_out = False
        self._cond = threading.Condition()
        self._stderr_done = False
        self._waiting_since: float | None = None
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._drain, self._watch)]
        for t in self._threads:
            t.start()

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            m = _SHOWINFO.search(line)
            with self._cond:
                if m:
                    pts = None if m[1] == b"NOPTS" else float(m[1])
                    self.frames.append((pts, int(m[2]), int(m[3])))
                elif line.strip():
                    self.tail.append(line.decode("utf-8", "replace").strip())
                self._cond.notify_all()
        with self._cond:
            self._stderr_done = True
            self._cond.notify_all()

    def _watch(self) -> None:
        while self.proc.poll() is None:
            since = self._waiting_since
            if since is not None and time.monotonic() - since > self.timeout:
                self.timed_out = True
                self.proc.kill()
                return
            time.sleep(min(0.2, self.timeout / 4))

    def _stalled(self):
        """Context for a blocking wait on ffmpeg: the watchdog measures only these."""
        pipe = self

        class _Wait:
            def __enter__(self):
                pipe._waiting_since = time.monotonic()

            def __exit__(self, *exc):
                pipe._waiting_since = None

        return _Wait()

    def frame_info(self, i: int) -> tuple[float | None, int, int] | None:
        """Timestamp and size of output frame i, or None once ffmpeg has ended without it."""
        with self._stalled(), self._cond:
            self._cond.wait_for(lambda: len(self.frames) > i or self._stderr_done)
            return self.frames[i] if len(self.frames) > i else None

    def read_into(self, buf: memoryview) -> int:
        """Fill `buf` from stdout; returns bytes read (less than len(buf) only at end of stream)."""
        got = 0
        with self._stalled():
            while got < len(buf):
                n = self.proc.stdout.readinto(buf[got:])
                if not n:
                    break
                got += n
        return got

    def close(self, check: bool = True) -> None:
        """Stop ffmpeg; with `check`, raise DecodeError for a timeout or a non-zero exit."""
        if self.proc.poll() is None and not check:
            self.proc.kill()
        self.proc.stdout.close()
        try:
            code = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._threads[0].join(timeout=5)
        self.proc.stderr.close()
        if not check:
            return
        if self.timed_out:
            raise DecodeError(f"{self.path}: ffmpeg stalled for more than {self.timeout:g} s and was killed")
        if code != 0:
            raise DecodeError(f"{self.path}: ffmpeg failed ({self.reason()})")

    def reason(self) -> str:
        return ffmpeg_reason(list(self.tail), self.path) or "no output"


class FramePool:
    """Decoded frame (and clip) arrays handed back once encoded, for the decoder to fill again.

    A long extraction decodes thousands of 150 KB frames in decoder threads and frees them in the
    encoding thread; with glibc's malloc that churn, beside the model's own, let the heap grow with
    the video's length. Arrays given back (`give`, by the pipeline once a batch is encoded by an
    encoder that copies its payloads) are reused by `take`; at most `max_bytes` are kept, and an
    empty pool allocates. Thread-safe: decoder threads take, the encoding thread gives."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes, self.nbytes = max_bytes, 0
        self.free: dict[tuple, list[np.ndarray]] = {}
        self.lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
        with self.lock:
            kept = self.free.get((shape, np.dtype(dtype)))
            if kept:
                arr = kept.pop()
                self.nbytes -= arr.nbytes
                return arr
        return np.empty(shape, dtype)

    def give(self, arrays) -> None:
        """Take back arrays nothing else refers to any more (only whole arrays: views are ignored)."""
        with self.lock:
            for arr in arrays:
                if isinstance(arr, np.ndarray) and arr.base is None and self.nbytes + arr.nbytes <= self.max_bytes:
                    self.free.setdefault((arr.shape, arr.dtype), []).append(arr)
                    self.nbytes += arr.nbytes

    def clear(self) -> None:
        with self.lock:
            self.free.clear()
            self.nbytes = 0


FRAMES = FramePool()  # the frames of read_frames and the clips of read_clips, given back by the pipeline


# ffmpeg-python hashes every node as UTF-8 text, so a file name that is not UTF-8 (lone surrogates
# in Python) raised UnicodeEncodeError and such a video could never be decoded. Graphs are built on
# this placeholder; `_run` swaps in the real input argument in the compiled argument list.
_INPUT = "file:mmcache-input"

# Threads each ffmpeg started by this process may use (decoder and filter graph); None leaves
# ffmpeg's default (about one per core). Set by `set_threads` (`mmcache run-shard/extract --threads`,
# dask tasks): a job allotted N cores must not decode on all of them. Decoded frames are the same.
_THREADS: int | None = None


def set_threads(n: int | None) -> None:
    """Limit the decode and filter threads of every ffmpeg this process starts (None: ffmpeg's default)."""
    global _THREADS
    if n is not None and n < 1:
        raise ValueError(f"ffmpeg threads must be at least 1, not {n}")
    _THREADS = n


def get_threads() -> int | None:
    return _THREADS


def _input():
    """The input node every decode starts from (the placeholder file, with the decoder's threads)."""
    return ffmpeg.input(_INPUT, **({"threads": _THREADS} if _THREADS else {}))


def _run(stream, path: Path, timeout: float) -> FFmpegPipe:
    extra = ("-filter_complex_threads", str(_THREADS)) if _THREADS else ()
    args = stream.global_args(*_GLOBAL_ARGS, *extra).compile(cmd=FFMPEG)
    args = [ffmpeg_input(path) if a == _INPUT else a for a in args]
    return FFmpegPipe(args, path, timeout)


def grid_rate(info: ProbeInfo, fps: float | None, num_frames: int | None) -> Fraction:
    """Frames per second of the sampling grid, as an exact fraction for ffmpeg's fps filter."""
    if num_frames is not None:
        if info.duration <= 0:
            raise DecodeError(f"{info.path}: duration unknown, so num_frames={num_frames} has no grid")
        return Fraction(num_frames / info.duration).limit_denominator(1_000_000)
    return Fraction(fps).limit_denominator(1_000_000)


def _scale_crop(stream, resize: tuple[int, ...] | None, crop: tuple[int, int] | None):
    """Resize (short side, or exact height x width) then centre-crop, inside the filter graph."""
    if resize is not None and len(resize) == 1:
        s = int(resize[0])
        stream = stream.filter("scale", f"if(gt(iw,ih),-2,{s})", f"if(gt(iw,ih),{s},-2)")
    elif resize is not None:
        stream = stream.filter("scale", int(resize[1]), int(resize[0]))
    if crop is not None:
        stream = stream.filter("crop", int(crop[1]), int(crop[0]))
    return stream


def iter_frames(
    info: ProbeInfo,
    rate: Fraction,
    *,
    resize: tuple[int, ...] | None = None,
    crop: tuple[int, int] | None = None,
    max_frames: int | None = None,
    timeout: float = 60.0,
    pool: FramePool | None = None,
) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (frame uint8 HxWx3, seconds) on the grid `rate`, streaming one frame at a time; each frame
    a new array, or one taken from `pool` (which its consumer gives back once done with it).

    ffmpeg autorotates, so a phone clip with a 90 degree display matrix comes out portrait; the
    frame size is read from the filter graph's output, never from the coded width/height.
    """
    if info.video is None:
        raise DecodeError(f"{info.path}: no video stream")
    n = yield from _grid_frames(info, rate, resize, crop, max_frames, timeout, "round", pool)
    if n == 0:
        # A video shorter than half a grid step (e.g. a single frame) gives no frame with the fps
        # filter's default rounding at end of file, and failed as "no frames decoded". Like
        # read_clips, a readable video keeps at least one step: its first frame, at t=0. Only this
        # case is decoded again, so every other video's frames are unchanged.
        n = yield from _grid_frames(info, rate, resize, crop, max_frames, timeout, "pass", pool)
    if n == 0:
        raise DecodeError(f"{info.path}: no frames decoded")


def _grid_frames(info, rate, resize, crop, max_frames, timeout, eof_action: str, pool: FramePool | None):
    """iter_frames' decode; returns the number of frames yielded."""
    src = _input().video
    fps = {"fps": str(rate)} if eof_action == "round" else {"fps": str(rate), "eof_action": eof_action}
    graph = _scale_crop(src.filter("fps", **fps).filter("setsar", 1), resize, crop)
    out_args = {"format": "rawvideo", "pix_fmt": "rgb24"}
    if max_frames is not None:
        out_args["frames:v"] = max_frames
    pipe = _run(graph.filter("showinfo").output("pipe:", **out_args), info.path, timeout)
    ok = False
    try:
        i = 0
        while (rec := pipe.frame_info(i)) is not None:
            pts, w, h = rec
            frame = pool.take((h, w, 3)) if pool is not None else np.empty((h, w, 3), np.uint8)
            if pipe.read_into(memoryview(frame).cast("B")) < frame.nbytes:
                break  # ffmpeg died mid-frame: close() reports why
            t = float(i / rate) if pts is None else pts - info.start_time
            yield frame, max(t, 0.0)
            i += 1
        ok = True
    finally:
        pipe.close(check=ok)
    return i


def iter_audio(
    info: ProbeInfo, sample_rate: int, chunk_seconds: float = 4.0, timeout: float = 60.0
) -> Iterator[np.ndarray]:
    """Yield mono float32 chunks of the first audio stream at `sample_rate`."""
    if info.audio is None:
        raise DecodeError(f"{info.path}: no audio stream")
    src = _input()
    out = src["a:0"].output("pipe:", format="f32le", ac=1, ar=sample_rate)
    pipe = _run(out, info.path, timeout)
    ok = False
    try:
        while True:
            buf = np.empty(int(chunk_seconds * sample_rate), np.float32)
            n = pipe.read_into(memoryview(buf).cast("B")) // 4
            if n:
                yield buf[:n]
            if n < len(buf):
                break
        ok = True
    finally:
        pipe.close(check=ok)


def read_subtitle_stream(info: ProbeInfo, timeout: float = 60.0) -> str:
    """The first embedded subtitle stream converted to SRT text."""
    out = _input()["s:0"].output("pipe:", format="srt")
    pipe = _run(out, info.path, timeout)
    chunks = []
    buf = bytearray(1 << 16)
    try:
        while n := pipe.read_into(memoryview(buf)):
            chunks.append(bytes(buf[:n]))
            if n < len(buf):
                break
    finally:
        pipe.close(check=True)
    return b"".join(chunks).decode("utf-8", "replace")
