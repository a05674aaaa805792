"""The training config: one flat frozen dataclass, built once at the edge from YAML and/or flags and
checked against schemas/train-config.schema.json (the schema, the YAML keys, the flags and the dict a
checkpoint stores all stay flat).

Inside the library each function takes only the part it uses: `cfg.data` (what the loader reads),
`cfg.model` (what builds the model) and `cfg.optim` (the loss and its optimisation), each a frozen
view of the same values. The remaining options (seed, device, precision, eval_batch_size, out,
tensorboard, unimodal_baselines) belong to the run itself and are read by the orchestration only:
`train.Trainer`, the CLI, sweep and predict's entry points."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from mmcache.schema import schema_errors

from .errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a run, flat (as in the YAML, the flags and checkpoints); library functions
    take its parts: `data`, `model`, `optim`."""

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
    out: str | None = None  # run folder; None = the next free runs/<fusion>-NNN
    tensorboard: bool = False  # only when asked: nothing is sent anywhere
    unimodal_baselines: bool = False  # also train one model per field and compare
    verify: bool = True  # verify the cache (sizes, hashes, counts) before training
    streaming: str = "auto"  # auto | never | always: stream shards instead of loading into memory
    memory_budget_gb: float = 4.0  # auto streams when the padded features would exceed this
    storage_options: dict = field(default_factory=dict)  # for remote caches' fsspec backend; never stored
    cache_dir: str | None = None  # keep fetched remote files here by sha256 (default $MMCACHE_CACHE_DIR)

    def to_dict(self) -> dict:
        """The flat dict of every option (tuples as lists): config.yaml and checkpoints' `config`.
        Storage options are left out: they may hold credentials, and belong to the machine, not the run."""
        d = asdict(self)
        d.pop("storage_options")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @property
    def data(self) -> DataConfig:
        """What the loader reads (data.load_data)."""
        return _part(DataConfig, self)

    @property
    def model(self) -> ModelConfig:
        """What builds the model (model.build_model)."""
        return _part(ModelConfig, self)

    @property
    def optim(self) -> OptimConfig:
        """The loss and its optimisation (tasks.build_task, the training loop)."""
        return _part(OptimConfig, self)


@dataclass(frozen=True)
class DataConfig:
    """The caches, fields and labels to load, how features are laid out, split and normalised.
    A view of TrainConfig (`cfg.data`), where the options are described and have their defaults."""

    cache: str | tuple[str, ...]
    labels: str | None
    label_column: str
    label_columns: tuple[str, ...]
    fields: tuple[str, ...] | None
    task: str  # the targets to build (and segment tagging aligns the fields)
    max_steps: int
    align: bool
    normalize: bool
    seed: int  # the seeded split when the labels have none
    val_fraction: float
    test_fraction: float
    verify: bool
    streaming: str
    memory_budget_gb: float
    storage_options: dict
    cache_dir: str | None

    @property
    def caches(self) -> list[str]:
        """The cache paths or URLs, as a list."""
        return [self.cache] if isinstance(self.cache, str) else list(self.cache)

    @property
    def aligned(self) -> bool:
        """Whether every field is resampled onto the first field's grid (always for segment tagging)."""
        return self.align or self.task == "segment"


@dataclass(frozen=True)
class ModelConfig:
    """The fusion, its head and their sizes. A view of TrainConfig (`cfg.model`). Fusion classes name
    their constructor parameters after these options (model.build_fusion passes each its own)."""

    task: str  # segment tagging builds a per-step model
    fusion: str
    head: str
    hidden: int
    layers: int
    heads: int
    latents: int
    bottleneck_tokens: int
    dropout: float
    modality_dropout: float


@dataclass(frozen=True)
class OptimConfig:
    """The loss settings, the optimizer and its schedule, and when to stop. A view of TrainConfig
    (`cfg.optim`)."""

    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    epochs: int
    batch_size: int
    warmup: float
    grad_clip: float | None
    label_smoothing: float
    class_weights: str
    monitor: str
    patience: int


def _part(cls: type, cfg: TrainConfig):
    return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def arguments_for(target: Callable, offered: Mapping[str, object]) -> dict:
    """The entries of `offered` that `target` (a function, or a class: its constructor) declares as
    parameters. A target taking **kwargs is refused: it must declare the arguments it uses."""
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"{target.__qualname__} takes **kwargs; it must declare the arguments it uses")
    return {name: offered[name] for name in params if name in offered}


TUPLES = {"cache", "label_columns", "fields"}
RESUMABLE = ("epochs", "patience", "out", "device", "eval_batch_size", "verify", "tensorboard", "cache_dir")
"""What a resumed run may change (`--resume`): more epochs or patience, and where and how it runs;
never what it learns from."""


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


def stored_config(stored: dict, **overrides) -> TrainConfig:
    """The config a checkpoint was trained with (stored flat by `to_dict`), with `overrides`
    (None = keep the stored value)."""
    cfg = dict(stored)
    for k in TUPLES:
        if isinstance(cfg.get(k), list):
            cfg[k] = tuple(cfg[k])
    return replace(TrainConfig(**cfg), **{k: v for k, v in overrides.items() if v is not None})


def with_fields(cfg: TrainConfig, fields_: tuple[str, ...], out: str) -> TrainConfig:
    """The same run on other fields, into `out` (a unimodal baseline)."""
    return replace(cfg, fields=fields_, out=out, unimodal_baselines=False)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
