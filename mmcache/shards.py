"""One unit of extraction work: a shard task (new shard, or fields added to an existing shard).

`run_task` writes and publishes the shard's files and returns a *part*: the manifest entries for
them. The caller applies parts to the manifest (`apply_part`) under the cache lock, so tasks can run
in one process (`mmcache extract`), in parallel Snakemake jobs (`mmcache run-shard`), or from
features computed on a dask cluster (`outcomes`), and the manifest is still written last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CacheError, DecodeError
from .probe import probe
from .store import WRITERS
from .store.atomic import sha256_file, write_atomic
from .store.manifest import check_same_fingerprint, samples_bytes
from .types import VideoInput

if TYPE_CHECKING:  # the encoder stack imports torch: loaded only where features are computed, so that
    # `mmcache finalize` and `plan`'s bookkeeping start in a fraction of a second
    from .encoders import Encoder
    from .pipeline import Job, Outcome

Outcomes = Callable[["Encoder", "list[Job]", float], "Iterator[Outcome]"]


class Progress:
    """Callbacks for long work; the CLI passes one that drives rich progress bars."""

    def start(self, task: str, total: int) -> None: ...

    def advance(self, task: str, n: int = 1) -> None: ...


@dataclass
class Task:
    shard: str
    kind: str  # new | add
    fields: list[str]
    videos: list[VideoInput]
    aliases: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        videos = [{**asdict(v), "path": str(Path(v.path).absolute())} for v in self.videos]
        return {
            "shard": self.shard,
            "kind": self.kind,
            "fields": self.fields,
            "videos": videos,
            "aliases": self.aliases,
        }

    @classmethod
    def from_json(cls, d: dict) -> Task:
        videos = [VideoInput(**{**v, "path": Path(v["path"])}) for v in d["videos"]]
        return cls(d["shard"], d["kind"], list(d["fields"]), videos, dict(d["aliases"]))


class Encoders:
    """Builds each encoder once, when first needed, and checks it against the recorded fields."""

    def __init__(self, args: dict[str, str], recorded: dict):
        self.args, self.recorded, self.built = args, recorded, {}

    def get(self, name: str) -> Encoder:
        if name not in self.built:
            from .encoders import build_encoder

            enc = build_encoder(self.args[name])
            if name in self.recorded:
                check_same_fingerprint(
                    name, self.recorded[name], enc.fingerprint_parts(), enc.fingerprint(), "the cache"
                )
            self.built[name] = enc
        return self.built[name]


def field_header(enc: Encoder) -> dict:
    """A field's manifest entry without its files."""
    return {
        "encoder": enc.spec.name,
        "options": {k: v for k, v in enc.options.items() if k != "field"},
        "modality": enc.spec.modality,
        "dim": enc.dim,
        "dtype": enc.store_dtype,
        "fingerprint": enc.fingerprint(),
        "fingerprint_parts": json.loads(json.dumps(enc.fingerprint_parts())),
    }


def apply_part(manifest: dict, part: dict) -> None:
    """Record a finished task's files in the manifest (the caller saves it)."""
    for name, f in part["fields"].items():
        entry = manifest["fields"].setdefault(name, {**f["header"], "files": {}})
        if entry["fingerprint"] != f["header"]["fingerprint"]:
            check_same_fingerprint(
                name, entry, f["header"]["fingerprint_parts"], f["header"]["fingerprint"], f"part {part['shard']}"
            )
        entry["files"][part["shard"]] = f["file"]
    if part["samples"] is not None:
        manifest["shards"][part["shard"]] = part["samples"]


def write_part(root: Path, part: dict) -> None:
    write_atomic(root / "parts" / f"{part['shard']}.json", json.dumps(part, sort_keys=True).encode())


def read_part(root: Path, shard: str) -> dict | None:
    path = root / "parts" / f"{shard}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except ValueError as e:
        raise CacheError(f"{path}: unreadable part ({e})") from None


def probe_jobs(videos: list[VideoInput], timeout: float, progress: Progress) -> tuple[list[Job], dict]:
    from .pipeline import Job

    """Probe each video; ones that cannot be read, or hold no video stream, fail here."""
    jobs, failed = [], {}
    progress.start("probe", len(videos))
    for v in videos:
        try:
            if not v.sha256:
                # a named pipe or device is never read (hashing it would block): say so
                odd = v.path.exists() and not v.path.is_file()
                raise DecodeError(f"{v.source}: {'not a regular file' if odd else 'file missing or unreadable'}")
            if v.bytes == 0:
                raise DecodeError(f"{v.source}: empty file (0 bytes)")
            info = probe(v.path, timeout=timeout)
            if info.video is None:
                raise DecodeError(f"{v.source}: no video stream (audio-only or not a video)")
            jobs.append(Job(v.key, v, info))
        except DecodeError as e:
            failed[v.key] = with_source(str(e), v)
        progress.advance("probe")
    return jobs, failed


def with_source(reason: str, v: VideoInput) -> str:
    """Failure reasons name the input as the user gave it."""
    path = str(v.path)
    return v.source + reason[len(path) :] if reason.startswith(path) else reason


def _writer(root: Path, backend: str, shard: str, enc: Encoder):
    cls = WRITERS[backend]
    return cls(root / enc.field / f"{shard}{cls.suffix}", enc.dim, enc.store_dtype)


def _encode_field(root, backend, shard, enc, jobs, timeout, progress, outcomes: Outcomes):
    """Encode `jobs` for one field into a temp shard file: (writer, missing, failed)."""
    writer = _writer(root, backend, shard, enc)
    missing, failed = {}, {}
    label = f"{enc.field} [{shard}]"
    progress.start(label, len(jobs))
    try:
        for o in outcomes(enc, jobs, timeout):
            if o.status == "ok":
                writer.add(o.job.key, o.feats.astype(enc.store_dtype), o.ts)
            elif o.status == "absent":
                missing[o.job.key] = o.reason
            else:
                failed[o.job.key] = with_source(o.reason, o.job.video)
            progress.advance(label)
    except BaseException:
        writer.abort()
        raise
    return writer, missing, failed


def _publish(enc: Encoder, writer, missing: dict) -> dict:
    writer.close()
    sha, size = sha256_file(writer.path)
    return {
        "header": field_header(enc),
        "file": {
            "path": f"{enc.field}/{writer.path.name}",
            "bytes": size,
            "sha256": sha,
            "count": len(writer.keys),
            "steps": writer.steps,
            "missing": dict(sorted(missing.items())),
        },
    }


def _local(enc: Encoder, jobs: list[Job], timeout: float) -> Iterator[Outcome]:
    from .pipeline import run_encoder

    return run_encoder(enc, jobs, timeout=timeout)


def run_task(
    root: Path,
    backend: str,
    task: Task,
    encoders: Encoders,
    timeout: float = 120.0,
    progress: Progress | None = None,
    outcomes: Outcomes = _local,
) -> dict:
    progress = progress or Progress()
    run = _new_shard if task.kind == "new" else _add_fields
    return run(root, backend, task, encoders, timeout, progress, outcomes)


def _new_shard(root, backend, task, encoders, timeout, progress, outcomes) -> dict:
    jobs, failed = probe_jobs(task.videos, timeout, progress)
    infos = {j.key: j.info for j in jobs}
    written = []  # (encoder, writer, missing) per field, published together at the end
    try:
        for name in task.fields:
            enc = encoders.get(name)
            writer, missing, field_failed = _encode_field(
                root, backend, task.shard, enc, jobs, timeout, progress, outcomes
            )
            written.append((enc, writer, missing))
            if field_failed:  # a video that fails any field fails the sample in every field
                failed.update(field_failed)
                jobs = [j for j in jobs if j.key not in field_failed]
        rows = [sample_row(v, infos.get(v.key), failed.get(v.key), task.aliases.get(v.key, [])) for v in task.videos]
        ok = {r["key"] for r in rows if r["status"] == "ok"}
        fields = {}
        for enc, writer, missing in written:
            if set(writer.keys) - ok:
                writer = _drop_failed(root, backend, task.shard, enc, writer, ok)
            fields[enc.field] = _publish(enc, writer, {k: v for k, v in missing.items() if k in ok})
    except BaseException:
        for _, writer, _ in written:
            writer.abort()
        raise
    data = samples_bytes(rows)
    write_atomic(root / "samples" / f"{task.shard}.jsonl", data)
    samples = {
        "path": f"samples/{task.shard}.jsonl",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "count": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
    }
    return {
        "shard": task.shard,
        "samples": samples,
        "fields": fields,
        "failures": [[r["source"], r["error"]] for r in rows if r["status"] == "failed"],
    }


def _drop_failed(root, backend, shard, enc, writer, ok):
    """Rewrite a field's temp shard without samples that failed a later field (rare)."""
    from .cache import iter_shard_file

    keep = [(k, f, t) for k, f, t in iter_shard_file(writer.finish(), backend) if k in ok]
    writer.abort()
    fresh = _writer(root, backend, shard, enc)
    for k, f, t in keep:
        fresh.add(k, f, t)
    return fresh


def sample_row(v: VideoInput, info, error: str | None, aliases: list[str]) -> dict:
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


def _add_fields(root, backend, task, encoders, timeout, progress, outcomes) -> dict:
    """Write only the missing fields' files for an existing shard (its ok videos)."""
    jobs, failed = probe_jobs(task.videos, timeout, progress)
    fields = {}
    for name in task.fields:
        enc = encoders.get(name)
        writer, missing, field_failed = _encode_field(root, backend, task.shard, enc, jobs, timeout, progress, outcomes)
        missing.update(failed)
        missing.update(field_failed)  # the sample stays ok in other fields; this field says why
        fields[name] = _publish(enc, writer, missing)
    return {"shard": task.shard, "samples": None, "fields": fields, "failures": []}
