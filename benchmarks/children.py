#!/usr/bin/env python
"""What benchmarks run in a fresh process: `python benchmarks/children.py TASK ARG...` (common.child_cmd), TASK a
function below. The measuring ones print one JSON line; their peak memory is VmHWM. Method: docs/benchmarks.md
`timed` runs under python -S and the start-up of `cli` and `timed` is measured: import only the standard library here.
"""

import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, as in common.py


def extract(video: str, cache: str, encoder: str) -> dict:
    """bench_extract: mmcache.extract into a fresh cache; wall time, VmHWM, RssFile, RssAnon sampled at 20 Hz."""
    import shutil
    import threading

    from common import proc_status

    import mmcache

    shutil.rmtree(cache, ignore_errors=True)
    peak_anon, done = 0, threading.Event()

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
    got = {"ok": report.new_ok, "wall_s": wall, "python_hwm": st["VmHWM"], "python_anon_peak": peak_anon}
    return {**got, "python_file": st["RssFile"], "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def fit(make_config) -> tuple[dict, list]:
    """training_data + Trainer.fit of make_config(), made after the baseline RSS (torch and mmfit imported); the
    Trainer's history."""
    import torch  # noqa: F401  (the baseline includes torch)
    from common import proc_status

    from mmfit.trainer import Trainer, training_data

    base = proc_status("self", "VmRSS")["VmRSS"]
    cfg = make_config()
    t0 = time.perf_counter()
    data = training_data(cfg)
    load_s, load_peak = time.perf_counter() - t0, proc_status("self", "VmHWM")["VmHWM"]
    history = Trainer(cfg, data, overwrite=True).fit().history
    got = {"s": time.perf_counter() - t0, "load_s": load_s, "base": base, "load_peak": load_peak}
    got.update(peak=proc_status("self", "VmHWM")["VmHWM"], streaming=data.source is not None)
    return got, history


def train(cache: str, streaming: str, out: str) -> dict:
    """bench_read (d): one concat epoch on synthetic.train_config."""
    from synthetic import train_config

    got, _ = fit(lambda: train_config(cache, out, streaming=streaming))
    return {key: got[key] for key in ("base", "load_peak", "peak", "s", "streaming")}


def cli(events_path: str, *argv: str) -> None:
    """bench_scaling's dask runs: `mmcache ARGV`, its progress callbacks timed into EVENTS_PATH (JSON)."""
    import mmcache.cli as cli

    events: list = []  # (time, "start" | "advance", task, n)

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
    """bench_scaling's `mmcache` shim (python -S): run REAL ARGV, append its times to LOG, exit with its status."""
    t0 = time.time()
    rc = subprocess.call([real, *argv])
    line = {"cmd": argv[0], "arg": argv[2] if argv[0] == "run-shard" else "", "start": t0, "end": time.time()}
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    line.update(cpu=ru.ru_utime + ru.ru_stime, rc=rc)
    with open(log, "a") as f:
        f.write(json.dumps(line) + "\n")
    sys.exit(rc)


def scale_open(cache: str) -> dict:
    """bench_scale: mmfit's load_data (mmfit train's defaults, no verification) up to loading the features."""
    from common import proc_status

    import mmfit.data
    from mmfit.config import build_config

    class Reached(Exception):
        pass

    def stop(cfg, data, rows, cache_list):  # load_data's next step is loading the features
        raise Reached(data)

    cfg = build_config(cache=cache, fusion="concat", verify=False)
    base = proc_status("self", "VmRSS")["VmRSS"]
    mmfit.data._attach_features = stop
    t0 = time.perf_counter()
    try:
        mmfit.data.load_data(cfg.data)
        raise RuntimeError("load_data never reached its features")
    except Reached as reached:
        data = reached.args[0]
    wall = time.perf_counter() - t0
    now = proc_status("self", "VmRSS", "VmHWM")
    res = {"s": wall, "samples": len(data.keys), "splits": data.report["splits"], "base": base}
    return {**res, "rss": now["VmRSS"] - base, "peak": now["VmHWM"] - base}


def scale_verify(cache: str) -> dict:
    """bench_scale: `mmcache verify` (verify_cache)."""
    from common import proc_status

    from mmcache.cache import verify_cache

    base = proc_status("self", "VmRSS")["VmRSS"]
    t0 = time.perf_counter()
    problems = verify_cache(cache)
    wall, peak = time.perf_counter() - t0, proc_status("self", "VmHWM")["VmHWM"]
    return {"s": wall, "problems": problems[:5], "base": base, "peak": peak}


def scale_train(cache: str, streaming: str, out: str) -> dict:
    """bench_scale: `mmfit train --fusion concat --epochs 1`, mmfit's defaults otherwise (no verification)."""
    from mmfit.config import build_config

    options = dict(cache=cache, fusion="concat", epochs=1, verify=False, out=out, seed=0, streaming=streaming)
    got, (row,) = fit(lambda: build_config(**options))
    got.update(epoch_s=row["train/epoch_s"], samples_per_s=row["train/samples_per_s"])
    keys = ("s", "load_s", "epoch_s", "samples_per_s", "base", "load_peak", "peak", "streaming")
    return {key: got[key] for key in keys}


TASKS = {task.__name__: task for task in (extract, train, cli, timed, scale_open, scale_verify, scale_train)}

if __name__ == "__main__":
    got = TASKS[sys.argv[1]](*sys.argv[2:])
    if got is not None:
        print(json.dumps(got))
