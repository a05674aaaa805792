"""Plain data types shared by decode, readers, encoders and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FrameInput:
    """Single frames on a time grid: `fps` steps per second, or `num_frames` spread evenly."""

    fps: float | None = 1.0  # frames per second of video time (None when num_frames is set)
    num_frames: int | None = None  # exactly this many frames over the whole video
    resize: tuple[int, ...] = (256,)  # (short_side,) or (height, width), done in ffmpeg
    crop: tuple[int, int] = (224, 224)  # centre crop (height, width), done in ffmpeg
    kind: str = "frames"


@dataclass(frozen=True)
class ClipInput:
    """Clips of `clip_len` frames sampled at `fps`, one every `stride` frames."""

    fps: float = 16.0
    clip_len: int = 16
    stride: int = 16
    resize: tuple[int, ...] = (128, 171)
    crop: tuple[int, int] = (112, 112)
    kind: str = "clips"


@dataclass(frozen=True)
class AudioInput:
    """Mono audio at `sample_rate`, cut into windows of `window` s, one every 1/`fps` s."""

    sample_rate: int = 16000
    fps: float = 1.0  # steps per second; matches a vision grid with the same fps
    window: float = 1.0  # seconds of audio per step (>= 1/fps overlaps, < 1/fps skips)
    kind: str = "audio"


@dataclass(frozen=True)
class TextInput:
    """Subtitle cues or a sheet's text column; each cue is one step."""

    kind: str = "text"


InputSpec = FrameInput | ClipInput | AudioInput | TextInput


@dataclass(frozen=True)
class Step:
    """One unit an encoder turns into one feature row."""

    payload: object  # uint8 (H,W,3) frame | uint8 (T,H,W,3) clip | float32 (S,) audio | str
    start: float  # seconds from the start of the file
    end: float


@dataclass
class VideoInput:
    """One input video as given by the user (folder entry or sheet row)."""

    path: Path
    source: str  # the path as the user gave it (relative to the input folder or sheet)
    id: str | None = None
    text: str | None = None  # from a sheet's `text` column
    meta: dict = field(default_factory=dict)  # other sheet columns, kept in the samples index
    key: str = ""  # content hash, filled in by hashing
    sha256: str = ""
    bytes: int = 0


@dataclass
class FieldResult:
    """Features of one field for one video: (T, D) float32 and (T, 2) start/end seconds."""

    feats: np.ndarray
    ts: np.ndarray
