"""Streaming batches shard by shard, for caches whose padded features do not fit the memory budget.

Each epoch visits the cache shards in a seeded order, `window` shards at a time: a window's rows are
read and laid out together (layout.field_arrays) and shuffled across its shards (a shuffle buffer of
`window` shards), then cut into batches. A worker process (a thread for remote caches) reads the next
windows, PREFETCH of them, while the current one trains. The whole epoch's order is drawn from the
generator before any read, in the caller's process: the batches depend only on the generator's state
(a resumed run gets the same ones), never on timing. Models that only see each field's mean over time
get their windows pooled (and normalised) by the reader, as the in-memory loader pools once (`pool`).
For them the reader also writes each row's mean over time to a spill file on disk (`Spill`, under
TMPDIR; `keep_pooled`) the first time it reads the row, in the statistics pass when there is one,
and later passes read the spill: D float32 values per row and field instead of every stored step, so
a pooled model's epochs cost about what in-memory ones do. Memory is bounded by PREFETCH + 1
windows (the spill is read through the page cache, a window at a time).

The worker takes a core from the training steps. While reading is a large share of an epoch, torch
runs one thread fewer (its ops otherwise wait at every step for a thread the worker descheduled);
when the last pass over the same rows (the train split's epochs, a validation pass) kept the worker
busy less than LIGHT_SHARE of the time, as with a compute-heavy model, torch keeps all its threads.
An epoch read from the spill is read in the training process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .batches import Chunk, Stats, normalise, pool_field
from .layout import field_arrays
from .samples import SampleRows

PREFETCH = 2  # windows read ahead of the one training
LIGHT_SHARE = 0.2  # reading took less than this share of an epoch: torch keeps all its threads


class StreamSource:
    """The features of `rows` (cache sample rows), laid out like the in-memory loader's, read `window`
    cache shards at a time in a background thread."""

    def __init__(
        self, rows: SampleRows, names: list[str], dims: dict[str, int], max_steps: int, aligned: bool, window: int = 1
    ):
        self.rows, self.names, self.dims, self.max_steps, self.aligned = rows, names, dims, max_steps, aligned
        self.window = max(1, window)
        self.groups = rows.groups()  # row indices per (cache, shard)
        self.pool: dict[str, Stats] | None = None  # set: chunks are pooled, normalised with these stats
        self.spill: Spill | None = None  # rows' means over time once read, on disk (keep_pooled)
        self.busy: dict[int, float] = {}  # pass_key(rows) -> the worker's busy share of its last pass

    def chunks(self, rows: np.ndarray, batch_size: int, generator: torch.Generator | None) -> Iterator[Chunk]:
        """Chunks of at most `batch_size` of `rows`, window by window: shards, and the rows within each
        window, shuffled with `generator` when given. Each chunk carries its rows' reference grids
        (None when read from the spill: pooled models have no step targets)."""
        wanted = np.zeros(len(self.rows), bool)
        wanted[rows] = True
        groups = [g[wanted[g]] for g in self.groups]
        order = range(len(groups)) if generator is None else torch.randperm(len(groups), generator=generator).tolist()
        groups = [groups[int(g)] for g in order if len(groups[int(g)])]
        plan = []  # per window: its rows in the order they are trained
        for w in range(0, len(groups), self.window):
            idx = np.concatenate(groups[w : w + self.window])
            if generator is not None:
                idx = idx[torch.randperm(len(idx), generator=generator).numpy()]
            plan.append(idx)
        spilled = self.pool is not None and self.spill is not None and bool(self.spill.done[rows].all())
        for idx, feats, masks, grids in self._read(plan, spilled, pass_key(rows)):
            if self.spill is not None and not spilled:
                self.spill.mark(idx, masks)  # written by the reader before it handed the window over
            for s in range(0, len(idx), batch_size):
                part = slice(s, s + batch_size)
                yield Chunk(
                    torch.as_tensor(idx[part]),
                    {n: feats[n][part] for n in self.names},
                    {n: masks[n][part] for n in self.names},
                    None if grids is None else list(grids[part]),
                    normalised=self.pool is not None,
                )

    def pool_with(self, stats: dict[str, Stats]) -> None:
        """From now on chunks are pooled and normalised with `stats` (the spill's rows too)."""
        self.pool = stats
        if self.spill is not None:
            self.spill.normalise(stats)

    def keep_pooled(self) -> None:
        """Spill each row's mean over time as it is first read (for a model that only sees those): every
        pass after that, once `pool` is set, reads the spill instead of the cache."""
        if self.spill is None:
            self.spill = _new_spill(len(self.rows), {n: self.dims[n] for n in self.names})

    def _read(self, plan: list[np.ndarray], spilled: bool = False, key: int = 0) -> Iterator[tuple]:
        """Each window of `plan` laid out (in its order), read up to PREFETCH windows ahead by a worker
        process (local caches, where fork exists) or a thread (remote caches: their transports keep
        fetch threads that a forked process would not have); an error there is raised here; leaving
        early stops the reader."""
        if len(plan) <= 1 or spilled:  # a spilled epoch reads little: no worker to start, all threads
            yield from map(self._load, plan)
            return
        local = not any(c.transport.remote for c in self.rows.caches)
        if local and "fork" in mp.get_all_start_methods():
            yield from self._read_in_process(plan, key)
        else:
            yield from self._read_in_thread(plan)

    def _read_in_process(self, plan: list[np.ndarray], key: int = 0) -> Iterator[tuple]:
        """torch's DataLoader with one forked worker: reading and laying out windows is Python work
        that a thread would run under the GIL the training steps need (streaming then ran at 0.4x of
        in-memory samples/s on 2 cores); the worker's tensors come back through shared memory."""
        for cache in self.rows.caches:
            cache.key_order()  # built once here, not again in every worker
        loader = torch.utils.data.DataLoader(
            _Windows(self, plan),
            batch_size=None,
            num_workers=1,
            prefetch_factor=PREFETCH,
            collate_fn=_as_is,
            multiprocessing_context="fork",
        )
        threads = torch.get_num_threads()
        light = self.busy.get(key, 1.0) < LIGHT_SHARE
        torch.set_num_threads(threads if light else max(1, threads - 1))
        it, busy, start = iter(loader), 0.0, time.perf_counter()
        try:
            for item, seconds in it:
                if isinstance(item, BaseException):
                    raise item
                busy += seconds
                yield item
            self.busy[key] = busy / max(time.perf_counter() - start, 1e-9)
        finally:
            it._shutdown_workers()  # now, not when the iterator is collected
            torch.set_num_threads(threads)

    def _read_in_thread(self, plan: list[np.ndarray]) -> Iterator[tuple]:
        ready: queue.Queue = queue.Queue(PREFETCH)
        stop = threading.Event()

        def work() -> None:
            try:
                for idx in plan:
                    item = self._load(idx)
                    while not stop.is_set():
                        try:
                            ready.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # noqa: BLE001 -- handed to the consumer, which raises it
                ready.put(e)

        thread = threading.Thread(target=work, name="mmfit-stream", daemon=True)
        thread.start()
        try:
            for _ in plan:
                item = ready.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def _load(self, idx: np.ndarray) -> tuple:
        """One window: (idx, feats, masks, grids) with rows in `idx`'s order, as tensors (pooled and
        normalised when `pool` is set: then from the spill once every row is there, without grids)."""
        if self.pool is not None and self.spill is not None and self.spill.done[idx].all():
            feats, masks = self.spill.read(idx)
            return idx, feats, masks, None
        rank = np.argsort(idx, kind="stable")
        feats, masks, grids = field_arrays(
            self.rows.take(idx[rank]), self.names, self.dims, self.max_steps, self.aligned
        )
        back = np.empty_like(rank)
        back[rank] = np.arange(len(rank))  # position of each idx row among the sorted ones
        out_f, out_m, means, present = {}, {}, {}, {}
        for n in self.names:
            x, m = torch.from_numpy(feats[n][back]), torch.from_numpy(masks[n][back])
            if self.spill is not None or self.pool is not None:
                means[n], present[n] = pool_field(x, m)
                if self.pool is not None:
                    x, m = _normalised(means[n], present[n], self.pool.get(n)), present[n]
            out_f[n], out_m[n] = x, m
        grid_arr = np.empty(len(idx), object)
        grid_arr[:] = [grids[j] for j in back.tolist()]
        if self.spill is not None:
            self.spill.write(idx, means, present)
        return idx, out_f, out_m, grid_arr


def _normalised(mean: torch.Tensor, present: torch.Tensor, stats: Stats | None) -> torch.Tensor:
    return mean if stats is None else normalise(mean, present, stats)  # as pool_field(x, m, stats)


def pass_key(rows: np.ndarray) -> int:
    """Which rows a pass reads (the train split, a validation split): the busy share is kept per key."""
    return hash(np.ascontiguousarray(rows).tobytes())


class Spill:
    """Each row's mean over time once read: per field an (N, D) float32 file (N: the source's rows) in
    a temporary folder removed with this object; which rows are written (`done`) and their presence
    are kept by the training process (`mark`), so a forked reader sees them as of its pass. Rows are
    written as read (`write`) and normalised in place once the statistics are known (`normalise`);
    later rows are written normalised. Reads go through the page cache with plain file reads, a span of
    rows at a time: no mapping keeps the file's pages in the process."""

    def __init__(self, n_rows: int, dims: dict[str, int]):
        self.dims = dims
        self.stats: dict[str, Stats] | None = None  # set: every row written is normalised with these
        self.dir = Path(tempfile.mkdtemp(prefix="mmfit-spill-"))
        weakref.finalize(self, _remove, self.dir, os.getpid())
        for n in dims:  # the disk space is taken now: a full disk fails here, not mid-epoch
            fd = os.open(self._path(n), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, max(n_rows * dims[n] * 4, 1))
                else:  # macOS: a sparse file; a full disk then fails at a write, as an OSError
                    os.ftruncate(fd, n_rows * dims[n] * 4)
            finally:
                os.close(fd)
        self.done = np.zeros(n_rows, bool)
        self.present = {n: np.zeros(n_rows, bool) for n in dims}
        self.buffers: dict[str, np.ndarray] = {}  # _scratch

    def _path(self, name: str) -> Path:
        return self.dir / f"{list(self.dims).index(name)}.f32"

    def write(self, idx: np.ndarray, means: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> None:
        """Rows `idx`' means over time ((k, 1, D) each) and presence ((k, 1)), normalised first when
        the statistics are known."""
        if self.stats is not None:
            means = {n: _normalised(x, present[n], self.stats.get(n)) for n, x in means.items()}
        self._put(idx, means)

    def _put(self, idx: np.ndarray, feats: dict[str, torch.Tensor]) -> None:
        """Rows `idx` of each field as given ((k, 1, D)), written in row order, runs of consecutive rows
        at a time."""
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        for n, x in feats.items():
            x = x[torch.from_numpy(order), 0].numpy()
            with open(self._path(n), "r+b") as f:
                for lo, hi in _runs(rows, 1):
                    f.seek(int(rows[lo]) * x.shape[1] * 4)
                    f.write(x[lo:hi].data)

    def mark(self, idx: np.ndarray, masks: dict[str, torch.Tensor]) -> None:
        self.done[idx] = True
        for n, m in masks.items():
            self.present[n][idx] = m.any(1).numpy()  # masks over steps, or pooled (k, 1)

    def normalise(self, stats: dict[str, Stats], chunk: int = 65536) -> None:
        """From now on rows are kept normalised with `stats`: the rows written so far are, in place."""
        self.stats = stats
        done = np.flatnonzero(self.done)
        for lo in range(0, len(done), chunk):
            idx = done[lo : lo + chunk]
            raw, masks = self.read(idx)
            self._put(idx, {n: _normalised(raw[n], masks[n], stats.get(n)) for n in self.dims})

    def _scratch(self, name: str, rows: int) -> np.ndarray:
        """A buffer of `rows` rows of field `name` for the spans read, kept from one read to the next
        (fresh memory for every window is fresh pages to fault in)."""
        have = self.buffers.get(name)
        if have is None or len(have) < rows:
            grown = max(rows, 2 * len(have)) if have is not None else rows
            have = self.buffers[name] = np.empty((grown, self.dims[name]), np.float32)
        return have[:rows]

    def read(self, idx: np.ndarray, gap: int = 64) -> tuple[dict, dict]:
        """Rows `idx`, in that order: (feats (k, 1, D) float32, masks (k, 1) bool) per field; rows at
        most `gap` apart are read in one span."""
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        runs = _runs(rows, gap)  # a shard's rows, with the other splits' between them, read whole
        starts = np.array([rows[lo] for lo, _ in runs], np.int64)
        sizes = np.array([rows[hi - 1] - rows[lo] + 1 for lo, hi in runs], np.int64)
        offset = np.concatenate([[0], np.cumsum(sizes)])
        run_of = np.repeat(np.arange(len(runs)), [hi - lo for lo, hi in runs])
        at = np.empty(len(idx), np.int64)
        at[order] = offset[run_of] + rows - starts[run_of]  # each idx row's place in the spans read
        feats, masks = {}, {}
        for n, d in self.dims.items():
            buf = self._scratch(n, int(offset[-1]))
            with open(self._path(n), "rb", buffering=0) as f:
                for r, (lo, _) in enumerate(runs):
                    f.seek(int(rows[lo]) * d * 4)
                    f.readinto(memoryview(buf[offset[r] : offset[r + 1]]).cast("B"))
            feats[n] = torch.from_numpy(buf[at]).unsqueeze(1)
            masks[n] = torch.from_numpy(self.present[n][idx]).unsqueeze(1)
        return feats, masks


def _runs(rows: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """(lo, hi) positions of sorted `rows` in runs whose consecutive rows are at most `gap` apart."""
    cuts = np.flatnonzero(np.diff(rows) > gap) + 1
    bounds = np.concatenate([[0], cuts, [len(rows)]]).tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _new_spill(n_rows: int, dims: dict[str, int]) -> Spill | None:
    """A Spill, or None (every epoch then reads the cache) when the temporary folder has no room."""
    try:
        return Spill(n_rows, dims)
    except OSError as e:
        need = n_rows * sum(dims.values()) * 4
        warnings.warn(
            f"mmfit: no spill of pooled features ({need / 1e9:.2f} GB) in {tempfile.gettempdir()} ({e}); "
            "every streamed epoch reads the cache (set TMPDIR to a folder with room)",
            stacklevel=3,
        )
        return None


def _remove(folder: Path, pid: int) -> None:
    if os.getpid() == pid:  # not when a forked reader exits
        shutil.rmtree(folder, ignore_errors=True)


class _Windows(torch.utils.data.IterableDataset):
    """The windows of one epoch's plan, laid out by StreamSource._load in the DataLoader's worker; an
    error is handed over as the last item (the consumer raises it with its own message)."""

    def __init__(self, source: StreamSource, plan: list[np.ndarray]):
        self.source, self.plan = source, plan

    def __iter__(self):
        for idx in self.plan:
            start = time.perf_counter()
            try:
                item = self.source._load(idx)
            except Exception as e:  # noqa: BLE001 -- raised in the training process
                yield e, 0.0
                return
            yield item, time.perf_counter() - start


def _as_is(item):
    return item
