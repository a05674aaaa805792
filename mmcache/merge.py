"""`mmcache merge`: several caches (directories or remote) into one new cache, deduplicated by video
key. Every byte copied from an input is checked against the size and sha256 its manifest records;
the new cache's manifest is written last."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .cache import Cache, open_cache
from .errors import CacheError, FingerprintMismatch, InputError
from .store import FORMATS
from .store.atomic import atomic_path, remove_stale_temps, write_atomic
from .store.lock import CacheLock
from .store.manifest import (
    check_same_fingerprint,
    field_file_entry,
    load_manifest,
    new_manifest,
    parse_samples,
    samples_bytes,
    samples_entry,
    save_manifest,
)
from .transport import LocalTransport, is_url

HEADER_KEYS = ("encoder", "options", "modality", "dim", "dtype", "fingerprint", "fingerprint_parts")


@dataclass
class MergeReport:
    out: Path
    inputs: list[str]
    shards: int = 0
    samples: int = 0
    ok: int = 0
    failed: int = 0
    duplicates: int = 0  # rows whose key an earlier input (or an ok row) already gave
    fields: list[str] = field(default_factory=list)
    dropped_fields: dict[str, list[str]] = field(default_factory=dict)  # field -> the inputs that had it
    copied: int = 0  # field files copied byte for byte
    rewritten: int = 0  # field files rewritten without duplicate samples
    meta_conflicts: list[str] = field(default_factory=list)  # keys whose duplicate rows disagree on meta


def merge_caches(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    allow_partial: bool = False,
    progress=None,
) -> MergeReport:
    """Union of the samples of `inputs` (deduplicated by key) in a new cache `out`.

    Fields must have the same fingerprint in every input (refused naming the first differing key).
    A field that only some inputs have is an error, or with `allow_partial` is left out of the
    output: a field needs a file for every shard, and its missing features cannot be made without
    the videos (add it back with `mmcache extract VIDEOS -e ENCODER --out OUT`).
    For a key in several inputs the first ok row wins (an ok row beats a failed one); the other
    rows' names become its `aliases`. Shards are renumbered in input order; a shard's field files
    are copied byte for byte unless a duplicate sample must be removed from them. Files are published
    one by one and the manifest last, so `out` becomes a cache in one step.
    """

    progress = progress or _Quiet()
    if not inputs:
        raise InputError("nothing to merge: give at least one cache")
    if is_url(out if isinstance(out, str) else str(out)):
        raise InputError(f"merge output must be a local directory, not {out}")
    out = Path(out)
    caches = [open_cache(p) for p in inputs]
    names = [str(p) for p in inputs]
    for c, name in zip(caches, names, strict=True):
        if isinstance(c.transport, LocalTransport) and c.transport.root.resolve() == out.resolve():
            raise InputError(f"merge output {out} is one of the inputs ({name}); merge into a new directory")
    if load_manifest(out) is not None:
        raise InputError(f"{out} already holds a cache; merge into a new directory (give it as an input)")
    backends = {c.backend for c in caches}
    if len(backends) > 1:
        raise CacheError(
            "cannot merge caches of different formats: "
            + ", ".join(f"{n} is {c.backend}" for c, n in zip(caches, names, strict=True))
        )
    backend = caches[0].backend
    report = MergeReport(out=out, inputs=names)
    kept = _merge_fields(caches, names, allow_partial, report)
    winners, aliases = _choose_rows(caches, report)

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"output directory {out} is not writable ({e.strerror or e})") from None
    manifest = new_manifest(backend)
    for name in kept:
        header = caches[[i for i, c in enumerate(caches) if name in c.fields][0]].fields[name]
        manifest["fields"][name] = {k: header[k] for k in HEADER_KEYS} | {"files": {}}
    total = sum(len(c.shards) * (1 + len(kept)) for c in caches)
    progress.start("merge", total)
    with CacheLock(out):
        remove_stale_temps(out)
        n = 0
        for i, c in enumerate(caches):
            for shard in c.shards:
                rows = _rows(c, shard)
                keep = [dict(r) for j, r in enumerate(rows) if winners[r["key"]] == (i, shard, j)]
                progress.advance("merge", 1 + len(kept))
                if not keep:
                    continue
                new = f"{n:06d}"
                n += 1
                for r in keep:
                    names_ = aliases.get(r["key"], set()) - {r["source"]}
                    if names_:
                        r["aliases"] = sorted(names_)
                manifest["shards"][new] = _write_samples(out, new, keep)
                ok = {r["key"] for r in rows if r["status"] == "ok"}
                dropped = ok - {r["key"] for r in keep}
                for name in kept:
                    entry = c.fields[name]["files"][shard]
                    manifest["fields"][name]["files"][new] = _copy_field_file(
                        c, name, entry, out, new, ok - dropped, dropped, report
                    )
                report.samples += len(keep)
                report.ok += sum(r["status"] == "ok" for r in keep)
        report.shards = n
        report.failed = report.samples - report.ok
        save_manifest(out, manifest)  # last: before this, `out` holds no cache for readers
    return report


class _Quiet:
    """No progress display (the CLI passes rich bars with the same two methods)."""

    def start(self, task: str, total: int) -> None: ...

    def advance(self, task: str, n: int = 1) -> None: ...


def _merge_fields(caches: list[Cache], names: list[str], allow_partial: bool, report: MergeReport) -> list[str]:
    everything = sorted({f for c in caches for f in c.fields})
    for f in everything:  # a mismatch is refused even for a field that would be dropped
        holders = [i for i, c in enumerate(caches) if f in c.fields]
        first = caches[holders[0]].fields[f]
        for i in holders[1:]:
            other = caches[i].fields[f]
            try:
                check_same_fingerprint(f, first, other["fingerprint_parts"], other["fingerprint"], names[i])
            except FingerprintMismatch as e:
                why = str(e).split("; use another field name")[0]  # that advice is for extract
                raise FingerprintMismatch(
                    f"cannot merge {names[holders[0]]} and {names[i]}: {why}; re-extract one of them with the "
                    "other's settings, or under another field name (field=NAME)"
                ) from None
    kept = []
    for f in everything:
        holders = [names[i] for i, c in enumerate(caches) if f in c.fields]
        if len(holders) == len(caches):
            kept.append(f)
            continue
        if not allow_partial:
            lacking = [n for n, c in zip(names, caches, strict=True) if f not in c.fields]
            raise CacheError(
                f"field {f!r} is in {', '.join(holders)} but not in {', '.join(lacking)}; pass --allow-partial "
                "to leave it out of the merged cache (a field needs data for every shard)"
            )
        report.dropped_fields[f] = holders
    for f in kept:
        for c, n in zip(caches, names, strict=True):
            lacking = [s for s in c.shards if s not in c.fields[f]["files"]]
            if lacking:
                raise CacheError(
                    f"{n}: field {f} has no file for shard {lacking[0]} (incomplete extraction: "
                    "re-run extract on that cache first)"
                )
    report.fields = kept
    return kept


def _rows(cache: Cache, shard: str) -> list[dict]:
    """A shard's samples rows, fetched once and checked against the manifest's size and sha256."""
    if shard not in cache._rows:
        entry = cache.manifest["shards"][shard]
        cache._rows[shard] = parse_samples(cache.transport.read(entry), cache.transport.label(entry["path"]))
    return cache._rows[shard]


def _choose_rows(caches: list[Cache], report: MergeReport):
    """key -> (input, shard, row index) of the row that is kept; key -> every name it was given."""
    winners: dict[str, tuple[int, str, int]] = {}
    status: dict[str, str] = {}
    meta: dict[str, dict] = {}
    aliases: dict[str, set[str]] = {}
    for i, c in enumerate(caches):
        for shard in c.shards:
            for j, r in enumerate(_rows(c, shard)):
                k = r["key"]
                aliases.setdefault(k, set()).update([r["source"], *r.get("aliases", [])])
                if k not in winners:
                    winners[k], status[k], meta[k] = (i, shard, j), r["status"], r.get("meta", {})
                    continue
                report.duplicates += 1
                if r.get("meta", {}) != meta[k] and k not in report.meta_conflicts:
                    report.meta_conflicts.append(k)
                if status[k] == "failed" and r["status"] == "ok":
                    winners[k], status[k], meta[k] = (i, shard, j), "ok", r.get("meta", {})
    return winners, aliases


def _write_samples(out: Path, shard: str, rows: list[dict]) -> dict:
    data = samples_bytes(rows)
    write_atomic(out / "samples" / f"{shard}.jsonl", data)
    return samples_entry(shard, data, rows)


def _copy_field_file(
    cache: Cache, name: str, entry: dict, out: Path, shard: str, ok: set[str], dropped: set[str], report: MergeReport
) -> dict:
    """Copy (or, when a kept-elsewhere duplicate has data in it, rewrite) one field file as `shard`."""
    field_ = cache.fields[name]
    path = out / name / f"{shard}{FORMATS[cache.backend].suffix}"
    missing = {k: v for k, v in entry["missing"].items() if k in ok}
    if not dropped - set(entry["missing"]):  # nothing to remove: the same bytes under the new name
        with atomic_path(path) as tmp:
            cache.transport.copy_to(entry, tmp)
        report.copied += 1
        return {**entry, "path": f"{name}/{path.name}", "missing": missing}
    writer = FORMATS[cache.backend].writer(path, field_["dim"], field_["dtype"])
    try:
        for key, feats, ts in cache.iter_file(entry, check=True):
            if key in ok:
                writer.add(key, feats, ts)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    report.rewritten += 1
    return field_file_entry(name, writer, missing)
