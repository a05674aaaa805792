"""Use a trained checkpoint: evaluate on a labelled cache, predict on a cache or on raw videos."""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mmcache.cache import open_cache
from mmcache.encoders import encoder_arg
from mmcache.store.atomic import write_atomic
from mmcache.store.manifest import check_same_fingerprint

from .checkpoint import FOR_MODEL, check_weights, load_checkpoint
from .config import ModelConfig, TrainConfig
from .data import Data, load_data
from .errors import DataError
from .labels import SPLITS
from .model import FusionModel, build_model, takes_pooled
from .paths import check_output_file
from .tasks import build_task
from .train import device_of, evaluate, predict_rows


def config_of(ckpt: dict, **overrides) -> TrainConfig:
    """The config a checkpoint was trained with (stored flat), with `overrides` (None = keep)."""
    cfg = dict(ckpt["config"])
    for k in ("cache", "fields", "label_columns"):
        if isinstance(cfg.get(k), list):
            cfg[k] = tuple(cfg[k])
    return replace(TrainConfig(**cfg), **{k: v for k, v in overrides.items() if v is not None})


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


def evaluate_checkpoint(
    path, cache, split: str = "test", labels: str | None = None, batch_size: int | None = None, verify: bool = True
) -> dict:
    """Metrics of the checkpoint at `path` on `split` (or all) of a labelled cache."""
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
    run = {"device": device_of(cfg.device), "precision": cfg.precision, "batch_size": cfg.eval_batch_size}
    return evaluate(model, data, rows, task, split, **run)[1]


def predict_cache(path, cache, out_csv: Path, verify: bool = True) -> int:
    """Predictions of the checkpoint at `path` for every sample of `cache`, written to `out_csv`."""
    out_csv = check_output_file(out_csv)
    ckpt = load_checkpoint(path, FOR_MODEL)
    check_fields(ckpt, cache)
    cfg = config_of(ckpt, cache=str(cache), labels=None, verify=verify, fields=tuple(ckpt["fields"]))
    model, data, task = _model_and_data(ckpt, cfg, labelled=False, path=path)
    rows = np.flatnonzero(data.split != "dropped")
    run = {"device": device_of(cfg.device), "precision": cfg.precision, "batch_size": cfg.eval_batch_size}
    _, out = predict_rows(model, data, rows, **run)
    labels, scores = task.predictions(out)
    write_predictions(out_csv, data, rows, labels, scores, task.classes, cfg.task)
    return len(rows)


def write_predictions(path: Path, data: Data, rows, labels, scores: np.ndarray, classes, task: str) -> None:
    """Written whole or not at all (atomic): a failure never leaves a half CSV under the name."""
    f = io.StringIO(newline="")
    w = csv.writer(f)
    per_class = task in ("multiclass", "multilabel")
    w.writerow(["key", "id", "source", "prediction"] + ([f"score_{c}" for c in classes] if per_class else []))
    for r, label, s in zip(rows, labels, scores, strict=True):
        extra = [f"{x:.6f}" for x in s] if per_class else []
        w.writerow([data.keys[r], data.ids[r] or "", data.sources[r], label, *extra])
    write_atomic(Path(path), f.getvalue().encode("utf-8"))


def predict_videos(path, videos: list[str], out_csv: Path, work: Path | None = None) -> int:
    """Extract exactly the encoders recorded in the checkpoint, then predict (the deploy path)."""
    import mmcache

    out_csv = check_output_file(out_csv)  # before the extraction, which may take long
    ckpt = load_checkpoint(path, FOR_MODEL)
    encoders = [encoder_arg(name, meta) for name, meta in ckpt["fields"].items()]
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="mmfit-predict-"))
    mmcache.extract(videos, encoders, work / "cache")
    return predict_cache(path, work / "cache", out_csv)


__all__ = ["evaluate_checkpoint", "predict_cache", "predict_videos"]
