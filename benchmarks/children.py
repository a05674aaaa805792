#!/usr/bin/env python
"""What benchmarks run in a fresh process (`common.peak_rss`, `common.child_cmd`):

    python benchmarks/children.py extract VIDEO CACHE ENCODER   # bench_extract, profile_pipeline memory
    python benchmarks/children.py train CACHE STREAMING OUT     # bench_read (d)
    python benchmarks/children.py cli EVENTS ARG...             # bench_scaling's dask runs
    python -S benchmarks/children.py timed REAL LOG ARG...      # bench_scaling's mmcache shim
    python benchmarks/children.py scale_open CACHE              # bench_scale: open + index
    python benchmarks/children.py scale_verify CACHE            # bench_scale: mmcache verify
    python benchmarks/children.py scale_train CACHE STREAMING OUT  # bench_scale: mmfit train, 1 epoch

`extract`, `train` and the `scale_*` tasks print one JSON line of what they measured, their own peak memory included:
VmHWM of this process, not getrusage's ru_maxrss: on Linux ru_maxrss of a process started with
fork/vfork + exec starts at the RSS of the parent at that moment (exec carries the old mm's high-water
mark into signal->maxrss), so a child of a big parent reports the parent's size. VmHWM belongs to the
new address space and is exact.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, as in common.py


def extract(video: str, cache: str, encoder: str) -> dict:
    """mmcache.extract of one video into a fresh cache, its wall time and this process's peak memory
    (VmHWM, its file-backed part, and the anonymous RSS sampled at 20 Hz)."""
    import shutil
    import threading

    from common import proc_status

    import mmcache

    shutil.rmtree(cache, ignore_errors=True)
    peak_anon = 0
    done = threading.Event()

    def sample():
        nonlocal peak_anon
        while not done.wait(0.05):
            peak_anon = max(peak_anon, proc_status("self", "RssAnon")["RssAnon"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    report = mmcache.extract([video], [encoder], cache)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    st = proc_status("self", "VmHWM", "RssFile")
    return {
        "ok": report.new_ok,
        "wall_s": wall,
        "python_hwm": st["VmHWM"],
        "python_anon_peak": peak_anon,
        "python_file": st["RssFile"],
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def train(cache: str, streaming: str, out: str) -> dict:
    """mmfit training_data + one epoch of concat: RSS after importing torch (the baseline), peak after
    load_data and at the end."""
    import torch  # noqa: F401  (the baseline includes torch)
    from common import proc_status
    from synthetic import train_config

    from mmfit.trainer import Trainer, training_data

    base = proc_status("self", "VmRSS")["VmRSS"]
    cfg = train_config(cache, out, streaming=streaming)
    t0 = time.perf_counter()
    data = training_data(cfg)
    load_peak = proc_status("self", "VmHWM")["VmHWM"]
    Trainer(cfg, data, overwrite=True).fit()
    return {
        "base": base,
        "load_peak": load_peak,
        "peak": proc_status("self", "VmHWM")["VmHWM"],
        "s": time.perf_counter() - t0,
        "streaming": data.source is not None,
    }


def cli(events_path: str, *argv: str) -> None:
    """`mmcache ARGV` exactly as the CLI, its progress callbacks timed into EVENTS (a JSON list of
    (time, "start" | "advance", task, n))."""
    import mmcache.cli as cli

    events: list = []

    class Timed(cli.RichProgress):
        def start(self, task: str, total: int) -> None:
            events.append((time.time(), "start", task, total))
            super().start(task, total)

        def advance(self, task: str, n: int = 1) -> None:
            events.append((time.time(), "advance", task, n))
            super().advance(task, n)

    cli.RichProgress = Timed
    try:
        cli.app(list(argv), prog_name="mmcache", standalone_mode=False)
    finally:
        with open(events_path, "w") as f:
            json.dump(events, f)


def timed(real: str, log: str, *argv: str) -> None:
    """Run REAL ARGV and append its wall and CPU seconds to LOG as a JSON line; exit with its status.
    Started with python -S (nothing but the standard library) by an `mmcache` shim first on PATH."""
    t0 = time.time()
    rc = subprocess.call([real, *argv])
    t1 = time.time()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = {"cmd": argv[0], "arg": argv[2] if argv[0] == "run-shard" else "", "start": t0, "end": t1}
    line.update(cpu=ru.ru_utime + ru.ru_stime, rc=rc)
    with open(log, "a") as f:
        f.write(json.dumps(line) + "\n")
    sys.exit(rc)


def scale_open(cache: str) -> dict:
    """mmfit's load_data on `cache` (mmfit train's defaults, no verification) up to its features: open
    the cache, list the ok samples, join their labels (samples meta) and split them; wall time and RSS
    above the baseline of the imports (torch and mmfit)."""
    from common import proc_status

    import mmfit.data
    from mmfit.config import build_config

    class Reached(Exception):
        pass

    def stop(cfg, data, rows, cache_list):  # load_data's next step is loading the features
        raise Reached(data)

    cfg = build_config(cache=cache, fusion="concat", verify=False)
    base = proc_status("self", "VmRSS", "VmHWM")
    mmfit.data._attach_features = stop
    t0 = time.perf_counter()
    try:
        mmfit.data.load_data(cfg.data)
        raise RuntimeError("load_data never reached its features")
    except Reached as got:
        data = got.args[0]
    wall = time.perf_counter() - t0
    now = proc_status("self", "VmRSS", "VmHWM")
    return {
        "s": wall,
        "samples": len(data.keys),
        "splits": data.report["splits"],
        "base": base["VmRSS"],
        "rss": now["VmRSS"] - base["VmRSS"],
        "peak": now["VmHWM"] - base["VmRSS"],
    }


def scale_verify(cache: str) -> dict:
    """`mmcache verify` (mmcache.cache.verify_cache): its wall time, problems and peak memory."""
    from common import proc_status

    from mmcache.cache import verify_cache

    base = proc_status("self", "VmRSS")["VmRSS"]
    t0 = time.perf_counter()
    problems = verify_cache(cache)
    wall, peak = time.perf_counter() - t0, proc_status("self", "VmHWM")["VmHWM"]
    return {"s": wall, "problems": problems[:5], "base": base, "peak": peak}


def scale_train(cache: str, streaming: str, out: str) -> dict:
    """`mmfit train --fusion concat --epochs 1` with mmfit's defaults otherwise (no verification):
    load_data + Trainer.fit into OUT (overwritten); wall time, the epoch's own time and samples/s
    (the Trainer's history), and peak memory."""
    import torch  # noqa: F401  (the baseline includes torch)
    from common import proc_status

    from mmfit.config import build_config
    from mmfit.trainer import Trainer, training_data

    base = proc_status("self", "VmRSS")["VmRSS"]
    cfg = build_config(cache=cache, fusion="concat", epochs=1, verify=False, out=out, seed=0, streaming=streaming)
    t0 = time.perf_counter()
    data = training_data(cfg)
    load_s, load_peak = time.perf_counter() - t0, proc_status("self", "VmHWM")["VmHWM"]
    (row,) = Trainer(cfg, data, overwrite=True).fit().history
    return {
        "s": time.perf_counter() - t0,
        "load_s": load_s,
        "epoch_s": row["train/epoch_s"],
        "samples_per_s": row["train/samples_per_s"],
        "base": base,
        "load_peak": load_peak,
        "peak": proc_status("self", "VmHWM")["VmHWM"],
        "streaming": data.source is not None,
    }


TASKS = {"extract": extract, "train": train, "cli": cli, "timed": timed}
TASKS.update(scale_open=scale_open, scale_verify=scale_verify, scale_train=scale_train)

if __name__ == "__main__":
    got = TASKS[sys.argv[1]](*sys.argv[2:])
    if got is not None:
        print(json.dumps(got))
