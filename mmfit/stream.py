"""Streaming batches shard by shard, for caches whose padded features do not fit the memory budget.

Each epoch visits the cache shards in a seeded order and loads one shard's fields at a time; rows
are shuffled within the shard. Memory is bounded by the largest shard, not the cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .batches import Chunk
from .layout import field_arrays


class StreamSource:
    """The features of `rows` (cache sample rows), laid out like the in-memory loader's, read one
    cache shard at a time."""

    def __init__(self, rows: list[dict], names: list[str], dims: dict[str, int], max_steps: int, aligned: bool):
        self.rows, self.names, self.dims, self.max_steps, self.aligned = rows, names, dims, max_steps, aligned
        groups: dict[tuple[int, str], list[int]] = {}
        for i, s in enumerate(rows):
            groups.setdefault((id(s["cache"]), s["shard"]), []).append(i)
        self.groups = list(groups.values())  # row indices per (cache, shard)

    def chunks(self, rows: np.ndarray, batch_size: int, generator: torch.Generator | None) -> Iterator[Chunk]:
        """Chunks of at most `batch_size` of `rows`, shard by shard: shards and the rows within each
        shuffled with `generator` when given. Each chunk carries its rows' reference grids."""
        wanted = set(rows.tolist())
        order = range(len(self.groups)) if generator is None else torch.randperm(len(self.groups), generator=generator)
        for g in order:
            idx = np.array([i for i in self.groups[int(g)] if i in wanted])
            if not len(idx):
                continue
            feats, masks, grids = field_arrays(
                [self.rows[i] for i in idx], self.names, self.dims, self.max_steps, self.aligned
            )
            local = np.arange(len(idx)) if generator is None else torch.randperm(len(idx), generator=generator).numpy()
            for s in range(0, len(local), batch_size):
                part = local[s : s + batch_size]
                yield Chunk(
                    torch.as_tensor(idx[part]),
                    {n: torch.from_numpy(feats[n][part]) for n in self.names},
                    {n: torch.from_numpy(masks[n][part]) for n in self.names},
                    [grids[j] for j in part],
                )
