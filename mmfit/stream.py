"""Streaming batches shard by shard, for caches whose padded features do not fit the memory budget.

Each epoch visits the cache shards in a seeded order and loads one shard's fields at a time; rows
are shuffled within the shard. Memory is bounded by the largest shard, not the cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .config import TrainConfig
from .data import Batch, Data, field_arrays, segment_targets


class StreamSource:
    def __init__(self, cfg: TrainConfig, data: Data, rows: list[dict]):
        self.cfg, self.rows = cfg, rows
        groups: dict[tuple[int, str], list[int]] = {}
        for i, s in enumerate(rows):
            groups.setdefault((id(s["cache"]), s["shard"]), []).append(i)
        self.groups = list(groups.values())  # row indices per (cache, shard)
        data.report["streaming"] = {"shards": len(self.groups)}

    def batches(
        self, data: Data, rows: np.ndarray, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[Batch]:
        wanted = set(rows.tolist())
        order = range(len(self.groups)) if generator is None else torch.randperm(len(self.groups), generator=generator)
        for g in order:
            idx = np.array([i for i in self.groups[int(g)] if i in wanted])
            if not len(idx):
                continue
            feats, masks, ref_ts = field_arrays(self.cfg, data, [self.rows[i] for i in idx], data.field_names)
            if self.cfg.task == "segment":
                data.y[idx] = torch.stack(
                    [
                        segment_targets(data.spans[i], ref_ts[j], data.classes, self.cfg.max_steps)
                        for j, i in enumerate(idx)
                    ]
                )
            local = np.arange(len(idx)) if generator is None else torch.randperm(len(idx), generator=generator).numpy()
            for s in range(0, len(local), batch_size):
                part = local[s : s + batch_size]
                yield data.make_batch(
                    torch.as_tensor(idx[part]),
                    {n: torch.from_numpy(feats[n][part]) for n in data.field_names},
                    {n: torch.from_numpy(masks[n][part]) for n in data.field_names},
                )
