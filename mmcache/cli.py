"""The `mmcache` command: parse, route to the package, print. Project errors become one line + exit 1."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import MMCacheError

app = typer.Typer(
    help="Decode videos once, run frozen encoders, keep the features in a verifiable cache.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 160)  # pipes and CI logs get full tables
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def clean_errors(fn):
    """Turn project errors into one clear line on stderr and exit code 1. So is a full disk that no
    write site named (they do, naming the file: see shards.writing): never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MMCacheError as e:
            _error_line(str(e))
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            _error_line(f"{e.filename or 'writing'}: disk full ({e.strerror}); free space and re-run to resume")

    return wrapper


def _error_line(text: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from None


def version_option(name: str):
    """A --version flag that works without a command (eager: handled before the command is looked for)."""

    def show(value: bool) -> None:
        if value:
            out.print(f"{name} {__version__}", highlight=False)
            raise typer.Exit()

    return typer.Option("--version", help="Print the version and exit.", callback=show, is_eager=True)


@app.callback()
def main(version: Annotated[bool, version_option("mmcache")] = False):
    """Decode videos once, run frozen encoders, keep the features in a verifiable cache."""


@app.command()
@clean_errors
def encoders():
    """List the registered encoders: modality, output size, default time grid, weights source."""
    from .encoders import REGISTRY

    table = Table("name", "modality", "dim", "time grid", "weights", "options", title="mmcache encoders")
    for name, spec in sorted(REGISTRY.items()):
        table.add_row(
            name,
            spec.modality,
            str(spec.dim or "model"),
            spec.grid(),
            spec.weights,
            ", ".join(sorted(set(spec.defaults) | {"field"})),
        )
    out.print(table)
    out.print(
        "Use NAME or NAME:key=value,key=value, e.g. resnet18:fps=8,dtype=bfloat16 "
        "(options: schemas/encoder-options.schema.json)."
    )


class RichProgress:
    """mmcache's Progress callbacks drawn as rich progress bars (on stderr)."""

    def __init__(self):
        self.bar = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.tasks: dict[str, int] = {}

    def start(self, task: str, total: int) -> None:
        if task in self.tasks:
            self.bar.update(self.tasks[task], total=total, completed=0)
        else:
            self.tasks[task] = self.bar.add_task(task, total=total)

    def advance(self, task: str, n: int = 1) -> None:
        self.bar.advance(self.tasks[task], n)

    def message(self, text: str) -> None:
        self.bar.console.print(text)


StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        "-S",
        metavar="KEY=VALUE",
        help="An option for the fsspec backend of a URL (s3://, gs://, az://, hf://), e.g. "
        "endpoint_url=http://127.0.0.1:9000 or anon=true; repeat for several. Credentials come from the "
        "backend's usual places (env vars, profiles); mmcache never prints or stores them.",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Keep remote files fetched here by sha256 and read them from here next time "
        "[default: $MMCACHE_CACHE_DIR, else none].",
    ),
]
LOCATION_HELP = "Cache directory or URL: s3://, gs://, az://, hf://, http(s)://, or pipe:CMD with {path}."


def remote_settings(storage_option: list[str] | None, cache_dir: Path | None = None):
    """Transports made inside this context use the command line's storage options and fetch cache."""
    from .transport import configured, parse_storage_options

    return configured(parse_storage_options(storage_option), cache_dir)


class ByteProgress:
    """push/pull progress: bytes moved, as a rich bar with a transfer speed (on stderr)."""

    def __init__(self):
        from rich.progress import DownloadColumn, TransferSpeedColumn

        self.bar = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        if task not in self.tasks:
            self.tasks[task] = self.bar.add_task(task, total=total)
        self.bar.update(self.tasks[task], completed=done, total=total)


THREADS_HELP = "Threads of this process: torch's and each ffmpeg decode's (default: all cores); features do not change."


@app.command()
@clean_errors
def extract(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Video folders, video files, or a .csv/.tsv video sheet "
            "(columns: path, optional id, text, any metadata)."
        ),
    ],
    encoder: Annotated[
        list[str],
        typer.Option(
            "--encoder", "-e", help="NAME or NAME:key=value,...; repeat for several fields. See `mmcache encoders`."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Cache directory (created; extended if it exists).")],
    fmt: Annotated[str, typer.Option("--format", help="webdataset (tar shards) or hdf5.")] = "webdataset",
    shard_size: Annotated[int, typer.Option(help="Videos per shard.")] = 256,
    timeout: Annotated[float, typer.Option(help="Seconds a decode may stall before ffmpeg is killed.")] = 120.0,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any video failed (the cache is still written).")] = False,
    dask: Annotated[
        str | None, typer.Option(help="Compute on a dask cluster: a scheduler address (tcp://host:8786) or local:N.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help=THREADS_HELP + " With --dask, every worker task uses one thread.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (failures are still listed).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (implies --quiet).")] = False,
):
    """Extract features into a cache. Re-running is a no-op; new videos and new encoders are added."""
    from .extraction import extract as run
    from .runtime import use_threads

    use_threads(threads)
    engine = None
    if dask:
        from .distributed import DaskEngine

        engine = DaskEngine(dask)
    progress = None if quiet or as_json else RichProgress()
    with progress.bar if progress else contextlib.nullcontext():
        report = run(
            inputs,
            encoder,
            out_dir,
            backend=fmt,
            shard_size=shard_size,
            timeout=timeout,
            strict=False,
            progress=progress,
            engine=engine,
        )
    if as_json:
        failures = [{"source": str(src), "reason": str(why)} for src, why in report.failures]
        row = {**dataclasses.asdict(report), "cache": str(report.cache), "failures": failures}
        sys.stdout.write(json.dumps(row, indent=1, default=str) + "\n")
    else:
        _print_report(report)
    if strict and report.failures:
        raise typer.Exit(1)


def _print_report(report) -> None:
    for _source, reason in report.failures:
        err.print(f"[yellow]failed:[/] {escape(str(reason))}", highlight=False, soft_wrap=True)
    added = ", ".join(f"{f} ({n} shards)" for f, n in report.fields_added.items()) or "none"
    out.print(
        f"{report.inputs} videos: {report.cached} already cached, {report.new_ok} new ok, "
        f"{report.new_failed} failed; new shards: {len(report.shards_written)}; fields added: {added}; "
        f"cache: {report.cache}",
        highlight=False,
    )


@app.command()
@clean_errors
def plan(
    inputs: Annotated[list[Path], typer.Argument(help="As for extract.")],
    encoder: Annotated[list[str], typer.Option("--encoder", "-e", help="As for extract.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Cache directory.")],
    fmt: Annotated[str, typer.Option("--format", help="webdataset or hdf5.")] = "webdataset",
    shard_size: Annotated[int, typer.Option(help="Videos per shard.")] = 256,
):
    """Plan an extraction as shard tasks in <cache>/plan/ (for Snakemake: then run-shard each, then finalize)."""
    from .extraction import plan_to_dir

    shards = plan_to_dir(inputs, encoder, out_dir, backend=fmt, shard_size=shard_size)
    out.print(
        f"{len(shards)} shard task(s) planned in {out_dir / 'plan'}: {' '.join(shards) or 'nothing to do'}",
        highlight=False,
    )


@app.command("run-shard")
@clean_errors
def run_shard(
    cache: Annotated[Path, typer.Argument(help="Cache directory holding a plan.")],
    shard: Annotated[str, typer.Argument(help="Shard name, e.g. 000003.")],
    timeout: Annotated[float, typer.Option(help="Seconds a decode may stall before ffmpeg is killed.")] = 120.0,
    threads: Annotated[
        int | None, typer.Option(min=1, help=THREADS_HELP + " Snakemake passes the job's threads.")
    ] = None,
):
    """Run one planned shard task; writes its files and <cache>/parts/SHARD.json (a done shard is a no-op)."""
    from .extraction import run_planned_shard
    from .runtime import threads_in_use, use_threads

    use_threads(threads)
    progress = RichProgress()
    with progress.bar:
        part = run_planned_shard(cache, shard, timeout, progress)
    out.print(f"shard {shard}: {len(part['fields'])} field file(s) published; {threads_in_use()}", highlight=False)


@app.command()
@clean_errors
def finalize(cache: Annotated[Path, typer.Argument(help="Cache directory holding a plan and finished parts.")]):
    """Record every planned shard in the manifest (written last) and remove the plan."""
    from .extraction import finalize as run

    _print_report(run(cache))


@app.command()
@clean_errors
def inspect(
    cache: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    storage_option: StorageOptions = None,
):
    """Fields, dims, dtypes, samples ok/failed, bytes and fingerprints of a cache."""
    from .cache import open_cache

    with remote_settings(storage_option):
        c = open_cache(cache)
        summary = _summary(c)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
        return
    s = summary["samples"]
    out.print(
        f"[bold]{cache}[/]  format v1, {c.backend}, {len(c.shards)} shards, {s['total']} samples "
        f"({s['ok']} ok, {s['failed']} failed)",
        highlight=False,
    )
    table = Table("field", "encoder", "modality", "dim", "dtype", "samples", "missing", "steps", "bytes", "fingerprint")
    for name, f in summary["fields"].items():
        table.add_row(
            name,
            f["encoder"],
            f["modality"],
            str(f["dim"]),
            f["dtype"],
            str(f["samples"]),
            str(f["missing"]),
            str(f["steps"]),
            _human(f["bytes"]),
            f["fingerprint"][:16],
        )
    out.print(table)


def _summary(c) -> dict:
    shards = c.manifest["shards"].values()
    fields = {}
    for name, f in sorted(c.fields.items()):
        files = f["files"].values()
        fields[name] = {
            "encoder": f["encoder"],
            "modality": f["modality"],
            "dim": f["dim"],
            "dtype": f["dtype"],
            "samples": sum(e["count"] for e in files),
            "missing": sum(len(e["missing"]) for e in files),
            "steps": sum(e["steps"] for e in files),
            "bytes": sum(e["bytes"] for e in files),
            "shards": len(f["files"]),
            "fingerprint": f["fingerprint"],
        }
    return {
        "backend": c.backend,
        "shards": len(c.shards),
        "samples": {
            "total": sum(e["count"] for e in shards),
            "ok": sum(e["ok"] for e in shards),
            "failed": sum(e["failed"] for e in shards),
        },
        "fields": fields,
    }


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command()
@clean_errors
def verify(
    cache: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    storage_option: StorageOptions = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"cache", "ok", "problems"} as JSON.')] = False,
):
    """Recompute every file's size, sha256, sample and step counts; exit 1 naming each bad file.
    A remote cache is read from the remote itself (never from a fetch cache)."""
    from .cache import verify_cache

    with remote_settings(storage_option):
        problems = verify_cache(cache)
    if as_json:
        sys.stdout.write(json.dumps({"cache": cache, "ok": not problems, "problems": problems}, indent=1) + "\n")
        raise typer.Exit(1 if problems else 0)
    for p in problems:
        err.print(f"[bold red]bad:[/] {escape(p)}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"ok: {cache} verified (sizes, sha256, counts)", highlight=False)


# -- sharing: stats, merge, diff --------------------------------------------------------------------


@app.command()
@clean_errors
def stats(
    cache: Annotated[str, typer.Argument(help="Cache directory (or a URL: then the stats are only printed).")],
    field: Annotated[
        list[str] | None, typer.Option("--field", "-f", help="Field to measure; repeat for several (default: all).")
    ] = None,
    record: Annotated[
        bool, typer.Option(help="Record them in the manifest under fields.<f>.stats (--no-record: only print).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full per-dimension stats as JSON.")] = False,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Per-dimension mean/std of every stored step of a field (out of core, float64), for normalisation."""
    from .stats import compute_stats, record_stats
    from .transport import is_url

    changed: list[str] = []
    recorded = record and not is_url(cache)
    with remote_settings(storage_option, cache_dir):
        if recorded:
            result, changed = record_stats(cache, field)
        else:
            result = compute_stats(cache, field)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        table = Table("field", "dim", "steps", "mean (avg over dims)", "std (avg)", "std (min)", "std (max)")
        for name, st in result.items():
            if st is None:
                table.add_row(name, "", "0", "no steps", "", "", "")
                continue
            mean, std = st["mean"], st["std"]
            table.add_row(
                name,
                str(len(mean)),
                str(st["steps"]),
                f"{sum(mean) / len(mean):.4g}",
                f"{sum(std) / len(std):.4g}",
                f"{min(std):.4g}",
                f"{max(std):.4g}",
            )
        out.print(table)
    for name in changed:
        err.print(f"[yellow]not recorded:[/] field {name} changed while it was measured; run stats again")
    done = [n for n, st in result.items() if st is not None and n not in changed]
    if recorded:
        err.print(f"recorded stats of {', '.join(done) or 'no field'} in {Path(cache) / 'manifest.json'}")
    elif record:
        err.print("not recorded: a remote cache is read-only (run stats where the cache lives)")


@app.command()
@clean_errors
def merge(
    inputs: Annotated[list[str], typer.Argument(help="Caches to merge (directories or URLs), in priority order.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="New cache directory for the union.")],
    allow_partial: Annotated[
        bool,
        typer.Option(help="Leave out fields that only some inputs have (default: refuse; a field needs every shard)."),
    ] = False,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Union of several caches' samples (deduplicated by key) in a new cache; fingerprints must agree."""
    from .merge import merge_caches

    progress = RichProgress()
    with progress.bar, remote_settings(storage_option, cache_dir):
        report = merge_caches(inputs, out_dir, allow_partial=allow_partial, progress=progress)
    for name, holders in report.dropped_fields.items():
        err.print(
            f"[yellow]dropped field:[/] {name} (only in {', '.join(holders)}; add it back with "
            f"`mmcache extract VIDEOS -e ENCODER:field={name} --out {out_dir}`)",
            highlight=False,
            soft_wrap=True,
        )
    if report.meta_conflicts:
        err.print(
            f"[yellow]note:[/] {len(report.meta_conflicts)} duplicate sample(s) had different metadata in the "
            f"inputs (first: {report.meta_conflicts[0]}); the first input's row was kept",
            highlight=False,
        )
    out.print(
        f"merged {len(report.inputs)} caches into {out_dir}: {report.samples} samples ({report.ok} ok, "
        f"{report.failed} failed), {report.duplicates} duplicate row(s) dropped, {report.shards} shards; "
        f"fields: {', '.join(report.fields) or 'none'}; files copied {report.copied}, rewritten {report.rewritten}",
        highlight=False,
    )


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="First cache (directory or URL).")],
    b: Annotated[str, typer.Argument(help="Second cache.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the differences as JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Samples listed per group in the text output.")] = 20,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Fields, fingerprint keys and samples that differ between two caches. Exit 0 when they hold the
    same fields and samples, 1 when they differ, 2 on trouble (like diff)."""
    from .diff import diff_caches

    try:
        with remote_settings(storage_option, cache_dir):
            d = diff_caches(a, b)
    except MMCacheError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(d, indent=1) + "\n")
    else:
        _print_diff(d, limit)
    raise typer.Exit(0 if d["identical"] else 1)


def _print_diff(d: dict, limit: int) -> None:
    a, b = d["a"], d["b"]
    p = functools.partial(out.print, highlight=False, soft_wrap=True)
    if d["identical"]:
        p(f"same fields and samples: {a} and {b} ({len(d['fields']['same'])} fields, {d['samples']['common']} samples)")
        return
    f = d["fields"]
    for side, where in (("only_a", a), ("only_b", b)):
        if f[side]:
            p(f"fields only in {where}: {', '.join(f[side])}")
    for name, keys in f["differ"].items():
        shown = ", ".join(f"{k['key']} ({k['a']!r} vs {k['b']!r})" for k in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        p(f"field {name}: fingerprint differs at {shown}{more}")
    s = d["samples"]
    for side, where in (("only_a", a), ("only_b", b)):
        rows = s[side]
        if rows:
            p(f"{len(rows)} sample(s) only in {where}:")
            for r in rows[:limit]:
                p(f"  {r['key']}  {r['source']}  ({r['status']})")
            if len(rows) > limit:
                p(f"  ... and {len(rows) - limit} more (--json lists all)")
    if s["status_differs"]:
        p(f"{len(s['status_differs'])} sample(s) with a different status:")
        for r in s["status_differs"][:limit]:
            p(f"  {r['key']}  {r['source']}  ({r['a']} in {a}, {r['b']} in {b})")
    for name, sides in d["data"].items():
        p(
            f"field {name}: data only in {a} for {len(sides['only_a'])} sample(s), "
            f"only in {b} for {len(sides['only_b'])}"
        )
    p(f"{s['common']} sample(s) in both; fields in both and made the same way: {', '.join(f['same']) or 'none'}")


# -- publishing: push, pull -------------------------------------------------------------------------


@app.command()
@clean_errors
def push(
    cache: Annotated[str, typer.Argument(help="The cache to publish (a directory, or any cache location).")],
    url: Annotated[str, typer.Argument(help="Where to: s3://bucket/prefix/, gs://, az://, hf://..., or a directory.")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Files in flight.", show_default=True)] = 4,
    storage_option: StorageOptions = None,
):
    """Upload a cache: every file checked against its sha256, files first and the manifest last (a
    reader never sees a manifest naming a missing file). Files already there with the same sha256 are
    skipped, so an interrupted push resumes. Over an existing cache, adds new shards and fields and
    refuses a field whose fingerprint differs."""
    from .publish import push as push_cache

    progress = ByteProgress()
    with progress.bar, remote_settings(storage_option):
        r = push_cache(cache, url, jobs=jobs, progress=progress)
    out.print(
        f"pushed {cache} to {url}: {r.copied} file(s) uploaded ({_human(r.bytes_copied)}), {r.skipped} already there; "
        f"fields: {', '.join(r.fields) or 'none'}"
        + (f" (kept from {url}: {', '.join(r.kept_fields)})" if r.kept_fields else "")
        + ("" if r.manifest_written else "; manifest unchanged"),
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@clean_errors
def pull(
    url: Annotated[str, typer.Argument(help=LOCATION_HELP)],
    out_dir: Annotated[Path, typer.Argument(help="Local directory for the copy (new, or an interrupted pull).")],
    fields: Annotated[
        str | None, typer.Option("--fields", help="Comma-separated fields to pull (default: all).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Files in flight.", show_default=True)] = 4,
    storage_option: StorageOptions = None,
    cache_dir: CacheDir = None,
):
    """Download a cache (or some of its fields), every file checked against its size and sha256 as it
    arrives; the manifest is written last. Re-run an interrupted pull to resume it."""
    from .publish import pull as pull_cache

    chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    progress = ByteProgress()
    with progress.bar, remote_settings(storage_option, cache_dir):
        r = pull_cache(url, out_dir, fields=chosen, jobs=jobs, progress=progress)
    out.print(
        f"pulled {url} into {out_dir}: {r.copied} file(s) downloaded ({_human(r.bytes_copied)}), {r.skipped} already "
        f"there; fields: {', '.join(r.fields) or 'none'}; verified (sizes, sha256)",
        highlight=False,
        soft_wrap=True,
    )


if __name__ == "__main__":  # `python -m mmcache.cli ...`
    app(prog_name="mmcache")
