"""`mmcache push` and `mmcache pull`: a cache copied to or from where teams keep data (an object store,
the Hub, any fsspec URL; pull also from http(s):// and pipe:), every byte checked against the manifest.

Push uploads every listed file first and the manifest last, so a reader of the destination never sees
a manifest naming a file that is not there yet. A file already at the destination with the listed size
and sha256 is skipped: an interrupted push resumes where it stopped. Pushing over an existing cache adds
what is new (shards, fields) and refuses what would lose or mix data, by merge's rules: a field whose
fingerprint differs, shards only the destination has (they would be unlisted), or a field only the
destination has when the shards differ (it would no longer cover them).

Pull downloads the listed files of every field (or of `fields`), checks each against its size and
sha256 as it arrives, writes each through a temp file renamed into place, and the manifest (listing
what was pulled) last. An interrupted pull resumes: files already there that match are kept.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .cache import Cache, open_cache
from .errors import CacheError, InputError
from .store.atomic import remove_stale_temps, sha256_file, write_atomic
from .store.lock import CacheLock
from .store.manifest import MANIFEST, check_same_fingerprint, dumps, load_manifest, parse_manifest, save_manifest
from .transport import ObjectTransport, current_settings, is_url

JOBS = 4  # files in flight (each held whole in memory while it moves)


@dataclass
class CopyReport:
    source: str
    dest: str
    files: int = 0  # listed files the destination holds afterwards
    copied: int = 0
    skipped: int = 0  # already there with the listed size and sha256
    bytes_copied: int = 0
    fields: list[str] = field(default_factory=list)
    kept_fields: list[str] = field(default_factory=list)  # push: fields only the destination had, kept
    manifest_written: bool = True


def listed_files(manifest: dict, fields: Sequence[str] | None = None) -> list[dict]:
    """Every file entry of a manifest: samples indexes, then each field's files."""
    files = [manifest["shards"][s] for s in sorted(manifest["shards"])]
    for name in sorted(manifest["fields"]) if fields is None else fields:
        files += [manifest["fields"][name]["files"][s] for s in sorted(manifest["fields"][name]["files"])]
    return files


def copy_all(
    task: str, fn: Callable[[dict], int], entries: list[dict], jobs: int, report: CopyReport, progress
) -> None:
    """`fn(entry)` (bytes copied, 0 when the file was already there) on every entry, at most `jobs` at
    a time, counted in `report` and told to `progress(task, bytes done, bytes in all)` as each ends.
    The first error stops it: nothing more is started, the ones in flight finish, the error is raised."""
    total, done = sum(e["bytes"] for e in entries), 0
    if progress:
        progress(task, 0, total)
    for entry, moved in _each(fn, entries, jobs):
        done += entry["bytes"]
        report.copied += bool(moved)
        report.skipped += not moved
        report.bytes_copied += moved
        if progress:
            progress(task, done, total)


def _each(fn: Callable[[dict], int], entries: list[dict], jobs: int) -> Iterator[tuple[dict, int]]:
    """(entry, fn(entry)) as each ends, at most `jobs` running at a time."""
    todo = iter(entries)
    running: dict[Future, dict] = {}
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="mmcache-copy") as pool:
        while True:
            while len(running) < max(1, jobs) and (entry := next(todo, None)) is not None:
                running[pool.submit(fn, entry)] = entry
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                yield running.pop(f), f.result()


# -- push ---------------------------------------------------------------------------------------


def push_plan(local: dict, remote: dict | None, where: str, source: str) -> tuple[dict, list[str]]:
    """The manifest the destination will hold after the push, and the fields only it had (kept)."""
    if remote is None:
        return copy.deepcopy(local), []
    if remote["backend"] != local["backend"]:
        raise CacheError(
            f"{where} holds a {remote['backend']} cache and {source} is {local['backend']}: push to a new URL"
        )
    for name in sorted(set(local["fields"]) & set(remote["fields"])):
        mine = local["fields"][name]
        check_same_fingerprint(name, remote["fields"][name], mine["fingerprint_parts"], mine["fingerprint"], where)
    only_remote = sorted(set(remote["shards"]) - set(local["shards"]))
    if only_remote:
        raise CacheError(
            f"{where} has shard(s) {', '.join(only_remote[:5])} that {source} lacks: pushing would unlist them; "
            f"pull it (mmcache pull {where} DIR), merge (mmcache merge), and push the merged cache"
        )
    plan = copy.deepcopy(local)
    kept = []
    same_shards = all(remote["shards"][s]["sha256"] == e["sha256"] for s, e in local["shards"].items())
    same_shards = same_shards and set(remote["shards"]) == set(local["shards"])
    for name in sorted(set(remote["fields"]) - set(local["fields"])):
        if not same_shards:
            raise CacheError(
                f"{where} has field {name!r} that {source} lacks, and their samples differ: after the push it would "
                f"not cover them. Pull it first (mmcache pull {where} DIR --fields {name}) or push to a new URL"
            )
        plan["fields"][name] = copy.deepcopy(remote["fields"][name])
        kept.append(name)
    return plan, kept


def push(
    source: str | Path,
    url: str,
    *,
    jobs: int = JOBS,
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyReport:
    """Upload the cache at `source` to `url` (any fsspec URL, or a directory), files first and the
    manifest last; `progress(task, done, total)` is told bytes as they move."""
    if isinstance(url, str) and (url.startswith("pipe:") or url.split("://", 1)[0].lower() in ("http", "https")):
        raise InputError(f"{url}: push needs a writable location (a directory, s3://, gs://, az://, hf://, ...)")
    src = open_cache(source)
    dest = ObjectTransport(str(url), current_settings().storage_options)
    store = dest.store
    where = str(url)
    remote = dest.manifest()
    remote = None if remote is None else parse_manifest(remote, dest.label(MANIFEST))
    plan, kept = push_plan(src.manifest, remote, where, str(source))
    mine = listed_files(src.manifest)
    report = CopyReport(
        str(source), where, files=len(listed_files(plan)), fields=sorted(plan["fields"]), kept_fields=kept
    )
    store.ensure_root()

    def one(entry: dict) -> int:
        rel = entry["path"]
        if store.exists_with_size(rel) == entry["bytes"]:
            data = store.fetch(entry)
            if hashlib.sha256(data).hexdigest() == entry["sha256"]:
                return 0
        data = src.transport.read(entry, check=True)  # never upload bytes the manifest does not describe
        store.put(rel, data)
        if store.exists_with_size(rel) != entry["bytes"]:
            raise CacheError(f"{dest.label(rel)}: upload incomplete (size differs after writing); push again")
        return len(data)

    try:
        copy_all("push", one, mine, jobs, report, progress)
        if remote is not None and dumps(remote) == dumps(plan):
            report.manifest_written = False
        else:
            store.put(MANIFEST, dumps(plan).encode())
    finally:
        src.close()
        dest.close()
    return report


# -- pull ---------------------------------------------------------------------------------------


def pull(
    url: str | Path,
    out: str | Path,
    *,
    fields: Sequence[str] | None = None,
    jobs: int = JOBS,
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyReport:
    """Download the cache at `url` (or only `fields` of it) into the directory `out`, checked."""
    if is_url(str(out)):
        raise InputError(f"pull writes to a local directory, not {out} (to copy between stores, push)")
    out = Path(out)
    src = open_cache(url)
    try:
        manifest = _pulled_manifest(src, fields)
        existing = load_manifest(out) if out.is_dir() else None
        if existing is not None and dumps(existing) != dumps(manifest):
            raise InputError(
                f"{out} already holds another cache; pull into a new directory (or merge them: mmcache merge)"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"output directory {out} is not writable ({e.strerror or e})") from None
        files = listed_files(manifest)
        report = CopyReport(str(url), str(out), files=len(files), fields=sorted(manifest["fields"]))

        def one(entry: dict) -> int:
            path = out / entry["path"]
            if path.is_file() and not path.is_symlink() and path.stat().st_size == entry["bytes"]:
                if sha256_file(path) == (entry["sha256"], entry["bytes"]):
                    return 0
            data = src.transport.read(entry, check=True)
            write_atomic(path, data)
            return len(data)

        with CacheLock(out):
            remove_stale_temps(out)
            copy_all("pull", one, files, jobs, report, progress)
            if existing is None:
                save_manifest(out, manifest)
            else:
                report.manifest_written = False
    finally:
        src.close()
    return report


def _pulled_manifest(src: Cache, fields: Sequence[str] | None) -> dict:
    manifest = copy.deepcopy(src.manifest)
    if fields is None:
        return manifest
    unknown = [f for f in fields if f not in manifest["fields"]]
    if unknown:
        raise InputError(
            f"{src.root} has no field {unknown[0]!r}; available: {', '.join(sorted(manifest['fields'])) or 'none'}"
        )
    manifest["fields"] = {name: manifest["fields"][name] for name in dict.fromkeys(fields)}
    return manifest
