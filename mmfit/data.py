"""Cache -> the samples, targets, splits and per-field features of a run, in memory or streamed by shard.

`load_data` chains the steps: open (and verify) the caches, choose the fields, join the labels and
build the targets, split, then attach the features (laid out by layout.py, in memory or through
stream.py), take the normalisation statistics, and pool when the caller says the model only sees
each field's mean over time. `Data` holds the result and cuts it into batches (batches.py).
Missing modalities are masks (never silent zeros), counted per field and split in `Data.report`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmcache.cache import Cache, open_cache, verify_cache
from mmcache.errors import CacheError
from mmcache.store.manifest import fresh_stats
from mmcache.transport import configured

from .batches import Batch, Chunk, Stats, memory_chunks, normalise, pool_field
from .config import DataConfig
from .errors import DataError
from .labels import SPLITS, LabelTable, from_csv, from_metadata, metadata_columns
from .layout import field_arrays, segment_targets
from .samples import SampleRows, ok_samples
from .stream import StreamSource

BACKGROUND = "background"
FIELD_META = ("encoder", "options", "fingerprint", "fingerprint_parts", "dim", "modality")


@dataclass
class Data:
    """A loaded data set: per-row keys, targets and split, the fields' descriptions and statistics,
    and the features (in memory, or a StreamSource), cut into normalised batches on demand."""

    samples: SampleRows  # the rows' keys, ids, caches and (read when asked for) sources
    y: torch.Tensor
    split: np.ndarray  # (N,) str
    classes: list[str]  # class vocabulary (regression: target names)
    field_names: list[str]
    dims: dict[str, int]
    fingerprints: dict[str, str]
    field_meta: dict[str, dict] = field(default_factory=dict)  # how each field was made (from the manifest)
    norm: dict[str, Stats] = field(default_factory=dict)  # field -> (mean, std)
    report: dict = field(default_factory=dict)
    feats: dict[str, torch.Tensor] = field(default_factory=dict)  # in memory: (N, T, D) float16
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # (N, T) bool
    source: StreamSource | None = None  # when streaming
    spans: list | None = None  # segment task: per sample (start, end, label) spans
    normalised: bool = False  # features already normalised (pooled data)

    @property
    def keys(self) -> np.ndarray:
        """(N,) bytes ("S"): the sample keys (`key(i)`: one as str)."""
        return self.samples.keys

    @property
    def ids(self) -> np.ndarray:
        """(N,) UTF-8 bytes: each sample's id, b"" without one."""
        return self.samples.ids

    @property
    def sources(self) -> np.ndarray:
        """(N,) UTF-8 bytes: each sample's source (read from the caches on first use)."""
        return self.samples.sources

    def key(self, i: int) -> str:
        return self.samples.key(i)

    def rows(self, split: str) -> np.ndarray:
        """Row indices of `split` (train, val, test; dropped rows have no data in any field)."""
        return np.flatnonzero(self.split == split)

    def batches(self, rows: np.ndarray, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Batches over `rows`, shuffled with `generator` when given, features normalised."""
        if self.source is not None:
            chunks = self.source.chunks(rows, batch_size, generator)
        else:
            chunks = memory_chunks(self.feats, self.masks, rows, batch_size, generator)
        for chunk in chunks:
            if chunk.grids is not None and self.spans is not None:  # streamed: the grid is known only now
                self.fill_step_targets(chunk.idx, chunk.grids)
            yield self.make_batch(chunk)

    def make_batch(self, chunk: Chunk) -> Batch:
        """The chunk's features as float32, normalised (unless pooling did it already), with its targets."""
        norm = {} if self.normalised or chunk.normalised else self.norm
        feats = {
            f: normalise(chunk.feats[f].float(), chunk.masks[f], norm[f]) if f in norm else chunk.feats[f].float()
            for f in self.field_names
        }
        return Batch(chunk.idx, feats, chunk.masks, self.y.index_select(0, chunk.idx.long()))

    def fill_step_targets(self, idx: torch.Tensor, grids: list) -> None:
        """Segment tagging: the per-step classes of rows `idx` on their reference grids."""
        t = self.y.shape[1]
        self.y[idx] = torch.stack(
            [segment_targets(self.spans[i], grid, self.classes, t) for i, grid in zip(idx.tolist(), grids, strict=True)]
        )

    def pool(self) -> None:
        """Replace each field's steps by their masked mean, (N, 1, D) float32, normalised, once.

        Fusions that only look at a field's mean over time (concat, late, gated) then get exactly the
        inputs they would compute themselves, at 1/T of the per-batch cost."""
        for n in self.field_names:
            self.feats[n], self.masks[n] = pool_field(self.feats[n], self.masks[n], self.norm.get(n))
        self.normalised = True


def open_caches(
    paths: list[str], verify: bool = True, storage_options: dict | None = None, cache_dir: str | None = None
) -> list[Cache]:
    """The caches at `paths`, their fingerprints agreeing. A local cache is verified first (`verify`);
    a remote one is checked as it is read (every file's size and sha256: verifying it first would
    download it twice). Remote ones are reached with `storage_options` and the fetch cache `cache_dir`."""
    with configured(storage_options, cache_dir):
        return _open_caches(paths, verify)


def _open_caches(paths: list[str], verify: bool) -> list[Cache]:
    opened = []
    for path in paths:
        cache = open_cache(path)
        if verify and not cache.transport.remote:
            problems = verify_cache(path)
            if problems:
                raise CacheError(
                    f"cache {path} fails verification ({problems[0]}); fix or re-extract it, "
                    "or pass --no-verify to train on it anyway (not recommended)"
                )
        for other in opened:
            other.check_compatible(cache)
        opened.append(cache)
    return opened


def choose_fields(wanted: tuple[str, ...] | None, cache_list: list[Cache]) -> list[str]:
    """The fields `wanted` (all that every cache has, when None), each checked to be in every cache."""
    available = sorted(set.intersection(*(set(c.fields) for c in cache_list)))
    wanted = list(wanted) if wanted else available
    lacking = [f for f in wanted if f not in available]
    if lacking:
        raise DataError(f"field {lacking[0]!r} is not in the cache; available: {', '.join(available) or 'none'}")
    if not wanted:
        raise DataError("the cache has no fields")
    return wanted


def load_data(
    cfg: DataConfig,
    *,
    pooled: bool = False,
    classes: list[str] | None = None,
    norm: dict | None = None,
    labelled: bool = True,
) -> Data:
    """Features, targets and splits for `cfg`. With `pooled` (the caller's model only sees each field's
    mean over time: model.takes_pooled), in-memory features are pooled once, after the statistics.
    A checkpoint's `classes` and `norm` are reused when given (eval/predict); with `labelled=False`
    every ok sample is loaded, as the test split."""
    training = classes is None  # eval/predict reuse a checkpoint's vocabulary
    cache_list = open_caches(cfg.caches, cfg.verify, cfg.storage_options, cfg.cache_dir)
    names = choose_fields(cfg.fields, cache_list)
    samples = ok_samples(cache_list, _columns(cfg, labelled))
    table, rows, classes, y = _targets(cfg, samples, classes, labelled)
    data = _new_data(rows, y, classes, names, cache_list[0])
    if cfg.task == "segment":
        data.spans = [table.spans.get(i, []) for i in table.rows.tolist()]
    data.report = _sample_counts(samples, rows, table, labelled)
    if labelled:
        _assign_splits(cfg, data, table, training=training)
    else:
        data.split[:] = "test"
    _attach_features(cfg, data, rows, cache_list)
    _check_present(data)
    if pooled and data.source is not None:
        data.source.keep_pooled()  # from the statistics pass on, each row's mean is kept on disk
    _set_norm(cfg, data, cache_list, norm)
    if pooled and data.source is None:
        data.pool()  # after the statistics, which are over steps
    elif pooled:
        data.source.pool_with(data.norm)  # the stream's reader pools (and normalises) each window
    return data


def _columns(cfg: DataConfig, labelled: bool) -> tuple[str, ...]:
    """The samples index columns the labels are joined with (besides key and id)."""
    if not labelled:
        return ()
    return ("source", "aliases") if cfg.labels else metadata_columns(list(cfg.label_columns) or [cfg.label_column])


def _targets(cfg: DataConfig, samples: SampleRows, classes: list[str] | None, labelled: bool):
    """(label table, the samples that have labels, class vocabulary, their targets). Unlabelled:
    every sample, with placeholder targets."""
    if not labelled:
        n = len(samples)
        y = torch.full((n, cfg.max_steps), -1) if cfg.task == "segment" else torch.zeros(n, dtype=torch.long)
        table = LabelTable.empty()
        table.rows, table.split = np.arange(n), np.zeros(n, "S1")
        return table, samples, classes, y
    table = _labels(cfg, samples)
    if not len(table.rows):
        raise DataError(f"no cache sample has a label in {table.source}" + _mismatch(table, samples))
    rows = samples.take(table.rows)
    classes, y = TARGETS[cfg.task](cfg, table, classes)
    table.values = []  # the targets hold them now
    samples.columns = rows.columns = {}  # only the labels needed them
    return table, rows, classes, y


def _new_data(rows: SampleRows, y: torch.Tensor, classes: list[str] | None, names: list[str], cache: Cache) -> Data:
    """Data for sample `rows` and their targets, fields described by `cache`'s manifest; no split yet."""
    return Data(
        samples=rows,
        y=y,
        split=np.array([""] * len(rows), dtype=object),
        classes=list(classes or []),
        field_names=names,
        dims={n: cache.fields[n]["dim"] for n in names},
        fingerprints={n: cache.fields[n]["fingerprint"] for n in names},
        field_meta={n: {k: cache.fields[n][k] for k in FIELD_META} for n in names},
    )


def _sample_counts(samples: SampleRows, rows: SampleRows, table: LabelTable, labelled: bool) -> dict:
    """The report's counts: ok samples, labelled and unlabelled ones, label ids not in the cache."""
    return {
        "samples": len(samples),
        "labelled": len(rows) if labelled else 0,
        "unlabelled": len(samples) - len(rows) if labelled else len(samples),
        "unknown_label_ids": table.unknown[:50],
        "unknown_label_count": len(table.unknown),
    }


def _mismatch(table: LabelTable, samples: SampleRows) -> str:
    """What the label ids and the cache's samples look like, when none of them match."""
    theirs = ", ".join(repr(i) for i in table.unknown[:3])
    ours = ", ".join(repr(samples.shown(i)) for i in range(min(3, len(samples))))
    return (
        (f": its ids ({theirs}{', ...' if len(table.unknown) > 3 else ''})" if theirs else "")
        + f"; the cache's samples are named by id, file name or stem, e.g. {ours} (keys like {samples.key(0)!r})"
        if len(samples)
        else ""
    )


def _labels(cfg: DataConfig, samples: SampleRows) -> LabelTable:
    columns = list(cfg.label_columns) or [cfg.label_column]
    if cfg.labels:
        return from_csv(Path(cfg.labels), samples, columns, segments=cfg.task == "segment")
    if cfg.task == "segment":
        raise DataError("task segment needs --labels with key/id, start, end, label rows")
    return from_metadata(samples, columns)


def _fixed(classes: list[str] | None, found: set[str]) -> list[str]:
    """The checkpoint's vocabulary when given (labels outside it are an error), else the sorted labels."""
    if classes is None:
        return sorted(found)
    unknown = sorted(found - set(classes))
    if unknown:
        raise DataError(f"label {unknown[0]!r} is not one of the model's classes: {', '.join(classes)}")
    return list(classes)


def _multiclass(cfg: DataConfig, table: LabelTable, classes: list[str] | None = None):
    found, inverse = np.unique(table.values[0], return_inverse=True)
    names = [n.decode("utf-8") for n in found.tolist()]  # UTF-8 bytes sort as the strings do
    classes = _fixed(classes, set(names))
    if len(classes) < 2:
        raise DataError(f"multiclass needs at least 2 classes; found {classes}")
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, torch.from_numpy(np.array([lookup[n] for n in names], np.int64)[inverse.reshape(-1)])


def _numbers(table: LabelTable, what: str) -> torch.Tensor:
    """The label columns as float32 targets (M, columns)."""
    try:
        y = np.stack([np.array([float(v.decode()) for v in col.tolist()], np.float32) for col in table.values], 1)
    except ValueError as e:
        raise DataError(f"{what}: {e}") from None
    return torch.from_numpy(y.reshape(len(table.rows), len(table.values)))


def _multilabel(cfg: DataConfig, table: LabelTable, classes: list[str] | None = None):
    if cfg.label_columns:
        return list(cfg.label_columns), _numbers(table, "multilabel columns must hold 0/1")
    sets = [{p.strip() for p in v.decode().replace(";", "|").split("|") if p.strip()} for v in table.values[0].tolist()]
    classes = _fixed(classes, set().union(*sets))
    y = torch.zeros(len(sets), len(classes))
    for i, labels in enumerate(sets):
        for c in labels:
            y[i, classes.index(c)] = 1
    return classes, y


def _regression(cfg: DataConfig, table: LabelTable, classes: list[str] | None = None):
    return list(cfg.label_columns) or [cfg.label_column], _numbers(table, "regression targets must be numbers")


def _segment(cfg: DataConfig, table: LabelTable, classes: list[str] | None = None):
    found = {lab for spans in table.spans.values() for _, _, lab in spans} | {BACKGROUND}
    classes = _fixed(classes, found) if classes else [BACKGROUND] + sorted(found - {BACKGROUND})
    # per-step targets are filled in when the reference grid is known (features load)
    return classes, torch.full((len(table.rows), cfg.max_steps), -1, dtype=torch.long)


# task -> (cfg, table, classes) -> (classes, targets): a checkpoint's classes are kept when given
TARGETS = {"multiclass": _multiclass, "multilabel": _multilabel, "regression": _regression, "segment": _segment}


def _assign_splits(cfg: DataConfig, data: Data, table: LabelTable, training: bool = True) -> None:
    """The labels' splits when they give them (all or none), else a seeded one; a training run also
    needs a train split and, for multiclass, every val/test class in train."""
    given = table.split
    if (given != b"").any():
        if not (given != b"").all():
            raise DataError("some labelled samples have a split and others do not; give every row a split")
        data.split[:] = [g.decode() for g in given.tolist()]
    else:
        data.split[:] = _random_split(cfg, data)
    data.report["splits"] = {s: int((data.split == s).sum()) for s in SPLITS}
    if not training:
        return
    if cfg.task == "multiclass":
        train = set(data.y[data.rows("train")].tolist())
        for split in ("val", "test"):
            absent = sorted(
                {data.classes[c] for c in data.y[data.rows(split)].tolist()} - {data.classes[c] for c in train}
            )
            if absent:
                raise DataError(f"class {absent[0]!r} is in the {split} split but not in train")
    if not len(data.rows("train")):
        raise DataError("the train split is empty")


def _random_split(cfg: DataConfig, data: Data) -> np.ndarray:
    """Seeded split; stratified by class for multiclass (each class split in the same fractions)."""
    rng = np.random.default_rng(cfg.seed)
    out = np.array(["train"] * len(data.keys), dtype=object)
    groups = data.y.numpy() if cfg.task == "multiclass" else np.zeros(len(data.keys), int)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        rows = rows[rng.permutation(len(rows))]
        n_val, n_test = (int(round(len(rows) * f)) for f in (cfg.val_fraction, cfg.test_fraction))
        if len(rows) >= 3:
            n_val, n_test = max(n_val, 1 if cfg.val_fraction else 0), max(n_test, 1 if cfg.test_fraction else 0)
        out[rows[:n_val]] = "val"
        out[rows[n_val : n_val + n_test]] = "test"
    return out


def _attach_features(cfg: DataConfig, data: Data, rows: SampleRows, cache_list: list[Cache]) -> None:
    """The features of `rows`: loaded into memory, or read shard by shard (a StreamSource) when
    `streaming` says so or, for auto, when their padded size would exceed `memory_budget_gb`."""
    padded = _padded_bytes(cfg.max_steps, len(rows), data.dims, cache_list)
    streams = padded > cfg.memory_budget_gb * 2**30 if cfg.streaming == "auto" else cfg.streaming == "always"
    if streams:
        data.source = StreamSource(rows, data.field_names, data.dims, cfg.max_steps, cfg.aligned)
        data.source.window = _window(padded, cfg.memory_budget_gb, len(data.source.groups))
        data.report["streaming"] = {"shards": len(data.source.groups), "window": data.source.window}
    else:
        _load_features(data, rows, cfg.max_steps, cfg.aligned)


WINDOW_SHARE = 8  # a streamed window (shuffle buffer) holds at most 1/WINDOW_SHARE of the memory budget
WINDOW_MAX = 16  # shards


def _window(padded: int, budget_gb: float, shards: int) -> int:
    """Shards per streamed window: as many as fit 1/WINDOW_SHARE of the budget (PREFETCH + 1 windows
    are held at once), 1 to WINDOW_MAX (`padded`: the bytes of every row, over `shards` shards)."""
    per_shard = padded / max(shards, 1)
    return int(np.clip(budget_gb * 2**30 / WINDOW_SHARE // max(per_shard, 1), 1, WINDOW_MAX))


def _padded_bytes(max_steps: int, n_rows: int, dims: dict[str, int], cache_list: list[Cache]) -> int:
    """The size of `n_rows` samples' float16 features padded to the longest sample (at most max_steps)."""
    steps = {n: max((e["steps"] for c in cache_list for e in c.fields[n]["files"].values()), default=0) for n in dims}
    return sum(n_rows * min(max_steps, max(steps[n], 1)) * d * 2 for n, d in dims.items())


def _load_features(data: Data, rows: SampleRows, max_steps: int, aligned: bool) -> None:
    """Every field of `rows` into memory (layout.field_arrays), segment targets on the grid, and the
    report's count of samples without each field per split."""
    feats, masks, grids = field_arrays(rows, data.field_names, data.dims, max_steps, aligned)
    data.feats = {n: torch.from_numpy(a) for n, a in feats.items()}
    data.masks = {n: torch.from_numpy(m) for n, m in masks.items()}
    if data.spans is not None:
        data.fill_step_targets(torch.arange(len(rows)), grids)
    data.report["missing"] = {
        n: {s: int((~data.masks[n][data.rows(s)].any(1)).sum()) for s in SPLITS} for n in data.field_names
    }


def _check_present(data: Data) -> None:
    """In-memory samples with data in no field are marked `dropped` (and counted); none left is an error."""
    if data.source is not None:
        return
    none = ~torch.stack([data.masks[n].any(1) for n in data.field_names]).any(0)
    if none.any():
        data.report["no_modality"] = int(none.sum())
        keep = np.flatnonzero(~none.numpy())
        data.split[np.flatnonzero(none.numpy())] = "dropped"
        if not len(keep):
            raise DataError("no labelled sample has data in any requested field")


def _set_norm(cfg: DataConfig, data: Data, cache_list: list[Cache], norm: dict | None) -> None:
    """A checkpoint's statistics when given; else, with `normalize`, the caches' recorded ones when
    every field has them, otherwise the train split's."""
    if norm is not None:
        data.norm = norm
    elif cfg.normalize:
        cached = _cache_stats(cache_list, data.field_names)
        data.norm = cached if cached is not None else _train_stats(data)
        data.report["norm"] = "cache" if cached is not None else "train"
    else:
        data.report["norm"] = "off"


def _cache_stats(cache_list: list[Cache], names: list[str]) -> dict[str, Stats] | None:
    """Per-field mean/std recorded by `mmcache stats` (all stored steps of the cache, float64), pooled
    over several caches by step counts; None unless every field has fresh stats in every cache, in
    which case the train split's statistics are computed instead (`_train_stats`)."""

    out = {}
    for n in names:
        found = [fresh_stats(c.fields[n]) for c in cache_list]
        if any(st is None or not st["steps"] for st in found):
            return None
        steps = np.array([st["steps"] for st in found], np.float64)[:, None]
        means = np.array([st["mean"] for st in found], np.float64)
        stds = np.array([st["std"] for st in found], np.float64)
        mean = (steps * means).sum(0) / steps.sum()
        var = (steps * (stds**2 + means**2)).sum(0) / steps.sum() - mean**2
        std = np.sqrt(np.maximum(var, 0)) + 1e-6
        out[n] = (mean.astype(np.float32), std.astype(np.float32))
    return out


STATS_ROWS = 512  # rows per chunk of the in-memory statistics (bounds the float64 copy)


def _train_stats(data: Data) -> dict[str, Stats]:
    """Per-field mean/std over the valid steps of the train split, accumulated in float64, a chunk of
    rows at a time (streaming: one pass over the shards for every field)."""
    rows = data.rows("train")
    acc = {n: [np.zeros(data.dims[n]), np.zeros(data.dims[n]), 0] for n in data.field_names}
    if data.source is not None:
        parts = ({n: (b.feats[n], b.masks[n]) for n in data.field_names} for b in data.batches(rows, 1024))
    else:
        chunks = (torch.as_tensor(rows[i : i + STATS_ROWS]) for i in range(0, len(rows), STATS_ROWS))
        parts = (
            {n: (data.feats[n].index_select(0, idx), data.masks[n].index_select(0, idx)) for n in data.field_names}
            for idx in chunks
        )
    for part in parts:
        for n, (x, m) in part.items():
            v = x.numpy()[m.numpy()].astype(np.float64)
            a = acc[n]
            a[0] += v.sum(0)
            a[1] += np.einsum("ij,ij->j", v, v)
            a[2] += len(v)
    stats = {}
    for n, (total, sq, count) in acc.items():
        mean = total / max(count, 1)
        std = np.sqrt(np.maximum(sq / max(count, 1) - mean**2, 0)) + 1e-6
        stats[n] = (mean.astype(np.float32), std.astype(np.float32))
    return stats
