"""`mmcache stats`: cache-wide per-dimension mean/std of every stored step of a field, computed out of
core with dask and recorded in the manifest (`fields.<f>.stats`, fresh while its files are unchanged:
store/manifest.py `fresh_stats`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cache import Cache, open_cache
from .errors import CacheError
from .store.lock import CacheLock
from .store.manifest import (
    files_digest,
    load_manifest,
    save_manifest,
)
from .transport import LocalTransport, transport_for


def _load_steps(cache: Cache, entry: dict, dim: int) -> np.ndarray:
    """Every step of one field file as float64 (T_total, D); remote bytes are checked."""
    feats = [f for _, f, _ in cache.iter_file(entry)]
    x = np.concatenate(feats).astype(np.float64) if feats else np.zeros((0, dim))
    if x.shape != (entry["steps"], dim):
        raise CacheError(
            f"{cache.transport.label(entry['path'])}: {x.shape[0]} steps of dim {x.shape[1]}, manifest says "
            f"{entry['steps']} of {dim} (run `mmcache verify`)"
        )
    return x


def compute_stats(
    cache: Cache | str | Path, fields: Sequence[str] | None = None, scheduler: str = "threads"
) -> dict[str, dict | None]:
    """Per-dimension mean and (population) std over every stored step of each field, out of core:
    a dask array of one chunk per shard file (each loaded as float64 by a delayed task), reduced
    in float64. A field with no steps gets None."""
    import dask
    import dask.array as da

    cache = cache if isinstance(cache, Cache) else open_cache(cache)
    names = list(cache.fields) if not fields else list(fields)
    for n in names:
        cache._field(n)  # unknown names: one clear error listing the available fields
    lazy, result = {}, {}
    for n in names:
        f = cache.fields[n]
        entries = [e for _, e in sorted(f["files"].items()) if e["steps"]]
        if not entries:
            result[n] = None
            continue
        chunks = [
            da.from_delayed(
                dask.delayed(_load_steps)(cache, e, f["dim"]),
                shape=(e["steps"], f["dim"]),
                dtype=np.float64,
            )
            for e in entries
        ]
        x = da.concatenate(chunks, axis=0)
        lazy[n] = (x.mean(axis=0), x.std(axis=0))
    (computed,) = dask.compute(lazy, scheduler=scheduler)
    for n, (mean, std) in computed.items():
        f = cache.fields[n]
        result[n] = {
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "steps": int(sum(e["steps"] for e in f["files"].values())),
            "files_digest": files_digest(f),
        }
    return {n: result[n] for n in names}


def record_stats(
    path: str | Path, fields: Sequence[str] | None = None, scheduler: str = "threads"
) -> tuple[dict[str, dict | None], list[str]]:
    """Compute stats (without holding the lock), then under the cache lock re-read the manifest and
    record `fields.<f>.stats` for each field whose files are still the ones measured; the manifest
    is rewritten atomically. Returns (stats, fields skipped because they changed meanwhile)."""
    transport = transport_for(path)
    if not isinstance(transport, LocalTransport):
        raise CacheError(f"{path}: stats can only be recorded in a local cache (use --no-record to print them)")
    root = transport.root
    stats = compute_stats(open_cache(root), fields, scheduler)
    changed = []
    with _locked(root):
        manifest = load_manifest(root)
        if manifest is None:
            raise CacheError(f"{root} is not an mmcache cache (no manifest.json)")
        recorded = 0
        for n, st in stats.items():
            f = manifest["fields"].get(n)
            if st is None:
                continue
            if f is None or files_digest(f) != st["files_digest"]:
                changed.append(n)  # extended or replaced while we computed: these numbers describe old files
                continue
            f["stats"] = st
            recorded += 1
        if recorded:
            save_manifest(root, manifest)  # atomic rewrite under the lock
    return stats, changed


@contextlib.contextmanager
def _locked(root: Path):
    """The writer lock of extract (CacheLock), with an unwritable cache as one clear error."""

    lock = CacheLock(root)
    try:
        lock.__enter__()
    except OSError as e:
        raise CacheError(f"cannot lock {root} to record stats ({e.strerror or e}); use --no-record") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
