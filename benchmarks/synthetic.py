"""The synthetic cache bench_train and bench_read measure, in the real mmcache format (manifest.json +
samples/NNNNNN.jsonl + <field>/NNNNNN.tar or .h5), written with the library's own shard writers and
manifest entries (mmcache.store): CLIPS clips in shards of SHARD_SIZE, three float16 fields (resnet18
512-d vision, ast 768-d audio, minilm-text 384-d text) of `steps` steps each, CLASSES classes whose
signal is a class-dependent mean offset per field (std SIGNAL) under unit Gaussian noise; the label
is in the samples index `meta` {"label": ...}, so mmfit reads it with labels=None. The same clips,
steps and seed give the same keys and arrays in either backend.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from common import log

CACHE_VERSION = 1  # bump when the synthetic data changes, so an old cache under bench-out/ is rebuilt
STEPS = 16
STEP_S = 0.5  # seconds per step in the timestamps
CLASSES = 10
SHARD_SIZE = 256  # mmcache extract's default
SIGNAL = 0.05  # std of the per-class, per-dim mean offset (the noise has std 1)
BATCH = 256  # training on it: mmfit batch size and hidden width
HIDDEN = 256
FIELDS = {  # field -> (encoder, family, modality, dim)
    "resnet18": ("resnet18", "torchvision", "vision", 512),
    "ast": ("hf-audio", "transformers-audio", "audio", 768),
    "minilm-text": ("minilm-text", "transformers-text", "text", 384),
}


def field_entry(name: str, steps: int, fields: dict = FIELDS, signal: float = SIGNAL) -> dict:
    """The manifest entry of a field of `fields` (no files yet), with fingerprint parts like an encoder's."""
    import torch

    from mmcache.store.manifest import field_header

    encoder, family, modality, dim = fields[name]
    options = {"synthetic": "bench_train", "seed": 0, "steps": steps, "step_s": STEP_S, "dtype": "float32"}
    python = platform.python_version()[:4].rstrip(".")
    versions = {"numpy": np.__version__, "python": python, "torch": torch.__version__}
    parts = {
        "format_version": 1,
        "encoder": encoder,
        "family": family,
        "options": options,
        "input": {"kind": modality, "grid": {"step_s": STEP_S, "steps": steps}},
        "preprocess": {"synthetic": f"class offset std {signal} + N(0, 1) noise"},
        "weights_sha256": hashlib.sha256(f"bench_train synthetic {name}".encode()).hexdigest(),
        "dim": dim,
        "versions": versions,
    }
    return {**field_header(encoder, options, modality, dim, "float16", parts), "files": {}}


def sample_row(i: int, label: int, steps: int) -> dict:
    sha = hashlib.sha256(f"bench_train clip {i}".encode()).hexdigest()
    return {
        "key": sha[:24],
        "id": f"clip-{i:05d}",
        "source": f"synthetic/clip-{i:05d}.mp4",
        "aliases": [],
        "sha256": sha,
        "bytes": 1_000_000 + i,
        "duration": steps * STEP_S,
        "streams": {
            "video": {"codec": "h264", "width": 1280, "height": 720, "fps": 25.0},
            "audio": {"codec": "aac", "sample_rate": 44100, "channels": 2},
            "subtitles": [],
        },
        "status": "ok",
        "error": None,
        "meta": {"label": f"class-{label}"},
    }


def write_cache(
    root: Path, clips: int, steps: int, backend: str, fields: dict = FIELDS, signal: float = SIGNAL, every: int = 8
) -> None:
    """Write the synthetic cache into root (a fresh folder), shard by shard, field by field (`fields`:
    name -> (encoder, family, modality, dim); a progress line every `every` shards)."""
    from mmcache.store import FORMATS
    from mmcache.store.atomic import write_atomic
    from mmcache.store.manifest import field_file_entry, new_manifest, samples_bytes, samples_entry, save_manifest

    fmt = FORMATS[backend]
    rng = np.random.default_rng(1234)
    offsets = {n: rng.normal(0, signal, (CLASSES, fields[n][3])).astype(np.float32) for n in fields}
    labels = rng.permutation(np.arange(clips) % CLASSES)  # balanced
    ts = np.stack([np.arange(steps) * STEP_S, (np.arange(steps) + 1) * STEP_S], 1)
    manifest = new_manifest(backend)
    manifest["fields"] = {n: field_entry(n, steps, fields, signal) for n in fields}
    for s, start in enumerate(range(0, clips, SHARD_SIZE)):
        shard, ids = f"{s:06d}", range(start, min(start + SHARD_SIZE, clips))
        rows = [sample_row(i, int(labels[i]), steps) for i in ids]
        for n, (*_, dim) in fields.items():
            noise = rng.standard_normal((len(ids), steps, dim), dtype=np.float32)
            feats = (noise + offsets[n][labels[ids.start : ids.stop]][:, None, :]).astype(np.float16)
            writer = fmt.writer(root / n / f"{shard}{fmt.suffix}", dim, "float16")
            for row, x in zip(rows, feats, strict=True):
                writer.add(row["key"], x, ts)
            writer.close()
            manifest["fields"][n]["files"][shard] = field_file_entry(n, writer, {})
        data = samples_bytes(rows)
        write_atomic(root / "samples" / f"{shard}.jsonl", data)
        manifest["shards"][shard] = samples_entry(shard, data, rows)
        if s % every == 0:
            log(f"  shard {shard}: {ids.stop}/{clips} clips")
    save_manifest(root, manifest)


def ensure_cache(
    work: Path, clips: int, steps: int = STEPS, backend: str = "webdataset", fields: dict = FIELDS, signal=SIGNAL
) -> tuple[Path, dict]:
    """The cache of `clips` clips (work/cache-<clips>[x<steps>][-hdf5]), built once (into a temp folder, then
    renamed) and reused while its parameters are unchanged; and whether it was built now, in how many seconds,
    its bytes on disk when built and its shards."""
    params = {
        "version": CACHE_VERSION,
        "clips": clips,
        "steps": steps,
        "backend": backend,
        "classes": CLASSES,
        "signal": signal,
        "shard_size": SHARD_SIZE,
        "fields": {n: list(v) for n, v in fields.items()},
    }
    name = f"cache-{clips}" + (f"x{steps}" if steps != STEPS else "") + ("-hdf5" if backend == "hdf5" else "")
    path, stamp, tmp = work / name, work / f"{name}.json", work / f"{name}.part"
    shards = -(-clips // SHARD_SIZE)
    work.mkdir(parents=True, exist_ok=True)
    if (path / "manifest.json").is_file() and stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("params") == params:
            size = recorded.get("bytes") or folder_bytes(path)
            return path, {"built": False, "build_s": recorded.get("build_s"), "bytes": size, "shards": shards}
    log(f"building the synthetic {clips}-clip cache ({steps} steps, {backend}) in {path} ...")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    write_cache(tmp, clips, steps, backend, fields, signal, every=max(8, shards // 20))
    tmp.rename(path)
    build_s = time.perf_counter() - t0
    size = folder_bytes(path)
    stamp.write_text(json.dumps({"params": params, "build_s": build_s, "bytes": size}, indent=1))
    log(f"built in {build_s:.1f} s ({size / 1e6:.0f} MB)")
    return path, {"built": True, "build_s": build_s, "bytes": size, "shards": shards}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def train_config(cache: Path, out: Path, fusion: str = "concat", epochs: int = 1, **overrides):
    """mmfit's config for training on a synthetic cache: batch BATCH, hidden HIDDEN, seed 0, no
    verification (the benchmark verifies once); `overrides` (e.g. streaming, device) as build_config's."""
    from mmfit.config import build_config

    return build_config(
        cache=str(cache), fusion=fusion, batch_size=BATCH, hidden=HIDDEN, epochs=epochs, verify=False, out=str(out),
        seed=0, **overrides,
    )  # fmt: skip
