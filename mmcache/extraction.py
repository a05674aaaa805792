"""`mmcache extract`: the one loop from input videos to a published, incremental cache.

Order of work: resolve and hash inputs, check encoder options (fast, before loading anything),
take the cache lock, then (1) add missing fields to existing shards, (2) write new shards for new
videos with every field the cache has. Each shard is published file by file (temp, fsync, rename)
and then recorded in the manifest, which is always written last.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .encoders import Encoder, build_encoder, check_encoder_arg, get_spec
from .errors import CacheError, DecodeError, FingerprintMismatch, InputError
from .inputs import dedupe, key_input, resolve_inputs
from .pipeline import Job, run_encoder
from .probe import probe
from .store.atomic import remove_stale_temps, sha256_file, write_atomic
from .store.hdf5 import H5ShardWriter
from .store.manifest import (
    BACKENDS,
    check_same_fingerprint,
    differing_keys,
    load_manifest,
    new_manifest,
    read_samples,
    samples_bytes,
    save_manifest,
    value_at,
)
from .store.tar import TarShardWriter
from .types import VideoInput

WRITERS = {"webdataset": TarShardWriter, "hdf5": H5ShardWriter}
HASH_MEMO = ".input-hashes.json"


@dataclass
class ExtractReport:
    cache: Path
    inputs: int = 0  # distinct videos given
    cached: int = 0  # already in the cache (skipped)
    new_ok: int = 0
    new_failed: int = 0
    shards_written: list[str] = field(default_factory=list)
    fields_added: dict[str, int] = field(default_factory=dict)  # field -> existing shards it was added to
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)


class Progress:
    """Callbacks for long work; the CLI passes one that drives rich progress bars."""

    def start(self, task: str, total: int) -> None: ...

    def advance(self, task: str, n: int = 1) -> None: ...

    def message(self, text: str) -> None: ...


class CacheLock:
    """An exclusive flock on <cache>/.lock: a second writer refuses at once; a crash releases it."""

    def __init__(self, root: Path):
        self.path = root / ".lock"

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise CacheError(
                f"cache {self.path.parent} is being written by another mmcache process (wait for it to finish)"
            ) from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        raise InputError(f"output directory {out} is not writable ({e.strerror or e})") from None


def extract(
    inputs: Sequence[str | Path] | str | Path,
    encoders: Iterable[str],
    out: str | Path,
    *,
    backend: str = "webdataset",
    shard_size: int = 256,
    timeout: float = 120.0,
    strict: bool = False,
    progress: Progress | None = None,
) -> ExtractReport:
    """Extract features of `encoders` ('NAME' or 'NAME:k=v,...') for `inputs` into cache `out`.

    Re-running is a no-op; new videos go to new shards; a new encoder is added to every shard.
    Per-video failures become failed rows (raise only when `strict`).
    """
    progress = progress or Progress()
    if backend not in BACKENDS:
        raise InputError(f"unknown format {backend!r}; allowed: {', '.join(BACKENDS)}")
    if shard_size < 1:
        raise InputError("shard size must be at least 1")
    inputs = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    requested = [check_encoder_arg(e) for e in encoders]  # fail fast on bad names/options
    if not requested:
        raise InputError("no encoder given; see `mmcache encoders`")
    videos = resolve_inputs(inputs)
    root = Path(out)
    _prepare_out(root)
    with CacheLock(root):
        remove_stale_temps(root)
        return _extract_locked(videos, encoders, requested, root, backend, shard_size, timeout, strict, progress)


def _extract_locked(videos, encoder_args, requested, root, backend, shard_size, timeout, strict, progress):
    manifest = load_manifest(root) or new_manifest(backend)
    if manifest["backend"] != backend and manifest["shards"]:
        raise CacheError(f"cache {root} uses format {manifest['backend']}, not {backend}")
    progress.start("hash", len(videos))
    memo = _load_hash_memo(root)
    for v in videos:
        key_input(v, memo)
        progress.advance("hash")
    write_atomic(root / HASH_MEMO, json.dumps(memo, sort_keys=True).encode())
    videos, aliases = dedupe(videos)
    report = ExtractReport(cache=root, inputs=len(videos))

    args = dict(zip([f for _, f, _ in requested], encoder_args, strict=True))
    for spec, name, opts in requested:  # cheap check before any model loads; builds check the rest
        if name in manifest["fields"]:
            _check_options(name, spec.name, opts, manifest["fields"][name])
    for name, entry in manifest["fields"].items():
        args.setdefault(name, encoder_arg(name, entry))
    encoders = _Encoders(args, manifest)

    existing = {s: read_samples(root / e["path"]) for s, e in sorted(manifest["shards"].items())}
    known = {row["key"] for rows in existing.values() for row in rows}
    by_key = {v.key: v for v in videos}
    report.cached = sum(k in known for k in by_key)

    for shard, rows in existing.items():
        todo = [f for f in args if shard not in manifest["fields"].get(f, {}).get("files", {})]
        if todo:
            _add_fields(root, manifest, shard, rows, todo, by_key, encoders, timeout, progress)
            for f in todo:
                report.fields_added[f] = report.fields_added.get(f, 0) + 1

    new = [v for v in videos if v.key not in known]
    start = max((int(s) for s in existing), default=-1) + 1
    for n, i in enumerate(range(0, len(new), shard_size)):
        shard = f"{start + n:06d}"
        chunk = new[i : i + shard_size]
        rows = _new_shard(root, manifest, shard, chunk, aliases, list(args), encoders, timeout, progress)
        report.shards_written.append(shard)
        for row in rows:
            if row["status"] == "ok":
                report.new_ok += 1
            else:
                report.new_failed += 1
                report.failures.append((row["source"], row["error"]))
    if not manifest["shards"]:
        save_manifest(root, manifest)
    if strict and report.failures:
        raise DecodeError(f"{len(report.failures)} video(s) failed, first: {report.failures[0][1]}")
    return report


def _check_options(name: str, encoder: str, opts: dict, recorded: dict) -> None:
    mine = {"encoder": encoder, "options": _numeric_options(opts)}
    theirs = {"encoder": recorded["encoder"], "options": _numeric_options(recorded["options"])}
    keys = differing_keys(theirs, mine)
    if keys:
        raise FingerprintMismatch(
            f"field {name!r} exists in the cache with different settings at {', '.join(keys[:3])} "
            f"({value_at(theirs, keys[0])!r} vs {value_at(mine, keys[0])!r}); use another field name (field=NAME)"
        )


def _numeric_options(opts: dict) -> dict:
    """Options that change the numbers (not where or in what batch size they were computed)."""
    return {k: v for k, v in opts.items() if k not in ("device", "batch_size", "field")}


def _load_hash_memo(root: Path) -> dict:
    """Local memo of input hashes (not part of the cache contract; safe to delete)."""
    try:
        memo = json.loads((root / HASH_MEMO).read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def encoder_arg(name: str, entry: dict) -> str:
    """The NAME:k=v,... that rebuilds a field from its manifest entry (options + field name)."""
    fixed = get_spec(entry["encoder"]).fixed  # a preset's pinned options are not user options
    opts = {k: v for k, v in entry["options"].items() if v is not None and k not in fixed}
    opts["field"] = name
    return entry["encoder"] + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in sorted(opts.items()))


def _fmt(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


class _Encoders:
    """Builds each encoder once, when first needed, and checks it against the manifest."""

    def __init__(self, args: dict[str, str], manifest: dict):
        self.args, self.manifest, self.built = args, manifest, {}

    def get(self, name: str) -> Encoder:
        if name not in self.built:
            enc = build_encoder(self.args[name])
            recorded = self.manifest["fields"].get(name)
            if recorded is not None:
                check_same_fingerprint(name, recorded, enc.fingerprint_parts(), enc.fingerprint(), "the cache")
            self.built[name] = enc
        return self.built[name]


def _field_entry(manifest: dict, enc: Encoder) -> dict:
    return manifest["fields"].setdefault(
        enc.field,
        {
            "encoder": enc.spec.name,
            "options": {k: v for k, v in enc.options.items() if k != "field"},
            "modality": enc.spec.modality,
            "dim": enc.dim,
            "dtype": enc.store_dtype,
            "fingerprint": enc.fingerprint(),
            "fingerprint_parts": enc.fingerprint_parts(),
            "files": {},
        },
    )


def _probe_jobs(videos: list[VideoInput], timeout: float, progress: Progress) -> tuple[list[Job], dict]:
    """Probe each video; ones that cannot be read, or hold no video stream, fail here."""
    jobs, failed = [], {}
    progress.start("probe", len(videos))
    for v in videos:
        try:
            if not v.sha256:
                raise DecodeError(f"{v.source}: file missing or unreadable")
            if v.bytes == 0:
                raise DecodeError(f"{v.source}: empty file (0 bytes)")
            info = probe(v.path, timeout=timeout)
            if info.video is None:
                raise DecodeError(f"{v.source}: no video stream (audio-only or not a video)")
            jobs.append(Job(v.key, v, info))
        except DecodeError as e:
            failed[v.key] = _with_source(str(e), v)
        progress.advance("probe")
    return jobs, failed


def _with_source(reason: str, v: VideoInput) -> str:
    """Failure reasons name the input as the user gave it."""
    path = str(v.path)
    return v.source + reason[len(path) :] if reason.startswith(path) else reason


def _writer(root: Path, backend: str, shard: str, enc: Encoder):
    cls = WRITERS[backend]
    return cls(root / enc.field / f"{shard}{cls.suffix}", enc.dim, enc.store_dtype)


def _run_field(
    root: Path, manifest: dict, shard: str, enc: Encoder, jobs: list[Job], timeout: float, progress: Progress
) -> tuple[object, dict, dict]:
    """Encode `jobs` for one field into a temp shard file: (writer, missing, failed)."""
    writer = _writer(root, manifest["backend"], shard, enc)
    missing, failed = {}, {}
    progress.start(f"{enc.field} [{shard}]", len(jobs))
    try:
        for o in run_encoder(enc, jobs, timeout=timeout):
            if o.status == "ok":
                writer.add(o.job.key, o.feats.astype(enc.store_dtype), o.ts)
            elif o.status == "absent":
                missing[o.job.key] = o.reason
            else:
                failed[o.job.key] = _with_source(o.reason, o.job.video)
            progress.advance(f"{enc.field} [{shard}]")
    except BaseException:
        writer.abort()
        raise
    return writer, missing, failed


def _publish_field(manifest: dict, enc: Encoder, shard: str, writer, missing: dict) -> None:
    writer.close()
    sha, size = sha256_file(writer.path)
    _field_entry(manifest, enc)["files"][shard] = {
        "path": f"{enc.field}/{writer.path.name}",
        "bytes": size,
        "sha256": sha,
        "count": len(writer.keys),
        "steps": writer.steps,
        "missing": dict(sorted(missing.items())),
    }


def _new_shard(root, manifest, shard, chunk, aliases, fields, encoders, timeout, progress) -> list[dict]:
    jobs, failed = _probe_jobs(chunk, timeout, progress)
    infos = {j.key: j.info for j in jobs}
    written = []  # (encoder, writer, missing) per field, published together at the end
    try:
        for name in fields:
            enc = encoders.get(name)
            writer, missing, field_failed = _run_field(root, manifest, shard, enc, jobs, timeout, progress)
            written.append((enc, writer, missing))
            if field_failed:  # a video that fails any field fails the sample in every field
                failed.update(field_failed)
                jobs = [j for j in jobs if j.key not in field_failed]
        rows = [_sample_row(v, infos.get(v.key), failed.get(v.key), aliases.get(v.key, [])) for v in chunk]
        ok = {r["key"] for r in rows if r["status"] == "ok"}
        for enc, writer, missing in written:
            if set(writer.keys) - ok:
                writer = _drop_failed(root, manifest, shard, enc, writer, ok, timeout, progress)
            _publish_field(manifest, enc, shard, writer, {k: v for k, v in missing.items() if k in ok})
    except BaseException:
        for _, writer, _ in written:
            writer.abort()
        raise
    data = samples_bytes(rows)
    write_atomic(root / "samples" / f"{shard}.jsonl", data)
    manifest["shards"][shard] = {
        "path": f"samples/{shard}.jsonl",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "count": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
    }
    save_manifest(root, manifest)
    return rows


def _drop_failed(root, manifest, shard, enc, writer, ok, timeout, progress):
    """Rewrite a field's temp shard without samples that failed a later field (rare)."""
    from .cache import iter_shard_file

    keep = [(k, f, t) for k, f, t in iter_shard_file(writer.finish(), manifest["backend"]) if k in ok]
    writer.abort()
    fresh = _writer(root, manifest["backend"], shard, enc)
    for k, f, t in keep:
        fresh.add(k, f, t)
    return fresh


def _sample_row(v: VideoInput, info, error: str | None, aliases: list[str]) -> dict:
    row = {
        "key": v.key,
        "id": v.id,
        "source": v.source,
        "sha256": v.sha256 or None,
        "bytes": v.bytes,
        "duration": None if info is None else info.duration,
        "streams": None if info is None else info.summary(),
        "status": "failed" if error else "ok",
        "error": error,
        "meta": v.meta,
    }
    if aliases:
        row["aliases"] = aliases
    return row


def _add_fields(root, manifest, shard, rows, fields, by_key, encoders, timeout, progress) -> None:
    """Write only the missing fields' files for an existing shard."""
    ok_rows = [r for r in rows if r["status"] == "ok"]
    lost = [r["source"] for r in ok_rows if r["key"] not in by_key]
    if lost:
        raise InputError(
            f"cannot add {', '.join(fields)} to shard {shard}: {len(lost)} of its videos are not "
            f"among the inputs (e.g. {lost[0]}); pass the inputs the cache was made from"
        )
    jobs, failed = _probe_jobs([by_key[r["key"]] for r in ok_rows], timeout, progress)
    for name in fields:
        enc = encoders.get(name)
        writer, missing, field_failed = _run_field(root, manifest, shard, enc, jobs, timeout, progress)
        missing.update(failed)
        missing.update(field_failed)  # the sample stays ok in other fields; this field says why
        _publish_field(manifest, enc, shard, writer, missing)
        save_manifest(root, manifest)
