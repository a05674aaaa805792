#!/usr/bin/env python
"""Scaling of the two parallel engines from 1 to 2 cores: Snakemake shard jobs and dask workers.

    python benchmarks/bench_scaling.py            # full run (~6-7 min), updates benchmarks/RESULTS.md
    python benchmarks/bench_scaling.py --quick    # CI smoke (~70 s), writes bench-out/RESULTS-quick.md

Target: 2 cores at least 1.7x as fast as 1 where no one shared resource bounds the work (below it, the
report says what bounds it); the 1- and 2-way caches of each engine identical. Method: docs/benchmarks.md
"""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common
import yaml
from common import NCPU, ROOT, Bench, Meter, child_cmd, elapsed, log, med, spread, table, verdict

TARGET = 1.7
ENGINES = {"snakemake": "snakemake --cores ", "dask": "mmcache extract --dask local:"}  # a run's label: this + N
PARALLEL_NAME = {"snakemake": "the shard jobs: first start to last end", "dask": "cluster start and tasks"}
IGNORED = (".lock", ".input-hashes.json")  # lock files and the local memo of input hashes: not the cache
ENV = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
STARTUP = {"python + import torch": "import torch", "mmcache process": "import mmcache.extraction, mmcache.encoders"}
SHARD_PHASE, JOB = "shard phase (first run-shard start to last end)", "a shard job (mean)"
JOB_CPU, JOB_CORES = "CPU seconds of a shard job (mean)", "cores used by a shard job (CPU/wall, mean)"
DASK_STARTUP = "serial: start-up (python, import torch + mmcache)"
DASK_PARALLEL = ("plan, start the cluster, submit", "dask tasks (workers' start-up included)")
DASK_SERIAL = (DASK_STARTUP, "serial: hash inputs", "serial: close the cluster, probe, pack the shards, exit")
PARALLEL = {"snakemake": (SHARD_PHASE,), "dask": DASK_PARALLEL}  # the phases of a run that more cores can shorten
ENCODER = "resnet18:weights=random,fps={fps:g}"  # .format(**setup)
# `seconds` per clip is even, so cuts fall on key frames (GOP 2 s)
FULL = {"clips": 8, "seconds": 24, "size": "640x360", "fps": 8, "shard_size": 4, "rounds": 2, "startup_samples": 3}
QUICK = {"clips": 4, "seconds": 2, "size": "160x90", "fps": 1, "shard_size": 2, "rounds": 1, "startup_samples": 0}


def label(run: dict) -> str:
    return f"{ENGINES[run['engine']]}{run['n']}"


def make_clips(setup: dict, videos: Path) -> Path:
    """`clips` distinct clips of `seconds` each (a sheet path,id), cut from one make_video video."""
    clips, seconds, size = setup["clips"], setup["seconds"], setup["size"]
    base = common.make_video(videos / f"testsrc2-noise-{size}-25fps-{clips * seconds}s.mp4", clips * seconds, size)
    folder = videos / f"scaling-{size}-{clips}x{seconds}s"
    sheet = folder / "videos.csv"
    if not sheet.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        segment = ["-f", "segment", "-segment_time", str(seconds), "-reset_timestamps", "1"]
        segment += ["-segment_format_options", "movflags=+faststart", str(folder / "clip%02d.mp4")]
        common.ffmpeg_run(["-i", str(base), "-c", "copy", "-map", "0", *segment])
        made = sorted(folder.glob("clip*.mp4"))
        if len(made) != clips:
            raise SystemExit(f"expected {clips} clips in {folder}, ffmpeg made {len(made)}")
        sheet.with_suffix(".part").write_text("path,id\n" + "".join(f"{p.name},{p.stem}\n" for p in made))
        sheet.with_suffix(".part").rename(sheet)
    return sheet


def run_once(engine: str, n: int, rnd: int, setup: dict, sheet: Path, work: Path, max_others: float) -> dict:
    """One run of `engine` on `n` cores / workers into a fresh folder: times, phases, the cache's digests."""
    if max_others < 1:  # on a quiet machine
        common.wait_quiet(max_others, 30)
    run_dir, env = work / f"{engine}-{n}", dict(ENV)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if engine == "snakemake":  # each mmcache command of a job goes through a shim first on PATH that logs its times
        shim, timed = work / "shim" / "mmcache", child_cmd("timed", shutil.which("mmcache"), run_dir / "jobs.jsonl")
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\nexec {shlex.join([sys.executable, "-S", *timed[1:]])} "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
        cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(run_dir / "wd")]
        cmd += ["--configfile", str(work / "config.yaml"), "--cores", str(n), "extract_features"]
        out_log, cache = run_dir / "snakemake.log", run_dir / "wd" / "out" / "cache"
    else:
        out_log, cache = run_dir / "extract.log", run_dir / "cache"
        args = ["extract", sheet, "-e", ENCODER.format(**setup), "--out", cache, "--shard-size", setup["shard_size"]]
        cmd = child_cmd("cli", run_dir / "events.json", *args, "--dask", f"local:{n}")
    with open(out_log, "w") as out, Meter() as m:
        launched = time.time()
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=1800).returncode
        ended = time.time()
    run = {"engine": engine, "n": n, "round": rnd, "wall": m.wall, "cpu": m.cpu, "others": m.others}
    if rc != 0:
        raise SystemExit(f"{label(run)} failed (exit {rc}); see {out_log}")
    if engine == "snakemake":  # from the shim's records
        jobs = [json.loads(line) for line in (run_dir / "jobs.jsonl").read_text().splitlines()]
        shards = [j for j in jobs if j["cmd"] == "run-shard"]
        took, cpus = [j["end"] - j["start"] for j in shards], [j["cpu"] for j in shards]
        shard_phase = max(j["end"] for j in shards) - min(j["start"] for j in shards)
        step = {c: sum(j["end"] - j["start"] for j in jobs if j["cmd"] == c) for c in ("plan", "finalize", "verify")}
        phases = {SHARD_PHASE: shard_phase, **{f"serial: {c}": seconds for c, seconds in step.items()}}
        phases["serial: snakemake itself (start-up, DAG, scheduling)"] = m.wall - shard_phase - sum(step.values())
        phases |= {JOB: med(took), JOB_CPU: med(cpus), JOB_CORES: med([c / t for c, t in zip(cpus, took, strict=True)])}
    else:  # from the times of the CLI's progress callbacks, [time, kind, task, n] each
        jobs = json.loads((run_dir / "events.json").read_text())
        first = {task: next(t for t, k, name, _ in jobs if k == "start" and name == task) for task in ("hash", "dask")}
        last = {task: [t for t, k, name, _ in jobs if k == "advance" and name == task][-1] for task in ("hash", "dask")}
        phases = {
            DASK_STARTUP: first["hash"] - launched,
            DASK_SERIAL[1]: last["hash"] - first["hash"],
            DASK_PARALLEL[0]: first["dask"] - last["hash"],
            DASK_PARALLEL[1]: last["dask"] - first["dask"],
            DASK_SERIAL[2]: ended - last["dask"],
        }
    kept = [p for p in sorted(cache.rglob("*")) if p.is_file() and not p.name.startswith(IGNORED)]
    files = {p.relative_to(cache).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in kept}
    fields = json.loads((cache / "manifest.json").read_text())["fields"]
    fingerprints = {name: f["fingerprint"] for name, f in sorted(fields.items())}
    log(f"round {rnd}: {label(run):32s} {m.wall:6.1f} s, {m.cpu / m.wall:.2f} cores, others {m.others:.0%}")
    return {**run, "phases": phases, "jobs": jobs, "files": files, "fingerprints": fingerprints}


def ways(runs: list[dict], engine: str) -> tuple[list[dict], list[dict]]:  # an engine's 1-way and 2-way runs
    return tuple([r for r in runs if r["engine"] == engine and r["n"] == n] for n in (1, 2))


def phase_medians(runs: list[dict]) -> dict:
    return {key: med([r["phases"][key] for r in runs]) for key in runs[0]["phases"]}


def speedups(runs: list[dict], engine: str, seconds=lambda r: r["wall"]) -> list[float]:
    """T(1) / T(2) of each round (both runs of a round measured back to back)."""
    one, two = ways(runs, engine)
    return [seconds(r1) / seconds(r2) for r1 in one for r2 in two if r1["round"] == r2["round"]]


def bound_line(engine: str, one: list[dict], two: list[dict], proc: float) -> str:
    """What keeps the speedup from 2, from the medians of the measured parts (proc: an mmcache process's start-up)."""
    t1, t2, cpu1 = med([r["wall"] for r in one]), med([r["wall"] for r in two]), med([r["cpu"] for r in one])
    if engine == "snakemake":
        p1, p2 = phase_medians(one), phase_medians(two)
        par1, par2 = p1[SHARD_PHASE], p2[SHARD_PHASE]
        ser1, ser2 = t1 - par1, t2 - par2
        why = "about the same CPU work, so the cores were short, not memory"
        if p2[JOB_CPU] >= 1.05 * p1[JOB_CPU]:
            why = "more CPU for the same work: the two jobs share the L3 cache and the memory bandwidth"
        parts = [
            f"serial steps (Snakemake's start-up and scheduling, then plan, finalize and verify, each a fresh process; "
            f"plan loads the encoders: {proc:.1f} s of start-up) take {ser1:.1f} s of the {t1:.1f} s 1-core run and "
            f"{ser2:.1f} s of the 2-core run, so with perfect shard jobs 2 cores give at most "
            f"{t1 / (ser1 + par1 / 2):.2f}x",
            f"the shard phase itself sped up {par1 / par2:.2f}x: a shard job alone took {p1[JOB]:.1f} s on "
            f"{p1[JOB_CORES]:.2f} cores ({p1[JOB_CPU]:.1f} CPU s: its decode, the reader thread and ffmpeg, ran on the "
            f"idle core beside torch's one thread), {p2[JOB]:.1f} s with two at once ({p2[JOB_CPU]:.1f} CPU s: {why})",
        ]
        way, kept = "core", "the serial steps"
        spread2 = ser1 + (cpu1 - ser1) / 2  # a shard job's start-up is part of the work that two cores share
    else:
        ser1, ser2 = (med([sum(r["phases"][k] for k in DASK_SERIAL) for r in rs]) for rs in (one, two))
        par1, par2, cores1 = t1 - ser1, t2 - ser2, med([r["cpu"] / r["wall"] for r in one])
        parts = [
            f"serial steps of the client (start-up, hashing, then closing the cluster and packing the shards) take "
            f"{ser1:.1f} s of the {t1:.1f} s 1-worker run and {ser2:.1f} s of the 2-worker run, so with perfect "
            f"workers 2 give at most {t1 / (ser1 + par1 / 2):.2f}x",
            f"starting the cluster and the tasks sped up {par1 / par2:.2f}x: every worker process pays its own "
            f"start-up ({proc:.1f} s to import torch and the encoders) before its first task, in parallel, so it does "
            f"not shrink with 2 workers, and the 1-worker run already used {cores1:.2f} cores (the client and the "
            "scheduler, and the worker's ffmpeg decode beside torch's one thread)",
        ]
        way, kept = "worker", "the serial steps and the workers' start-up"
        spread2 = ser1 + proc + (cpu1 - ser1 - proc) / 2  # workers' start-ups run at once: kept, like serial steps
    first, second = parts if ser2 - ser1 / 2 >= par2 - par1 / 2 else parts[::-1]  # the larger loss first
    return (
        f"Bound mostly by {first}; also {second}. The resource that bounds it is the CPU: the 1-{way} run used "
        f"{cpu1:.0f} CPU s in {t1:.1f} s. Spread over both cores, with {kept} as they are, that work takes about "
        f"{spread2:.1f} s (about {t1 / spread2:.2f}x); the 2-{way} run took {t2:.1f} s ({t1 / t2:.2f}x)."
    )


def summarise(runs: list[dict], startup: dict) -> dict:
    """Per engine: the speedup over the rounds used, its verdict, identical caches, below the target its bound."""
    summary = {}
    for engine in ENGINES:
        ratios, (one, two) = speedups(runs, engine), ways(runs, engine)
        mine = [r for r in runs if r["engine"] == engine]
        ref, bad = mine[0], []  # every run's cache compared with the first one's
        for r in mine[1:]:
            if r["fingerprints"] != ref["fingerprints"]:
                bad.append(f"{label(r)} (round {r['round']}): field fingerprints differ")
            differ = sorted(set(r["files"]) ^ set(ref["files"]))
            differ += [f for f, digest in ref["files"].items() if r["files"].get(f, digest) != digest]
            if differ:
                bad.append(f"{label(r)} (round {r['round']}): {len(differ)} file(s) differ, e.g. {differ[0]}")
        fps = ", ".join(f"{name} {fp[:12]}" for name, fp in ref["fingerprints"].items())
        same = f"same field fingerprints ({fps}) and same sha256 of all {len(ref['files'])} files"
        said = f"NOT identical: {'; '.join(bad)}" if bad else f"identical in all {len(mine)} runs: {same}"
        ok = med(ratios) >= TARGET
        summary[engine] = {"speedup": med(ratios), "ratios": ratios, "pass": ok, "identical": not bad}
        summary[engine] |= {"t1": med([r["wall"] for r in one]), "t2": med([r["wall"] for r in two])}
        bound = None if ok else bound_line(engine, one, two, startup["mmcache process"])
        summary[engine] |= {"identical_line": said, "bound": bound}
    return summary


def render(raw: dict) -> tuple[str, list[bool]]:
    setup, startup, every = raw["setup"], raw["startup"], raw["runs"]
    runs = [r for r in every if r["used"]]
    summary = summarise(runs, startup)
    shards = -(-setup["clips"] // setup["shard_size"])
    seconds_of = (lambda r: r["wall"], lambda r: sum(r["phases"][key] for key in PARALLEL[r["engine"]]))
    rows = []  # an engine's whole runs, then the part of them that more cores can shorten (context)
    for engine in ENGINES:
        whole = "snakemake --cores 2 vs --cores 1" if engine == "snakemake" else "extract --dask local:2 vs local:1"
        for name, seconds in zip((whole, f"({PARALLEL_NAME[engine]} only)"), seconds_of, strict=True):
            ratios, (t1, t2) = speedups(runs, engine, seconds), (med(map(seconds, rs)) for rs in ways(runs, engine))
            result = ("{}" if name == whole else "({})").format(verdict(med(ratios) >= TARGET))
            rows.append([name, f"{t1:.1f}", f"{t2:.1f}", f"{med(ratios):.2f}x", spread(ratios), f">= {TARGET}", result])
    notes = [f"Caches, {engine} 1-way vs 2-way: {s['identical_line']}." for engine, s in summary.items()]
    notes += [f"{engine}, below {TARGET}x: {s['bound']}" for engine, s in summary.items() if s["bound"]]
    torch, mmcache = startup.get("python + import torch"), startup["mmcache process"]  # a quick run: no torch
    notes.append(
        f"Start-up of a fresh process (median of {setup['startup_samples']}): python + import torch {torch:.1f} s, an "
        f"mmcache process (torch, torchvision, the encoders) {mmcache:.1f} s."
        if torch is not None
        else f"Start-up of a fresh mmcache process (torch, torchvision, the encoders): {mmcache:.1f} s (not measured "
        "apart in a quick run: the dask client's start-up)."
    )
    every_run = [
        [r["round"], label(r), f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['cpu'] / r['wall']:.2f}"]
        + [f"{r['others']:.0%}", "yes" if r["used"] else "no"]
        for r in every
    ]
    blocks = [
        common.machine_line(raw["machine"]),
        f"Work: {setup['clips']} clips of {setup['seconds']} s, {setup['size']} 25 fps H.264 + AAC (cut at key frames "
        f"from one lavfi testsrc2 + noise video made with common.make_video), through {ENCODER.format(**setup)} "
        f"({raw['frames']} frames in all), {shards} shards of {setup['shard_size']} clips. Snakemake: the real "
        f"workflow (rule extract_features, a generated config, extract.threads 1, so every `mmcache run-shard` job "
        f"runs with `--threads 1`) into a fresh folder. Dask: `mmcache extract --dask local:N` (N single-threaded "
        f"worker processes, one thread per task) into a fresh cache. {raw['note']}",
        table("target | 1-way s | 2-way s | speedup 2 vs 1 | min-max over rounds | target | result", "lrrrrrl", rows),
        "A result in parentheses is context, not a target.",
        "\n".join(notes),
        "Every run (cores used = CPU seconds of every process of the run / wall seconds; others = share of the "
        f"{NCPU} CPUs other processes used meanwhile):",
        table("round | run | wall s | CPU s | cores used | others | used", "rlrrrrl", every_run),
        "Where the time went (seconds, median over rounds; `serial` parts do not shrink with more cores):",
    ]
    for engine, way in ENGINES.items():
        m1, m2 = (phase_medians(rs) for rs in ways(runs, engine))
        phases = [[key, *(f"{m[key]:.{2 if key.startswith('cores') else 1}f}" for m in (m1, m2))] for key in m1]
        blocks.append(table(f"{engine} | {way}1 | {way}2", "lrr", phases))
    body = "\n\n".join([*blocks, f"This run took {raw['seconds']:.0f} s."]) + "\n"
    return body, [s["pass"] and s["identical"] for s in summary.values()]


def options(ap) -> None:
    ap.add_quick("--rounds", FULL["rounds"], QUICK["rounds"], "rounds", type=int)
    ap.add_quick("--clips", FULL["clips"], QUICK["clips"], "clips", type=int)
    ap.add_quick("--seconds", FULL["seconds"], QUICK["seconds"], "seconds per clip, even", type=int)
    ap.add_quick("--size", FULL["size"], QUICK["size"], "clip size WxH")
    ap.add_quick("--fps", FULL["fps"], QUICK["fps"], "resnet18 frames/s", type=float)
    ap.add_quick("--shard-size", FULL["shard_size"], QUICK["shard_size"], "clips per shard", type=int)
    ap.add_max_others(0.15, "one of its runs")
    ap.add_quick("--budget", 450.0, 0.0, "seconds: no new round that would end after this", type=float)


def measure(a) -> dict:
    setup = {key: getattr(a, key, (QUICK if a.quick else FULL)[key]) for key in FULL}  # startup_samples: no option
    if setup["clips"] <= setup["shard_size"]:
        raise SystemExit("need at least 2 shards (clips > shard size) for 2 jobs at once")
    if shutil.which("mmcache") is None:  # the shim runs the real one
        raise SystemExit("mmcache is not on PATH (pip install -e .)")
    work, sheet = a.out / "bench_scaling", make_clips(setup, a.out / "videos")
    work.mkdir(parents=True, exist_ok=True)
    extract = {"encoders": [ENCODER.format(**setup)], "format": "webdataset", "shard_size": setup["shard_size"]}
    extract |= {"threads": 1, "timeout": 120}  # threads 1: one core per shard job (--cores N: N jobs at once)
    config = {"out": "out", "device": "cpu", "videos": {"sheet": str(sheet), "synthesize": None}, "extract": extract}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def wall(code: str) -> float:  # of a fresh python that runs `code`
        with Meter() as m:
            subprocess.run([sys.executable, "-c", code], check=True, env=ENV, timeout=300)
        return m.wall

    def noisy(got: list[dict]) -> bool:  # a round in which others used more than --max-others during a run
        return max(r["others"] for r in got) > a.max_others

    samples = setup["startup_samples"]  # none in a quick run: the dask client's start-up stands for it
    startup = {name: med([wall(code) for _ in range(samples)]) for name, code in STARTUP.items()} if samples else {}
    log(f"clips ready ({sheet}); start-up: {', '.join(f'{k} {v:.1f} s' for k, v in startup.items()) or '-'}")

    done, longest = [], 0.0  # rounds (each a list of its runs) until enough are undisturbed or the budget is spent
    while sum(not noisy(got) for got in done) < setup["rounds"] and (not done or elapsed() + longest <= a.budget):
        t_round, rnd = time.perf_counter(), len(done) + 1
        order = (1, 2) if rnd % 2 else (2, 1)  # the next round the other way round: drift cancels
        done.append([run_once(engine, n, rnd, setup, sheet, work, a.max_others) for engine in ENGINES for n in order])
        longest = max(longest, time.perf_counter() - t_round)
    used = common.undisturbed(done, noisy)  # all disturbed: all, said so
    every = [{**r, "used": any(g is u for u in used)} for g in done for r in g]
    runs = [r for r in every if r["used"]]
    startup = startup or {"mmcache process": med([r["phases"][DASK_STARTUP] for r in runs if r["engine"] == "dask"])}
    disturbed = max(r["others"] for r in runs)
    note = (
        f"Rounds used: {len(used)} of {len(done)} run (wanted {setup['rounds']} in which other processes used at most "
        f"{a.max_others:.0%} of the CPUs during every run, within {a.budget:.0f} s); in a round each engine's 1- and "
        f"2-way runs go back to back, the next round in the other order. Other processes used up to {disturbed:.0%} "
        f"of the CPUs during a run used{' (treat these numbers with care)' if disturbed > a.max_others else ''}. "
        "Thread variables (OMP_NUM_THREADS, ...) are removed from the runs' environment."
    )
    frames = common.field_storage(work / "snakemake-1/wd/out/cache")["steps"]  # all caches are identical
    raw = {"setup": setup, "quick": a.quick, "startup": startup, "summary": summarise(runs, startup), "frames": frames}
    return raw | {"note": note, "runs": every, "seconds": elapsed()}


BENCH = Bench("bench_scaling", __doc__, measure, render, options)

if __name__ == "__main__":
    sys.exit(BENCH.main())
