#!/usr/bin/env python
"""Scaling of the two parallel engines from 1 to 2 cores: Snakemake shard jobs and dask workers.

    python benchmarks/bench_scaling.py            # full run (~6-7 min), updates benchmarks/RESULTS.md
    python benchmarks/bench_scaling.py --quick    # CI smoke (~70 s), writes bench-out/RESULTS-quick.md

Target (performance issue): 2 cores at least 1.7x as fast as 1, where the work is not bound by one
shared resource; below it, the report says what bounds it.

Work: 8 clips of 24 s, 640x360 25 fps H.264 + AAC, cut (stream copy, at key frames) from one video
made with common.make_video, through resnet18 (weights=random: pretrained compute, no download) at
8 frames/s, in 2 shards so that 2 jobs can run at once. A round measures, back to back and each into
a fresh folder:

  snakemake   the real workflow (Snakefile, target extract_features: plan -> one `mmcache run-shard
              --threads 1` job per shard -> finalize -> verify) with a generated config: --cores 1
              and --cores 2
  dask        `mmcache extract --dask local:1` and `local:2` (single-threaded worker processes), the
              CLI run in a child process whose progress callbacks are timed

The 2-way run goes first in every other round. The ratio of one round's two wall times is the
speedup; the median over the rounds used is reported. The machine is shared: `others` is the share of
the CPUs other processes used during a run (common.Meter, from /proc/stat); a round in which it passed
--max-others is run again while the time budget allows (--budget: the full run fits one round, and a
second one when the machine is faster), else it is used and the report says so.

Where the time goes, to name what bounds the speedup: every `mmcache` command of a Snakemake job runs
through a shim first on PATH that records its wall and CPU seconds (so plan / finalize / verify and
Snakemake itself, the serial steps, are apart from the shard jobs, and a shard job alone can be
compared with two at once); the dask child times the hashing, the tasks and the packing; the start-up
of a fresh mmcache process (python + torch + encoders) is timed on its own. The caches of the 1- and
2-way runs of each engine must be identical: the same field fingerprints in the manifest and the same
sha256 of every file.

Videos and caches go to bench-out/ (git-ignored); raw JSON to bench-out/bench_scaling/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import (
    NCPU,
    ROOT,
    Bench,
    Meter,
    child_cmd,
    elapsed,
    ffmpeg_run,
    log,
    machine_line,
    make_video,
    med,
    spread,
    verdict,
    wait_quiet,
)

TARGET = 1.7
ENGINES = {"snakemake": "snakemake --cores", "dask": "mmcache extract --dask local:"}
IGNORED = (".lock", ".input-hashes.json")  # lock files and the local memo of input hashes: not the cache
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # measured without them


@dataclass
class Setup:
    clips: int
    seconds: int  # per clip: even, so cuts fall on key frames (GOP 2 s)
    size: str
    fps: float
    shard_size: int
    rounds: int
    startup_samples: int

    @property
    def encoder(self) -> str:
        return f"resnet18:weights=random,fps={self.fps:g}"

    @property
    def shards(self) -> int:
        return -(-self.clips // self.shard_size)


FULL = Setup(clips=8, seconds=24, size="640x360", fps=8, shard_size=4, rounds=2, startup_samples=3)
QUICK = Setup(clips=4, seconds=2, size="160x90", fps=1, shard_size=2, rounds=1, startup_samples=0)


# ---------------------------------------------------------------------------------------------
# inputs


def make_clips(setup: Setup, videos: Path) -> Path:
    """`clips` distinct clips of `seconds` each (a sheet path,id), cut from one make_video video."""
    base = make_video(videos / f"testsrc2-noise-{setup.size}-25fps-{setup.clips * setup.seconds}s.mp4",
                      setup.clips * setup.seconds, setup.size)  # fmt: skip
    folder = videos / f"scaling-{setup.size}-{setup.clips}x{setup.seconds}s"
    sheet = folder / "videos.csv"
    if not sheet.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        # fmt: off
        ffmpeg_run([
            "-i", str(base), "-c", "copy", "-map", "0", "-f", "segment", "-segment_time", str(setup.seconds),
            "-reset_timestamps", "1", "-segment_format_options", "movflags=+faststart", str(folder / "clip%02d.mp4"),
        ])
        # fmt: on
        clips = sorted(folder.glob("clip*.mp4"))
        if len(clips) != setup.clips:
            raise SystemExit(f"expected {setup.clips} clips in {folder}, ffmpeg made {len(clips)}")
        tmp = sheet.with_suffix(".part")
        tmp.write_text("path,id\n" + "".join(f"{p.name},{p.stem}\n" for p in clips))
        tmp.rename(sheet)
    return sheet


def workflow_config(setup: Setup, sheet: Path, path: Path) -> Path:
    """A complete workflow config (schemas/workflow-config.schema.json) for the extraction only."""
    import yaml

    config = {
        "out": "out",  # relative to the run's --directory
        "device": "cpu",
        "videos": {"sheet": str(sheet), "synthesize": None},
        "extract": {
            "encoders": [setup.encoder],
            "format": "webdataset",
            "shard_size": setup.shard_size,
            "threads": 1,  # one core per shard job: --cores N runs N jobs at once
            "timeout": 120,
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def child_env(shim_dir: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if shim_dir is not None:
        env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
    return env


def write_shim(folder: Path, log: Path) -> Path:
    """An `mmcache` first on PATH that runs the real one and appends its wall and CPU time to `log`
    (children.py timed)."""
    real = shutil.which("mmcache")
    if real is None:
        raise SystemExit("mmcache is not on PATH (pip install -e .)")
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "mmcache"
    shim.write_text(f'#!/bin/sh\nexec {shlex.join([sys.executable, "-S", *child_cmd("timed", real, log)[1:]])} "$@"\n')
    shim.chmod(0o755)
    return folder


# ---------------------------------------------------------------------------------------------
# runs


@dataclass
class Run:
    engine: str  # snakemake | dask
    n: int  # cores / workers
    round: int
    wall: float
    cpu: float  # every process of the run that was waited for (jobs, ffmpeg, dask workers)
    others: float
    phases: dict  # name -> seconds (engine-specific, see breakdown())
    jobs: list  # snakemake: the shim's records; dask: progress events
    files: dict  # cache file -> sha256
    fingerprints: dict  # field -> manifest fingerprint

    @property
    def label(self) -> str:
        return f"{ENGINES[self.engine]}{' ' if self.engine == 'snakemake' else ''}{self.n}"

    @property
    def cores_used(self) -> float:
        return self.cpu / self.wall


def cache_digest(cache: Path) -> tuple[dict, dict]:
    files = {
        p.relative_to(cache).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(cache.rglob("*"))
        if p.is_file() and not p.name.startswith(IGNORED)
    }
    manifest = json.loads((cache / "manifest.json").read_text())
    return files, {name: f["fingerprint"] for name, f in sorted(manifest["fields"].items())}


def run_snakemake(setup: Setup, config: Path, work: Path, n: int, rnd: int) -> Run:
    run_dir = work / f"snakemake-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    job_log = run_dir / "jobs.jsonl"
    env = child_env(write_shim(work / "shim", job_log))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(run_dir / "wd")]
    cmd += ["--configfile", str(config), "--cores", str(n), "extract_features"]
    with open(run_dir / "snakemake.log", "w") as log, Meter() as m:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=1800).returncode
    if rc != 0:
        raise SystemExit(f"snakemake --cores {n} failed (exit {rc}); see {run_dir / 'snakemake.log'}")
    jobs = [json.loads(line) for line in job_log.read_text().splitlines()]
    files, fingerprints = cache_digest(run_dir / "wd" / "out" / "cache")
    return Run("snakemake", n, rnd, m.wall, m.cpu, m.others, snakemake_phases(jobs, m), jobs, files, fingerprints)


def snakemake_phases(jobs: list[dict], m: Meter) -> dict:
    shards = [j for j in jobs if j["cmd"] == "run-shard"]
    first, last = min(j["start"] for j in shards), max(j["end"] for j in shards)
    step = {c: sum(j["end"] - j["start"] for j in jobs if j["cmd"] == c) for c in ("plan", "finalize", "verify")}
    shard_phase = last - first
    return {
        "shard phase (first run-shard start to last end)": shard_phase,
        "serial: plan": step["plan"],
        "serial: finalize": step["finalize"],
        "serial: verify": step["verify"],
        "serial: snakemake itself (start-up, DAG, scheduling)": m.wall - shard_phase - sum(step.values()),
        "a shard job (mean)": med([j["end"] - j["start"] for j in shards]),
        "CPU seconds of a shard job (mean)": med([j["cpu"] for j in shards]),
        "cores used by a shard job (CPU/wall, mean)": med([j["cpu"] / (j["end"] - j["start"]) for j in shards]),
    }


def run_dask(setup: Setup, sheet: Path, work: Path, n: int, rnd: int) -> Run:
    run_dir = work / f"dask-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    events_path, cache = run_dir / "events.json", run_dir / "cache"
    args = ["extract", str(sheet), "-e", setup.encoder, "--out", str(cache), "--shard-size", str(setup.shard_size)]
    cmd = child_cmd("cli", events_path, *args, "--dask", f"local:{n}")
    with open(run_dir / "extract.log", "w") as log, Meter() as m:
        launched = time.time()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), timeout=1800).returncode
        ended = time.time()
    if rc != 0:
        raise SystemExit(f"mmcache extract --dask local:{n} failed (exit {rc}); see {run_dir / 'extract.log'}")
    events = json.loads(events_path.read_text())
    files, fingerprints = cache_digest(cache)
    phases = dask_phases(events, launched, ended)
    return Run("dask", n, rnd, m.wall, m.cpu, m.others, phases, events, files, fingerprints)


def dask_phases(events: list, launched: float, ended: float) -> dict:
    def at(kind: str, task: str, last: bool = False) -> float:
        times = [t for t, k, name, _ in events if k == kind and name == task]
        return times[-1] if last else times[0]

    hashed, staged = at("advance", "hash", last=True), at("advance", "dask", last=True)
    return {
        "serial: start-up (python, import torch + mmcache)": at("start", "hash") - launched,
        "serial: hash inputs": hashed - at("start", "hash"),
        "plan, start the cluster, submit": at("start", "dask") - hashed,
        "dask tasks (workers' start-up included)": staged - at("start", "dask"),
        "serial: close the cluster, probe, pack the shards, exit": ended - staged,
    }


def startup_seconds(samples: int) -> dict:
    """Wall seconds of a fresh python that imports torch, or mmcache's extraction with its encoders (torch,
    torchvision): what every shard job, `plan` and every dask worker pays before its first video
    (`finalize` and `verify` do not load the encoders)."""
    out = {}
    for name, code in (
        ("python + import torch", "import torch"),
        ("mmcache process", "import mmcache.extraction, mmcache.encoders"),
    ):
        walls = []
        for _ in range(samples):
            with Meter() as m:
                subprocess.run([sys.executable, "-c", code], check=True, env=child_env(), timeout=300)
            walls.append(m.wall)
        out[name] = med(walls)
    return out


# ---------------------------------------------------------------------------------------------
# report


PARALLEL = {"snakemake": "the shard jobs: first start to last end", "dask": "cluster start and tasks"}


def ways(runs: list[Run], engine: str) -> tuple[list[Run], list[Run]]:
    """An engine's 1-way runs and its 2-way runs."""
    return tuple([r for r in runs if r.engine == engine and r.n == n] for n in (1, 2))


def parallel_part(r: Run) -> float:
    """Seconds of the part of a run that more cores can shorten."""
    if r.engine == "snakemake":
        return r.phases["shard phase (first run-shard start to last end)"]
    return r.phases["plan, start the cluster, submit"] + r.phases["dask tasks (workers' start-up included)"]


def speedups(runs: list[Run], engine: str, seconds=lambda r: r.wall) -> list[float]:
    """T(1) / T(2) of each round (both runs of a round measured back to back)."""
    by_round: dict[int, dict[int, Run]] = {}
    for r in runs:
        if r.engine == engine:
            by_round.setdefault(r.round, {})[r.n] = r
    return [seconds(p[1]) / seconds(p[2]) for _, p in sorted(by_round.items()) if 1 in p and 2 in p]


def identical(runs: list[Run], engine: str) -> tuple[bool, str]:
    mine = [r for r in runs if r.engine == engine]
    ref = mine[0]
    bad = []
    for r in mine[1:]:
        if r.fingerprints != ref.fingerprints:
            bad.append(f"{r.label} (round {r.round}): field fingerprints differ")
        differ = sorted(set(r.files) ^ set(ref.files))
        differ += [f for f, digest in ref.files.items() if r.files.get(f, digest) != digest]
        if differ:
            bad.append(f"{r.label} (round {r.round}): {len(differ)} file(s) differ, e.g. {differ[0]}")
    fps = ", ".join(f"{name} {fp[:12]}" for name, fp in ref.fingerprints.items())
    if bad:
        return False, f"NOT identical: {'; '.join(bad)}"
    return True, (
        f"identical in all {len(mine)} runs: same field fingerprints ({fps}) and same sha256 of all "
        f"{len(ref.files)} files"
    )


def bound_line(runs: list[Run], engine: str, startup: dict) -> str:
    """What keeps the speedup from 2, from the medians of the measured parts."""
    one, two = ways(runs, engine)
    t1, t2 = med([r.wall for r in one]), med([r.wall for r in two])
    proc = startup["mmcache process"]
    if engine == "snakemake":
        par1 = med([r.phases["shard phase (first run-shard start to last end)"] for r in one])
        par2 = med([r.phases["shard phase (first run-shard start to last end)"] for r in two])
        ser1, ser2 = t1 - par1, t2 - par2
        job1 = med([r.phases["a shard job (mean)"] for r in one])
        job2 = med([r.phases["a shard job (mean)"] for r in two])
        cores1 = med([r.phases["cores used by a shard job (CPU/wall, mean)"] for r in one])
        cpu1 = med([r.phases["CPU seconds of a shard job (mean)"] for r in one])
        cpu2 = med([r.phases["CPU seconds of a shard job (mean)"] for r in two])
        why = (
            "about the same CPU work, so the cores were short, not memory"
            if cpu2 < 1.05 * cpu1
            else "more CPU for the same work: the two jobs share the L3 cache and the memory bandwidth"
        )
        amdahl = t1 / (ser1 + par1 / 2)
        parts = [
            f"serial steps (Snakemake's start-up and scheduling, then plan, finalize and verify, each a fresh "
            f"process; plan loads the encoders: {proc:.1f} s of start-up) take {ser1:.1f} s of the {t1:.1f} s "
            f"1-core run and {ser2:.1f} s of the 2-core run, so with perfect shard jobs 2 cores give at most "
            f"{amdahl:.2f}x",
            f"the shard phase itself sped up {par1 / par2:.2f}x: a shard job alone took {job1:.1f} s on "
            f"{cores1:.2f} cores ({cpu1:.1f} CPU s: its decode, the reader thread and ffmpeg, ran on the idle "
            f"core beside torch's one thread), {job2:.1f} s with two at once ({cpu2:.1f} CPU s: {why})",
        ]
        run_cpu1, way, kept = med([r.cpu for r in one]), "core", "the serial steps"
        # the 1-core run's CPU seconds spread over both cores, the serial steps kept as they are (a shard
        # job's start-up is part of the work that two cores share)
        spread2 = ser1 + (run_cpu1 - ser1) / 2
    else:
        ser = ("serial: start-up (python, import torch + mmcache)", "serial: hash inputs")
        ser += ("serial: close the cluster, probe, pack the shards, exit",)
        ser1 = med([sum(r.phases[k] for k in ser) for r in one])
        ser2 = med([sum(r.phases[k] for k in ser) for r in two])
        par1, par2 = t1 - ser1, t2 - ser2
        cores1 = med([r.cores_used for r in one])
        run_cpu1, way, kept = med([r.cpu for r in one]), "worker", "the serial steps and the workers' start-up"
        amdahl = t1 / (ser1 + par1 / 2)
        # the 1-worker run's CPU seconds spread over both cores, the client's serial steps and a worker's
        # start-up (every worker pays it at once) kept as they are
        spread2 = ser1 + proc + (run_cpu1 - ser1 - proc) / 2
        parts = [
            f"serial steps of the client (start-up, hashing, then closing the cluster and packing the shards) "
            f"take {ser1:.1f} s of the {t1:.1f} s 1-worker run and {ser2:.1f} s of the 2-worker run, so with "
            f"perfect workers 2 give at most {amdahl:.2f}x",
            f"starting the cluster and the tasks sped up {par1 / par2:.2f}x: every worker process pays its own "
            f"start-up ({proc:.1f} s to import torch and the encoders) before its first task, in parallel, so "
            f"it does not shrink with 2 workers, and the 1-worker run already used {cores1:.2f} cores (the client "
            f"and the scheduler, and the worker's ffmpeg decode beside torch's one thread)",
        ]
    first, second = parts if ser2 - ser1 / 2 >= par2 - par1 / 2 else parts[::-1]  # the larger loss first
    return (
        f"Bound mostly by {first}; also {second}. The resource that bounds it is the CPU: the 1-{way} run used "
        f"{run_cpu1:.0f} CPU s in {t1:.1f} s. Spread over both cores, with {kept} as they are, that work takes about "
        f"{spread2:.1f} s (about {t1 / spread2:.2f}x); the 2-{way} run took {t2:.1f} s ({t1 / t2:.2f}x)."
    )


def summarise(runs: list[Run], startup: dict) -> dict:
    """Per engine: the speedup over the rounds used, its verdict, whether the caches are identical and,
    below the target, what bounds it."""
    summary = {}
    for engine in ENGINES:
        ratios = speedups(runs, engine)
        t1, t2 = (med([r.wall for r in rs]) for rs in ways(runs, engine))
        ok = med(ratios) >= TARGET
        same, said = identical(runs, engine)
        summary[engine] = {"speedup": med(ratios), "ratios": ratios, "pass": ok, "identical": same, "t1": t1, "t2": t2}
        summary[engine]["identical_line"] = said
        summary[engine]["bound"] = None if ok else bound_line(runs, engine, startup)
    return summary


def target_rows(runs: list[Run], summary: dict) -> list[str]:
    lines = ["| target | 1-way s | 2-way s | speedup 2 vs 1 | min-max over rounds | target | result |"]
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for engine, s in summary.items():
        name = "snakemake --cores 2 vs --cores 1" if engine == "snakemake" else "extract --dask local:2 vs local:1"
        lines.append(
            f"| {name} | {s['t1']:.1f} | {s['t2']:.1f} | {s['speedup']:.2f}x | {spread(s['ratios'])} | >= {TARGET} "
            f"| {verdict(s['pass'])} |"
        )
        part = speedups(runs, engine, parallel_part)
        p1, p2 = (med([parallel_part(r) for r in rs]) for rs in ways(runs, engine))
        lines.append(
            f"| ({PARALLEL[engine]} only) | {p1:.1f} | {p2:.1f} | {med(part):.2f}x | {spread(part)} | >= {TARGET} "
            f"| ({verdict(med(part) >= TARGET)}) |"
        )
    return lines


def startup_line(setup: Setup, startup: dict) -> str:
    if "python + import torch" in startup:
        return (
            f"Start-up of a fresh process (median of {setup.startup_samples}): python + import torch "
            f"{startup['python + import torch']:.1f} s, an mmcache process (torch, torchvision, the encoders) "
            f"{startup['mmcache process']:.1f} s."
        )
    return (
        "Start-up of a fresh mmcache process (torch, torchvision, the encoders): "
        f"{startup['mmcache process']:.1f} s (not measured apart in a quick run: the dask client's start-up)."
    )


def run_rows(runs: list[Run], every: list[tuple[Run, bool]]) -> list[str]:
    """Every run, then where the time went per engine."""
    lines = [
        "Every run (cores used = CPU seconds of every process of the run / wall seconds; others = share of the "
        f"{NCPU} CPUs other processes used meanwhile):",
        "",
        "| round | run | wall s | CPU s | cores used | others | used |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r, ok in every:
        lines.append(
            f"| {r.round} | {r.label} | {r.wall:.1f} | {r.cpu:.1f} | {r.cores_used:.2f} | {r.others:.0%} "
            f"| {'yes' if ok else 'no'} |"
        )
    lines += ["", "Where the time went (seconds, median over rounds; `serial` parts do not shrink with more cores):"]
    lines.append("")
    for engine in ENGINES:
        one, two = ways(runs, engine)
        lines += [f"| {engine} | {one[0].label} | {two[0].label} |", "|---|---:|---:|"]
        for key in one[0].phases:
            fmt = "{:.2f}" if key.startswith("cores") else "{:.1f}"
            v1, v2 = med([r.phases[key] for r in one]), med([r.phases[key] for r in two])
            lines.append(f"| {key} | {fmt.format(v1)} | {fmt.format(v2)} |")
        lines.append("")
    return lines


def render(raw: dict) -> tuple[str, list[bool]]:
    setup, startup = Setup(**raw["setup"]), raw["startup"]
    every = [(Run(**{k: v for k, v in r.items() if k != "used"}), r["used"]) for r in raw["runs"]]
    runs = [r for r, used in every if used]
    summary = summarise(runs, startup)
    lines = [machine_line(raw["machine"]), ""]
    lines.append(
        f"Work: {setup.clips} clips of {setup.seconds} s, {setup.size} 25 fps H.264 + AAC (cut at key frames from "
        f"one lavfi testsrc2 + noise video made with common.make_video), through {setup.encoder} ({raw['frames']} "
        f"frames in all), {setup.shards} shards of {setup.shard_size} clips. Snakemake: the real workflow (rule "
        f"extract_features, a generated config, extract.threads 1, so every `mmcache run-shard` job runs with "
        f"`--threads 1`) into a fresh folder. Dask: `mmcache extract --dask local:N` (N single-threaded worker "
        f"processes, one thread per task) into a fresh cache. {raw['note']}"
    )
    lines += ["", *target_rows(runs, summary), "", "A result in parentheses is context, not a target.", ""]
    lines += [f"Caches, {engine} 1-way vs 2-way: {s['identical_line']}." for engine, s in summary.items()]
    lines += [f"{engine}, below {TARGET}x: {s['bound']}" for engine, s in summary.items() if s["bound"]]
    lines += [startup_line(setup, startup), "", *run_rows(runs, every)]
    body = "\n".join(lines) + f"\nThis run took {raw['seconds']:.0f} s.\n"
    return body, [s["pass"] and s["identical"] for s in summary.values()]


def frames_in(run: Run, work: Path) -> int:
    cache = work / ("snakemake-1/wd/out/cache" if run.engine == "snakemake" else "dask-1/cache")
    manifest = json.loads((cache / "manifest.json").read_text())
    return sum(f["steps"] for field in manifest["fields"].values() for f in field["files"].values())


# ---------------------------------------------------------------------------------------------


def measure_rounds(setup: Setup, sheet: Path, config: Path, work: Path, max_others: float, budget: float):
    """Rounds of every engine 1- and 2-way until `setup.rounds` are undisturbed or the budget is spent."""
    done: list[list[Run]] = []  # every round measured, in order
    longest = 0.0
    while sum(max(r.others for r in g) <= max_others for g in done) < setup.rounds:
        if done and elapsed() + longest > budget:
            log(f"time budget ({budget:.0f} s) reached after {len(done)} round(s)")
            break
        t_round, rnd = time.perf_counter(), len(done) + 1
        order = (1, 2) if rnd % 2 else (2, 1)  # the next round the other way round: drift cancels
        got = []
        for engine in ENGINES:
            for n in order:
                if max_others < 1:
                    wait_quiet(max_others, 30)
                if engine == "snakemake":
                    r = run_snakemake(setup, config, work, n, rnd)
                else:
                    r = run_dask(setup, sheet, work, n, rnd)
                log(f"round {rnd}: {r.label:32s} {r.wall:6.1f} s, {r.cores_used:.2f} cores, others {r.others:.0%}")
                got.append(r)
        done.append(got)
        longest = max(longest, time.perf_counter() - t_round)
        if max(r.others for r in got) > max_others:
            log(f"round {rnd} disturbed (others used up to {max(r.others for r in got):.0%} of the CPUs)")
    return done


def options(ap) -> None:
    ap.add_quick("--rounds", FULL.rounds, QUICK.rounds, "rounds", type=int)
    ap.add_quick("--clips", FULL.clips, QUICK.clips, "clips", type=int)
    ap.add_quick("--seconds", FULL.seconds, QUICK.seconds, "seconds per clip, even", type=int)
    ap.add_quick("--size", FULL.size, QUICK.size, "clip size WxH")
    ap.add_quick("--fps", FULL.fps, QUICK.fps, "resnet18 frames/s", type=float)
    ap.add_quick("--shard-size", FULL.shard_size, QUICK.shard_size, "clips per shard", type=int)
    ap.add_max_others(0.15, "one of its runs")
    ap.add_quick("--budget", 450.0, 0.0, "seconds: no new round that would end after this", type=float)


def measure(a) -> dict:
    keys = ("clips", "seconds", "size", "fps", "shard_size", "rounds")
    setup = Setup(**{k: getattr(a, k) for k in keys}, startup_samples=(QUICK if a.quick else FULL).startup_samples)
    if setup.shards < 2:
        raise SystemExit("need at least 2 shards (clips > shard size) for 2 jobs at once")
    work = a.out / "bench_scaling"
    work.mkdir(parents=True, exist_ok=True)
    sheet = make_clips(setup, a.out / "videos")
    config = workflow_config(setup, sheet, work / "config.yaml")
    startup = startup_seconds(setup.startup_samples) if setup.startup_samples else {}
    log(f"clips ready ({sheet}); start-up: {', '.join(f'{k} {v:.1f} s' for k, v in startup.items()) or '-'}")
    done = measure_rounds(setup, sheet, config, work, a.max_others, a.budget)
    used = [g for g in done if max(r.others for r in g) <= a.max_others] or done  # all disturbed: all, said so
    runs = [r for g in used for r in g]
    every = [(r, any(r is u for u in runs)) for g in done for r in g]
    if not startup:  # quick: the dask client's own start-up stands for it
        key = "serial: start-up (python, import torch + mmcache)"
        startup["mmcache process"] = med([r.phases[key] for r in runs if r.engine == "dask"])
    disturbed = max(r.others for r in runs)
    note = (
        f"Rounds used: {len(used)} of {len(done)} run (wanted {setup.rounds} in which other processes used at most "
        f"{a.max_others:.0%} of the CPUs during every run, within {a.budget:.0f} s); in a round each engine's 1- and "
        f"2-way runs go back to back, the next round in the other order. Other processes used up to "
        f"{disturbed:.0%} of the CPUs during a run used"
        + (" (treat these numbers with care)." if disturbed > a.max_others else ".")
        + " Thread variables (OMP_NUM_THREADS, ...) are removed from the runs' environment."
    )
    return {
        "setup": asdict(setup),
        "quick": a.quick,
        "startup": startup,
        "summary": summarise(runs, startup),
        "frames": frames_in(runs[0], work),
        "note": note,
        "runs": [{**asdict(r), "used": ok} for r, ok in every],
        "seconds": elapsed(),
    }


BENCH = Bench("bench_scaling", __doc__, measure, render, options)

if __name__ == "__main__":
    sys.exit(BENCH.main())
