#!/usr/bin/env python
"""Scale: how opening, verifying and training on a cache grow with its number of clips.

    python benchmarks/bench_scale.py            # full run: 100k, 300k and 1M clips (~15 min), updates RESULTS.md
    python benchmarks/bench_scale.py --quick    # smoke (2,000 and 6,000 clips, < 60 s), bench-out/RESULTS-quick.md

Targets (issue 14): 1M clips open in < 10 s; one concat epoch of `mmfit train` in < 60 s under 2 GB peak RSS.
Method: docs/benchmarks.md
"""

from __future__ import annotations

import sys

import numpy as np
from common import Bench, log, machine_line, peak_rss, table, verdict, wait_quiet
from synthetic import SHARD_SIZE, ensure_cache

DIM, STEPS, SIGNAL = 8, 4, 0.5
PROJECT = (1_000_000, 6_100_000)  # clips: where the targets are judged, and the figure projected
MODES = ("never", "always")  # mmfit's `streaming`: in memory, streamed
FIELD = {"tiny": ("tiny", "synthetic", "vision", DIM)}  # name -> (encoder, family, modality, dim)
GROWTH = {  # name -> (what, unit, the measurement and its key in a size's row, its target at 1M clips: limit, text)
    "open_s": ("open + index", "s", "open", "s", (10, "open + index < 10 s")),
    "open_rss": ("open + index: RSS above imports", "B", "open", "rss", None),
    "verify_s": ("`mmcache verify`", "s", "verify", "s", None),
    "train_s": ("train in memory: wall", "s", "never", "s", (60, "train 1 concat epoch (whole `mmfit train`) < 60 s")),
    "train_rss": ("train in memory: peak RSS", "B", "never", "peak", (2e9, "its peak RSS < 2 GB")),
    "stream_s": ("train streamed: wall", "s", "always", "s", None),
    "stream_rss": ("train streamed: peak RSS", "B", "always", "peak", None),
}
SIZES_HEAD = (  # the columns of the table of sizes
    "clips | shards | cache | open + index | RSS above imports | verify | train in memory: wall (epoch) | peak RSS | "
    "train streamed: wall (epoch) | peak RSS | samples/s in memory | streamed | streamed / in memory"
)


def quiet_run(a, task: str, *args) -> dict:
    """children.py `task` in a fresh python after waiting (up to 2 min) for a quiet machine; 3 tries."""
    for attempt in range(1, 4):
        if a.max_others < 1:
            wait_quiet(a.max_others, 120)
        run = peak_rss(task, *args, timeout=3600)
        if run.others <= a.max_others:
            break
        log(f"  others used {run.others:.0%} of the CPUs during {task} (try {attempt})")
    return {**run.report, "wall": run.wall, "others": run.others, "tries": attempt}


def fit(rows: list[dict]) -> dict:
    """Each GROWTH quantity's least-squares line over the sizes (one size: the line from its value at 0 clips)."""
    out = {}
    for name, (_, _, run, key, _) in GROWTH.items():
        x, y = [r["clips"] for r in rows], [r[run][key] for r in rows]
        if len(rows) > 1:
            slope, fixed = np.polyfit(x, y, 1)
        else:  # at 0 clips: the child's import baseline for a peak RSS, else 0
            fixed = rows[0][run]["base"] if key == "peak" else 0.0
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
        cache, info = ensure_cache(work, clips, STEPS, fields=FIELD, signal=SIGNAL)
        row = {"clips": clips, "shards": info["shards"], "bytes": info["bytes"], "build_s": info["build_s"]}
        row["open"] = quiet_run(a, "scale_open", cache)
        row["verify"] = quiet_run(a, "scale_verify", cache)
        if row["verify"]["problems"]:
            raise RuntimeError(f"{cache} fails verification: {row['verify']['problems']}")
        for mode in MODES:
            row[mode] = quiet_run(a, "scale_train", cache, mode, work / "runs" / f"{clips}-{mode}")
            assert row[mode]["streaming"] == (mode == "always"), row[mode]
        log(f"{clips} clips: " + ", ".join(f"{k} {row[k]['s']:.2f} s" for k in ("open", "verify", *MODES)))
        rows.append(row)
    p = {"sizes": a.sizes, "quick": a.quick, "shard_size": SHARD_SIZE, "max_others": a.max_others}
    return {"params": p, "rows": rows, "fit": fit(rows)}


def render(raw: dict) -> tuple[str, list[bool]]:
    rows, fitted, limit = raw["rows"], fit(raw["rows"]), raw["params"]["max_others"]
    runs = [r[k] for r in rows for k in ("open", "verify", *MODES)]
    human = {"B": lambda v: f"{v / 1e6:,.0f} MB", "s": lambda v: f"{v:,.1f} s"}
    mb = human["B"]
    sizes = []
    for r in rows:
        rss, rates = r["open"]["rss"], [r[mode]["samples_per_s"] for mode in MODES]
        opened = [f"{r['open']['s']:.2f} s", f"{mb(rss)} ({rss / r['clips']:,.0f} B/clip)", f"{r['verify']['s']:.2f} s"]
        trains = [c for m in MODES for c in (f"{r[m]['s']:.1f} s ({r[m]['epoch_s']:.2f} s)", mb(r[m]["peak"]))]
        speeds = [f"{rates[0]:,.0f}", f"{rates[1]:,.0f}", f"{rates[1] / rates[0]:.2f}"]
        sizes.append([f"{r['clips']:,}", f"{r['shards']:,}", mb(r["bytes"]), *opened, *trains, *speeds])
    measured = {r["clips"]: r for r in rows}
    growth, targets, checks = [], [], []
    for name, (what, unit, run, key, target) in GROWTH.items():
        f = fitted[name]
        at = {c: measured[c][run][key] if c in measured else f["fixed"] + f["per_clip"] * c for c in PROJECT}
        cells = [human[unit](v) + ("" if c in measured else " (projected)") for c, v in at.items()]
        per = f"{f['per_clip']:,.0f} B" if unit == "B" else f"{f['per_clip'] * 1e6:,.1f} us"
        growth.append([what, per, human[unit](f["fixed"]), *cells])
        if target:
            checks.append(at[PROJECT[0]] < target[0])
            targets.append([target[1], cells[0], verdict(checks[-1])])
    how = "least-squares line over the sizes"
    if len(rows) == 1:
        how = "one size: the line from 0 clips, or the import baseline"
    out = [  # a "\n" ending a line leaves a blank line after it
        machine_line(raw["machine"]) + "\n",
        f"Caches: one 8-d float16 field of 4 steps per clip, labels in the samples index, webdataset shards of "
        f"{raw['params']['shard_size']} clips. Every measurement in a fresh child process; RSS is VmRSS/VmHWM of "
        "that process. Train: `mmfit train --fusion concat --epochs 1` with mmfit's defaults (batch 64), no "
        "verification; its wall time covers load + epoch + val/test + checkpoints.\n",
        table(SIZES_HEAD, "r" * 13, sizes),
        f"\nOther processes used up to {max(r['others'] for r in runs):.0%} of the CPUs during a measurement; "
        f"{sum(r['others'] > limit for r in runs)} of {len(runs)} measurements stayed above {limit:.0%} after up to "
        f"{max(r['tries'] for r in runs)} tries (torch's threads slow down many times over when another process "
        "holds a core: such numbers are not the library's).\n",
        f"Growth per clip ({how}) and projections:\n",
        table("quantity | per clip | fixed part | at 1M clips | at 6.1M clips", "lrrrr", growth),
        "\nTargets (issue 14), at 1M clips:\n",
        table("target | value | result", "lrl", targets),
    ]
    return "\n".join(out) + "\n\n", checks


if __name__ == "__main__":
    sys.exit(Bench("bench_scale", __doc__, measure, render, options, custom=("sizes",)).main())
