#!/usr/bin/env python
"""Cache read speed: mmcache's reader vs a raw read, random access, streaming vs in-memory training, memory.

    python benchmarks/bench_read.py            # full run, updates benchmarks/RESULTS.md
    python benchmarks/bench_read.py --quick    # smoke run (< 60 s), writes bench-out/RESULTS-quick.md

Targets: cold reader MB/s >= 0.8 x raw read; streamed train samples/s >= 0.8 x in-memory (concat and
attention); streaming's peak RSS growth per clip <= 10% of in-memory's. Method: docs/benchmarks.md
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from common import Bench, Meter, log, machine_line, med, peak_rss, spread, table, verdict
from synthetic import STEPS, ensure_cache, train_config

LONG_STEPS = 128  # steps per sample of (a)'s third cache: 8x the bytes per sample
RATIO_MIN = 0.8  # reader / raw read MB/s, cold
STREAM_MIN = 0.8  # streamed / in-memory train samples/s, each fusion
STREAM_RUNS = {"concat": (6, 3), "attention": (3, 2)}  # fusion -> (epochs per run, runs per mode); quick: (2, 1)
FLAT_MAX = 0.10  # streaming's peak RSS growth per clip at most this share of in-memory's
STATES = ("cold", "warm")
MODES = {"never": "in memory (`streaming: never`)", "always": "streaming (`streaming: always`)"}


def field_files(cache: Path) -> list[Path]:
    fields = json.loads((cache / "manifest.json").read_text())["fields"]
    return [cache / e["path"] for f in fields.values() for e in sorted(f["files"].values(), key=lambda e: e["path"])]


def alternating(names, r: int) -> list:
    """Round r's order: as given in even rounds, reversed in odd ones."""
    return list(names) if r % 2 == 0 else list(names)[::-1]


def raw_read(files: list[Path]) -> int:
    buf = bytearray(4 << 20)  # one reused 4 MiB buffer
    n = 0
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while k := f.readinto(buf):
                n += k
    return n


def sequential(path: Path, backend: str, clips: int, steps: int, rounds: int) -> dict:
    from mmcache import open_cache
    from mmcache.store.mapped import map_file

    files = field_files(path)
    nbytes = sum(p.stat().st_size for p in files)
    label = f"{backend}, {clips} clips x {steps} steps"
    res = {"backend": backend, "label": label, "files": len(files), "bytes": nbytes}
    cache = open_cache(path)
    with Meter() as m:
        rows = len(cache.samples())
    res["samples_index"] = {"rows": rows, "s": m.wall}
    ways = {
        "raw": lambda: raw_read(files),
        "raw_keep": lambda: sum(map(len, [p.read_bytes() for p in files])),  # every file's bytes held at once
        "raw_map": lambda: sum(len(map_file(p)) for p in files),  # every page mapped in, no parsing
        "load_field": lambda: sum(len(cache.load_field(name).feats) for name in cache.fields),
        "iter_samples": lambda: sum(1 for _ in cache.iter_samples()),
    }
    for fn in ways.values():  # warm the page cache (and the reader's code paths)
        fn()
    got = res["rounds"] = {st: {k: [] for k in ways} for st in STATES}
    for r in range(rounds):
        for st in STATES:
            for k in alternating(ways, r):
                if st == "cold":  # drop the files' (clean, unmapped) pages: the read comes from storage
                    for path in files:
                        with open(path, "rb") as f:
                            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                with Meter() as m:
                    ways[k]()
                got[st][k].append({"s": m.wall, "others": m.others})
            speeds = ", ".join(f"{k} {nbytes / 1e6 / v[-1]['s']:.0f} MB/s" for k, v in got[st].items())
            log(f"a. {label} round {r + 1} {st}: {speeds}")

    def ratio(g: dict, base: str, reader: str) -> list[float]:  # the base's time / the reader's, per round
        return [a["s"] / b["s"] for a, b in zip(g[base], g[reader], strict=True)]

    res["ratios"] = {st: {k: ratio(g, "raw", k) for k in ("load_field", "iter_samples")} for st, g in got.items()}
    for st, g in got.items():
        res["ratios"][st]["load_field_vs_keep"] = ratio(g, "raw_keep", "load_field")
    res["mb_s"] = {st: {k: med([nbytes / 1e6 / x["s"] for x in v]) for k, v in g.items()} for st, g in got.items()}
    res["others_max"] = max(x["others"] for g in got.values() for v in g.values() for x in v)
    return res


def random_access(path: Path, backend: str, n_random: int, rounds: int, seed: int = 0) -> dict:
    from mmcache import open_cache

    cache = open_cache(path)
    name = next(iter(cache.fields))
    keys = cache.ok_keys()
    picks = [keys[i] for i in np.random.default_rng(seed).choice(len(keys), min(n_random, len(keys)), replace=False)]
    first = {}  # shard -> its first key
    for row in cache.samples("ok"):
        first.setdefault(row["shard"], row["key"])
    res = {"backend": backend, "field": name, "dim": cache.fields[name]["dim"], "n_random": len(picks)}
    with cache.field_reader(name, max_open=len(cache.shards)) as reader:
        with Meter() as m:
            for key in first.values():  # open and index every shard file once
                reader.read(key)
        res |= {"open_index_s": m.wall, "shards": len(cache.shards)}
        some = picks[:20]  # what random access returns (feats, ts) is what iter_samples returns
        expected = {s["key"]: s[name] for s in cache.iter_samples([name]) if s["key"] in some}
        for k in some:
            pairs = zip(reader.read(k), expected[k], strict=True)
            assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in pairs), k
        got = res["rounds"] = {"random": [], "sequential": []}
        for r in range(rounds):
            for k in alternating(got, r):
                with Meter() as m:
                    samples = map(reader.read, picks) if k == "random" else cache.iter_samples([name])
                    n = sum(1 for _ in samples)
                got[k].append({"samples_s": n / m.wall, "s": m.wall, "others": m.others})
            log(f"b. {backend} round {r + 1}: " + ", ".join(f"{k} {v[-1]['samples_s']:.0f}/s" for k, v in got.items()))
    res["samples_s"] = {k: med([x["samples_s"] for x in v]) for k, v in got.items()}
    res["others_max"] = max(x["others"] for v in got.values() for x in v)
    return res


def streaming_vs_memory(cache: Path, out: Path, fusion: str, epochs: int, rounds: int) -> dict:
    from mmfit.trainer import Trainer, training_data

    got = {mode: [] for mode in MODES}
    for r in range(rounds):
        for mode in alternating(MODES, r):
            cfg = train_config(cache, out / f"{fusion}-{mode}-{r}", fusion=fusion, epochs=epochs, streaming=mode)
            with Meter() as load:
                data = training_data(cfg)
            assert (data.source is not None) == (mode == "always")
            with Meter() as fit:
                result = Trainer(cfg, data, overwrite=True).fit()
            h = result.history[1:] or result.history  # the first epoch also warms torch up
            x = {"load_s": load.wall, "epoch_s": med([row["train/epoch_s"] for row in h])}
            x["first_epoch_s"] = result.history[0]["train/epoch_s"]
            x["samples_s"] = med([row["train/samples_per_s"] for row in h])
            x["data_share"] = med([row["train/data_share"] for row in h])
            x |= {"fit_s": fit.wall, "n_train": len(data.rows("train")), "val_accuracy": float(result.val["accuracy"])}
            x["others"] = max(load.others, fit.others)
            got[mode].append(x)
            log(f"c. {fusion} round {r + 1} streaming={mode}: " + ", ".join(f"{k} {v:.3g}" for k, v in x.items()))
            del data, result
    median = {m: {k: med([x[k] for x in v]) for k in v[0]} for m, v in got.items()}
    ratios = [b["samples_s"] / a["samples_s"] for a, b in zip(got["never"], got["always"], strict=True)]
    others = max(x["others"] for v in got.values() for x in v)
    return {"epochs": epochs, "rounds": got, "median": median, "ratios": ratios, "others_max": others}


def memory(caches: dict[int, Path], out: Path) -> dict:
    rows = []
    for clips, cache in caches.items():
        size = sum(p.stat().st_size for p in field_files(cache))
        for mode in MODES:  # load_data + one concat epoch in a child process (children.py train): its peak RSS
            run = peak_rss("train", cache, mode, out / f"mem-{clips}-{mode}", timeout=900)
            assert run.report["streaming"] == (mode == "always")
            rows.append(dict(clips=clips, cache_bytes=size, mode=mode, **run.report, wall=run.wall, others=run.others))
            log(f"d. {clips} clips streaming={mode}: peak RSS {run.report['peak'] / 1e6:.0f} MB, {run.wall:.1f} s")
    lo, hi = min(caches), max(caches)
    peak = {(r["clips"], r["mode"]): r["peak"] for r in rows}
    slope = {mode: (peak[hi, mode] - peak[lo, mode]) / (hi - lo) for mode in MODES}  # bytes of peak RSS per clip
    return {"rows": rows, "slope": slope, "flat": slope["always"] <= FLAT_MAX * slope["never"]}


def render(raw: dict) -> tuple[str, list[bool]]:
    p, seq, rnd, st, mem = (raw[k] for k in ("params", "sequential", "random", "streaming", "memory"))
    readers = {"load_field": "`load_field(name)` for every field", "iter_samples": "`iter_samples()` (all fields)"}
    checks = [med(s["ratios"]["cold"][k]) >= RATIO_MIN for s in seq for k in readers]  # each cold read; then the
    checks += [med(r["ratios"]) >= STREAM_MIN for r in st.values()] + [mem["flat"]]  # streamed speeds, flat memory
    reads, speeds, info = [], [], []
    for s in seq:
        for state in STATES:
            for k, what in readers.items():
                r = s["ratios"][state][k]
                judged = [f">= {RATIO_MIN}", verdict(med(r) >= RATIO_MIN)] if state == "cold" else ["(context)", ""]
                reads.append([s["label"], state, what, f"{med(r):.2f}", spread(r), *judged])
            mb = [f"{s['mb_s'][state][k]:.0f}" for k in ("raw", "raw_keep", "raw_map", "load_field", "iter_samples")]
            speeds.append([s["label"], state, *mb, f"{med(s['ratios'][state]['load_field_vs_keep']):.2f}"])
        index = f"{s['samples_index']['rows']} rows in {s['samples_index']['s']:.2f} s"
        info.append([s["label"], f"{s['files']} files, {s['bytes'] / 1e6:.0f} MB", index, f"{s['others_max']:.0%}"])
    random = []
    for r in rnd:
        rand, seq_s = r["samples_s"]["random"], r["samples_s"]["sequential"]
        cells = [r["backend"], f"{r['field']} ({r['dim']}-d)", f"{rand:.0f}", f"{seq_s:.0f}", f"{rand / seq_s:.2f}"]
        random.append([*cells, f"{r['open_index_s']:.2f} s ({r['shards']} files)", f"{r['others_max']:.0%}"])
    training, streamed = [], []
    for fusion, r in st.items():
        for mode in MODES:
            x = r["median"][mode]
            secs = [f"{x[k]:.2f} s" for k in ("load_s", "first_epoch_s", "epoch_s")]
            training.append([fusion, MODES[mode], *secs, f"{x['samples_s']:.0f}", f"{x['data_share']:.0%}"])
            training[-1] += [f"{x['fit_s']:.1f} s", f"{x['val_accuracy']:.3f}"]
        ratio = med(r["ratios"])
        streamed.append([fusion, f"{ratio:.2f}", spread(r["ratios"]), f">= {STREAM_MIN}", verdict(ratio >= STREAM_MIN)])
    peaks = []
    for clips in sorted({r["clips"] for r in mem["rows"]}):
        mm = {r["mode"]: r for r in mem["rows"] if r["clips"] == clips}
        mb = [mm["never"]["cache_bytes"]] + [x for m in MODES for x in (mm[m]["peak"], mm[m]["peak"] - mm[m]["base"])]
        peaks.append([clips, *(f"{x / 1e6:.0f} MB" for x in mb)])
    runs = ", ".join(f"{f} {r['epochs']} and {len(r['ratios'])}" for f, r in st.items())
    blocks = [
        machine_line(raw["machine"]),
        f"Cache: {p['clips']} synthetic clips (bench_train's), three float16 fields of {p['steps']} steps (512/768/384 "
        f"dims), {p['shards']} shards, and its HDF5 copy; (a) also reads a cache of the same fields with "
        f"{p['long_steps']} steps per sample. {p['rounds']} round(s), order alternating, medians of the per-round "
        "ratios. (a) reads every file cold (evicted from the page cache first) and warm (after a warm-up pass); "
        "(b)-(d) read a warm page cache.",
        "### a. Sequential read: mmcache's reader vs a raw read of the same field files",
        table("cache | page cache | reader | ratio to raw read (median) | min-max | target | result", "lllrrrl", reads),
        "Speed (MB of field files per second, medians):",
        table(
            "cache | page cache | raw read | raw read keeping the bytes | mapping the files (no parsing) | "
            "load_field | iter_samples | load_field / raw read keeping the bytes",
            "llrrrrrr",
            speeds,
        ),
        table("cache | field files | samples index (parsed once, before the rounds) | others' CPU (max)", "lrrr", info),
        "*Cold*: every field file is dropped from the page cache (`posix_fadvise(DONTNEED)`) before each read, raw or "
        "mmcache's, so the bytes come from storage: what reading a cache costs on a node that has not read it yet, or "
        "for a cache larger than RAM. This is where the target applies: it compares reading the cache with reading its "
        "files. mmcache maps each shard and asks the kernel to read the next shard's file ahead "
        "(`posix_fadvise(WILLNEED)`) while it checks the current one, so its checks overlap the I/O (with several "
        "fields it can beat one sequential raw read).",
        '*Warm*: the same reads with every file in the page cache, where a "read" is a memory copy. The raw read '
        "copies into one reused 4 MiB buffer and keeps nothing; a reader that hands out arrays must give each page an "
        "address in the process. On this VM, mapping every page of the files (column 'mapping the files', what "
        "mmcache's reader starts with) is faster than the raw copy; a copying reader pays fresh memory instead (column "
        "'raw read keeping the bytes'). What mmcache adds on top is per member (the walk to the next tar header, every "
        "header, name and .npy header checked in bulk with numpy, two array views): about 1 us a member, so warm "
        "ratios rise with the bytes per sample (compare the 16- and 128-step caches). HDF5 shards are opened by h5py "
        "(layout, keys, offsets checked), and their rows viewed in the mapped file.",
        "### b. Random access by key vs sequential (samples/s, one field)",
        table(
            "backend | field | random `read(key)` | sequential `iter_samples([field])` | random / sequential | "
            "open + index every shard once | others' CPU (max)",
            "llrrrrr",
            random,
        ),
        f"{rnd[0]['n_random'] if rnd else 0} distinct random keys per round through `Cache.field_reader(field)` (what "
        "`Cache.read_sample` uses) with every shard file open; sequential reads the whole field.",
        "### c. Streaming vs in-memory training (mmfit, same cache)",
        table(
            "fusion | mode | load_data | first epoch | train epoch | train samples/s | data share | "
            "fit (all epochs + val + test) | val accuracy",
            "llrrrrrrr",
            training,
        ),
        table("fusion | streamed / in-memory samples/s | min-max | target | result", "lrrrl", streamed),
        f"Epochs per run and runs per mode: {runs}; order alternating; epoch numbers are medians over the epochs after "
        "the first (the Trainer's history rows); the ratio is the median of the per-round ratios. Concat is pooled: in "
        "memory it trains on features pooled once at load; streamed, the pass that computes the train statistics (in "
        "load_data) also writes each row's mean to a spill file, and every epoch reads the spill (D float32 values per "
        "row and field instead of every step). Attention sees every step: each streamed epoch reads and lays out every "
        "shard in a forked worker while the model trains; the first epoch runs torch with a thread fewer (until the "
        "worker is seen to be mostly idle over a pass of the train split). "
        f"Others' CPU up to {max(r['others_max'] for r in st.values()):.0%}.",
        "### d. Training memory vs cache size (peak RSS of a child process: load_data + 1 epoch, concat)",
        table(
            "clips | field files | in memory: peak RSS | above import baseline | streaming: peak RSS | "
            "above import baseline",
            "rrrrrr",
            peaks,
        ),
        f"Peak RSS growth per 1,000 clips: in memory {mem['slope']['never'] * 1000 / 1e6:.0f} MB, streaming "
        f"{mem['slope']['always'] * 1000 / 1e6:.0f} MB. Streaming stays flat as the cache grows (growth at most "
        f"{FLAT_MAX:.0%} of in-memory's): **{'yes' if mem['flat'] else 'no'}** ({verdict(mem['flat'])}). Streaming "
        "holds at most PREFETCH + 1 windows of up to 16 shards (4,096 clips here); what still grows with the cache is "
        "the samples index, per-sample labels and keys (kept in memory in both modes) and, for a pooled model, the "
        "spill's presence flags (a byte per row and field).",
    ]
    return "\n\n".join(blocks) + "\n\n", checks


def measure(a) -> dict:
    work = a.out / "bench_read"
    clips, long_clips, n_random = (300, 64, 300) if a.quick else (10000, 600, 2000)
    cache, made = ensure_cache(work if a.quick else a.out / "bench_train", clips)
    h5 = ensure_cache(work, clips, backend="hdf5")[0]
    long = ensure_cache(work, long_clips, LONG_STEPS)[0]
    seq = [sequential(cache, "webdataset", clips, STEPS, a.rounds), sequential(h5, "hdf5", clips, STEPS, a.rounds)]
    seq.append(sequential(long, "webdataset", long_clips, LONG_STEPS, a.rounds))
    rnd = [random_access(h5, "hdf5", n_random, a.rounds), random_access(cache, "webdataset", n_random, a.rounds)]
    runs = {f: (2, 1) for f in STREAM_RUNS} if a.quick else STREAM_RUNS
    st = {f: streaming_vs_memory(cache, work / "runs", f, *r) for f, r in runs.items()}
    sizes = (256, 512) if a.quick else (4000, 8000, 16000)
    mem = memory({n: ensure_cache(work, n)[0] for n in sizes}, work / "runs")
    p = {"clips": clips, "steps": STEPS, "shards": made["shards"], "rounds": a.rounds, "long_steps": LONG_STEPS}
    return {"params": {**p, "quick": a.quick}, "sequential": seq, "random": rnd, "streaming": st, "memory": mem}


def options(ap) -> None:
    ap.add_quick("--rounds", 5, 1, "rounds per measurement", type=int)


BENCH = Bench("bench_read", __doc__, measure, render, options)

if __name__ == "__main__":
    sys.exit(BENCH.main())
