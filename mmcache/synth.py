"""Synthetic videos made with ffmpeg's lavfi sources, for the demo, tests and benchmarks.

`python -m mmcache.synth OUT_DIR` writes a small labelled set: clips of several classes told apart
by picture, motion, audio tone and subtitle text, plus a labels.csv and a videos.csv sheet.
`--design combo` writes the set of the demo instead: 4 classes, each a picture x tone combination,
that no single modality separates (see `make_fusion_set`).
"""

from __future__ import annotations

import argparse
import csv
import random
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
    audio: str = ""  # lavfi audio source expression with {duration} instead of the plain sine tone


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
        sine = f"sine=frequency={style.tone_hz + 7 * variant}:duration={duration}:sample_rate=44100"
        args += ["-f", "lavfi", "-i", style.audio.format(duration=duration) if style.audio else sine]
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
    write_sheets(out, rows)
    return out


def write_sheets(out: Path, rows: list[dict[str, str]]) -> None:
    """videos.csv (path,id,label[,split]) and labels.csv (id,label[,split]) of `rows`."""
    extra = ["split"] if rows and "split" in rows[0] else []
    with open(out / "videos.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "id", "label", *extra])
        w.writeheader()
        w.writerows(rows)
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["id", "label", *extra], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# The combo design (`make_fusion_set`): class = picture x tone. The picture tells day from night, the
# tone low from high; only both together name the class.
PICTURES = ("day", "night")
TONES = {"low": (220, 330), "high": (880, 1320)}  # Hz range each tone is drawn from
COMBO_CLASSES = tuple(f"{p}-{t}" for p in PICTURES for t in TONES)
NEUTRAL_WORDS = (  # subtitles that say nothing about picture or tone
    "a short clip from the collection",
    "recorded with a small camera",
    "another take of the same scene",
    "the camera keeps rolling",
    "one more example for the archive",
    "watch and listen closely",
    "nothing much happens here",
    "a few seconds of sound and picture",
)
SPLIT_FRACTIONS = (("test", 0.2), ("val", 0.2))  # of the groups, when there are at least 5; the rest train


@dataclass(frozen=True)
class Nuisance:
    """What varies from group to group of the combo design, whatever the class."""

    hue: float  # degrees
    saturation: float
    brightness: float
    noise: int  # strength of temporal noise
    seed: int
    x0: float  # start of the moving shape, fraction of the frame
    speed: float  # its speed, frames widths or heights per second
    tone_at: float  # where in its range the tone lies, 0..1
    loudness: float
    hum_hz: int  # a faint second tone, between the two tone ranges
    words: str

    @classmethod
    def draw(cls, rng: random.Random) -> Nuisance:
        return cls(
            hue=round(rng.uniform(-25, 25), 1),
            saturation=round(rng.uniform(0.7, 1.3), 2),
            brightness=round(rng.uniform(-0.5, 0.5), 2),
            noise=rng.randint(0, 12),
            seed=rng.randrange(1 << 20),
            x0=round(rng.random(), 3),
            speed=round(rng.uniform(0.2, 0.6), 3),
            tone_at=rng.random(),
            loudness=round(rng.uniform(0.25, 0.6), 3),
            hum_hz=rng.randint(450, 700),
            words=rng.choice(NEUTRAL_WORDS),
        )


def combo_style(picture: str, tone: str, n: Nuisance) -> ClipStyle:
    """The clip of `picture` x `tone` under nuisance `n`: its video depends on the picture and `n`
    only, its audio on the tone and `n` only, its subtitles on `n` only."""
    if picture == "day":  # an orange sky with a yellow sun moving across
        video = (
            "color=c=0xE07020:size={size}:rate={rate}:duration={duration},"
            f"drawbox=x='mod(({n.x0}+t*{n.speed})*iw,iw)':y=ih/4:w=iw/5:h=iw/5:color=yellow:t=fill"
        )
    else:  # a navy sky with a pale band moving down
        video = (
            "color=c=0x101848:size={size}:rate={rate}:duration={duration},"
            f"drawbox=x=0:y='mod(({n.x0}+t*{n.speed})*ih,ih)':w=iw:h=ih/8:color=0xC0C8E0:t=fill"
        )
    video += f",hue=h={n.hue}:s={n.saturation}:b={n.brightness},noise=alls={n.noise}:allf=t:all_seed={n.seed}"
    low, high = TONES[tone]
    hz = round(low + n.tone_at * (high - low))
    audio = (
        f"aevalsrc=exprs='{n.loudness}*sin(2*PI*{hz}*t)+0.05*sin(2*PI*{n.hum_hz}*t)'"
        ":sample_rate=44100:duration={duration}"
    )
    return ClipStyle(f"{picture}-{tone}", video, hz, n.words, audio)


def make_fusion_set(
    out: Path, per_class: int = 20, duration: float = 2.0, size: str = "160x120", seed: int = 0
) -> Path:
    """The demo's set where fusion matters: 4 classes, day-low, day-high, night-low, night-high, the
    picture (day or night) x the audio tone (low or high); subtitles are neutral sentences.

    A factorial design: `per_class` groups, each one draw of nuisances (hue, saturation, brightness,
    noise, motion, tone frequency within its range, loudness, a faint hum, the subtitle sentence)
    rendered as all 4 classes. Within a group the two clips of a picture have the same video, the two
    of a tone the same audio, all four the same subtitles, so the picture alone tells 2 classes apart
    from the other 2 and no more (50% accuracy at best), the tone alone likewise, the text nothing
    (25%); both together tell all 4. Whole groups go to one split (the `split` column: 20% test, 20%
    val, the rest train, with at least 5 groups; else no split and the trainer makes one), so that a
    test clip's twins are never in training."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    nuisances = [Nuisance.draw(rng) for _ in range(per_class)]
    order = rng.sample(range(per_class), per_class)
    split = dict.fromkeys(range(per_class), "train" if per_class >= 5 else "")
    if per_class >= 5:
        start = 0
        for name, fraction in SPLIT_FRACTIONS:
            k = max(1, round(fraction * per_class))
            split.update(dict.fromkeys(order[start : start + k], name))
            start += k
    rows = []
    for picture in PICTURES:
        for tone in TONES:
            for g, n in enumerate(nuisances):
                style = combo_style(picture, tone, n)
                name = f"{style.label}_{g:03d}"
                make_clip(out / f"{name}.mp4", duration=duration, size=size, style=style, subtitles=style.words)
                rows.append({"path": f"{name}.mp4", "id": name, "label": style.label, "split": split[g]})
    write_sheets(out, rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--size", default="160x120")
    ap.add_argument(
        "--design",
        choices=("classes", "combo"),
        default="classes",
        help="classes: 3 classes, each told apart by any modality; combo: 4 picture x tone classes (make_fusion_set)",
    )
    ap.add_argument("--seed", type=int, default=0, help="combo: seed of the nuisances and the split")
    a = ap.parse_args()
    if a.design == "combo":
        make_fusion_set(a.out, a.per_class, a.duration, a.size, a.seed)
        n = a.per_class * len(COMBO_CLASSES)
    else:
        make_labelled_set(a.out, a.per_class, a.duration, a.size)
        n = a.per_class * len(CLASSES)
    print(f"wrote {n} clips to {a.out}")


if __name__ == "__main__":
    main()
