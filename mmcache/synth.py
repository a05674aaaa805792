"""Synthetic videos made with ffmpeg's lavfi sources, for the demo, tests and benchmarks.

`python -m mmcache.synth OUT_DIR` writes a small labelled set: clips of several classes told apart
by picture, motion, audio tone and subtitle text, plus a labels.csv and a videos.csv sheet.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .probe import FFMPEG


@dataclass(frozen=True)
class ClipStyle:
    """What makes a class recognisable in each modality."""

    label: str
    source: str  # lavfi video source expression with {size}, {rate}, {duration}
    tone_hz: int  # sine tone of the audio track
    words: str  # subtitle text


CLASSES = (
    ClipStyle(
        "sunrise",
        "color=c=orange:size={size}:rate={rate}:duration={duration},"
        "drawbox=x='mod(t*40,iw)':y=ih/3:w=40:h=40:color=yellow:t=fill",
        330,
        "the sun rises over the hills",
    ),
    ClipStyle(
        "ocean",
        "color=c=navy:size={size}:rate={rate}:duration={duration},"
        "drawbox=x=0:y='mod(t*60,ih)':w=iw:h=12:color=white:t=fill",
        550,
        "waves roll onto the beach",
    ),
    ClipStyle(
        "forest",
        "testsrc2=size={size}:rate={rate}:duration={duration},hue=h=90:s=0.6",
        880,
        "birds sing among the green trees",
    ),
)


def make_clip(
    path: Path,
    *,
    duration: float = 2.0,
    size: str = "160x120",
    rate: float = 25,
    style: ClipStyle = CLASSES[0],
    audio: bool = True,
    codec: str = "libx264",
    rotate: int | None = None,
    subtitles: str | None = None,
    variant: int = 0,
) -> Path:
    """Write one clip with ffmpeg; `variant` shifts tone and hue a little so clips differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video = style.source.format(size=size, rate=rate, duration=duration)
    if variant:
        video += f",hue=H={variant * 0.2}"
    args = [FFMPEG, "-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i", video]
    if audio:
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={style.tone_hz + 7 * variant}:duration={duration}:sample_rate=44100",
        ]
    args += ["-c:v", codec, "-pix_fmt", "yuv420p", "-g", "25"]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    if rotate is not None:
        args += ["-metadata:s:v:0", f"rotate={rotate}"]
    args.append(str(path))
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    if subtitles is not None:
        path.with_suffix(".srt").write_text(srt([(0.0, duration / 2, subtitles), (duration / 2, duration, subtitles)]))
    return path


def srt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    return "".join(f"{i}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for i, (a, b, text) in enumerate(cues, 1))


def make_labelled_set(out: Path, per_class: int = 2, duration: float = 2.0, size: str = "160x120") -> Path:
    """Clips of every class with sidecar subtitles; writes labels.csv (id,label) and videos.csv."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for style in CLASSES:
        for i in range(per_class):
            name = f"{style.label}_{i:03d}"
            make_clip(out / f"{name}.mp4", duration=duration, size=size, style=style, subtitles=style.words, variant=i)
            rows.append({"path": f"{name}.mp4", "id": name, "label": style.label})
    with open(out / "videos.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "id", "label"])
        w.writeheader()
        w.writerows(rows)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "label"])
        w.writeheader()
        w.writerows({"id": r["id"], "label": r["label"]} for r in rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--size", default="160x120")
    a = ap.parse_args()
    make_labelled_set(a.out, a.per_class, a.duration, a.size)
    print(f"wrote {a.per_class * len(CLASSES)} clips to {a.out}")


if __name__ == "__main__":
    main()
