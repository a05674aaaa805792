"""Reading a cache: `open_cache(path)` to iterate samples, load one field as arrays, or read single
samples by key (`Cache.read_sample`, `Cache.field_reader`), and `verify_cache(path)` to recompute
every size, hash and count the manifest records.

`path` is a directory, or a remote location (http(s):// URL or `pipe:` command, see transport.py)
read through the same relative paths of the validated manifest. A cache composes a transport (where
its bytes come from) with its shard format (what they mean) through reading.py."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CacheError, FingerprintMismatch
from .reading import Scan, iter_file, scan
from .store.formats import shard_format
from .store.manifest import check_same_fingerprint, gc_paused, load_manifest, parse_manifest, parse_samples
from .store.tar import Sample
from .transport import LocalTransport, Missing, Transport, configured, transport_for

TS_DTYPES = ("float64",)  # what every writer stores timestamps as (seconds)
PREFETCH_AHEAD = 2  # shard files asked for ahead of the one being read


@dataclass
class FieldArrays:
    """One field for many samples: ragged lists, and `padded()` for batch use."""

    name: str
    keys: list[str]
    feats: list[np.ndarray]  # each (T_i, D)
    ts: list[np.ndarray]  # each (T_i, 2) start/end seconds
    present: np.ndarray  # (N,) bool: False where the sample has no data for this field

    def padded(self, max_steps: int | None = None, dtype=np.float32):
        """(X [N, T, D], ts [N, T, 2], mask [N, T] bool): the first T steps of each sample (T = the
        longest sample unless `max_steps`); absent samples are all-False rows."""
        n = len(self.feats)
        lengths = np.fromiter(map(len, self.feats), np.int64, n)
        t = max(int(lengths.max(initial=0)), 1) if max_steps is None else max_steps
        dim = next((f.shape[1] for f in self.feats if f.ndim == 2 and len(f)), None)
        dim = next((f.shape[1] for f in self.feats if f.ndim == 2), 0) if dim is None else dim
        x = np.zeros((n, t, dim), dtype)
        ts = np.zeros((n, t, 2), np.float64)
        steps = np.arange(t)
        mask = steps < lengths[:, None]
        if mask.any():  # one copy of every kept step, then one scatter into the padded arrays
            cut = lengths > t
            feats = [f[:t] for f in self.feats] if cut.any() else self.feats
            times = [s[:t] for s in self.ts] if cut.any() else self.ts
            x[mask] = np.concatenate([f for f in feats if len(f)])
            ts[mask] = np.concatenate([s for s in times if len(s)])
        return x, ts, mask


class Cache:
    """A published cache: only what manifest.json lists exists. `root` is the directory (a Path) or
    the URL as given; `transport` reads the listed files from either, and the manifest's backend
    names the shard format that parses them."""

    def __init__(self, root: Path | str, manifest: dict, transport: Transport | None = None):
        self.root, self.manifest = root, manifest
        self.transport = transport or LocalTransport(Path(root))
        self.format = shard_format(manifest["backend"])
        self._rows: OrderedDict[str, list[dict]] = OrderedDict()  # parsed rows of the last shards read
        self._index: SamplesIndex | None = None  # every row's key and status, as columns
        self._sorted: np.ndarray | None = None  # row order sorted by key (locate, load_field)
        self._readers: dict[str, FieldReader] = {}  # read_sample's open readers, per field

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
        """Samples index rows of every shard in order (each row gains 'shard'), as dicts: for a few
        thousand samples. At scale, `index()` and `table()` hold the same as columns."""
        rows = []
        for shard in self.shards:
            for row in self._shard_rows(shard):
                if status is None or row["status"] == status:
                    rows.append({**row, "shard": shard})
        return rows

    def _shard_rows(self, shard: str) -> list[dict]:
        """The parsed rows of one shard's samples index (the last ROWS_KEPT shards' are kept)."""
        rows = self._rows.get(shard)
        if rows is None:
            rows = self._rows[shard] = self._parse_rows(shard)
            while len(self._rows) > ROWS_KEPT:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(shard)
        return rows

    def _parse_rows(self, shard: str) -> list[dict]:
        entry = self.manifest["shards"][shard]
        data = self.transport.read(entry, check=self.transport.remote)  # local: verify hashes
        return parse_samples(data, self.transport.label(entry["path"]))

    def index(self) -> SamplesIndex:
        """Every sample's key and status, as columns (built once, one pass over the samples indexes)."""
        if self._index is None:
            self.table()
        return self._index

    def table(self, columns: Sequence[str] = (), status: str | None = "ok") -> dict[str, np.ndarray]:
        """Columns of the samples with `status` (None: all), in cache order: "key" (bytes: keys are
        ASCII hex), "shard" (int32: position in `shards`) and each of `columns` (UTF-8 bytes), read in
        one pass over the samples indexes (none when only keys are asked for and the index is built).
        A column is a row field ("id", "source", "error", "aliases": its names joined by "\n") or
        "meta.NAME"; b"" where the row has none (`column_of`)."""
        index = self._index
        if index is None or columns:
            parts: dict[str, list] = {c: [] for c in ("key", "ok", *columns)}
            with gc_paused():
                for shard in self.shards:
                    rows = self._rows.get(shard) or self._parse_rows(shard)  # not kept: columns are
                    if index is None:
                        parts["key"].append(np.array([r["key"] for r in rows], "S"))  # hex: ASCII
                        parts["ok"].append(np.array([r["status"] == "ok" for r in rows], bool))
                    keep = rows if status is None or not columns else [r for r in rows if r["status"] == status]
                    for c in columns:
                        parts[c].append(column_of(keep, c))
            if index is None:
                sizes = np.array([len(k) for k in parts["key"]], np.int64)
                index = self._index = SamplesIndex(
                    _concat(parts["key"], "S"),
                    _concat(parts["ok"], bool),
                    np.concatenate([[0], np.cumsum(sizes)]),
                    self.shards,
                )
        shard_of = np.repeat(np.arange(len(index.shards), dtype=np.int32), np.diff(index.starts))
        out = {"key": index.keys, "shard": shard_of}
        if status is not None:
            keep = index.ok if status == "ok" else ~index.ok
            if not keep.all():
                out = {k: v[keep] for k, v in out.items()}
        for c in columns:
            out[c] = _concat(parts[c], "S")
        return out

    def key_order(self) -> np.ndarray:
        """The rows of `index()` sorted by key (stable), computed once: what key lookups search. A
        process about to fork readers computes it first (about 0.5 s for a million keys)."""
        if self._sorted is None:
            self._sorted = np.argsort(self.index().keys, kind="stable")
        return self._sorted

    def lookup(self, keys, ok_only: bool) -> np.ndarray:
        """Row of each of `keys` in `index()` (-1 for a key the cache does not hold, or, with `ok_only`,
        holds as a failed sample); a key listed twice: its first row."""
        index = self.index()
        rows = search_sorted(index.keys, self.key_order(), as_keys(keys))
        if ok_only and len(index.ok):
            rows = np.where((rows >= 0) & index.ok[np.maximum(rows, 0)], rows, -1)
        return rows

    def _field(self, name: str) -> dict:
        if name not in self.fields:
            raise CacheError(
                f"cache {self.root} has no field {name!r}; available: {', '.join(sorted(self.fields)) or 'none'}"
            )
        return self.fields[name]

    def read_field_shard(self, name: str, shard: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {k: (f, t) for k, f, t in self._field_samples(name, shard)}

    def _field_samples(self, name: str, shard: str) -> list[Sample]:
        """(key, feats, ts) of field `name`'s file for `shard`, in file order, with its count checked."""
        entry = self._field(name)["files"].get(shard)
        if entry is None:
            raise CacheError(f"field {name!r} has no file for shard {shard} (incomplete extraction: re-run extract)")
        data = list(self.iter_file(entry))
        _check_count(entry, len({k for k, _, _ in data}))  # distinct samples: a repeated one is not two
        return data

    def iter_file(self, entry: dict, check: bool | None = None) -> Iterator[Sample]:
        """(key, feats, ts) of a listed field file; `check` (default: remote caches) compares its bytes
        with the manifest's size and sha256."""
        return iter_file(self.transport, entry, self.format, check)

    def _in_order(self, pairs: list[tuple[str, str]]) -> Iterator[list[Sample]]:
        """`_field_samples` of each (field, shard) of `pairs` in turn; meanwhile the files of the next
        pairs are asked for (the transport's `ahead`, default PREFETCH_AHEAD; local files: the kernel
        reads them while this one is checked; object stores: fetched in background threads)."""
        asked: set[int] = set()
        ahead = getattr(self.transport, "ahead", PREFETCH_AHEAD)
        for i, (name, shard) in enumerate(pairs):
            for j in range(i + 1, min(i + 1 + ahead, len(pairs))):
                entry = self._field(pairs[j][0])["files"].get(pairs[j][1])
                if j not in asked and entry is not None:
                    asked.add(j)
                    self.transport.prefetch(entry)
            yield self._field_samples(name, shard)

    def ok_keys(self) -> list[str]:
        """Keys of every ok sample, in cache order."""
        return np.strings.decode(self.table()["key"], "ascii").tolist()

    def row_of(self, key: str) -> int:
        """Row in `index()` of a sample key; a CacheError names a key the cache does not hold."""
        if isinstance(key, str):
            row = int(self.lookup(np.array([key.encode("ascii", "replace")], "S"), ok_only=False)[0])
        else:
            row = -1
        if row < 0:
            raise CacheError(f"cache {self.root} has no sample {key!r}")
        return row

    def locate(self, key: str) -> tuple[str, dict]:
        """(shard, samples row) of a sample key (its shard's samples rows are parsed: see row_of for a
        lookup that needs only the index); a CacheError names a key the cache does not hold."""
        row = self.row_of(key)
        index = self.index()
        i = int(index.shard_of(row))
        return index.shards[i], self._shard_rows(index.shards[i])[row - int(index.starts[i])]

    def field_reader(self, name: str, max_open: int = 8) -> FieldReader:
        """Random access to field `name` by sample key, keeping up to `max_open` shard files open
        (use it as a context manager, or call close())."""
        return FieldReader(self, name, max_open)

    def read_sample(self, name: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """One sample's (feats [T, D], ts [T, 2]) of field `name`, as `iter_samples` would give it: None
        when the field has no data for it (listed under `missing`); a CacheError for a key that is
        not a sample of the cache or a failed one. Reads only that sample's bytes (local caches:
        the shard file is indexed once and kept open; close the cache with `close()`)."""
        reader = self._readers.get(name)
        if reader is None:
            reader = self._readers[name] = self.field_reader(name)
        return reader.read(key)

    def close(self) -> None:
        """Close the files `read_sample` keeps open and stop background fetches (reading again
        reopens them)."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self.transport.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def iter_samples(self, fields: Sequence[str] | None = None) -> Iterator[dict]:
        """Ok samples with {field: (feats, ts) or None}, one shard in memory at a time."""
        fields = list(self.fields) if fields is None else list(fields)
        for name in fields:
            self._field(name)
        files = self._in_order([(name, shard) for shard in self.shards for name in fields])
        index = self.index()
        for i, shard in enumerate(self.shards):
            lo, hi = index.starts[i], index.starts[i + 1]
            ok = np.strings.decode(index.keys[lo:hi][index.ok[lo:hi]], "ascii").tolist()
            columns = [_column(next(files), ok) for _ in fields]
            rows = (r for r in self._shard_rows(shard) if r["status"] == "ok")
            for row, *values in zip(rows, *columns, strict=True):
                yield {**row, "shard": shard, **dict(zip(fields, values, strict=True))}

    def load_field(self, name: str, keys: Sequence[str] | None = None) -> FieldArrays:
        """Arrays of one field for `keys` (default: every ok sample, in cache order). Reads only the
        shard files that hold one of `keys`; the arrays are views of each file's bytes."""
        entry = self._field(name)
        index = self.index()
        if keys is None:
            keys = self.ok_keys()
            shards = [s for i, s in enumerate(self.shards) if index.ok[index.starts[i] : index.starts[i + 1]].any()]
            found_rows = None
        else:
            found_rows = self.lookup(keys, ok_only=True)
            keys = (
                np.strings.decode(keys, "ascii").tolist()
                if isinstance(keys, np.ndarray) and keys.dtype.kind == "S"
                else list(keys)
            )
            needed = np.unique(index.shard_of(found_rows[found_rows >= 0]))
            shards = [self.shards[i] for i in needed]
        samples = [s for part in self._in_order([(name, shard) for shard in shards]) for s in part]
        if len(samples) == len(keys) and all(map(str.__eq__, keys, (s[0] for s in samples))):
            feats = [f for _, f, _ in samples]  # the files hold exactly these samples, in this order
            times = [t for _, _, t in samples]
            return FieldArrays(name, keys, feats, times, np.ones(len(keys), bool))
        found = {k: (f, t) for k, f, t in samples}
        if found_rows is not None:  # only ok samples of the cache count
            wanted = {k for k, r in zip(keys, found_rows.tolist(), strict=True) if r >= 0}
            found = {k: v for k, v in found.items() if k in wanted}
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


STR = np.dtypes.StringDType()  # variable-width strings: 16 bytes each, inline up to 15 characters
ROWS_KEPT = 8  # shards whose parsed samples rows a Cache keeps (locate, read_sample, iter_samples)


@dataclass
class SamplesIndex:
    """Every sample row of a cache as columns, in cache order: its key and whether it is ok; the rows
    of shard i are `starts[i]:starts[i + 1]`. About 50 bytes a sample, and O(shards) Python objects."""

    keys: np.ndarray  # (N,) bytes ("S": keys are ASCII hex)
    ok: np.ndarray  # (N,) bool
    starts: np.ndarray  # (shards + 1,) int64
    shards: list[str]  # the cache's shard names, in order

    def shard_of(self, rows):
        """Position in the cache's shards of each row number of `rows`."""
        return (np.searchsorted(self.starts, rows, side="right") - 1).astype(np.int32)


def as_keys(keys) -> np.ndarray:
    """Sample keys as the index holds them (bytes); a name that is not ASCII, so no key, becomes one
    that matches none. (numpy's StringDType searchsorted gives wrong positions: keys are never searched
    as StringDType.)"""
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
        return keys
    return np.strings.encode(np.asarray(list(keys), STR), "ascii", "replace")


def search_sorted(haystack: np.ndarray, order: np.ndarray, needles: np.ndarray, last: bool = False) -> np.ndarray:
    """Position in `haystack` (bytes, `order` its stable argsort) of each needle, -1 when absent;
    a value listed several times: its first position, or with `last` its last."""
    if not len(haystack):
        return np.full(len(needles), -1, np.int64)
    at = np.searchsorted(haystack, needles, side="right" if last else "left", sorter=order)
    rows = order[np.clip(at - 1 if last else at, 0, len(order) - 1)]
    return np.where(haystack[rows] == needles, rows, -1)


def column_of(rows: list[dict], column: str) -> np.ndarray:
    """One `Cache.table` column of samples rows: UTF-8 bytes, b"" where a row has none (meta values
    as str())."""
    if column.startswith("meta."):
        name = column[5:]
        values = [(r.get("meta") or {}).get(name) for r in rows]
    elif column == "aliases":
        values = ["\n".join(r.get("aliases") or ()) for r in rows]
    else:
        values = [r.get(column) for r in rows]
    return np.array([b"" if v is None else (v if type(v) is str else str(v)).encode() for v in values], "S")


def _concat(parts: list[np.ndarray], dtype=STR) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def _column(samples: list[Sample], keys: list[str]) -> list:
    """(feats, ts) or None for each of `keys`, from one shard file's samples."""
    if len(samples) == len(keys) and all(map(str.__eq__, keys, (s[0] for s in samples))):
        return [(f, t) for _, f, t in samples]  # the file holds exactly these samples, in this order
    found = {k: (f, t) for k, f, t in samples}
    return [found.get(k) for k in keys]


def _check_count(entry: dict, count: int) -> None:
    """A file that reads cleanly but holds fewer (or more) samples than the manifest says is an error,
    never silently fewer samples."""
    if count != entry["count"]:
        raise CacheError(
            f"{entry['path']}: {count} samples read, manifest says {entry['count']} "
            "(truncated or corrupt; run mmcache verify)"
        )


class FieldReader:
    """Random access to one field of a cache by sample key: `read(key)` -> (feats [T, D], ts [T, 2]),
    or None when the field has no data for that ok sample (its `missing` list), exactly what
    `iter_samples` gives for the key. A local shard file is opened and indexed on first use (tar:
    its headers, each checked as in a full read; HDF5: offsets and keys) and kept open, up to
    `max_open` files (least recently used closed first); then a read touches only that sample's bytes.
    A remote shard is fetched and checked whole, and the last one is kept. Keys that are not samples
    of the cache, or failed ones, are a CacheError naming the key."""

    def __init__(self, cache: Cache, name: str, max_open: int = 8):
        self.cache, self.name = cache, name
        self.field = cache._field(name)
        self.max_open = max(1, max_open)
        self._open: OrderedDict[str, object] = OrderedDict()  # shard -> TarShard | H5Shard | dict

    def read(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        row, index = self.cache.row_of(key), self.cache.index()
        if not index.ok[row]:  # only now its shard's samples rows are parsed, for the error
            error = self.cache.locate(key)[1].get("error")
            raise CacheError(f"sample {key} of cache {self.cache.root} is not an ok sample ({error})")
        handle = self._shard(index.shards[int(index.shard_of(row))])
        if isinstance(handle, dict):
            return handle.get(key)
        if key not in handle.index:
            return None  # listed under missing (a file holds exactly the ok samples minus missing)
        return handle.read(key)

    __getitem__ = read

    def _shard(self, shard: str):
        handle = self._open.get(shard)
        if handle is not None:
            self._open.move_to_end(shard)
            return handle
        entry = self.field["files"].get(shard)
        if entry is None:
            raise CacheError(
                f"field {self.name!r} has no file for shard {shard} (incomplete extraction: re-run extract)"
            )
        if self.cache.transport.remote:
            self.close()
            handle = self.cache.read_field_shard(self.name, shard)
        else:
            handle = self.cache.format.open(self.cache.transport.checked(entry))
            try:
                _check_count(entry, len(handle))
            except CacheError:
                handle.close()
                raise
        self._open[shard] = handle
        while len(self._open) > self.max_open:
            self._close(self._open.popitem(last=False)[1])
        return handle

    @staticmethod
    def _close(handle) -> None:
        if not isinstance(handle, dict):
            handle.close()

    def close(self) -> None:
        while self._open:
            self._close(self._open.popitem()[1])

    def __enter__(self) -> FieldReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(path: str | Path, storage_options: dict | None = None, cache_dir: str | Path | None = None) -> Cache:
    """A cache directory, or a remote one: `s3://bucket/cache/` (or gs://, az://, hf://, any fsspec
    URL), `http(s)://host/cache/`, or `pipe:CMD ... {path} ...`. `storage_options` go to the fsspec
    backend (e.g. {"endpoint_url": ...}); `cache_dir` keeps fetched files by sha256. Both default to
    the enclosing `transport.configured(...)` (and MMCACHE_CACHE_DIR)."""
    if storage_options is not None or cache_dir is not None:
        with configured(storage_options, cache_dir):
            return open_cache(path)
    transport = transport_for(path)
    if isinstance(transport, LocalTransport):
        root = transport.root
        manifest = load_manifest(root)
    else:
        root = path
        try:
            data = transport.manifest(missing_ok=False)
        except Missing as e:
            raise CacheError(f"{root} is not an mmcache cache ({e})") from None
        manifest = parse_manifest(data, transport.label("manifest.json"))
    if manifest is None:
        raise CacheError(f"{root} is not an mmcache cache (no manifest.json)")
    return Cache(root, manifest, transport)


def verify_cache(path: str | Path, storage_options: dict | None = None) -> list[str]:
    """Every problem found, each naming the file; an empty list means the cache is intact. A remote
    cache is read once, file by file, from the remote itself (never from the fetch cache): tar shards
    streamed over http and pipe:, files fetched whole from object stores, HDF5 over http and pipe:
    through a temp file."""
    cache = open_cache(path, storage_options)
    cache.transport.fetched = None  # verify reads the remote itself, never the fetch cache
    problems: list[str] = []
    ok_keys: dict[str, set[str]] = {}
    for shard in cache.shards:
        entry = cache.manifest["shards"][shard]
        found = _check_file(cache, entry, None, problems)
        if found is not None:
            try:
                rows = parse_samples(found.data, cache.transport.label(entry["path"]))
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
            found = _check_file(cache, entry, cache.format, problems)
            if found is not None:
                _check_contents(found, field, entry, ok_keys.get(shard, set()), problems)
    return problems


def _check_file(cache: Cache, entry: dict, fmt, problems: list[str]) -> Scan | None:
    """Read a listed file once (`fmt`: its shard format, None for a samples index); the scan when its
    size and sha256 match the manifest."""
    try:
        found = scan(cache.transport, entry, fmt)
    except Missing:
        problems.append(f"{entry['path']}: missing")
        return None
    except CacheError as e:
        problems.append(f"{entry['path']}: cannot read ({e})")
        return None
    if found.size != entry["bytes"]:
        problems.append(f"{entry['path']}: {found.size} bytes, manifest says {entry['bytes']} (truncated or replaced)")
        return None
    if found.sha256 != entry["sha256"]:
        problems.append(f"{entry['path']}: sha256 mismatch (content changed or corrupt)")
        return None
    return found


def _check_contents(scan: Scan, field: dict, entry: dict, ok: set[str], problems: list[str]) -> None:
    keys, steps = [], 0
    for key, dtype, shape, ts_shape, ts_dtype, ts_finite in scan.records or []:
        n = shape[0] if shape else 0
        if len(shape) != 2 or shape[1] != field["dim"] or dtype != field["dtype"]:
            problems.append(
                f"{entry['path']}: sample {key} has {dtype}{shape}, expected {field['dtype']} (T, {field['dim']})"
            )
        if ts_shape != (n, 2):
            problems.append(f"{entry['path']}: sample {key} has timestamps {ts_shape} for {n} steps")
        if ts_dtype not in TS_DTYPES:
            problems.append(f"{entry['path']}: sample {key} has timestamps of dtype {ts_dtype}, expected float64")
        elif not ts_finite:
            problems.append(f"{entry['path']}: sample {key} has NaN or infinite timestamps")
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
    listed = set(entry["missing"])
    both = listed & set(keys)
    if both:
        problems.append(f"{entry['path']}: sample {sorted(both)[0]} is listed as missing but has data")
    not_ok = listed - ok
    if not_ok:
        problems.append(f"{entry['path']}: missing names {sorted(not_ok)[0]}, not an ok sample of its shard")
    unaccounted = ok - set(keys) - listed
    if unaccounted:
        problems.append(f"{entry['path']}: ok sample {sorted(unaccounted)[0]} has neither data nor a reason")


__all__ = ["Cache", "FieldArrays", "FieldReader", "FingerprintMismatch", "SamplesIndex", "open_cache", "verify_cache"]
