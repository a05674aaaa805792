"""mmfit's Python API, for notebooks and scripts; the CLI calls the same functions.

    import mmfit
    run = mmfit.trainer(cache="cache/", labels="labels.csv", fusion="gated", epochs=20)
    run.metrics["test"]["accuracy"], run.path, run.report
    run.predict(cache="new-cache/", out="predictions.csv")
    mmfit.evaluate(run.best, cache="cache/", split="test")
    run = mmfit.load_run("runs/gated-001")  # a finished run, from its folder

Options are the train config's (schemas/train-config.schema.json), as keyword arguments and/or a
YAML file (`config=`), exactly as the CLI's flags."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from .config import RESUMABLE, TUPLES, TrainConfig, build_config, stored_config, with_fields
from .errors import ConfigError


@dataclass
class Run:
    """A finished run: its folder, config, metrics and report, and the model's predictions."""

    path: Path
    summary: dict = field(repr=False)  # report.json
    result: object = field(default=None, repr=False)  # trainer.RunResult (model and task) when trained here

    @property
    def config(self) -> TrainConfig:
        return stored_config(yaml.safe_load((self.path / "config.yaml").read_text("utf-8")))

    @property
    def metrics(self) -> dict:
        """{"val": ..., "test": ...} at the best weights, and each unimodal baseline's."""
        s = self.summary
        return {"val": s["val"], "test": s["test"], "baselines": s.get("baselines", {})}

    @property
    def history(self) -> list[dict]:
        """One row per epoch (metrics.jsonl)."""
        lines = (self.path / "metrics.jsonl").read_text("utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    def predict(self, cache=None, videos=None, out="predictions.csv", work=None):
        """Predictions of the best weights on a cache, or on raw videos (extracted with the run's
        encoders first), written to the CSV `out`; returns what was written (path, spans, failures)."""
        return predict(self.best, cache=cache, videos=videos, out=out, work=work)

    def evaluate(self, cache=None, split: str = "test", **kwargs) -> dict:
        """Metrics of the best weights on a split (default: the cache it was trained on)."""
        return evaluate(self.best, cache if cache is not None else self.config.cache, split, **kwargs)


def load_run(path: str | Path) -> Run:
    """A finished run from its folder (the one `train` wrote)."""
    path = Path(path)
    if not (path / "report.json").is_file():
        raise ConfigError(f"{path} is not a finished mmfit run (no report.json)")
    return Run(path, json.loads((path / "report.json").read_text("utf-8")))


def resume_config(resume: str | Path, config: str | Path | None = None, **options) -> TrainConfig:
    """The config of the run `resume` (a last.pt) continues: the one it was trained with, stored in
    the checkpoint. Options given again must agree with it, except RESUMABLE ones (more epochs...)."""
    from .checkpoint import load_checkpoint

    stored = stored_config(load_checkpoint(resume)["config"])
    given = {k: v for k, v in options.items() if v is not None}
    if config is not None:
        given = {**_from_yaml(config), **given}
    for k, v in given.items():
        if k in TUPLES and isinstance(v, list):
            v = tuple(v)
        if k in RESUMABLE or k == "storage_options" or getattr(stored, k) == v:
            continue
        raise ConfigError(
            f"--resume {resume} continues the run with its own config, where {k} is {getattr(stored, k)!r}, "
            f"not {v!r}; only {', '.join(r for r in RESUMABLE if r != 'out')} may change "
            "(start a new run to change the rest)"
        )
    allowed = {k: v for k, v in given.items() if k in (*RESUMABLE, "storage_options")}
    return _replace(stored, **{**allowed, "out": given.get("out")})


def _plain(value):
    """Paths (alone or in a list) as the strings a config holds: notebooks pass pathlib paths."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _from_yaml(config) -> dict:
    data = yaml.safe_load(Path(config).read_text("utf-8")) or {}
    return data if isinstance(data, dict) else {}


def _replace(cfg: TrainConfig, **values) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return replace(cfg, **{k: v for k, v in values.items() if k in names})


def train(
    config: str | Path | None = None,
    *,
    overwrite: bool = False,
    resume: str | Path | None = None,
    progress=None,
    **options,
) -> Run:
    """Train a fusion + head (and, with unimodal_baselines=True, one model per field), then write
    report.md/.json and plots into the run folder. `config`: a train YAML; `options`: train config
    keys, overriding it. `overwrite` replaces a run already in `out`; `resume` continues a run from
    its last.pt with the config it was trained with. `progress`: an object with any of
    start(name, trainer), on_step(i, n), on_epoch(row), stop() (the CLI's progress bar)."""
    from .report import write_report
    from .trainer import Trainer

    options = {k: _plain(v) for k, v in options.items()}
    if resume is not None:
        cfg = resume_config(resume, config, **options)
    else:
        cfg = build_config(config, **options)

    def fit(cfg, name, resume=None, overwrite=False):
        hooks = {k: getattr(progress, k, None) for k in ("on_epoch", "on_step")}
        trainer = Trainer(cfg, resume=resume, overwrite=overwrite, **hooks)
        if hasattr(progress, "start"):
            progress.start(name, trainer)
        try:
            return trainer.fit(), trainer.data
        finally:
            if hasattr(progress, "stop"):
                progress.stop()

    result, data = fit(cfg, "fused", resume, overwrite)
    baselines = {}
    if cfg.unimodal_baselines and len(data.field_names) > 1:
        for name in data.field_names:
            r, _ = fit(with_fields(cfg, (name,), str(Path(result.out) / f"unimodal-{name}")), f"unimodal: {name}")
            baselines[name] = {"val": r.val, "test": r.test, "best_epoch": r.best_epoch}
    summary = write_report(result, data, cfg.model, str(result.out), baselines)
    return Run(Path(result.out), summary, result)


def evaluate(checkpoint, cache, split: str = "test", labels=None, batch_size=None, verify: bool = True) -> dict:
    """Metrics of a checkpoint (best.pt or last.pt) on `split` (train, val, test or all) of a labelled cache."""
    from .predict import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, cache, split, labels, batch_size, verify)


def predict(checkpoint, cache=None, videos=None, out="predictions.csv", work=None):
    """Predictions of a checkpoint on a cache, or on raw videos (a path or a list), written to the CSV
    `out` (segment tasks: per step, and the merged spans beside it). Returns what was written
    (predict.Predictions: n, path, spans, failures...)."""
    from .predict import predict_cache, predict_videos

    if (cache is None) == (videos is None):
        raise ConfigError("give either cache= or videos=")
    if cache is not None:
        return predict_cache(checkpoint, os.fspath(cache), Path(out))
    videos = [videos] if isinstance(videos, str | os.PathLike) else list(videos)
    return predict_videos(checkpoint, [os.fspath(v) for v in videos], Path(out), work)


__all__ = ["Run", "evaluate", "load_run", "predict", "resume_config", "train"]
