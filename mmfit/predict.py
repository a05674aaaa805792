"""Use a trained checkpoint: evaluate on a labelled cache, predict on a cache or on raw videos."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mmcache.cache import open_cache
from mmcache.encoders import encoder_arg
from mmcache.store.atomic import write_atomic
from mmcache.store.manifest import check_same_fingerprint

from .checkpoint import FOR_MODEL, check_weights, load_checkpoint
from .config import ModelConfig, TrainConfig, stored_config
from .data import Data, load_data
from .errors import DataError
from .labels import SPLITS
from .model import FusionModel, build_model, takes_pooled
from .paths import check_output_file
from .segments import merge_steps, reference_grids, sample_steps, spans_path
from .tasks import build_task
from .trainer import device_of, evaluate, predict_rows


def config_of(ckpt: dict, **overrides) -> TrainConfig:
    """The config a checkpoint was trained with (stored flat), with `overrides` (None = keep)."""
    return stored_config(ckpt["config"], **overrides)


def check_fields(ckpt: dict, cache_path: str | Path) -> None:
    """The cache must hold every field the model was trained on, made the same way."""
    cache = open_cache(cache_path)
    for name, meta in ckpt["fields"].items():
        if name not in cache.fields:
            raise DataError(
                f"cache {cache_path} has no field {name!r} that the model needs; "
                f"available: {', '.join(sorted(cache.fields)) or 'none'}"
            )
        f = cache.fields[name]
        check_same_fingerprint(name, meta, f["fingerprint_parts"], f["fingerprint"], f"cache {cache_path}")
        if meta["dim"] != f["dim"]:  # the fingerprint covers it, unless the checkpoint was edited
            raise DataError(f"field {name!r}: the model takes size {meta['dim']}, cache {cache_path} has {f['dim']}")


def model_of(ckpt: dict, cfg: ModelConfig, path) -> FusionModel:
    """The checkpoint's model with its weights. Their names and shapes are checked against a model
    built on the meta device first: nothing is allocated for sizes the file's weights do not have."""
    dims, out_dim = dict(ckpt["dims"]), len(ckpt["classes"])
    with torch.device("meta"):
        expected = {k: v.shape for k, v in build_model(cfg, dims, out_dim).state_dict().items()}
    check_weights(expected, ckpt["model"], path)
    model = build_model(cfg, dims, out_dim)
    model.load_state_dict(ckpt["model"])
    return model


def _model_and_data(ckpt: dict, cfg: TrainConfig, labelled: bool, path):
    """The checkpoint's model, task (with its state) and the data of `cfg`, laid out as in training."""
    model = model_of(ckpt, cfg.model, path)  # before the data: a bad checkpoint fails at once
    norm = {k: (v[0].numpy(), v[1].numpy()) for k, v in ckpt["norm"].items()}
    data = load_data(
        cfg.data, pooled=takes_pooled(cfg.model), classes=list(ckpt["classes"]), norm=norm, labelled=labelled
    )
    task = build_task(cfg.task, data, cfg.optim)
    task.state = dict(ckpt["task_state"])
    return model.to(device_of(cfg.device)), data, task


@dataclass
class OnSplit:
    """A checkpoint's model, task and labelled data, and the rows of one split, ready to evaluate."""

    ckpt: dict
    cfg: TrainConfig
    model: FusionModel
    data: Data
    task: object
    rows: np.ndarray

    @property
    def run(self) -> dict:
        """evaluate()'s keyword arguments for this checkpoint's device, precision and batch size."""
        cfg = self.cfg
        return {"device": device_of(cfg.device), "precision": cfg.precision, "batch_size": cfg.eval_batch_size}


def on_split(
    path, cache, split: str = "test", labels: str | None = None, batch_size: int | None = None, verify: bool = True
) -> OnSplit:
    """The checkpoint at `path` with `split` (or all) of a labelled cache: the split name and the
    cache's fields are checked first, then the model is built before any data is loaded."""
    if split not in (*SPLITS, "all"):
        raise DataError(f"unknown split {split!r}; choose {', '.join(SPLITS)} or all")
    ckpt = load_checkpoint(path, FOR_MODEL)
    check_fields(ckpt, cache)
    cfg = config_of(
        ckpt, cache=str(cache), labels=labels, eval_batch_size=batch_size, verify=verify, fields=tuple(ckpt["fields"])
    )
    model, data, task = _model_and_data(ckpt, cfg, labelled=True, path=path)
    rows = data.rows(split) if split != "all" else np.flatnonzero(data.split != "dropped")
    if not len(rows):
        raise DataError(f"split {split!r} is empty in {cache} (splits: {data.report.get('splits')})")
    return OnSplit(ckpt, cfg, model, data, task, rows)


def evaluate_checkpoint(
    path, cache, split: str = "test", labels: str | None = None, batch_size: int | None = None, verify: bool = True
) -> dict:
    """Metrics of the checkpoint at `path` on `split` (or all) of a labelled cache."""
    s = on_split(path, cache, split, labels, batch_size, verify)
    return evaluate(s.model, s.data, s.rows, s.task, split, **s.run)[1]


@dataclass
class Predictions:
    """What a prediction run wrote: `n` samples predicted into `path`; for segment tasks also the number
    of step rows, the merged spans file and its row count, and the samples with no step (no data in the
    reference field, so no time grid); from raw videos, the (source, reason) of each that failed."""

    n: int
    path: Path
    steps: int = 0
    spans: Path | None = None
    span_count: int = 0
    no_steps: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def predict_cache(path, cache, out_csv: Path, verify: bool = True) -> Predictions:
    """Predictions of the checkpoint at `path` for every sample of `cache`, written to `out_csv`
    (segment tasks: one row per valid step, and the merged spans beside it, see `write_segments`)."""
    out_csv = check_output_file(out_csv)
    ckpt = load_checkpoint(path, FOR_MODEL)
    _check_spans_file(ckpt, out_csv)
    check_fields(ckpt, cache)
    cfg = config_of(ckpt, cache=str(cache), labels=None, verify=verify, fields=tuple(ckpt["fields"]))
    model, data, task = _model_and_data(ckpt, cfg, labelled=False, path=path)
    rows = np.flatnonzero(data.split != "dropped")
    run = {"device": device_of(cfg.device), "precision": cfg.precision, "batch_size": cfg.eval_batch_size}
    y, out = predict_rows(model, data, rows, **run)
    labels, scores = task.predictions(out)
    if cfg.task == "segment":
        grids = reference_grids(cache, data.field_names[0], [data.key(r) for r in rows], cfg.data.max_steps)
        return write_segments(out_csv, data, rows, y, scores, grids, task.classes)
    write_predictions(out_csv, data, rows, labels, scores, task.classes, cfg.task)
    return Predictions(len(rows), out_csv)


def sample_id(data: Data, r: int) -> str:
    """A sample's id in predictions: the video sheet's id, else the video's file stem."""
    return data.ids[r].decode() or PurePosixPath(data.samples.source(r)).stem


def write_predictions(path: Path, data: Data, rows, labels, scores: np.ndarray, classes, task: str) -> None:
    """Written whole or not at all (atomic): a failure never leaves a half CSV under the name."""
    f = io.StringIO(newline="")
    w = csv.writer(f)
    per_class = task in ("multiclass", "multilabel")
    w.writerow(["key", "id", "source", "prediction"] + ([f"score_{c}" for c in classes] if per_class else []))
    for r, label, s in zip(rows, labels, scores, strict=True):
        extra = [f"{x:.6f}" for x in s] if per_class else []
        w.writerow([data.key(r), sample_id(data, r), data.samples.source(r), label, *extra])
    write_atomic(Path(path), f.getvalue().encode("utf-8"))


def write_segments(path: Path, data: Data, rows, y: np.ndarray, probs: np.ndarray, grids, classes) -> Predictions:
    """Segment tagging: `path` gets one row per valid step (key, id, source, step, start, end, prediction,
    score_<class>...), never padding; `spans_path(path)` the runs of one predicted label (key, id, source,
    start, end, label, score = the mean of the steps' scores of that label). Times in seconds, both
    files atomic."""
    steps_f, spans_f = io.StringIO(newline=""), io.StringIO(newline="")
    steps_w, spans_w = csv.writer(steps_f), csv.writer(spans_f)
    steps_w.writerow(["key", "id", "source", "step", "start", "end", "prediction"] + [f"score_{c}" for c in classes])
    spans_w.writerow(["key", "id", "source", "start", "end", "label", "score"])
    done = Predictions(len(rows), Path(path), spans=spans_path(path))
    for i, r in enumerate(rows):
        head = [data.key(r), sample_id(data, r), data.samples.source(r)]
        steps = sample_steps(probs[i], y[i] >= 0, grids[i], f"{head[1]!r} (key {head[0]})")
        if not steps:
            done.no_steps.append(head[2])
        for s in steps:
            steps_w.writerow(
                [*head, s.index, f"{s.start:.3f}", f"{s.end:.3f}", classes[s.label], *(f"{x:.6f}" for x in s.scores)]
            )
        spans = merge_steps(steps)
        for sp in spans:
            spans_w.writerow([*head, f"{sp.start:.3f}", f"{sp.end:.3f}", classes[sp.label], f"{sp.score:.6f}"])
        done.steps += len(steps)
        done.span_count += len(spans)
    write_atomic(Path(path), steps_f.getvalue().encode("utf-8"))
    write_atomic(done.spans, spans_f.getvalue().encode("utf-8"))
    return done


def _check_spans_file(ckpt: dict, out_csv: Path) -> None:
    """A segment model also writes the spans file: refuse an unwritable one before any work."""
    if ckpt["config"].get("task") == "segment":
        check_output_file(spans_path(out_csv))


def predict_videos(path, videos: list[str], out_csv: Path, work: Path | None = None, progress=None) -> Predictions:
    """Extract exactly the encoders recorded in the checkpoint, then predict (the deploy path). The
    features go to `work`/cache when given (kept), else to a temporary folder that is removed in any
    case, failure or interrupt included. `progress` (mmcache's Progress callbacks, e.g. the CLI's
    rich bars) follows the extraction; videos that fail are returned in `failures`, none left ok is
    a DataError naming the first."""
    import mmcache

    out_csv = check_output_file(out_csv)  # before the extraction, which may take long
    ckpt = load_checkpoint(path, FOR_MODEL)
    _check_spans_file(ckpt, out_csv)
    encoders = [encoder_arg(name, meta) for name, meta in ckpt["fields"].items()]
    with _work_dir(work) as root:
        _say(progress, f"extracting {', '.join(ckpt['fields'])} as the model was trained, into {root / 'cache'}")
        mmcache.extract(videos, encoders, root / "cache", progress=progress)
        failures, ok = _outcomes(root / "cache")
        if not ok:
            first = f"; first: {failures[0][1]}" if failures else ""
            raise DataError(f"no video could be extracted ({len(failures)} failed{first})")
        _say(progress, f"predicting {ok} video(s)")
        done = predict_cache(path, root / "cache", out_csv)
    done.failures = failures
    return done


@contextmanager
def _work_dir(work: Path | None) -> Iterator[Path]:
    """The user's `work` folder (kept), or a temporary one removed on leaving, whatever happened."""
    if work:
        Path(work).mkdir(parents=True, exist_ok=True)
        yield Path(work)
        return
    with tempfile.TemporaryDirectory(prefix="mmfit-predict-") as temp:
        yield Path(temp)


def _outcomes(cache) -> tuple[list[tuple[str, str]], int]:
    """The failed samples of the work cache as (source, reason), and how many are ok."""
    with open_cache(cache) as c:
        rows = c.samples()
    failed = [(r["source"], r.get("error") or "failed") for r in rows if r["status"] == "failed"]
    return failed, sum(r["status"] == "ok" for r in rows)


def _say(progress, text: str) -> None:
    """A line above the progress bars, when the progress has a message callback (the CLI's does)."""
    if progress is not None and hasattr(progress, "message"):
        progress.message(text)


__all__ = ["Predictions", "evaluate_checkpoint", "predict_cache", "predict_videos"]
