"""The ok samples of a run's caches as columns: one row per distinct key (a key in several caches: its
first cache), with the cache and shard that hold it and the samples-index values the run needs
(`Cache.table`), sources only when asked for. Numpy columns, not a dict per sample: about 100 bytes
a sample while a run's labels are joined, and O(caches + shards) Python objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from mmcache.cache import Cache


@dataclass
class SampleRows:
    caches: list[Cache]
    keys: np.ndarray  # (N,) bytes ("S"): sample keys, ASCII hex
    cache: np.ndarray  # (N,) int16: position in `caches`
    shard: np.ndarray  # (N,) int32: position in that cache's `shards`
    ids: np.ndarray  # (N,) UTF-8 bytes ("S"), b"" without an id
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # the other `Cache.table` columns asked for
    _sources: np.ndarray | None = None  # read when first asked for (`sources`)

    @classmethod
    def from_dicts(cls, rows: list[dict], caches: list[Cache] | None = None) -> SampleRows:
        """Rows given as samples-index dicts (key, id, source, aliases; "cache" and "shard" positions
        default to 0): for a handful of samples, e.g. in tests."""
        strings = lambda name: np.array([(r.get(name) or "").encode() for r in rows], "S")  # noqa: E731
        return cls(
            caches or [],
            np.array([r["key"] for r in rows], "S"),
            np.array([r.get("cache", 0) for r in rows], np.int16),
            np.array([r.get("shard", 0) for r in rows], np.int32),
            strings("id"),
            {"aliases": np.array(["\n".join(r.get("aliases") or ()).encode() for r in rows], "S")},
            strings("source"),
        )

    @property
    def sources(self) -> np.ndarray:
        """(N,) UTF-8 bytes: each sample's source, read from the samples indexes on first use (paths are
        the longest column: most runs need them only for predictions and messages)."""
        if self._sources is None:
            parts = []
            for c, cache in enumerate(self.caches):
                mine = np.flatnonzero(self.cache == c)
                if len(mine):
                    every = cache.table(("source",), status=None)["source"]
                    parts.append((mine, every[cache.lookup(self.keys[mine], ok_only=True)]))
            out = np.zeros(len(self), max([p.dtype for _, p in parts], default=np.dtype("S1")))
            for mine, values in parts:
                out[mine] = values
            self._sources = out
        return self._sources

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, idx: np.ndarray) -> SampleRows:
        """The rows `idx` (indices, ascending or not), in that order; all of them in order: these rows."""
        if len(idx) == len(self) and (np.diff(idx) == 1).all() and (not len(idx) or idx[0] == 0):
            return self
        cut = {k: v[idx] for k, v in self.columns.items()}
        sources = None if self._sources is None else self._sources[idx]
        return SampleRows(self.caches, self.keys[idx], self.cache[idx], self.shard[idx], self.ids[idx], cut, sources)

    def key(self, i: int) -> str:
        return self.keys[i].decode("ascii")

    def name(self, i: int) -> str:
        """How errors name sample i: its id when it has one, always its key and source."""
        ident = f"{self.ids[i].decode()!r} " if self.ids[i] else ""
        return f"{ident}(key {self.key(i)}, source {self.source(i)})"

    def source(self, i: int) -> str:
        """Sample i's source (without reading every source)."""
        if self._sources is not None or not self.caches:
            return self.sources[i].decode()
        return self.caches[int(self.cache[i])].locate(self.key(i))[1]["source"]

    def shown(self, i: int) -> str:
        """Sample i as a label sheet would name it: its id, else its file name."""
        return self.ids[i].decode() or PurePosixPath(self.source(i)).name

    def groups(self) -> list[np.ndarray]:
        """Row indices per (cache, shard), groups in cache and shard order, rows in row order."""
        code = self.cache.astype(np.int64) << 32 | self.shard.astype(np.int64)
        order = np.argsort(code, kind="stable")
        bounds = np.flatnonzero(np.diff(code[order])) + 1
        return np.split(order, bounds) if len(order) else []


def ok_samples(cache_list: list[Cache], columns: tuple[str, ...] = ()) -> SampleRows:
    """The ok samples of every cache, with `columns` of their samples index ("source" among them: the
    sources are read now); a key seen before (an earlier cache, or shard) is skipped."""
    parts = []
    for i, c in enumerate(cache_list):
        t = c.table(("id", *columns))
        parts.append((t, np.full(len(t["key"]), i, np.int16)))
    if not parts:
        raise ValueError("no caches")
    cat = {k: np.concatenate([t[k] for t, _ in parts]) for k in parts[0][0]}
    rows = SampleRows(
        cache_list,
        cat.pop("key"),
        np.concatenate([c for _, c in parts]),
        cat.pop("shard"),
        cat.pop("id"),
        cat,
        cat.pop("source", None),
    )
    _, first = np.unique(rows.keys, return_index=True)  # a key listed twice (two caches, or two shards)
    return rows.take(np.sort(first)) if len(first) < len(rows) else rows
