#!/usr/bin/env python
"""Where the time of `pipeline.run_encoder` goes, and what the thread / queue / batch knobs do to it.

    python benchmarks/profile_pipeline.py breakdown [--dtype bfloat16]   # one instrumented run
    python benchmarks/profile_pipeline.py knobs [--rounds 3] [--dtype bfloat16]
    python benchmarks/profile_pipeline.py memory [--seconds 600]        # peak RSS: malloc / batch knobs
    py-spy record --threads --idle -f raw -o bench-out/pyspy.txt -- \\
        python benchmarks/profile_pipeline.py breakdown                   # sampled stacks per thread

Uses the test video bench_extract.py makes (bench-out/videos/, made here if missing), resnet18
weights=random at 8 frames/s. `breakdown` times, in one run_encoder call, the consumer's waits on
the queue, np.stack, to_device/normalise and the forward pass, the producer's waits on ffmpeg and on
the full queue, and the CPU seconds of every thread and of ffmpeg. `knobs` runs each variant in its
own process (environment variables such as OMP_WAIT_POLICY act only at start), alternating variants
round by round; each child measures decode-only, encode-only and run_encoder back to back, and each
variant is reported as its run_encoder frames/s relative to the default's in the same round (median
over rounds) and as run_encoder / (1/(1/decode + 1/encode)) against the default's decode and encode.
Nothing in mmcache/ is edited: knobs are applied by monkeypatching from here.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from common import (
    ROOT,
    Meter,
    Stage,
    decode_only,
    encode_only,
    extraction_rss,
    harmonic,
    jobs_for,
    make_long_video,
    make_video,
    med,
    run_encoder_only,
)

VIDEO_SECONDS = int(os.environ.get("BENCH_VIDEO_SECONDS", "64"))  # knobs: --seconds, passed to the children

# name -> (environment, knobs applied in the child)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "torch_threads=1": ({}, {"torch_threads": 1}),
    "ffmpeg -threads 1": ({}, {"ffmpeg_threads": 1}),
    "ffmpeg -threads 2": ({}, {"ffmpeg_threads": 2}),
    "ffmpeg nice 10": ({}, {"ffmpeg_nice": 10}),
    "queue 256": ({}, {"queue": 256}),
    "batch_size=8": ({}, {"batch_size": 8}),
    "batch_size=16": ({}, {"batch_size": 16}),
    "batch_size=64": ({}, {"batch_size": 64}),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, {}),
    "OMP_WAIT_POLICY=ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, {}),
    "MALLOC_MMAP_THRESHOLD_=131072": ({"MALLOC_MMAP_THRESHOLD_": "131072"}, {}),
}


def test_video() -> Path:
    return make_video(
        ROOT / "bench-out" / "videos" / f"testsrc2-noise-1280x720-25fps-{VIDEO_SECONDS}s.mp4", VIDEO_SECONDS
    )


# ---------------------------------------------------------------------------------------------
# knobs, applied by monkeypatching mmcache from the outside


def patch_queue(pipeline, cls: type) -> None:
    """Make mmcache.pipeline build its queues from `cls` (a queue.Queue subclass)."""
    pipeline.queue = type("QueueShim", (), {"Queue": cls, "Full": queue.Full, "Empty": queue.Empty})


def apply_knobs(knobs: dict) -> None:
    import torch

    import mmcache.decode as decode
    import mmcache.pipeline as pipeline

    if "torch_threads" in knobs:
        torch.set_num_threads(knobs["torch_threads"])
    if "ffmpeg_threads" in knobs or "ffmpeg_nice" in knobs:

        class _Pipe(decode.FFmpegPipe):  # edit the argument list of every ffmpeg the decoder starts
            def __init__(self, args, path, timeout):
                args = list(args)
                if "ffmpeg_threads" in knobs:
                    i = args.index("-i")
                    n = str(knobs["ffmpeg_threads"])
                    args[i:i] = ["-threads", n, "-filter_complex_threads", n]
                if "ffmpeg_nice" in knobs:
                    args = ["nice", "-n", str(knobs["ffmpeg_nice"]), *args]
                super().__init__(args, path, timeout)

        decode.FFmpegPipe = _Pipe
    if "queue" in knobs:
        size = knobs["queue"]

        class _Q(queue.Queue):
            def __init__(self, maxsize=0):
                super().__init__(maxsize=size)

        patch_queue(pipeline, _Q)


def build(dtype: str, knobs: dict):
    from mmcache.encoders import build_encoder

    arg = "resnet18:weights=random,fps=8"
    if dtype == "bfloat16":
        arg += ",dtype=bfloat16,channels_last=true"
    if "batch_size" in knobs:
        arg += f",batch_size={knobs['batch_size']}"
    return build_encoder(arg)


# ---------------------------------------------------------------------------------------------
# one child of the knob sweep


def measure_child(variant: str, dtype: str) -> dict:
    """Decode only, encode only and run_encoder back to back, as bench_extract measures them."""
    apply_knobs(VARIANTS[variant][1])
    enc = build(dtype, VARIANTS[variant][1])
    (job,) = jobs_for([test_video()])
    frames, _ = decode_only(job, enc.input)
    enc.encode(frames[: enc.batch_size])  # warm-up
    decode = decode_only(job, enc.input, keep=False)[1]
    encode = Stage.of(*encode_only(enc, frames))
    return {k: asdict(v) for k, v in (("decode", decode), ("encode", encode), ("pipeline", run_encoder_only(enc, job)))}


def knobs(rounds: int, dtype: str, variants: list[str]) -> None:
    test_video()
    results: dict[str, list[dict]] = defaultdict(list)
    names = ["default", *[v for v in variants if v != "default"]]
    for r in range(rounds):
        order = names if r % 2 == 0 else [names[0], *reversed(names[1:])]
        for name in order:
            env = {**os.environ, **VARIANTS[name][0]}
            res = subprocess.run(
                [sys.executable, __file__, "child", name, "--dtype", dtype],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if res.returncode != 0:
                raise RuntimeError(f"{name}: {res.stderr[-2000:]}")
            out = json.loads(res.stdout.strip().splitlines()[-1])
            results[name].append(out)
            print(
                f"round {r + 1} {name:26s} decode {out['decode']['fps']:6.1f} encode {out['encode']['fps']:6.1f} "
                f"pipeline {out['pipeline']['fps']:6.1f} frames/s (others {out['pipeline']['others']:.0%})",
                flush=True,
            )
    base = results["default"]
    print(f"\nresnet18 {dtype}, {VIDEO_SECONDS} s 720p video at 8 frames/s, {rounds} rounds, medians:\n")
    print(
        "| variant | pipeline frames/s | vs default (same round) | pipeline / harmonic(default dec, enc) | "
        "own pipeline / own harmonic | pipeline CPU ms/frame | encode-only frames/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        rs = results[name]
        speed = [x["pipeline"]["fps"] / b["pipeline"]["fps"] for x, b in zip(rs, base, strict=True)]
        vs_def = [
            x["pipeline"]["fps"] / harmonic(b["decode"]["fps"], b["encode"]["fps"])
            for x, b in zip(rs, base, strict=True)
        ]
        own = [x["pipeline"]["fps"] / harmonic(x["decode"]["fps"], x["encode"]["fps"]) for x in rs]
        print(
            f"| {name} | {med(x['pipeline']['fps'] for x in rs):.1f} | {med(speed):.3f} | {med(vs_def):.3f} | "
            f"{med(own):.3f} | {med(x['pipeline']['cpu'] for x in rs) * 1e3:.1f} | "
            f"{med(x['encode']['fps'] for x in rs):.1f} |"
        )
    path = ROOT / "bench-out" / f"knobs-{dtype}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\nraw results: {path}")


# ---------------------------------------------------------------------------------------------
# instrumented single run


class _Timer:
    def __init__(self):
        self.t = defaultdict(float)
        self.n = defaultdict(int)

    def wrap(self, name: str, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[name] += time.perf_counter() - t0
                self.n[name] += 1

        return timed


def _thread_cpu() -> dict[int, float]:
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(v[11]) + int(v[12])) / tick
        except (OSError, IndexError):
            continue
    return out


def breakdown(dtype: str) -> None:
    import numpy as np

    import mmcache.pipeline as pipeline
    from mmcache.readers import READERS

    enc = build(dtype, {})
    (job,) = jobs_for([test_video()])
    frames = [s.payload for s in READERS["frames"](job.video, job.info, enc.input, 120)]
    enc.encode(frames[: enc.batch_size])  # warm-up
    tm = _Timer()
    names: dict[int, str] = {threading.get_native_id(): "main (consumer: queue, stack, torch thread 0)"}

    # consumer side: the pieces of ImageEncoder.encode, as instance attributes
    enc.to_device = tm.wrap("consumer: to_device (from_numpy)", enc.to_device)
    enc.normalise = tm.wrap("consumer: normalise (uint8 -> float, mean/std)", enc.normalise)
    enc.run = tm.wrap("consumer: forward (module under inference_mode/autocast)", enc.run)
    orig_stack = np.stack
    np.stack = tm.wrap("consumer: np.stack (frames -> batch)", orig_stack)

    # producer side: time blocked reading ffmpeg, and blocked on a full queue
    reader = READERS["frames"]

    def timed_reader(*a, **k):
        names[threading.get_native_id()] = "producer (decode thread: pipe reads, queue puts)"
        for t in threading.enumerate():
            if t.native_id and t.native_id not in names and t.name != "cpu-sampler":
                names[t.native_id] = f"python thread {t.name}"
        it = reader(*a, **k)
        while True:
            t0 = time.perf_counter()
            try:
                step = next(it)
            except StopIteration:
                return
            finally:
                tm.t["producer: next frame from ffmpeg (read + wait)"] += time.perf_counter() - t0
            yield step

    class _Q(queue.Queue):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.get = tm.wrap("consumer: q.get (waiting for frames)", self.get)
            self.put = tm.wrap("producer: q.put (waiting for room)", self.put)

    pipeline.READERS = {**pipeline.READERS, "frames": timed_reader}
    patch_queue(pipeline, _Q)

    cpu_by_tid: dict[int, float] = {}
    stop = threading.Event()

    def sample():  # threads come and go (ffmpeg's stderr drain, watchdog): keep their last value
        while not stop.wait(0.1):
            for t in threading.enumerate():
                if t.native_id and t.native_id not in names and t.name != "cpu-sampler":
                    target = getattr(t, "_target", None)
                    names[t.native_id] = f"python thread {getattr(target, '__name__', t.name)}"
            cpu_by_tid.update(_thread_cpu())

    base_cpu = _thread_cpu()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = threading.Thread(target=sample, name="cpu-sampler", daemon=True)
    sampler.start()
    with Meter() as m:
        (o,) = list(pipeline.run_encoder(enc, [job], timeout=120))
    stop.set()
    sampler.join()
    cpu_by_tid.update(_thread_cpu())
    np.stack = orig_stack
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = len(o.feats)
    print(
        f"run_encoder, resnet18 {dtype}, {n} frames, {m.wall:.2f} s wall ({n / m.wall:.1f} frames/s), "
        f"others used {m.others:.0%} of the machine meanwhile\n"
    )
    print("| where (wall time, per thread) | seconds | share of wall |")
    print("|---|---:|---:|")
    for k in sorted(tm.t):
        print(f"| {k} | {tm.t[k]:.2f} | {tm.t[k] / m.wall:.0%} |")
    consumer = sum(v for k, v in tm.t.items() if k.startswith("consumer"))
    print(
        f"| consumer: everything else (python loop, _encode bookkeeping) | {max(m.wall - consumer, 0):.2f} | "
        f"{max(m.wall - consumer, 0) / m.wall:.0%} |"
    )
    print("\n| CPU (seconds) | seconds | per frame ms |")
    print("|---|---:|---:|")
    rows = defaultdict(float)
    for tid, c in cpu_by_tid.items():
        used = c - base_cpu.get(tid, 0.0)
        if used > 0.005:
            rows[names.get(tid, "torch OpenMP worker / other native thread")] += used
    ff = children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime
    rows["ffmpeg process (decode + filters)"] = ff
    for k, v in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.2f} | {v / n * 1e3:.1f} |")
    total = sum(rows.values())
    print(f"| total | {total:.2f} | {total / n * 1e3:.1f} |")
    print(f"\nCPU utilisation {total / m.wall:.2f} of {len(os.sched_getaffinity(0))} cores")


MEMORY_VARIANTS: dict[str, tuple[dict, str]] = {  # name -> (environment, extra encoder options)
    "default": ({}, ""),  # glibc as it is; buffers reused (mmcache/runtime.py)
    "MALLOC_ARENA_MAX=1": ({"MALLOC_ARENA_MAX": "1"}, ""),
    "MALLOC_MMAP_THRESHOLD_=131072": ({"MALLOC_MMAP_THRESHOLD_": "131072"}, ""),
    "batch_size=16": ({}, ",batch_size=16"),
    "MMCACHE_MMAP_THRESHOLD=131072": ({"MMCACHE_MMAP_THRESHOLD": "131072"}, ""),  # the old default pin
    "MMCACHE_MMAP_THRESHOLD=1048576": ({"MMCACHE_MMAP_THRESHOLD": "1048576"}, ""),
    "MMCACHE_MMAP_THRESHOLD=8388608": ({"MMCACHE_MMAP_THRESHOLD": "8388608"}, ""),
}


def memory(seconds: int, variants: list[str]) -> None:
    """Peak RSS of one extraction of a `seconds`-long 720p video per variant (each in a child)."""
    long = make_long_video(
        ROOT / "bench-out" / "videos" / f"{test_video().stem}-looped-{seconds}s.mp4", test_video(), seconds
    )
    print(
        f"| variant ({seconds} s 720p, resnet18 float32, 8 fps) | python VmHWM GB | python anon peak GB "
        "| ffmpeg VmHWM GB | frames/s (noisy) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in variants:
        env, extra = MEMORY_VARIANTS[name]
        cache = ROOT / "bench-out" / "profile" / "cache-mem"
        r = extraction_rss(long, cache, f"resnet18:weights=random,fps=8{extra}", env)
        print(
            f"| {name} | {r['python_hwm'] / 1e9:.3f} | {r['python_anon_peak'] / 1e9:.3f} | "
            f"{r['ffmpeg_hwm'] / 1e9:.3f} | {r['store']['steps'] / r['wall_s']:.1f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["breakdown", "knobs", "memory", "child"])
    ap.add_argument("variant", nargs="?", default="default")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--variants",
        help="comma-separated subset of: "
        + ", ".join(VARIANTS)
        + " (knobs); "
        + ", ".join(MEMORY_VARIANTS)
        + " (memory)",
    )
    ap.add_argument("--seconds", type=int, help="video length: memory (default 600), knobs (default 32)")
    a = ap.parse_args()
    if a.mode == "child":
        print(json.dumps(measure_child(a.variant, a.dtype)))
    elif a.mode == "memory":
        memory(a.seconds or 600, a.variants.split(",") if a.variants else list(MEMORY_VARIANTS))
    elif a.mode == "knobs":
        global VIDEO_SECONDS
        VIDEO_SECONDS = a.seconds or 32
        os.environ["BENCH_VIDEO_SECONDS"] = str(VIDEO_SECONDS)
        knobs(a.rounds, a.dtype, a.variants.split(",") if a.variants else list(VARIANTS))
    else:
        breakdown(a.dtype)


if __name__ == "__main__":
    main()
