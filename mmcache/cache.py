"""Reading a cache: `open_cache(path)` to iterate samples or load one field as arrays, and
`verify_cache(path)` to recompute every size, hash and count the manifest records.

`path` is a directory, or a remote location (http(s):// URL or `pipe:` command, see remote.py)
read through the same relative paths of the validated manifest."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CacheError, FingerprintMismatch
from .remote import LocalSource, Missing, Scan, Source, source_for
from .store.hdf5 import iter_h5
from .store.manifest import check_same_fingerprint, load_manifest, parse_samples
from .store.tar import iter_tar

READERS = {"webdataset": iter_tar, "hdf5": iter_h5}


def iter_shard_file(path: Path, backend: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    return READERS[backend](path)


@dataclass
class FieldArrays:
    """One field for many samples: ragged lists, and `padded()` for batch use."""

    name: str
    keys: list[str]
    feats: list[np.ndarray]  # each (T_i, D)
    ts: list[np.ndarray]  # each (T_i, 2) start/end seconds
    present: np.ndarray  # (N,) bool: False where the sample has no data for this field

    def padded(self, max_steps: int | None = None, dtype=np.float32):
        """(X [N, T, D], ts [N, T, 2], mask [N, T] bool); absent samples are all-False rows."""
        lengths = [len(f) for f in self.feats]
        t = max(lengths + [1]) if max_steps is None else max_steps
        dim = next((f.shape[1] for f in self.feats if f.ndim == 2 and len(f)), 0)
        x = np.zeros((len(self.feats), t, dim), dtype)
        ts = np.zeros((len(self.feats), t, 2), np.float64)
        mask = np.zeros((len(self.feats), t), bool)
        for i, (f, s) in enumerate(zip(self.feats, self.ts, strict=True)):
            n = min(len(f), t)
            x[i, :n], ts[i, :n], mask[i, :n] = f[:n], s[:n], True
        return x, ts, mask


class Cache:
    """A published cache: only what manifest.json lists exists. `root` is the directory (a Path) or
    the URL as given; `source` reads the listed files from either."""

    def __init__(self, root: Path | str, manifest: dict, source: Source | None = None):
        self.root, self.manifest = root, manifest
        self.source = source or LocalSource(Path(root))
        self._rows: dict[str, list[dict]] = {}  # samples index per shard (listed files never change)

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def fields(self) -> dict[str, dict]:
        return self.manifest["fields"]

    @property
    def shards(self) -> list[str]:
        return sorted(self.manifest["shards"])

    def samples(self, status: str | None = None) -> list[dict]:
        """Samples index rows of every shard in order (each row gains 'shard')."""
        rows = []
        for shard in self.shards:
            for row in self._shard_rows(shard):
                if status is None or row["status"] == status:
                    rows.append({**row, "shard": shard})
        return rows

    def _shard_rows(self, shard: str) -> list[dict]:
        if shard not in self._rows:
            self._rows[shard] = self.source.samples(self.manifest["shards"][shard])
        return self._rows[shard]

    def _field(self, name: str) -> dict:
        if name not in self.fields:
            raise CacheError(
                f"cache {self.root} has no field {name!r}; available: {', '.join(sorted(self.fields)) or 'none'}"
            )
        return self.fields[name]

    def read_field_shard(self, name: str, shard: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        entry = self._field(name)["files"].get(shard)
        if entry is None:
            raise CacheError(f"field {name!r} has no file for shard {shard} (incomplete extraction: re-run extract)")
        data = {k: (f, t) for k, f, t in self.source.iter_file(entry, self.backend)}
        if len(data) != entry["count"]:  # a tar cut at a member boundary reads as a clean end of file
            raise CacheError(
                f"{entry['path']}: {len(data)} samples read, manifest says {entry['count']} "
                "(truncated or corrupt; run mmcache verify)"
            )
        return data

    def iter_samples(self, fields: Sequence[str] | None = None) -> Iterator[dict]:
        """Ok samples with {field: (feats, ts) or None}, one shard in memory at a time."""
        fields = list(self.fields) if fields is None else list(fields)
        for name in fields:
            self._field(name)
        for shard in self.shards:
            data = {name: self.read_field_shard(name, shard) for name in fields}
            for row in self._shard_rows(shard):
                if row["status"] == "ok":
                    yield {**row, "shard": shard, **{name: data[name].get(row["key"]) for name in fields}}

    def load_field(self, name: str, keys: Sequence[str] | None = None) -> FieldArrays:
        """Arrays of one field for `keys` (default: every ok sample, in cache order)."""
        entry = self._field(name)
        rows = self.samples("ok")
        keys = [r["key"] for r in rows] if keys is None else list(keys)
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        wanted = set(keys)
        for shard in {r["shard"] for r in rows if r["key"] in wanted}:
            found.update(self.read_field_shard(name, shard))
        empty = (np.zeros((0, entry["dim"]), np.float32), np.zeros((0, 2)))
        pairs = [found.get(k, empty) for k in keys]
        return FieldArrays(
            name, keys, [p[0] for p in pairs], [p[1] for p in pairs], np.array([k in found for k in keys], bool)
        )

    def check_compatible(self, other: Cache) -> None:
        """Refuse to mix caches whose shared fields have different fingerprints."""
        for name in sorted(set(self.fields) & set(other.fields)):
            f = other.fields[name]
            check_same_fingerprint(name, self.fields[name], f["fingerprint_parts"], f["fingerprint"], str(other.root))


def open_cache(path: str | Path) -> Cache:
    """A cache directory, or a remote one: `http(s)://host/cache/` or `pipe:CMD ... {path} ...`."""
    source = source_for(path)
    if isinstance(source, LocalSource):
        root = source.root
        manifest = load_manifest(root)
    else:
        root, manifest = path, source.manifest()
    if manifest is None:
        raise CacheError(f"{root} is not an mmcache cache (no manifest.json)")
    return Cache(root, manifest, source)


def verify_cache(path: str | Path) -> list[str]:
    """Every problem found, each naming the file; an empty list means the cache is intact. A remote
    cache is read once, file by file (tar shards streamed, HDF5 shards through a temp file)."""
    cache = open_cache(path)
    problems: list[str] = []
    ok_keys: dict[str, set[str]] = {}
    for shard in cache.shards:
        entry = cache.manifest["shards"][shard]
        scan = _check_file(cache, entry, None, problems)
        if scan is not None:
            try:
                rows = parse_samples(scan.data, cache.source.label(entry["path"]))
            except CacheError as e:
                problems.append(str(e))
                continue
            ok = {r["key"] for r in rows if r["status"] == "ok"}
            ok_keys[shard] = ok
            if (len(rows), len(ok)) != (entry["count"], entry["ok"]):
                problems.append(
                    f"{entry['path']}: {len(rows)} rows ({len(ok)} ok), manifest says "
                    f"{entry['count']} ({entry['ok']} ok)"
                )
    for name, field in sorted(cache.fields.items()):
        for shard in cache.shards:
            if shard not in field["files"]:
                problems.append(f"field {name}: no file for shard {shard} (incomplete extraction: re-run extract)")
        for shard, entry in sorted(field["files"].items()):
            if shard not in cache.manifest["shards"]:
                problems.append(f"{entry['path']}: shard {shard} is not in the manifest's shards")
                continue
            scan = _check_file(cache, entry, cache.backend, problems)
            if scan is not None:
                _check_contents(scan, field, entry, ok_keys.get(shard, set()), problems)
    return problems


def _check_file(cache: Cache, entry: dict, backend: str | None, problems: list[str]) -> Scan | None:
    """Read a listed file once; the scan when its size and sha256 match the manifest."""
    try:
        scan = cache.source.scan(entry, backend)
    except Missing:
        problems.append(f"{entry['path']}: missing")
        return None
    except CacheError as e:
        problems.append(f"{entry['path']}: cannot read ({e})")
        return None
    if scan.size != entry["bytes"]:
        problems.append(f"{entry['path']}: {scan.size} bytes, manifest says {entry['bytes']} (truncated or replaced)")
        return None
    if scan.sha256 != entry["sha256"]:
        problems.append(f"{entry['path']}: sha256 mismatch (content changed or corrupt)")
        return None
    return scan


def _check_contents(scan: Scan, field: dict, entry: dict, ok: set[str], problems: list[str]) -> None:
    keys, steps = [], 0
    for key, dtype, shape, ts_shape in scan.records or []:
        n = shape[0] if shape else 0
        if len(shape) != 2 or shape[1] != field["dim"] or dtype != field["dtype"]:
            problems.append(
                f"{entry['path']}: sample {key} has {dtype}{shape}, expected {field['dtype']} (T, {field['dim']})"
            )
        if ts_shape != (n, 2):
            problems.append(f"{entry['path']}: sample {key} has timestamps {ts_shape} for {n} steps")
        keys.append(key)
        steps += n
    if scan.error is not None:
        problems.append(scan.error)
        return
    if (len(keys), steps) != (entry["count"], entry["steps"]):
        problems.append(
            f"{entry['path']}: {len(keys)} samples / {steps} steps, manifest says {entry['count']} / {entry['steps']}"
        )
    stray = set(keys) - ok
    if stray:
        problems.append(f"{entry['path']}: sample {sorted(stray)[0]} is not an ok sample of its shard")
    unaccounted = ok - set(keys) - set(entry["missing"])
    if unaccounted:
        problems.append(f"{entry['path']}: ok sample {sorted(unaccounted)[0]} has neither data nor a reason")


__all__ = ["Cache", "FieldArrays", "FingerprintMismatch", "open_cache", "verify_cache"]
