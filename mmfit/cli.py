"""The `mmfit` command: train / eval / predict / sweep. Parses, routes to the package, prints."""

from __future__ import annotations

import dataclasses
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
    add_completion=True,
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
    """mmfit.trainer's progress: a rich bar over the steps of each epoch and one line per finished
    epoch, for the fused model and then each unimodal baseline."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None

    def start(self, name: str, trainer) -> None:
        if self.quiet:
            return
        if name != "fused":
            err.print(f"[bold]{name}[/]")
        self.monitor, self.epochs = trainer.monitor, trainer.optim.epochs
        self.bar = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[of]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task = self.bar.add_task("train", total=None, epoch=trainer.epoch + 1, of=self.epochs)
        self.bar.start()

    def on_step(self, i: int, n: int) -> None:
        if self.bar:
            self.bar.update(self.task, completed=i, total=n)

    def on_epoch(self, row: dict) -> None:
        if not self.bar:
            return
        self.bar.update(self.task, epoch=min(row["epoch"] + 1, self.epochs), completed=0)
        err.print(
            f"epoch {row['epoch']:>3}  train/loss {row['train/loss']:.4f}  val/loss {row['val/loss']:.4f}  "
            f"{self.monitor} {row.get(self.monitor, float('nan')):.4f}  ({row['train/epoch_s']:.2f} s, "
            f"{row['train/samples_per_s']:.0f} samples/s)",
            highlight=False,
        )

    def stop(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None


def _default(name: str, text: str = "") -> str:
    """Help text ending with the train config's default (flags default to None: a YAML may set them)."""
    from .config import TrainConfig

    value = getattr(TrainConfig(), name)
    shown = "a new runs/<fusion>-NNN" if name == "out" else value
    return f"{text} (default: {shown})".strip()


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
    labels: Annotated[
        str | None, Opt(help="Label CSV: id or key, label column(s), optional split (default: the video sheet's).")
    ] = None,
    label_column: Annotated[str | None, Opt(help=_default("label_column", "Class column."))] = None,
    label_columns: Annotated[
        str | None, Opt(help="Multilabel as several 0/1 columns, comma-separated (with --task multilabel).")
    ] = None,
    fields: Annotated[str | None, Opt(help="Comma-separated cache fields (default: all).")] = None,
    fusion: Annotated[
        str | None, Opt(help=_default("fusion", "concat | late | gated | attention | bottleneck | perceiver"))
    ] = None,
    task: Annotated[str | None, Opt(help=_default("task", "multiclass | multilabel | segment | regression"))] = None,
    head: Annotated[str | None, Opt(help=_default("head", "linear | mlp"))] = None,
    epochs: Annotated[int | None, Opt(help=_default("epochs"))] = None,
    patience: Annotated[int | None, Opt(help=_default("patience", "Epochs without improvement, then stop."))] = None,
    batch_size: Annotated[int | None, Opt(help=_default("batch_size"))] = None,
    lr: Annotated[float | None, Opt(help=_default("lr"))] = None,
    hidden: Annotated[int | None, Opt(help=_default("hidden"))] = None,
    dropout: Annotated[float | None, Opt(help=_default("dropout"))] = None,
    modality_dropout: Annotated[float | None, Opt(help=_default("modality_dropout"))] = None,
    monitor: Annotated[
        str | None, Opt(help=_default("monitor", "e.g. val/macro_f1 or val/loss (checked before epoch 1)."))
    ] = None,
    seed: Annotated[int | None, Opt(help=_default("seed"))] = None,
    device: Annotated[str | None, Opt(help=_default("device", "auto | cpu | cuda[:N]"))] = None,
    out_dir: Annotated[str | None, Opt("--out", help=_default("out", "Run folder."))] = None,
    overwrite: Annotated[bool, Opt(help="Replace the run already in --out (it is cleared first).")] = False,
    unimodal_baselines: Annotated[bool, Opt(help="Also train one model per field; report all together.")] = False,
    tensorboard: Annotated[bool, Opt(help="Write TensorBoard logs (off unless asked).")] = False,
    verify: Annotated[bool, Opt(help="Verify the cache first; --no-verify skips it (not recommended).")] = True,
    resume: Annotated[
        Path | None,
        Opt(help="Continue a run from its last.pt with the config it was trained with (--epochs/--patience may grow)."),
    ] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress bar or per-epoch lines.")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print the report summary as JSON instead of the table.")] = False,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Train a fusion + head on cached features; writes checkpoints, metrics.jsonl, report.md and plots."""
    from mmcache.transport import parse_storage_options

    from .api import train as train_run

    run = train_run(
        config,
        overwrite=overwrite,
        resume=resume,
        progress=EpochProgress(quiet or as_json),
        cache=_caches(cache),
        labels=labels,
        label_column=label_column,
        label_columns=_csv(label_columns),
        fields=_csv(fields),
        fusion=fusion,
        task=task,
        head=head,
        epochs=epochs,
        patience=patience,
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
    if as_json:
        sys.stdout.write(json.dumps({"run": str(run.path), **run.summary}, indent=1, default=str) + "\n")
    else:
        _print_summary(run.summary, run.path)


def _print_summary(summary: dict, run: Path) -> None:
    from .report import MAIN, NORMALISATION, comparison_rows, headline

    task = summary["task"]
    keys = MAIN[task]
    table = Table("model", *[f"val {k}" for k in keys], *[f"test {k}" for k in keys], title=f"mmfit: {run}")
    for name, s in comparison_rows(summary):
        vals = [headline(task, s["val"]).get(k) for k in keys] + [headline(task, s["test"]).get(k) for k in keys]
        table.add_row(name, *["n/a" if v is None else f"{v:.4f}" for v in vals])
    out.print(table)
    norm = summary["data"].get("norm")
    out.print(
        f"best epoch {summary['best_epoch']} ({summary['monitor']} = {summary['best_score']:.4f}); "
        f"normalisation: {NORMALISATION.get(norm, norm)}; report: {run / 'report.md'}",
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
    ablate: Annotated[
        bool,
        Opt(
            help="Each field's contribution: the metric with it masked out at test time vs all fields, "
            "with the unimodal-<field>/best.pt baselines next to the checkpoint."
        ),
    ] = False,
    plot: Annotated[
        Path | None, Opt(help="--ablate bar chart PNG (default: ablation-<split>.png next to the checkpoint).")
    ] = None,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Metrics of a checkpoint on a split of a labelled cache (--ablate: each field's contribution)."""
    from .predict import evaluate_checkpoint

    if ablate:
        from .ablate import ablate_checkpoint
        from .report import contribution_summary, plot_ablation

        with remote_settings(storage_option, cache_dir):
            found = ablate_checkpoint(checkpoint, cache, split, labels, batch_size, verify)
        result = contribution_summary(found, found["task"])
        plot = plot or checkpoint.parent / f"ablation-{split}.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_ablation(result["rows"], result["metric"], split, plot)
        result["plot"] = str(plot)
        if as_json:
            sys.stdout.write(json.dumps(result, indent=1) + "\n")
            return
        table = Table(
            "field",
            "all fields",
            "without it",
            "contribution",
            "unimodal",
            title=f"{result['metric']}: {checkpoint} on {cache} [{split}, {result['n']} samples]",
        )
        for r in result["rows"]:
            vals = [f"{v:.4f}" if v is not None else "n/a" for v in (r["all"], r["without"], r["unimodal"])]
            change = "n/a" if r["contribution"] is None else f"{r['contribution']:+.4f}"
            table.add_row(r["field"], vals[0], vals[1], change, vals[2])
        out.print(table)
        out.print(
            f"contribution: how much worse {result['metric']} is without the field (masked out at test time); "
            f"unimodal: unimodal-<field>/best.pt next to the checkpoint; chart: {plot}",
            highlight=False,
        )
        return
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
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress bars (failures are still listed).")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print what was written as JSON (implies --quiet).")] = False,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Write predictions with per-class scores, from a cache or from raw videos (extraction progress on
    stderr). Segment tasks: one row per valid step with start/end seconds, and the merged spans in
    OUT's .spans.csv beside it."""
    from rich.markup import escape

    from mmcache.cli import RichProgress

    from .predict import predict_cache, predict_videos

    if bool(cache) == bool(videos):
        raise typer.BadParameter("give either --cache or videos")
    with remote_settings(storage_option, cache_dir):
        if cache:
            done = predict_cache(checkpoint, cache, out_csv)
        elif quiet or as_json:
            done = predict_videos(checkpoint, videos, out_csv, work)
        else:
            progress = RichProgress()
            with progress.bar:
                done = predict_videos(checkpoint, videos, out_csv, work, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps(dataclasses.asdict(done), indent=1, default=str) + "\n")
        return
    for _source, reason in done.failures:
        err.print(f"[yellow]failed:[/] {escape(str(reason))}", highlight=False, soft_wrap=True)
    if done.no_steps:
        err.print(
            f"[yellow]warning:[/] {len(done.no_steps)} sample(s) have no data in the model's first field, which "
            f"times the steps: no rows for them (e.g. {escape(done.no_steps[0])})",
            highlight=False,
            soft_wrap=True,
        )
    if done.spans is None:
        out.print(f"{done.n} predictions -> {out_csv}", highlight=False)
    else:
        out.print(f"{done.n} samples, {done.steps} steps -> {out_csv}", highlight=False)
        out.print(f"{done.span_count} spans -> {done.spans}", highlight=False)


@app.command()
@clean_errors
def sweep(
    config: Annotated[Path, Opt(help="Sweep YAML (schemas/sweep-config.schema.json).")],
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No line per trial as it ends.")] = False,
    as_json: Annotated[bool, Opt("--json", help="Print every trial's row as JSON instead of the table.")] = False,
):
    """Search a few options x seeds on Optuna (grid, random, tpe), pruning hopeless trials; resumes a
    killed sweep from <out>/study.db. Prints a ranked table; writes summary.csv and best.yaml."""
    from .sweep import load_sweep, ranked, run_sweep, trial_line

    say = None if quiet or as_json else (lambda r: err.print(trial_line(r), highlight=False))
    res = run_sweep(load_sweep(config), on_trial=say)
    if as_json:
        got = {"out": str(res.out), "monitor": res.monitor, "message": res.message}
        got |= {"best": res.best, "trials": res.rows}
        sys.stdout.write(json.dumps(got, indent=1, default=str) + "\n")
        return
    table = Table("trial", "state", *res.options, res.monitor, "std", "test", "s", title=f"sweep {res.out}")
    for r in ranked(res):
        num = [f"{r[k]:.4f}" if r[k] is not None else "" for k in ("mean", "std", "test")]
        opts = [v if isinstance(v := r["options"].get(k), str) else json.dumps(v) for k in res.options]
        table.add_row(str(r["trial"]), r["state"].lower(), *opts, *num, f"{r['duration_s'] or 0:.1f}")
    out.print(table)
    err.print(f"{res.ran} trial{'' if res.ran == 1 else 's'} run; {res.message}", highlight=False)
    if res.best is not None:
        err.print(
            f"best: trial {res.best['trial']} {res.best['options']}, {res.monitor} {res.best['mean']:.4f}; "
            f"train it: mmfit train --config {res.out / 'best.yaml'}",
            highlight=False,
        )


if __name__ == "__main__":  # `python -m mmfit.cli ...` ran nothing and exited 0 without this
    app(prog_name="mmfit")
