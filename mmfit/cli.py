"""The `mmfit` command: train / eval / predict / sweep. Parses, routes to the package, prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mmcache.cli import CacheDir, StorageOptions, clean_errors, remote_settings, version_option  # one error style

app = typer.Typer(
    help="Train fusion and head layers on an mmcache feature cache, in seconds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

Opt = typer.Option


@app.callback()
def main(version: Annotated[bool, version_option("mmfit")] = False):
    """Train fusion and head layers on an mmcache feature cache, in seconds."""


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def _caches(values: list[str] | None) -> str | list[str] | None:
    """--cache values: repeated, or comma-separated local paths. A URL or pipe: command is never split
    (a presigned URL may hold commas)."""
    if not values:
        return None
    out = []
    for v in values:
        remote = "://" in v or v.startswith("pipe:")
        out += [v] if remote or "," not in v else _csv(v)
    return out[0] if len(out) == 1 else out


class EpochProgress:
    """A rich bar over the steps of each epoch and one line per finished epoch."""

    def __init__(self, epochs: int, monitor: str):
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[of]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task = self.bar.add_task("train", total=None, epoch=1, of=epochs)
        self.monitor = monitor

    def on_step(self, i: int, n: int) -> None:
        self.bar.update(self.task, completed=i, total=n)

    def on_epoch(self, row: dict) -> None:
        self.bar.update(self.task, epoch=row["epoch"] + 1, completed=0)
        err.print(
            f"epoch {row['epoch']:>3}  train/loss {row['train/loss']:.4f}  val/loss {row['val/loss']:.4f}  "
            f"{self.monitor} {row.get(self.monitor, float('nan')):.4f}  ({row['train/epoch_s']:.2f} s, "
            f"{row['train/samples_per_s']:.0f} samples/s)",
            highlight=False,
        )


def _run(cfg, resume=None):
    from .report import headline
    from .train import Trainer

    trainer = Trainer(cfg)
    progress = EpochProgress(cfg.epochs, trainer.monitor)
    trainer.on_epoch, trainer.on_step = progress.on_epoch, progress.on_step
    with progress.bar:
        result = trainer.fit(resume)
    return result, trainer.data, headline


@app.command()
@clean_errors
def train(
    config: Annotated[
        Path | None, Opt(help="YAML config (schemas/train-config.schema.json); flags override it.")
    ] = None,
    cache: Annotated[
        list[str] | None,
        Opt(help="Cache directory or URL; repeat for several (a local list may also be comma-separated)."),
    ] = None,
    labels: Annotated[str | None, Opt(help="Label CSV: id or key, label column(s), optional split.")] = None,
    label_column: Annotated[str | None, Opt(help="Label column (default: label).")] = None,
    fields: Annotated[str | None, Opt(help="Comma-separated cache fields (default: all).")] = None,
    fusion: Annotated[str | None, Opt(help="concat | late | gated | attention | bottleneck | perceiver")] = None,
    task: Annotated[str | None, Opt(help="multiclass | multilabel | segment | regression")] = None,
    head: Annotated[str | None, Opt(help="linear | mlp")] = None,
    epochs: Annotated[int | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    lr: Annotated[float | None, Opt()] = None,
    hidden: Annotated[int | None, Opt()] = None,
    dropout: Annotated[float | None, Opt()] = None,
    modality_dropout: Annotated[float | None, Opt()] = None,
    monitor: Annotated[str | None, Opt(help="e.g. val/macro_f1 or val/loss (checked before epoch 1).")] = None,
    seed: Annotated[int | None, Opt()] = None,
    device: Annotated[str | None, Opt(help="auto | cpu | cuda[:N]")] = None,
    out_dir: Annotated[str | None, Opt("--out", help="Run directory.")] = None,
    unimodal_baselines: Annotated[bool, Opt(help="Also train one model per field; report all together.")] = False,
    tensorboard: Annotated[bool, Opt(help="Write TensorBoard logs (off unless asked).")] = False,
    verify: Annotated[bool, Opt(help="Verify the cache first; --no-verify skips it (not recommended).")] = True,
    resume: Annotated[Path | None, Opt(help="Resume from a run's last.pt.")] = None,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Train a fusion + head on cached features; writes checkpoints, metrics.jsonl, report.md and plots."""
    from mmcache.transport import parse_storage_options

    from .config import build_config, with_fields
    from .report import write_report

    cfg = build_config(
        config,
        cache=_caches(cache),
        labels=labels,
        label_column=label_column,
        fields=_csv(fields),
        fusion=fusion,
        task=task,
        head=head,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        hidden=hidden,
        dropout=dropout,
        modality_dropout=modality_dropout,
        monitor=monitor,
        seed=seed,
        device=device,
        out=out_dir,
        unimodal_baselines=unimodal_baselines or None,
        tensorboard=tensorboard or None,
        verify=None if verify else False,
        storage_options=parse_storage_options(storage_option) or None,
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    result, data, headline = _run(cfg, resume)
    baselines = {}
    if cfg.unimodal_baselines:
        for name in data.field_names:
            err.print(f"[bold]unimodal baseline: {name}[/]")
            r, d, _ = _run(with_fields(cfg, (name,), str(Path(cfg.out) / f"unimodal-{name}")))
            baselines[name] = {"val": r.val, "test": r.test, "best_epoch": r.best_epoch}
    summary = write_report(result, data, cfg.model, cfg.out, baselines)
    _print_summary(summary, cfg, headline)


def _print_summary(summary: dict, cfg, headline) -> None:
    from .report import MAIN, comparison_rows

    keys = MAIN[cfg.task]
    table = Table("model", *[f"val {k}" for k in keys], *[f"test {k}" for k in keys], title=f"mmfit: {cfg.out}")
    for name, s in comparison_rows(summary):
        vals = [headline(cfg.task, s["val"]).get(k) for k in keys] + [
            headline(cfg.task, s["test"]).get(k) for k in keys
        ]
        table.add_row(name, *["n/a" if v is None else f"{v:.4f}" for v in vals])
    out.print(table)
    out.print(
        f"best epoch {summary['best_epoch']} ({summary['monitor']} = {summary['best_score']:.4f}); "
        f"report: {Path(cfg.out) / 'report.md'}",
        highlight=False,
    )


@app.command("eval")
@clean_errors
def evaluate(
    checkpoint: Annotated[Path, Opt(help="best.pt or last.pt of a run.")],
    cache: Annotated[str, Opt(help="Cache with the fields the model was trained on.")],
    split: Annotated[str, Opt(help="train | val | test | all")] = "test",
    labels: Annotated[str | None, Opt(help="Label CSV (default: the one the model was trained with).")] = None,
    batch_size: Annotated[int | None, Opt(help="Eval batch size (metrics do not depend on it).")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print all metrics as JSON.")] = False,
    verify: Annotated[bool, Opt(help="Verify the cache first.")] = True,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Metrics of a checkpoint on a split of a labelled cache."""
    from .predict import evaluate_checkpoint

    with remote_settings(storage_option, cache_dir):
        metrics = evaluate_checkpoint(checkpoint, cache, split, labels, batch_size, verify)
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=1) + "\n")
        return
    table = Table("metric", "value", title=f"{checkpoint} on {cache} [{split}]")
    for k, v in metrics.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    out.print(table)


@app.command()
@clean_errors
def predict(
    checkpoint: Annotated[Path, Opt(help="best.pt of a run.")],
    videos: Annotated[
        list[str] | None,
        typer.Argument(help="Raw videos or folders: extracted with exactly the checkpoint's encoders first."),
    ] = None,
    cache: Annotated[str | None, Opt(help="Predict on this cache instead of raw videos.")] = None,
    out_csv: Annotated[Path, Opt("--out", help="Predictions CSV.")] = Path("predictions.csv"),
    work: Annotated[Path | None, Opt(help="Where raw-video features are cached (default: a temp dir).")] = None,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Write predictions with per-class scores, from a cache or from raw videos."""
    from .predict import predict_cache, predict_videos

    if bool(cache) == bool(videos):
        raise typer.BadParameter("give either --cache or videos")
    with remote_settings(storage_option, cache_dir):
        n = predict_cache(checkpoint, cache, out_csv) if cache else predict_videos(checkpoint, videos, out_csv, work)
    out.print(f"{n} predictions -> {out_csv}", highlight=False)


@app.command()
@clean_errors
def sweep(config: Annotated[Path, Opt(help="Sweep YAML (schemas/sweep-config.schema.json).")]):
    """Grid or random search over a few options x seeds; prints a ranked table."""
    from .sweep import load_sweep, run_sweep

    rows = run_sweep(
        load_sweep(config),
        on_trial=lambda r: err.print(
            f"trial {r['trial']} {r['options']}: {r['monitor']} {r['mean']:.4f} ± {r['std']:.4f}", highlight=False
        ),
    )
    table = Table("trial", "options", "monitor", "mean", "std", title="sweep")
    for r in sorted(rows, key=lambda r: r["mean"], reverse=True):
        table.add_row(
            str(r["trial"]), json.dumps(r["options"]), str(r["monitor"]), f"{r['mean']:.4f}", f"{r['std']:.4f}"
        )
    out.print(table)


if __name__ == "__main__":  # `python -m mmfit.cli ...` ran nothing and exited 0 without this
    app(prog_name="mmfit")
