"""The training config: one frozen dataclass, built once at the edge from YAML and/or flags and
checked against schemas/train-config.schema.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from mmcache.schema import schema_errors

from .errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    cache: str | tuple[str, ...] = "cache"  # cache directory, or several with agreeing fingerprints
    labels: str | None = None  # label CSV; None = labels from the samples index metadata
    label_column: str = "label"  # column with the class (multilabel: names joined by | or ;)
    label_columns: tuple[str, ...] = ()  # multilabel as several 0/1 columns instead
    fields: tuple[str, ...] | None = None  # cache fields to fuse; None = all of them
    task: str = "multiclass"  # multiclass | multilabel | segment | regression
    fusion: str = "concat"  # concat | late | gated | attention | bottleneck | perceiver
    head: str = "linear"  # linear | mlp
    hidden: int = 256  # width of projections, tokens and the mlp head
    layers: int = 2  # transformer layers (attention, bottleneck, perceiver)
    heads: int = 4  # attention heads
    latents: int = 8  # perceiver latent queries
    bottleneck_tokens: int = 4  # MBT fusion tokens
    dropout: float = 0.1  # dropout inside fusion and head
    modality_dropout: float = 0.0  # chance to hide a whole modality of a training sample
    max_steps: int = 32  # time steps kept per field (uniformly subsampled when longer)
    align: bool = False  # resample every field onto the first field's time grid (always on for segment)
    normalize: bool = True  # per-field standardisation: the cache's `mmcache stats` if recorded, else train split
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.01
    momentum: float = 0.9  # sgd only
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 512  # metrics do not depend on it: they are computed over the whole split
    warmup: float = 0.05  # fraction of all steps spent warming up, then cosine decay
    grad_clip: float | None = 1.0  # max gradient norm; None = off
    label_smoothing: float = 0.0  # multiclass and segment
    class_weights: str = "none"  # none | auto (inverse class frequency / pos_weight)
    monitor: str = "auto"  # e.g. val/macro_f1, val/loss; auto = the task's main metric
    patience: int = 10  # epochs without improvement before stopping
    seed: int = 0
    val_fraction: float = 0.15  # used when the labels have no split column
    test_fraction: float = 0.15
    device: str = "auto"  # auto = cuda when available
    precision: str = "auto"  # auto = bf16 autocast on cuda, fp32 on cpu
    out: str = "runs/run"  # run directory
    tensorboard: bool = False  # only when asked: nothing is sent anywhere
    unimodal_baselines: bool = False  # also train one model per field and compare
    verify: bool = True  # verify the cache (sizes, hashes, counts) before training
    streaming: str = "auto"  # auto | never | always: stream shards instead of loading into memory
    memory_budget_gb: float = 4.0  # auto streams when the padded features would exceed this

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


TUPLES = {"cache", "label_columns", "fields"}


def build_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """Defaults < YAML file < explicit overrides (None means 'not given')."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of option: value")
    data.update({k: v for k, v in overrides.items() if v is not None})
    errs = schema_errors(data, "train-config")
    if errs:
        raise ConfigError(f"config: {errs[0]}")
    for k in TUPLES & set(data):
        if isinstance(data[k], list):
            data[k] = tuple(data[k])
    cfg = TrainConfig(**data)
    if cfg.task == "segment" and cfg.fusion == "late":
        raise ConfigError("fusion 'late' has no per-step output; use another fusion for task segment")
    return cfg


def caches(cfg: TrainConfig) -> list[str]:
    return [cfg.cache] if isinstance(cfg.cache, str) else list(cfg.cache)


def with_fields(cfg: TrainConfig, fields_: tuple[str, ...], out: str) -> TrainConfig:
    return replace(cfg, fields=fields_, out=out, unimodal_baselines=False)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
