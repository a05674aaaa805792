"""Cache samples -> padded float16 arrays and masks, one field at a time: uniform subsampling to at
most `max_steps` steps, or resampling onto the first field's time grid (`align`, segment tagging),
and per-step segment targets on that grid. The in-memory loader (data.py) lays out the whole split
set at once, streaming (stream.py) one shard at a time; both get the same arrays."""

from __future__ import annotations

import numpy as np
import torch

from .errors import DataError
from .samples import SampleRows


def subsample(n: int, max_steps: int) -> np.ndarray:
    """Indices of at most `max_steps` steps spread uniformly over n."""
    if n <= max_steps:
        return np.arange(n)
    return np.linspace(0, n - 1, max_steps).round().astype(int)


def align(ref_ts: np.ndarray, ts: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample a field onto a reference grid: each reference step takes the step whose interval
    holds its midpoint; steps with none (e.g. between subtitle cues) are masked."""
    mid = ref_ts.mean(axis=1)  # (T,)
    if len(ts) == 0:
        return np.zeros((len(mid), feats.shape[1]), feats.dtype), np.zeros(len(mid), bool)
    j = np.searchsorted(ts[:, 0], mid, side="right") - 1
    ok = (j >= 0) & (mid < ts[np.clip(j, 0, None), 1])
    out = feats[np.clip(j, 0, None)]
    out[~ok] = 0
    return out, ok


READ_ROWS = 65_536  # rows per load_field call: their samples are copied out before the next call


class Ragged:
    """One field's samples for N rows, copied out of the shard files a chunk of rows at a time into
    one array per chunk (steps of its samples end to end), so neither a view into a mapped shard nor
    a Python object per sample outlives its chunk. `self[i]`: row i's (feats [T, D], ts [T, 2]), or
    None without data."""

    def __init__(self, n: int, name: str, dim: int):
        self.name, self.dim = name, dim
        self.chunk = np.full(n, -1, np.int32)  # chunk holding row i, -1: no data
        self.start = np.zeros(n, np.int64)  # row i's first step in its chunk
        self.lengths = np.zeros(n, np.int64)
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, rows: np.ndarray, feats: list[np.ndarray], ts: list[np.ndarray], present: np.ndarray) -> None:
        """Samples of `rows` (their arrays, and whether each has data), copied into one new chunk."""
        have = np.flatnonzero(present)
        for j in have.tolist():
            f = feats[j]
            if f.ndim != 2 or f.shape[1] != self.dim:
                raise DataError(
                    f"field {self.name}: a sample has shape {f.shape}, expected (T, {self.dim}); run mmcache verify"
                )
        lengths = np.fromiter((len(feats[j]) for j in have.tolist()), np.int64, len(have))
        self.chunk[rows[have]] = len(self.parts)
        self.start[rows[have]] = np.cumsum(lengths) - lengths
        self.lengths[rows[have]] = lengths
        keep_f = [feats[j] for j in have.tolist()]
        keep_t = [ts[j] for j in have.tolist()]
        self.parts.append(
            (
                np.concatenate(keep_f) if keep_f else np.zeros((0, self.dim), np.float16),
                np.concatenate(keep_t) if keep_t else np.zeros((0, 2)),
            )
        )

    def __len__(self) -> int:
        return len(self.chunk)

    def __getitem__(self, i: int):
        c = self.chunk[i]
        if c < 0:
            return None
        f, t = self.parts[c]
        lo, hi = self.start[i], self.start[i] + self.lengths[i]
        return f[lo:hi], t[lo:hi]

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def field_arrays(rows: SampleRows, names: list[str], dims: dict[str, int], max_steps: int, aligned: bool):
    """Read fields `names` for `rows` (one pass per cache shard) and lay them out as padded float16
    arrays, subsampled to `max_steps`, or with `aligned` resampled onto the first field's grid.
    Returns (feats, masks, grids): grids[i] is row i's reference grid (None unless aligned). Fields
    are read and laid out one at a time, so only one field's samples are held besides the result,
    copied out of the shard files READ_ROWS rows at a time (`Ragged`)."""
    by_cache = [np.flatnonzero(rows.cache == c) for c in range(len(rows.caches))]
    t = max_steps
    feats, masks = {}, {}
    grids: list[np.ndarray | None] = [None] * len(rows)
    for k, n in enumerate(names):
        raw = Ragged(len(rows), n, dims[n])
        for c, idx in enumerate(by_cache):
            for lo in range(0, len(idx), READ_ROWS):
                part = idx[lo : lo + READ_ROWS]
                arr = rows.caches[c].load_field(n, rows.keys[part])
                raw.add(part, arr.feats, arr.ts, arr.present)
                del arr
        if k == 0 and aligned:
            grids = [None if r is None else r[1][subsample(len(r[1]), t)] for r in raw]
        # independent fields are padded only to their longest sample (at most max_steps): padding is
        # compute that token fusions spend on masked positions; aligned fields share the grid's width
        width = t if aligned else int(min(max(raw.lengths.max(initial=0), 1), t))
        feats[n], masks[n] = layout_field(n, raw, grids, width, dims[n])
        check_finite(n, feats[n], rows)
    return feats, masks, grids


FINITE_ROWS = 256  # rows per chunk of the NaN/inf check (bounds its boolean copy)


def check_finite(name: str, x: np.ndarray, rows: SampleRows) -> None:
    """Refuse NaN/inf features, naming the sample and field. Every split and predict read features
    here, so all get this one check: the model would turn them into NaN outputs (a NaN loss in
    train, a metrics ValueError in val/test, NaN scores in predictions). Checked on the float16
    layout, so a stored float32 value too large for float16 is caught too."""
    for i in range(0, len(x), FINITE_ROWS):
        bad = ~np.isfinite(x[i : i + FINITE_ROWS]).all(axis=(1, 2))
        if bad.any():
            raise DataError(
                f"field {name!r}: sample {rows.name(i + int(bad.argmax()))} has NaN or infinite "
                "feature values; re-extract it, or leave it out of the labels"
            )


def layout_field(name: str, raw, grids: list, t: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """One field as (N, t, dim) float16 and its (N, t) mask: sample i resampled onto grids[i] when
    given (`align`), else uniformly subsampled to at most t steps (`subsample`); each sample is
    copied straight into place (no temporary copies of the field). `raw`: a Ragged, or a list of
    (feats, ts) or None per row."""
    if isinstance(raw, Ragged) and all(g is None for g in grids) and raw.lengths.max(initial=0) <= t:
        return _scatter(raw, t)  # the usual case: every sample fits, no grid
    x = np.zeros((len(raw), t, dim), np.float16)
    mask = np.zeros((len(raw), t), bool)
    kept = np.zeros(len(raw), np.int64)  # steps kept by subsampling, per sample
    for i, item in enumerate(raw):
        if item is None:
            continue
        f = item[0]
        if f.ndim != 2 or f.shape[1] != dim:
            raise DataError(f"field {name}: a sample has shape {f.shape}, expected (T, {dim}); run mmcache verify")
        if grids[i] is not None:
            f, ok = align(grids[i], item[1], f)
            x[i, : len(f)], mask[i, : len(f)] = f, ok
        elif len(f) <= t:
            x[i, : len(f)] = f
            kept[i] = len(f)
        else:
            x[i] = f[subsample(len(f), t)]
            kept[i] = t
    mask |= np.arange(t) < kept[:, None]
    return x, mask


def _scatter(raw: Ragged, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sample at most t steps long: one boolean scatter per chunk of the ragged steps into place
    (a chunk's rows were added in ascending order, so the row-major order of their mask cells is the
    order of their steps end to end)."""
    x = np.zeros((len(raw), t, raw.dim), np.float16)
    mask = np.arange(t) < raw.lengths[:, None]
    for c, (f, _) in enumerate(raw.parts):
        x[mask & (raw.chunk == c)[:, None] if len(raw.parts) > 1 else mask] = f
    return x, mask


def segment_targets(
    spans: list[tuple[float, float, str]], grid: np.ndarray | None, classes: list[str], t: int
) -> torch.Tensor:
    """Per-step class on the reference grid: the span holding the step's midpoint, else background."""
    y = torch.full((t,), -1, dtype=torch.long)
    if grid is None:
        return y
    mid = grid.mean(axis=1)
    y[: len(mid)] = 0
    for start, end, label in spans:
        inside = torch.as_tensor((mid >= start) & (mid < end))
        y[: len(mid)][inside] = classes.index(label)
    return y
