"""Segment tagging predictions in time: each valid step of a sample at its time span, and runs of one label
merged into spans.

The loader (layout.field_arrays, aligned) puts every field of a sample onto the first field's time grid:
that field's stored steps (`ts`, start/end seconds per step, see docs/cache-format.md), uniformly
subsampled to at most `max_steps`. Step i of the model's output is grid step i; steps past the grid are
padding and have no prediction. `reference_grids` reads those grids back from the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmcache.cache import open_cache

from .errors import DataError
from .layout import subsample


@dataclass
class Step:
    """One valid step of a sample: its index on the grid, its time span (seconds), label and class scores."""

    index: int
    start: float
    end: float
    label: int
    scores: np.ndarray  # (C,) probabilities


@dataclass
class Span:
    """Consecutive steps of one label: from the first step's start to the last one's end; `score` is the
    mean of the steps' scores of that label."""

    start: float
    end: float
    label: int
    score: float


def reference_grids(cache_path, field: str, keys: Sequence[str], max_steps: int) -> list[np.ndarray | None]:
    """Per key, the (T, 2) start/end seconds of the steps of `field` that the loader keeps (as
    layout.field_arrays does for the reference field); None where the sample has no data in `field`.
    One sample is read at a time."""
    with open_cache(cache_path) as cache, cache.field_reader(field) as reader:
        grids = []
        for key in keys:
            item = reader.read(key)
            ts = None if item is None else np.asarray(item[1], np.float64)
            grids.append(None if ts is None else ts[subsample(len(ts), max_steps)])
        return grids


def sample_steps(probs: np.ndarray, valid: np.ndarray, grid: np.ndarray | None, name: str) -> list[Step]:
    """The valid steps of one sample: `probs` (T, C) the model's per-step probabilities, `valid` (T,) the
    loader's non-padding steps (targets >= 0), `grid` their time spans. They must agree: both come from
    the reference field's steps."""
    n = 0 if grid is None else len(grid)
    if int(valid.sum()) != n or not valid[:n].all():
        raise DataError(f"sample {name}: {int(valid.sum())} valid steps but {n} steps on its time grid")
    labels = probs[:n].argmax(-1)
    return [Step(i, float(grid[i, 0]), float(grid[i, 1]), int(labels[i]), probs[i]) for i in range(n)]


def merge_steps(steps: list[Step]) -> list[Span]:
    """Runs of consecutive steps with the same label, as spans."""
    spans: list[Span] = []
    run: list[Step] = []
    for s in [*steps, None]:
        if run and (s is None or s.label != run[0].label):
            label = run[0].label
            spans.append(Span(run[0].start, run[-1].end, label, float(np.mean([r.scores[label] for r in run]))))
            run = []
        if s is not None:
            run.append(s)
    return spans


def spans_path(out_csv: Path) -> Path:
    """Where the merged spans go: beside the per-step CSV, `predictions.csv` -> `predictions.spans.csv`."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}.spans{out_csv.suffix or '.csv'}")


__all__ = ["Span", "Step", "merge_steps", "reference_grids", "sample_steps", "spans_path"]
