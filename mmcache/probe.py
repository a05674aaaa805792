"""ffprobe wrapper: streams, duration, display rotation, as plain data."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DecodeError

FFMPEG = "ffmpeg"  # Debian's binaries, found on PATH
FFPROBE = "ffprobe"


@dataclass(frozen=True)
class VideoStream:
    codec: str
    width: int  # display width (after rotation)
    height: int  # display height (after rotation)
    rotation: int  # degrees, as in the display matrix (ffmpeg autorotates on decode)
    avg_fps: float | None  # header value, for information only: the grid uses decoded timestamps


@dataclass(frozen=True)
class ProbeInfo:
    path: Path
    duration: float
    start_time: float
    video: VideoStream | None
    audio: dict | None  # codec, sample_rate, channels of the first audio stream
    subtitles: list[str] = field(default_factory=list)  # codecs of subtitle streams

    def summary(self) -> dict:
        """JSON-safe description kept in the samples index."""
        return {
            "video": None if self.video is None else vars(self.video),
            "audio": self.audio,
            "subtitles": list(self.subtitles),
        }


def ffmpeg_input(path: Path) -> str:
    """An argument ffmpeg reads as a plain local file whatever the name ('-x', 'a:b', spaces)."""
    return "file:" + str(Path(path).absolute())


def _rotation(stream: dict) -> int:
    for sd in stream.get("side_data_list") or []:
        if "rotation" in sd:
            return int(round(float(sd["rotation"])))
    return int(stream.get("tags", {}).get("rotate", 0) or 0)


def _fraction(text: str | None) -> float | None:
    try:
        num, den = (text or "").split("/")
        return float(num) / float(den) if float(den) else None
    except ValueError:
        return None


def _video_stream(stream: dict) -> VideoStream:
    rot = _rotation(stream)
    w, h = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if rot % 180:
        w, h = h, w
    return VideoStream(stream.get("codec_name", "?"), w, h, rot, _fraction(stream.get("avg_frame_rate")))


def _first(streams: list[dict], kind: str) -> dict | None:
    return next((s for s in streams if s.get("codec_type") == kind), None)


def _duration(fmt: dict, streams: list[dict]) -> float:
    values = [fmt.get("duration")] + [s.get("duration") for s in streams]
    for v in values:
        try:
            if v is not None and float(v) > 0:
                return float(v)
        except ValueError:
            continue
    return 0.0


def probe(path: Path, timeout: float = 60.0) -> ProbeInfo:
    """Read stream info with ffprobe; raise DecodeError naming the file and ffprobe's reason."""
    cmd = [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", ffmpeg_input(path)]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise DecodeError(f"{path}: ffprobe timed out after {timeout:g} s") from e
    err = res.stderr.decode("utf-8", "replace").strip().splitlines()
    if res.returncode != 0:
        raise DecodeError(f"{path}: {ffmpeg_reason(err, path) or f'ffprobe exit code {res.returncode}'}")
    info = json.loads(res.stdout or b"{}")
    streams, fmt = info.get("streams", []), info.get("format", {})
    if not streams:
        raise DecodeError(f"{path}: no audio or video streams (not a media file)")
    v, a = _first(streams, "video"), _first(streams, "audio")
    if v is not None and v.get("disposition", {}).get("attached_pic"):
        v = None  # cover art is not a video
    audio = (
        None
        if a is None
        else {
            "codec": a.get("codec_name", "?"),
            "sample_rate": int(a.get("sample_rate") or 0),
            "channels": int(a.get("channels") or 0),
        }
    )
    return ProbeInfo(
        path=Path(path),
        duration=_duration(fmt, streams),
        start_time=float(fmt.get("start_time") or 0.0),
        video=None if v is None else _video_stream(v),
        audio=audio,
        subtitles=[s.get("codec_name", "?") for s in streams if s.get("codec_type") == "subtitle"],
    )


_LOG_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\]\s*")


def ffmpeg_reason(lines: list[str], path: Path, keep: int = 2) -> str:
    """The last distinct messages of ffmpeg's log, without '[demuxer @ 0x..]' or file-name prefixes
    (we name the file once ourselves): e.g. 'moov atom not found; Invalid data found ...'."""
    prefix = ffmpeg_input(path) + ": "
    out: list[str] = []
    for line in lines:
        line = _LOG_PREFIX.sub("", line.strip())
        line = line[len(prefix) :] if line.startswith(prefix) else line
        if line and line not in out and not line.startswith(("Stream #", "Input #", "Output #", "Duration:")):
            out.append(line)
    return "; ".join(out[-keep:])


@functools.cache
def ffmpeg_version() -> str:
    """First line of `ffmpeg -version`, part of every field's fingerprint."""
    try:
        out = subprocess.run([FFMPEG, "-version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise DecodeError(f"ffmpeg not found or not working ({e}); install it: apt-get install -y ffmpeg") from e
    return out.stdout.decode().splitlines()[0].split(" Copyright")[0]
