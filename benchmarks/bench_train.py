#!/usr/bin/env python
"""Training speed of `mmfit` on a cache against the mmfit issue's speed targets.

    python benchmarks/bench_train.py            # full run (10k clips; 20-60 min on a shared 2-core CPU, mostly the
                                                # three transformer fusions), updates benchmarks/RESULTS.md
    python benchmarks/bench_train.py --quick    # CI smoke (1k clips, ~5 min), writes bench-out/RESULTS-quick.md
    python benchmarks/bench_train.py --profile attention   # torch.profiler table of a few training steps

What it does:

  cache     a synthetic cache in the real mmcache format (manifest.json + samples/NNNNNN.jsonl +
            <field>/NNNNNN.tar, written with mmcache's TarShardWriter / samples_bytes / save_manifest):
            10,000 clips (quick: 1,000) in shards of 256, three float16 fields of 16 steps each
            (resnet18 512-d vision, ast 768-d audio, minilm-text 384-d text), 10 classes whose signal
            is a class-dependent mean offset per field under unit Gaussian noise; the label is in the
            samples index `meta` {"label": ...}, so mmfit reads it with labels=None. Built once under
            bench-out/bench_train/ and reused; `mmcache.verify_cache` must return [] (checked once per
            run, then training runs with verify=False).
  fusions   every fusion in mmfit.fusion.FUSIONS trains 3 epochs (batch 256, hidden 256, linear head,
            default optimiser and schedule) on in-memory data from load_data(cfg) with that fusion's own
            config (what load_data returns may depend on the fusion, e.g. pooled over time; its time is
            reported as context: it is paid once per run, outside the epochs). Reported from the Trainer's
            own history rows: train/epoch_s (median of epochs 2-3), samples/s over the same epochs, and
            train/data_share (time to get and normalise batches / epoch wall time).
  encoder   the work that cached training saves: a frozen torchvision resnet18 (weights=None, fc removed,
            eval, inference_mode, fp32, batches of 16 frames = one clip) on random 224x224 frames. It is
            run in a few chunks, each right after one epoch of the concat run (on_epoch callback), so
            every ratio pairs numbers measured back to back on the same shared machine. Seconds per clip
            = 16 x seconds per frame. Re-encoding also decodes video and still trains the head, so this
            speedup is a lower bound.

Targets (mmfit issue):
  concat epoch            <= 2 s on a 2-core CPU (10k-clip cache; an epoch is the train split)
  data loading            < 10% of step time (train/data_share), every fusion
  cached vs encoder loop  >= 100x less time per training sample (concat) than one frozen resnet18
                          forward over the clip's 16 frames
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, Meter, machine, machine_line, write_results  # noqa: E402
from common import verdict as _verdict  # noqa: E402

CACHE_VERSION = 1  # bump when the synthetic data changes, so an old cache under bench-out/ is rebuilt
STEPS = 16
STEP_S = 0.5  # seconds per step in the timestamps
CLASSES = 10
SHARD_SIZE = 256  # mmcache extract's default
SIGNAL = 0.05  # std of the per-class, per-dim mean offset (the noise has std 1)
FIELDS = {  # field -> (encoder, family, modality, dim)
    "resnet18": ("resnet18", "torchvision", "vision", 512),
    "ast": ("hf-audio", "transformers-audio", "audio", 768),
    "minilm-text": ("minilm-text", "transformers-text", "text", 384),
}

EPOCHS = 3
DEVICE = "cpu"  # --device; the trainer and the frozen encoder run there
BATCH = 256
HIDDEN = 256
FRAMES_PER_CLIP = 16
FRAME_BATCH = 16
EPOCH_MAX_S = 2.0
DATA_SHARE_MAX = 0.10
SPEEDUP_MIN = 100.0

# ---------------------------------------------------------------------------------------------
# the synthetic cache


def fingerprint_of(parts: dict) -> str:
    """Same definition as mmcache.encoders.base.fingerprint_of (imported there with transformers)."""
    return hashlib.sha256(
        json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    ).hexdigest()


def field_entry(name: str) -> dict:
    import torch

    encoder, family, modality, dim = FIELDS[name]
    options = {"synthetic": "bench_train", "seed": 0, "steps": STEPS, "step_s": STEP_S, "dtype": "float32"}
    parts = {
        "format_version": 1,
        "encoder": encoder,
        "family": family,
        "options": options,
        "input": {"kind": modality, "grid": {"step_s": STEP_S, "steps": STEPS}},
        "preprocess": {"synthetic": f"class offset std {SIGNAL} + N(0, 1) noise"},
        "weights_sha256": hashlib.sha256(f"bench_train synthetic {name}".encode()).hexdigest(),
        "dim": dim,
        "versions": {
            "numpy": np.__version__,
            "python": platform.python_version()[:4].rstrip("."),
            "torch": torch.__version__,
        },
    }
    return {
        "encoder": encoder,
        "options": options,
        "modality": modality,
        "dim": dim,
        "dtype": "float16",
        "fingerprint": fingerprint_of(parts),
        "fingerprint_parts": parts,
        "files": {},
    }


def sample_row(i: int, label: int) -> dict:
    sha = hashlib.sha256(f"bench_train clip {i}".encode()).hexdigest()
    return {
        "key": sha[:24],
        "id": f"clip-{i:05d}",
        "source": f"synthetic/clip-{i:05d}.mp4",
        "aliases": [],
        "sha256": sha,
        "bytes": 1_000_000 + i,
        "duration": STEPS * STEP_S,
        "streams": {
            "video": {"codec": "h264", "width": 1280, "height": 720, "fps": 25.0},
            "audio": {"codec": "aac", "sample_rate": 44100, "channels": 2},
            "subtitles": [],
        },
        "status": "ok",
        "error": None,
        "meta": {"label": f"class-{label}"},
    }


def write_cache(root: Path, clips: int, steps: int, label_of, feats_of, log=None) -> dict:
    """Write a synthetic cache of FIELDS into root (a fresh folder) with mmcache's own writers:
    sample i has label `label_of(i)`, and `feats_of(field, ids)` gives the (len(ids), steps, dim)
    float16 features of a shard's samples (called shard by shard, field by field)."""
    from mmcache.store.atomic import sha256_file, write_atomic
    from mmcache.store.manifest import new_manifest, samples_bytes, save_manifest
    from mmcache.store.tar import TarShardWriter

    ts = np.stack([np.arange(steps) * STEP_S, (np.arange(steps) + 1) * STEP_S], 1)
    manifest = new_manifest("webdataset")
    manifest["fields"] = {n: field_entry(n) for n in FIELDS}
    for s, start in enumerate(range(0, clips, SHARD_SIZE)):
        shard = f"{s:06d}"
        ids = range(start, min(start + SHARD_SIZE, clips))
        rows = [sample_row(i, label_of(i)) for i in ids]
        for n in FIELDS:
            writer = TarShardWriter(root / n / f"{shard}.tar", FIELDS[n][3], "float16")
            for row, x in zip(rows, feats_of(n, ids), strict=True):
                writer.add(row["key"], x, ts)
            writer.close()
            sha, size = sha256_file(writer.path)
            manifest["fields"][n]["files"][shard] = {
                "path": f"{n}/{shard}.tar",
                "bytes": size,
                "sha256": sha,
                "count": len(writer.keys),
                "steps": writer.steps,
                "missing": {},
            }
        data = samples_bytes(rows)
        write_atomic(root / "samples" / f"{shard}.jsonl", data)
        manifest["shards"][shard] = {
            "path": f"samples/{shard}.jsonl",
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "count": len(rows),
            "ok": len(rows),
            "failed": 0,
        }
        if log and s % 8 == 0:
            log(f"  shard {shard}: {min(start + SHARD_SIZE, clips)}/{clips} clips")
    save_manifest(root, manifest)
    return manifest


def build_cache(root: Path, clips: int, log) -> dict:
    """The benchmark's cache: per-class mean offsets (std SIGNAL) plus unit noise, balanced labels."""
    rng = np.random.default_rng(1234)
    offsets = {n: rng.normal(0, SIGNAL, (CLASSES, FIELDS[n][3])).astype(np.float32) for n in FIELDS}
    labels = rng.permutation(np.arange(clips) % CLASSES)  # balanced

    def feats_of(n: str, ids: range) -> np.ndarray:
        noise = rng.standard_normal((len(ids), STEPS, FIELDS[n][3]), dtype=np.float32)
        return (noise + offsets[n][labels[ids.start : ids.stop]][:, None, :]).astype(np.float16)

    return write_cache(root, clips, STEPS, lambda i: int(labels[i]), feats_of, log)


def ensure_cache(work: Path, clips: int, log) -> tuple[Path, dict]:
    """The cache for `clips`, built once (into a temp folder, then renamed) and reused while its
    parameters and manifest are unchanged."""
    params = {
        "version": CACHE_VERSION,
        "clips": clips,
        "steps": STEPS,
        "classes": CLASSES,
        "signal": SIGNAL,
        "shard_size": SHARD_SIZE,
        "fields": {n: list(v) for n, v in FIELDS.items()},
    }
    path, stamp = work / f"cache-{clips}", work / f"cache-{clips}.json"
    info = {"built": False, "build_s": None}
    if (path / "manifest.json").is_file() and stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("params") == params:
            return path, {**info, "build_s": recorded.get("build_s")}
    log(f"building the synthetic {clips}-clip cache in {path} ...")
    tmp = work / f"cache-{clips}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    build_cache(tmp, clips, log)
    tmp.rename(path)
    build_s = time.perf_counter() - t0
    stamp.write_text(json.dumps({"params": params, "build_s": build_s}, indent=1))
    log(f"built in {build_s:.1f} s")
    return path, {"built": True, "build_s": build_s}


def cache_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# measurements


class FrozenEncoder:
    """torchvision resnet18 (weights=None, fc removed) as a frozen feature extractor."""

    def __init__(self):
        import torch
        import torchvision

        self.torch = torch
        self.model = torchvision.models.resnet18(weights=None)
        self.model.fc = torch.nn.Identity()
        self.model.eval().requires_grad_(False).to(DEVICE)
        self.frames = torch.randn(FRAME_BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(DEVICE)
        self.chunks: list[dict] = []  # {"frames", "s", "others"}
        self.run(FRAME_BATCH, keep=False)  # warm-up (allocator, oneDNN kernels)

    def run(self, frames: int, keep: bool = True) -> float:
        """Seconds per frame over `frames` frames (a multiple of FRAME_BATCH)."""
        n = max(1, frames // FRAME_BATCH)
        with self.torch.inference_mode(), Meter() as m:
            for _ in range(n):
                out = self.model(self.frames)
            if DEVICE.startswith("cuda"):
                self.torch.cuda.synchronize()
        assert out.shape == (FRAME_BATCH, 512)
        if keep:
            self.chunks.append({"frames": n * FRAME_BATCH, "s": m.wall, "others": m.others})
        return m.wall / (n * FRAME_BATCH)


@dataclass
class FusionResult:
    name: str
    params: int
    n_train: int
    history: list[dict]
    wall_epochs: list[float]  # whole epoch incl. val evaluation and checkpoint
    others: float
    best_val_accuracy: float
    load_s: float  # load_data with this fusion's config
    steps: dict  # field -> time steps per sample in the loaded data
    splits: dict
    enc_per_clip: list[float] = field(default_factory=list)  # concat only: encoder s/clip after each epoch

    def _later(self, key: str) -> float:
        return statistics.median(r[key] for r in self.history[1:] or self.history)

    @property
    def epoch_s(self) -> float:
        return self._later("train/epoch_s")

    @property
    def samples_per_s(self) -> float:
        return self.n_train / self.epoch_s

    @property
    def data_share(self) -> float:
        return self._later("train/data_share")

    @property
    def s_per_sample(self) -> float:
        return self.epoch_s / self.n_train


def fusion_config(name: str, cache: Path, out: Path):
    from mmfit.config import build_config

    return build_config(
        cache=str(cache),
        fusion=name,
        batch_size=BATCH,
        hidden=HIDDEN,
        epochs=EPOCHS,
        verify=False,
        out=str(out),
        seed=0,
        device=DEVICE,
    )


def load_for(cfg, log):
    """load_data(cfg) for one fusion's own config (what its data looks like may depend on the fusion), timed."""
    from mmfit.data import load_data

    t0 = time.perf_counter()
    data = load_data(cfg)
    load_s = time.perf_counter() - t0
    if data.source is not None:
        raise SystemExit("load_data chose streaming; this benchmark measures the in-memory path")
    shapes = ", ".join(
        f"{n} {tuple(data.feats[n].shape)} {str(data.feats[n].dtype).replace('torch.', '')}" for n in data.field_names
    )
    log(
        f"  load_data ({cfg.fusion}): {len(data.keys)} samples, splits {data.report['splits']}, "
        f"{len(data.classes)} classes, {shapes} in {load_s:.1f} s"
    )
    return data, load_s


def train_fusion(
    name: str, cache: Path, out: Path, encoder: FrozenEncoder | None, enc_frames: int, log
) -> FusionResult:
    from mmfit.train import Trainer

    cfg = fusion_config(name, cache, out / name)
    data, load_s = load_for(cfg, log)
    walls, enc = [], []
    tick = [time.perf_counter()]

    def on_epoch(row: dict) -> None:
        walls.append(time.perf_counter() - tick[0])
        msg = (
            f"  {name} epoch {row['epoch']}: train {row['train/epoch_s']:.3f} s "
            f"({row['train/samples_per_s']:.0f} samples/s, data {row['train/data_share']:.1%}), "
            f"val acc {row['val/accuracy']:.3f}"
        )
        if encoder is not None:
            enc.append(encoder.run(enc_frames) * FRAMES_PER_CLIP)
            msg += f"; resnet18 {FRAMES_PER_CLIP / enc[-1]:.1f} frames/s"
        log(msg)
        tick[0] = time.perf_counter()

    trainer = Trainer(cfg, data, on_epoch=on_epoch)
    params = sum(p.numel() for p in trainer.model.parameters())
    with Meter() as m:
        result = trainer.fit()
    steps = {n: data.feats[n].shape[1] for n in data.field_names}
    return FusionResult(
        name,
        params,
        len(trainer.train_rows),
        result.history,
        walls,
        m.others,
        float(result.val["accuracy"]),
        load_s,
        steps,
        data.report["splits"],
        enc,
    )


def profile_fusion(name: str, cache: Path, out: Path, log, steps: int = 6) -> None:
    """torch.profiler over `steps` training steps (after 2 warm-up steps) of one fusion."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mmfit.train import Trainer, to_device

    cfg = fusion_config(name, cache, out / f"profile-{name}")
    data, _ = load_for(cfg, log)
    tr = Trainer(cfg, data)
    tr.model.train()

    def forever():
        while True:
            yield from data.batches(tr.train_rows, BATCH, tr.gen)

    batches = forever()

    def step() -> None:
        feats, masks, y = to_device(next(batches), "cpu")
        loss = tr.task.loss(tr.model(feats, masks), y)
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tr.model.parameters(), 1.0)
        tr.opt.step()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


# ---------------------------------------------------------------------------------------------
# report


def speedups(concat: FusionResult) -> list[float]:
    """Encoder s/clip of the chunk run right after epoch k over concat train s/sample of epoch k, k >= 2."""
    pairs = list(zip(concat.history, concat.enc_per_clip, strict=True))[1:] or list(
        zip(concat.history, concat.enc_per_clip, strict=True)
    )
    return [enc / (row["train/epoch_s"] / concat.n_train) for row, enc in pairs]


def render(m: dict, p: dict, results: list[FusionResult], quick: bool) -> tuple[str, list[bool]]:
    by = {r.name: r for r in results}
    concat = by["concat"]
    ratios = speedups(concat)
    speedup = statistics.median(ratios)
    enc_clip = statistics.median(concat.enc_per_clip)
    epoch_all = concat.epoch_s * p["clips"] / concat.n_train  # one pass over every clip of the cache
    worst = max(results, key=lambda r: r.data_share)
    ok_epoch, ok_share, ok_speed = (
        concat.epoch_s <= EPOCH_MAX_S,
        worst.data_share < DATA_SHARE_MAX,
        speedup >= SPEEDUP_MIN,
    )
    verdicts = [ok_epoch, ok_share, ok_speed]
    lines = [
        machine_line(m),
        "",
        f"Cache: synthetic, mmcache format v1 (webdataset), {p['clips']:,} clips in {p['shards']} shards of "
        f"{SHARD_SIZE}, fields "
        + ", ".join(f"{n} ({FIELDS[n][3]}-d)" for n in FIELDS)
        + f", {STEPS} steps each, float16, {CLASSES} classes; {p['cache_mb']:.0f} MB on disk; "
        f"{'built in ' + format(p['build_s'], '.0f') + ' s' if p['built'] else 'reused from bench-out/'}; "
        f"verify_cache: {p['verify_problems']} problems in {p['verify_s']:.1f} s. Splits: {p['splits']}. "
        f"Training: {EPOCHS} epochs, batch {BATCH}, hidden {HIDDEN}, linear head, AdamW, verify=False.",
    ]
    if quick:
        lines += [
            "",
            f"**--quick smoke run ({p['clips']:,} clips): the targets are defined for 10,000 clips; "
            "verdicts here are indicative only.**",
        ]
    lines += [
        "",
        "| target | measured | target | verdict |",
        "|---|---:|---:|---|",
        f"| concat epoch over the train split ({concat.n_train:,} clips), median of epochs 2-3 | "
        f"{concat.epoch_s:.3f} s | <= {EPOCH_MAX_S:g} s | {_verdict(ok_epoch)} |",
        f"| (context) the same, scaled to one pass over all {p['clips']:,} clips | {epoch_all:.3f} s | "
        f"<= {EPOCH_MAX_S:g} s | ({_verdict(epoch_all <= EPOCH_MAX_S)}) |",
        f"| data loading share of step time, worst fusion ({worst.name}) | {worst.data_share:.1%} | "
        f"< {DATA_SHARE_MAX:.0%} | {_verdict(ok_share)} |",
        f"| cached concat training vs frozen resnet18 in the loop, time per sample | {speedup:,.0f}x | "
        f">= {SPEEDUP_MIN:g}x | {_verdict(ok_speed)} |",
        "",
        f"Speedup: resnet18 (weights=None, fp32, batches of {FRAME_BATCH} frames at 224x224) costs "
        f"{enc_clip * 1e3:,.0f} ms per clip of {FRAMES_PER_CLIP} frames ({FRAMES_PER_CLIP / enc_clip:.1f} frames/s, "
        f"{sum(c['frames'] for c in p['enc_chunks'])} frames in {len(p['enc_chunks'])} chunks, each run right after "
        f"one concat epoch); cached concat training costs {concat.s_per_sample * 1e6:,.1f} us per sample. "
        "Ratio per epoch 2-3 pair: " + ", ".join(f"{r:,.0f}x" for r in ratios) + " (median reported). "
        "Decoding and the trainable head are left out of the in-loop cost, so the real speedup is larger.",
        "",
        "Per fusion (train split; epoch and samples/s: median of epochs 2-3; data share: train/data_share):",
        "",
        "| fusion | params | samples/s | epoch s | epochs 1/2/3 s | data share | < 10% | epoch incl. val + ckpt s "
        "| load_data s | steps in memory | best val acc | vs resnet18 loop | others' CPU |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        per = "/".join(f"{h['train/epoch_s']:.2f}" for h in r.history)
        lines.append(
            f"| {r.name} | {r.params:,} | {r.samples_per_s:,.0f} | {r.epoch_s:.3f} | {per} | "
            f"{r.data_share:.1%} | {_verdict(r.data_share < DATA_SHARE_MAX)} | "
            f"{statistics.median(r.wall_epochs[1:] or r.wall_epochs):.3f} | {r.load_s:.1f} | "
            f"{'/'.join(str(t) for t in r.steps.values())} | {r.best_val_accuracy:.3f} | "
            f"{enc_clip / r.s_per_sample:,.0f}x | {r.others:.0%} |"
        )
    lines += [
        "",
        "Absolute times are context (the 2-core machine is shared: `others' CPU` is the share of its CPUs "
        "other processes used during that fusion's run); every ratio pairs numbers measured back to back "
        "in this run. `vs resnet18 loop` uses the median encoder cost for all fusions. Each fusion's data comes "
        "from its own load_data(cfg) (`load_data s`, once per run, outside the epochs); `steps in memory`: time "
        f"steps per sample and field as loaded (the cache's clips have {STEPS}; more is padding, 1 = pooled over "
        "time at load).",
    ]
    return "\n".join(lines) + "\n", verdicts


# ---------------------------------------------------------------------------------------------


def rerender(path: Path, results: Path | None, strict: bool) -> int:
    """Rewrite a run's section from its raw JSON (no measuring): for changes to the table's layout."""
    raw = json.loads(path.read_text())
    p, quick = raw["params"], raw["quick"]
    fusions = [FusionResult(splits=p["splits"], **r) for r in raw["fusions"]]
    body, verdicts = render(raw["machine"], p, fusions, quick)
    title = raw.get("title") or "bench_train" + (" (--quick smoke run)" if quick else "")
    target = results or Path(raw.get("results") or (ROOT / "bench-out" / "RESULTS-quick.md" if quick else RESULTS))
    print(body)
    write_results(target, "bench_train", title, body)
    print(f"wrote {target} from {path}; {sum(verdicts)}/{len(verdicts)} targets pass")
    return 1 if strict and not all(verdicts) else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke: 1,000 clips, fewer encoder frames")
    ap.add_argument("--clips", type=int, help="clips in the synthetic cache (default 10000, quick 1000)")
    ap.add_argument(
        "--enc-frames", type=int, help="resnet18 frames per chunk, one chunk per concat epoch (default 96, quick 32)"
    )
    ap.add_argument(
        "--fusions", help="comma-separated subset of mmfit.fusion.FUSIONS (default: all; concat is always run)"
    )
    ap.add_argument("--profile", metavar="FUSION", help="only profile a few training steps of FUSION and exit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out", help="work folder (default bench-out/)")
    ap.add_argument(
        "--results",
        type=Path,
        help="markdown file to update (default benchmarks/RESULTS.md; quick: bench-out/RESULTS-quick.md)",
    )
    ap.add_argument(
        "--device", default="cpu", help="cpu (default) or cuda[:N]: where training and the frozen encoder run"
    )
    ap.add_argument("--threads", type=int, help="torch.set_num_threads(N) first (default: torch's own choice)")
    ap.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS_JSON",
        help="only re-render the table from a run's bench-out/bench_train/results*.json",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    a = ap.parse_args()

    if a.from_json:
        return rerender(a.from_json, a.results, a.strict)
    global DEVICE
    DEVICE = a.device
    clips = a.clips or (1000 if a.quick else 10000)
    enc_frames = a.enc_frames or (32 if a.quick else 96)
    options = [
        f"--{k.replace('_', '-')} {v}"
        for k, v in (("clips", a.clips), ("enc_frames", a.enc_frames), ("fusions", a.fusions), ("threads", a.threads))
        if v
    ] + ([f"--device {a.device}"] if a.device != "cpu" else [])
    # only a default full run rewrites benchmarks/RESULTS.md; smoke and custom runs write beside the cache
    default_results = a.out / "RESULTS-quick.md" if a.quick else a.out / "RESULTS-custom.md" if options else RESULTS
    results_path = a.results or default_results
    title = "bench_train" + (" (--quick smoke run)" if a.quick else "") + (f" ({' '.join(options)})" if options else "")
    work = a.out / "bench_train"
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    import mmcache
    from mmfit.fusion import FUSIONS

    names = list(FUSIONS)
    if a.fusions:
        wanted = [f.strip() for f in a.fusions.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in FUSIONS]
        if unknown:
            ap.error(f"unknown fusion {unknown[0]!r}; known: {', '.join(FUSIONS)}")
        names = [f for f in names if f in wanted or f == "concat"]
    if a.profile and a.profile not in FUSIONS:
        ap.error(f"unknown fusion {a.profile!r}; known: {', '.join(FUSIONS)}")

    cache, built = ensure_cache(work, clips, log)
    t0 = time.perf_counter()
    problems = mmcache.verify_cache(cache)
    verify_s = time.perf_counter() - t0
    if problems:
        raise SystemExit(f"the synthetic cache {cache} fails verification: {problems[0]}")
    log(f"verify_cache: [] in {verify_s:.1f} s")

    runs = work / "runs"
    if a.profile:
        profile_fusion(a.profile, cache, runs, log)
        return 0

    encoder = FrozenEncoder()
    log(f"resnet18 ready; {enc_frames} frames per chunk")
    results = []
    for name in names:
        log(f"training {name} ...")
        results.append(train_fusion(name, cache, runs, encoder if name == "concat" else None, enc_frames, log))

    p = {
        "clips": clips,
        "shards": -(-clips // SHARD_SIZE),
        "cache_mb": cache_bytes(cache) / 1e6,
        "built": built["built"],
        "build_s": built["build_s"] or 0.0,
        "verify_problems": len(problems),
        "verify_s": verify_s,
        "splits": results[0].splits,
        "enc_chunks": encoder.chunks,
    }
    m = machine()
    body, verdicts = render(m, p, results, a.quick)
    print()
    print(body)
    write_results(results_path, "bench_train", title, body)
    raw = {
        "machine": m,
        "params": p,
        "quick": a.quick,
        "title": title,
        "results": str(results_path),
        "fusions": [
            {
                "name": r.name,
                "params": r.params,
                "n_train": r.n_train,
                "history": r.history,
                "wall_epochs": r.wall_epochs,
                "others": r.others,
                "best_val_accuracy": r.best_val_accuracy,
                "load_s": r.load_s,
                "steps": r.steps,
                "enc_per_clip": r.enc_per_clip,
            }
            for r in results
        ],
    }
    raw_path = work / ("results-quick.json" if a.quick else "results-custom.json" if options else "results.json")
    raw_path.write_text(json.dumps(raw, indent=1))
    log(f"wrote {results_path} and {raw_path}; {sum(verdicts)}/{len(verdicts)} targets pass")
    return 1 if a.strict and not all(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
