"""Batches of padded features: rows gathered from memory in chunks, per-field standardisation that
keeps padding at exactly 0, and pooling a field to its masked mean over time (done once, up front,
for models that only look at that mean)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

Stats = tuple[np.ndarray, np.ndarray]  # a field's (mean, std) per dimension


@dataclass
class Batch:
    idx: torch.Tensor  # (B,) rows of Data
    feats: dict[str, torch.Tensor]  # field -> (B, T, D) float32
    masks: dict[str, torch.Tensor]  # field -> (B, T) bool
    y: torch.Tensor  # (B,) long | (B, C) float | (B, K) float | (B, T) long


class Chunk(NamedTuple):
    """The rows of one batch as stored (float16, not yet normalised), before targets are attached."""

    idx: torch.Tensor  # (B,) rows of Data
    feats: dict[str, torch.Tensor]  # field -> (B, T, D)
    masks: dict[str, torch.Tensor]  # field -> (B, T) bool
    grids: list | None = None  # streamed: each row's reference grid (segment targets are laid on it)
    normalised: bool = False  # streamed for a pooled model: already pooled and normalised


def memory_chunks(
    feats: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    rows: np.ndarray,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> Iterator[Chunk]:
    """Chunks of `batch_size` over `rows` of in-memory fields, shuffled with `generator` when given."""
    order = rows if generator is None else rows[torch.randperm(len(rows), generator=generator).numpy()]
    order = torch.as_tensor(order, dtype=torch.long)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        # index_select copies whole rows: 4-5x faster than advanced indexing (x[idx]) for a row gather
        yield Chunk(
            idx,
            {f: x.index_select(0, idx) for f, x in feats.items()},
            {f: m.index_select(0, idx) for f, m in masks.items()},
        )


def normalise(x: torch.Tensor, mask: torch.Tensor, stats: Stats) -> torch.Tensor:
    """(x - mean) / std over the last axis of float features; padding (mask False) stays exactly 0."""
    mean, std = (torch.as_tensor(a) for a in stats)
    return (x - mean) / std * mask.unsqueeze(-1)


def pool_field(
    x: torch.Tensor, mask: torch.Tensor, stats: Stats | None = None, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """A field's masked mean over steps, (N, 1, D) float32, and its (N, 1) presence mask, computed
    `chunk` rows at a time; normalised with `stats` when given. Normalisation is affine, so
    normalising the mean equals the mean of normalised steps."""
    pooled = torch.empty(len(x), 1, x.shape[2])
    for i in range(0, len(x), chunk):
        w = mask[i : i + chunk].unsqueeze(-1).float()  # (b, T, 1)
        pooled[i : i + chunk, 0] = (x[i : i + chunk].float() * w).sum(1) / w.sum(1).clamp(min=1)
    present = mask.any(1, keepdim=True)  # (N, 1)
    if stats is not None:
        pooled = normalise(pooled, present, stats)
    return pooled, present
