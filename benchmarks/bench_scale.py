#!/usr/bin/env python
"""Scale: how opening, verifying and training on a cache grow with its number of clips.

    python benchmarks/bench_scale.py            # full run: 100k, 300k and 1M clips, updates benchmarks/RESULTS.md:
                                                # about 10 min on a quiet 2-core CPU (100k: 35 s), plus about
                                                # 4 min the first time (the caches, 3.5 GB: 15 s per 100k), plus
                                                # waits of up to 2 min a try while other processes are busy
    python benchmarks/bench_scale.py --quick    # smoke (2,000 and 6,000 clips, < 60 s), writes
                                                # bench-out/RESULTS-quick.md

Caches: CLIPS clips of one small field (8-d float16, 4 steps each), labels in the samples index `meta`
(10 balanced classes), webdataset shards of SHARD_SIZE = 256 clips (mmcache extract's default), written
with synthetic.py's writer (the library's shard writers and manifest entries), as bench_train's cache;
built once under bench-out/bench_scale/ and reused (rebuilt when CACHE_VERSION or a parameter changes).

For each size, each measurement in a fresh child process (benchmarks/children.py), so no memory carries
over from one to the next:
  open     mmfit's load_data up to its features (open the cache, list its ok samples, join their labels,
           split them): wall time, and RSS above the baseline of the imports (torch, mmfit)
  verify   `mmcache verify` (mmcache.cache.verify_cache): wall time
  train    `mmfit train --fusion concat --epochs 1` (mmfit's defaults otherwise: batch 64, hidden 256; no
           verification: it is measured above) in memory (`streaming: never`) and streamed (`streaming:
           always`): wall time (load + epoch + val/test + checkpoints), the epoch's own time and samples/s
           (the Trainer's history) and peak RSS (VmHWM of the child)
Each quantity's growth per clip is a least-squares line over the sizes; the table projects it to 1M clips
(where the targets are judged, from the measurement when 1M is a size) and to 6.1M clips.
Targets (issue 14): 1M clips open in < 10 s; one concat epoch of `mmfit train` in < 60 s under 2 GB peak RSS.
Raw JSON: bench-out/bench_scale/results[-quick].json.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import synthetic
from common import Bench, log, machine_line, peak_rss, verdict, wait_quiet

CACHE_VERSION = 2  # bump when the cache's data changes, so an old one under bench-out/ is rebuilt
DIM, STEPS, SIGNAL = 8, 4, 0.5
SHARD_SIZE = synthetic.SHARD_SIZE  # 256 clips, mmcache extract's default
FIELD = {"tiny": ("tiny", "synthetic", "vision", DIM)}  # name -> (encoder, family, modality, dim)
PROJECT = (1_000_000, 6_100_000)  # clips: where the targets are judged, and the figure projected
OPEN_MAX_S, TRAIN_MAX_S, RSS_MAX = 10.0, 60.0, 2e9
MODES = {"never": "in memory", "always": "streamed"}


# ---------------------------------------------------------------------------------------------
# caches


def write_cache(root: Path, clips: int) -> None:
    """The cache of `clips` clips into root (a fresh folder): synthetic.py's writer with one tiny field."""
    synthetic.write_cache(root, clips, STEPS, "webdataset", fields=FIELD, signal=SIGNAL, every=200)


def ensure_cache(work: Path, clips: int) -> tuple[Path, dict]:
    """work/cache-<clips>, built once (into a temp folder, then renamed) and reused while its parameters
    are unchanged; its size, and how long it took to build."""
    params = {"version": CACHE_VERSION, "clips": clips, "dim": DIM, "steps": STEPS, "shard_size": SHARD_SIZE}
    path, stamp = work / f"cache-{clips}", work / f"cache-{clips}.json"
    if (path / "manifest.json").is_file() and stamp.is_file() and json.loads(stamp.read_text())["params"] == params:
        return path, json.loads(stamp.read_text())
    log(f"building the {clips}-clip cache in {path} ...")
    tmp = work / f"cache-{clips}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    write_cache(tmp, clips)
    tmp.rename(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    info = {"params": params, "build_s": time.perf_counter() - t0, "bytes": size, "shards": -(-clips // SHARD_SIZE)}
    stamp.write_text(json.dumps(info, indent=1))
    log(f"built in {info['build_s']:.1f} s ({size / 1e6:.0f} MB)")
    return path, info


# ---------------------------------------------------------------------------------------------
# measuring


def quiet_run(a, task: str, *args) -> dict:
    """children.py `task` in a fresh python, each try after waiting (up to 2 min) for other processes to use
    at most --max-others of the CPUs; tried again (3 tries in all) while they took more meanwhile: torch's
    threads slow down many times over when another process holds a core."""
    for attempt in range(1, 4):
        if a.max_others < 1:
            wait_quiet(a.max_others, 120)
        run = peak_rss(task, *args, timeout=3600)
        if run.others <= a.max_others:
            break
        log(f"  others used {run.others:.0%} of the CPUs during {task} (try {attempt})")
    return {**run.report, "wall": run.wall, "others": run.others, "tries": attempt}


def measure_size(a, work: Path, clips: int) -> dict:
    cache, info = ensure_cache(work, clips)
    row = {"clips": clips, "shards": info["shards"], "bytes": info["bytes"], "build_s": info["build_s"]}
    row["open"] = quiet_run(a, "scale_open", cache)
    log(f"  {clips}: open + index {row['open']['s']:.2f} s, {row['open']['rss'] / clips:.0f} B/clip above imports")
    row["verify"] = quiet_run(a, "scale_verify", cache)
    if row["verify"]["problems"]:
        raise RuntimeError(f"{cache} fails verification: {row['verify']['problems']}")
    log(f"  {clips}: verify {row['verify']['s']:.2f} s")
    for mode in MODES:
        r = row[mode] = quiet_run(a, "scale_train", cache, mode, work / "runs" / f"{clips}-{mode}")
        assert r["streaming"] == (mode == "always"), r
        log(
            f"  {clips}: train {MODES[mode]} {r['s']:.1f} s (epoch {r['epoch_s']:.2f} s, "
            f"{r['samples_per_s']:.0f} samples/s), peak RSS {r['peak'] / 1e6:.0f} MB"
        )
    return row


GROWTH = {  # name -> (what, unit, value of a size's row, its value at 0 clips: the child's import baseline)
    "open_s": ("open + index", "s", lambda r: r["open"]["s"], lambda r: 0.0),
    "open_rss": ("open + index: RSS above imports", "B", lambda r: r["open"]["rss"], lambda r: 0.0),
    "verify_s": ("`mmcache verify`", "s", lambda r: r["verify"]["s"], lambda r: 0.0),
    "train_s": ("train in memory: wall", "s", lambda r: r["never"]["s"], lambda r: 0.0),
    "train_rss": ("train in memory: peak RSS", "B", lambda r: r["never"]["peak"], lambda r: r["never"]["base"]),
    "stream_s": ("train streamed: wall", "s", lambda r: r["always"]["s"], lambda r: 0.0),
    "stream_rss": ("train streamed: peak RSS", "B", lambda r: r["always"]["peak"], lambda r: r["always"]["base"]),
}


def fit(rows: list[dict]) -> dict:
    """Each GROWTH quantity's least-squares line over the sizes: per clip and fixed part (one size: the
    line from its value at 0 clips)."""
    x = np.array([r["clips"] for r in rows], float)
    out = {}
    for name, (_, _, get, zero) in GROWTH.items():
        y = np.array([get(r) for r in rows], float)
        if len(x) > 1:
            slope, fixed = np.polyfit(x, y, 1)
        else:
            fixed = zero(rows[0])
            slope = (y[0] - fixed) / x[0]
        out[name] = {"per_clip": float(slope), "fixed": float(fixed)}
    return out


def options(ap) -> None:
    ap.add_quick("--sizes", "100000,300000,1000000", "2000,6000", "cache sizes in clips, comma-separated")
    ap.add_max_others(0.25, "it (after waiting up to 2 min for them to drop below it; 3 tries)")


def measure(a) -> dict:
    work = a.out / "bench_scale"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for clips in sorted(int(s) for s in str(a.sizes).split(",")):
        log(f"{clips} clips ...")
        rows.append(measure_size(a, work, clips))
    p = {"sizes": a.sizes, "quick": a.quick, "shard_size": SHARD_SIZE, "max_others": a.max_others}
    return {"params": p, "rows": rows, "fit": fit(rows)}


# ---------------------------------------------------------------------------------------------
# report


def human(v: float, unit: str) -> str:
    return f"{v / 1e6:,.0f} MB" if unit == "B" else f"{v:,.1f} s"


def at(rows: list[dict], name: str, clips: int) -> tuple[float, bool]:
    """A quantity at `clips`: measured when a size, else from its fitted line; and whether measured."""
    row = next((r for r in rows if r["clips"] == clips), None)
    if row is not None:
        return GROWTH[name][2](row), True
    f = fit(rows)[name]
    return f["fixed"] + f["per_clip"] * clips, False


def render(raw: dict) -> tuple[str, list[bool]]:
    rows, fitted = raw["rows"], fit(raw["rows"])
    out = [machine_line(raw["machine"]), ""]
    out.append(
        f"Caches: one 8-d float16 field of 4 steps per clip, labels in the samples index, webdataset shards of "
        f"{raw['params']['shard_size']} clips. Every measurement in a fresh child process; RSS is VmRSS/VmHWM of "
        "that process. Train: `mmfit train --fusion concat --epochs 1` with mmfit's defaults (batch 64), no "
        "verification; its wall time covers load + epoch + val/test + checkpoints."
    )
    out += [
        "",
        "| clips | shards | cache | open + index | RSS above imports | verify | train in memory: wall (epoch) | "
        "peak RSS | train streamed: wall (epoch) | peak RSS | samples/s in memory | streamed | streamed / in memory |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem, st, rss = r["never"], r["always"], r["open"]["rss"]
        out.append(
            f"| {r['clips']:,} | {r['shards']:,} | {r['bytes'] / 1e6:,.0f} MB | {r['open']['s']:.2f} s | "
            f"{rss / 1e6:,.0f} MB ({rss / r['clips']:,.0f} B/clip) | {r['verify']['s']:.2f} s | "
            f"{mem['s']:.1f} s ({mem['epoch_s']:.2f} s) | {mem['peak'] / 1e6:,.0f} MB | {st['s']:.1f} s "
            f"({st['epoch_s']:.2f} s) | {st['peak'] / 1e6:,.0f} MB | {mem['samples_per_s']:,.0f} | "
            f"{st['samples_per_s']:,.0f} | {st['samples_per_s'] / mem['samples_per_s']:.2f} |"
        )
    runs = [r[k] for r in rows for k in ("open", "verify", *MODES)]
    limit = raw["params"]["max_others"]
    disturbed = sum(r["others"] > limit for r in runs)
    out += [
        "",
        f"Other processes used up to {max(r['others'] for r in runs):.0%} of the CPUs during a measurement; "
        f"{disturbed} of {len(runs)} measurements stayed above {limit:.0%} after up to {max(r['tries'] for r in runs)} "
        "tries (torch's threads slow down many times over when another process holds a core: such numbers "
        "are not the library's).",
        "",
    ]
    n = len(rows)
    how = "least-squares line over the sizes" if n > 1 else "one size: the line from 0 clips, or the import baseline"
    out += [f"Growth per clip ({how}) and projections:", ""]
    out += ["| quantity | per clip | fixed part | at 1M clips | at 6.1M clips |", "|---|---:|---:|---:|---:|"]
    for name, (what, unit, *_) in GROWTH.items():
        f = fitted[name]
        per = f"{f['per_clip']:,.0f} B" if unit == "B" else f"{f['per_clip'] * 1e6:,.1f} us"
        big = [at(rows, name, c) for c in PROJECT]
        cells = [human(v, unit) + ("" if measured else " (projected)") for v, measured in big]
        out.append(f"| {what} | {per} | {human(f['fixed'], unit)} | {cells[0]} | {cells[1]} |")
    checks = []
    out += ["", "Targets (issue 14), at 1M clips:", "", "| target | value | result |", "|---|---:|---|"]
    for name, limit, what in (
        ("open_s", OPEN_MAX_S, f"open + index < {OPEN_MAX_S:.0f} s"),
        ("train_s", TRAIN_MAX_S, f"train 1 concat epoch (whole `mmfit train`) < {TRAIN_MAX_S:.0f} s"),
        ("train_rss", RSS_MAX, f"its peak RSS < {RSS_MAX / 1e9:.0f} GB"),
    ):
        v, measured = at(rows, name, PROJECT[0])
        checks.append(v < limit)
        unit = GROWTH[name][1]
        out.append(f"| {what} | {human(v, unit)}{'' if measured else ' (projected)'} | {verdict(checks[-1])} |")
    out.append("")
    return "\n".join(out) + "\n", checks


BENCH = Bench("bench_scale", __doc__, measure, render, options, custom=("sizes",))

if __name__ == "__main__":
    sys.exit(BENCH.main())
