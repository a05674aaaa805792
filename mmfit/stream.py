"""Streaming batches shard by shard, for caches whose padded features do not fit the memory budget.

Each epoch visits the cache shards in a seeded order, `window` shards at a time: a window's rows are
read and laid out together (layout.field_arrays) and shuffled across its shards (a shuffle buffer of
`window` shards), then cut into batches. A worker process (a thread for remote caches) reads the next
windows, PREFETCH of them, while the current one trains. The whole epoch's order is drawn from the
generator before any read, in the caller's process: the batches depend only on the generator's state
(a resumed run gets the same ones), never on timing. Models that only see each field's mean over time
get their windows pooled (and normalised) by the reader, as the in-memory loader pools once (`pool`).
Memory is bounded by PREFETCH + 1 windows.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from .batches import Chunk, Stats, pool_field
from .layout import field_arrays
from .samples import SampleRows

PREFETCH = 2  # windows read ahead of the one training


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

    def chunks(self, rows: np.ndarray, batch_size: int, generator: torch.Generator | None) -> Iterator[Chunk]:
        """Chunks of at most `batch_size` of `rows`, window by window: shards, and the rows within each
        window, shuffled with `generator` when given. Each chunk carries its rows' reference grids."""
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
        for idx, feats, masks, grids in self._read(plan):
            for s in range(0, len(idx), batch_size):
                part = slice(s, s + batch_size)
                yield Chunk(
                    torch.as_tensor(idx[part]),
                    {n: feats[n][part] for n in self.names},
                    {n: masks[n][part] for n in self.names},
                    list(grids[part]),
                    normalised=self.pool is not None,
                )

    def _read(self, plan: list[np.ndarray]) -> Iterator[tuple]:
        """Each window of `plan` laid out (in its order), read up to PREFETCH windows ahead by a worker
        process (local caches, where fork exists) or a thread (remote caches: their transports keep
        fetch threads that a forked process would not have); an error there is raised here; leaving
        early stops the reader."""
        if len(plan) <= 1:
            yield from map(self._load, plan)
            return
        local = not any(c.transport.remote for c in self.rows.caches)
        if local and "fork" in mp.get_all_start_methods():
            yield from self._read_in_process(plan)
        else:
            yield from self._read_in_thread(plan)

    def _read_in_process(self, plan: list[np.ndarray]) -> Iterator[tuple]:
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
        torch.set_num_threads(max(1, threads - 1))  # the worker takes a core: torch's ops wait at
        it = iter(loader)  # every step for a thread the worker descheduled (0.45x on 2 cores)
        try:
            for item in it:
                if isinstance(item, BaseException):
                    raise item
                yield item
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
        normalised when `pool` is set)."""
        rank = np.argsort(idx, kind="stable")
        feats, masks, grids = field_arrays(
            self.rows.take(idx[rank]), self.names, self.dims, self.max_steps, self.aligned
        )
        back = np.empty_like(rank)
        back[rank] = np.arange(len(rank))  # position of each idx row among the sorted ones
        out_f, out_m = {}, {}
        for n in self.names:
            x, m = torch.from_numpy(feats[n][back]), torch.from_numpy(masks[n][back])
            if self.pool is not None:
                x, m = pool_field(x, m, self.pool.get(n))
            out_f[n], out_m[n] = x, m
        grid_arr = np.empty(len(idx), object)
        grid_arr[:] = [grids[j] for j in back.tolist()]
        return idx, out_f, out_m, grid_arr


class _Windows(torch.utils.data.IterableDataset):
    """The windows of one epoch's plan, laid out by StreamSource._load in the DataLoader's worker; an
    error is handed over as the last item (the consumer raises it with its own message)."""

    def __init__(self, source: StreamSource, plan: list[np.ndarray]):
        self.source, self.plan = source, plan

    def __iter__(self):
        for idx in self.plan:
            try:
                item = self.source._load(idx)
            except Exception as e:  # noqa: BLE001 -- raised in the training process
                yield e
                return
            yield item


def _as_is(item):
    return item
