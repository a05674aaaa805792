"""Turn one video into the steps an encoder consumes, by the encoder's input spec.

`READERS` maps an input kind to a plain generator; the extraction loop looks the reader up by
`spec.kind` and never branches on encoder names.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from .decode import FRAMES, grid_rate, iter_audio, iter_frames, read_subtitle_stream
from .errors import FieldAbsent
from .probe import ProbeInfo
from .subtitles import Cue, find_sidecar, parse_cues
from .types import AudioInput, ClipInput, FrameInput, Step, TextInput, VideoInput


def read_frames(video: VideoInput, info: ProbeInfo, spec: FrameInput, timeout: float) -> Iterator[Step]:
    """One step per frame of the grid; its frame array comes from decode.FRAMES (the pipeline gives
    it back once encoded)."""
    rate = grid_rate(info, spec.fps, spec.num_frames)
    step = float(1 / rate)
    for frame, t in iter_frames(
        info, rate, resize=spec.resize, crop=spec.crop, max_frames=spec.num_frames, timeout=timeout, pool=FRAMES
    ):
        yield Step(frame, t, t + step)


def read_clips(video: VideoInput, info: ProbeInfo, spec: ClipInput, timeout: float) -> Iterator[Step]:
    """Windows of `clip_len` frames every `stride` frames; a video shorter than one clip gives one
    clip padded with its last frame (so every readable video has at least one step). Each clip is
    a new array stacked into one from decode.FRAMES (the pipeline gives it back once encoded)."""
    rate = grid_rate(info, spec.fps, None)
    dt = float(1 / rate)
    window: deque[tuple[np.ndarray, float]] = deque(maxlen=spec.clip_len)
    n = emitted = 0
    for frame, t in iter_frames(info, rate, resize=spec.resize, crop=spec.crop, timeout=timeout):
        window.append((frame, t))
        n += 1
        if n >= spec.clip_len and (n - spec.clip_len) % spec.stride == 0:
            yield _clip(list(window), dt)
            emitted += 1
    if not emitted and window:
        frames = list(window)
        yield _clip(frames + [frames[-1]] * (spec.clip_len - len(frames)), dt, end=frames[-1][1] + dt)


def _clip(frames: list[tuple[np.ndarray, float]], dt: float, end: float | None = None) -> Step:
    first = frames[0][0]
    clip = np.stack([f for f, _ in frames], out=FRAMES.take((len(frames), *first.shape), first.dtype))  # (T, H, W, 3)
    return Step(clip, frames[0][1], frames[-1][1] + dt if end is None else end)


def read_audio(video: VideoInput, info: ProbeInfo, spec: AudioInput, timeout: float) -> Iterator[Step]:
    """Windows of `window` s every 1/fps s over the decoded audio; the last one is zero-padded."""
    if info.audio is None:
        raise FieldAbsent("no audio stream")
    sr, win = spec.sample_rate, int(round(spec.window * spec.sample_rate))
    buf = np.zeros(0, np.float32)
    offset = 0  # sample index of buf[0]
    i = 0
    for chunk in iter_audio(info, sr, timeout=timeout):
        buf = np.concatenate([buf, chunk])
        while (start := int(round(i * sr / spec.fps))) + win <= offset + len(buf):
            yield Step(buf[start - offset : start - offset + win].copy(), start / sr, (start + win) / sr)
            i += 1
        keep_from = int(round(i * sr / spec.fps)) - offset
        buf, offset = buf[keep_from:], offset + keep_from
    total = offset + len(buf)
    # a trailing partial window is kept when it holds at least half a window of audio (or is the only one),
    # like the fps filter rounds the video's last frame: 2.02 s of audio at 2 steps/s gives 4 steps, not 5
    while (start := int(round(i * sr / spec.fps))) < total and (2 * (total - start) >= win or i == 0):
        seg = np.zeros(win, np.float32)
        part = buf[start - offset :]
        seg[: len(part)] = part
        yield Step(seg, start / sr, total / sr)
        i += 1
    if i == 0:
        raise FieldAbsent("audio stream decoded to no samples")


def cues_for(video: VideoInput, info: ProbeInfo, timeout: float) -> list[Cue]:
    """Text cues: the sheet's text column, else a sidecar .srt/.vtt, else an embedded stream."""
    if video.text:
        return [Cue(0.0, info.duration, video.text)]
    sidecar = find_sidecar(video.path)
    if sidecar is not None:
        return parse_cues(sidecar.read_text("utf-8", errors="replace"))
    if info.subtitles:
        return parse_cues(read_subtitle_stream(info, timeout=timeout))
    return []


def read_text(video: VideoInput, info: ProbeInfo, spec: TextInput, timeout: float) -> Iterator[Step]:
    cues = cues_for(video, info, timeout)
    if not cues:
        raise FieldAbsent("no text: no text column, sidecar subtitle or subtitle stream")
    for cue in cues:
        yield Step(cue.text, cue.start, cue.end)


READERS: dict[str, Callable[..., Iterator[Step]]] = {
    "frames": read_frames,
    "clips": read_clips,
    "audio": read_audio,
    "text": read_text,
}
