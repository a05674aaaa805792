"""Streaming batches shard by shard, for caches whose padded features do not fit the memory budget.

Each epoch visits the cache shards in a seeded order, `window` shards at a time: a window's rows are
read and laid out together (layout.field_arrays) and shuffled across its shards (a shuffle buffer of
`window` shards), then cut into batches. A background thread reads the next windows (`prefetch` of
them) while the current one trains, so reading overlaps the model's steps (torch releases the GIL).
The whole epoch's order is drawn from the generator before any read, in the caller's thread: the
batches depend only on the generator's state (a resumed run gets the same ones), never on timing.
Models that only see each field's mean over time get their windows pooled (and normalised) by the
reader thread too, as the in-memory loader pools once (`pool`). Memory is bounded by
`prefetch + 1` windows.
"""

from __future__ import annotations

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
        """Each window of `plan` laid out (in its order), read by a background thread up to PREFETCH
        windows ahead; an error there is raised here; leaving early stops the thread."""
        if len(plan) <= 1:
            yield from map(self._load, plan)
            return
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
