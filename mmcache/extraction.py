"""`mmcache extract`: from input videos to a published, incremental cache.

Order of work: check encoder options (fast, before loading anything), resolve and hash inputs,
take the cache lock, *plan* (fields missing from existing shards; new shards for new videos with
every field the cache has), then run each shard task (shards.py) and record its part in the
manifest, which is always written last. A field added to existing shards enters the manifest only
once every shard has its file; until then its finished files are kept in the journal
(`shards.Pending`), from which an interrupted run resumes. `plan_to_dir`/`run_planned_shard`/
`finalize` split the same work across processes for Snakemake; an `engine` (engines.py) computes the
features, in this process or on a dask cluster.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .encoders import check_encoder_arg, encoder_arg
from .encoders.base import NOT_FINGERPRINTED
from .engines import Engine, LocalEngine
from .errors import CacheError, DecodeError, FingerprintMismatch, InputError
from .inputs import HashMemo, dedupe, key_input, recheck_aliases, resolve_inputs
from .shards import (
    Encoders,
    Pending,
    Progress,
    Task,
    encode_locally,
    load_hint_json,
    read_hint,
    read_part,
    run_task,
    write_file,
    write_part,
    writing,
)
from .store.atomic import remove_stale_temps
from .store.lock import CacheLock
from .store.manifest import (
    BACKENDS,
    differing_keys,
    dumps,
    load_manifest,
    new_manifest,
    read_samples,
    save_manifest,
    value_at,
)

HASH_MEMO = ".input-hashes.json"
MAX_MEMO_BYTES = 1 << 30  # ~250 bytes a video: 4 million videos; a larger memo is not read (all are hashed)
PLAN_DIR, PARTS_DIR = "plan", "parts"

__all__ = [
    "CacheLock",
    "ExtractReport",
    "Progress",
    "extract",
    "finalize",
    "plan_to_dir",
    "run_planned_shard",
]


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

    def record(self, task: Task, part: dict) -> None:
        if task.kind == "add":
            for f in task.fields:
                self.fields_added[f] = self.fields_added.get(f, 0) + 1
            return
        self.shards_written.append(task.shard)
        self.new_ok += part["samples"]["ok"]
        self.new_failed += part["samples"]["failed"]
        self.failures += [tuple(f) for f in part["failures"]]


@dataclass
class Plan:
    manifest: dict
    args: dict[str, str]  # field -> encoder arg
    tasks: list[Task]
    report: ExtractReport


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_file = out / f".write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        raise InputError(f"output directory {out} is not writable ({e.strerror or e})") from None


def _checked(inputs, encoders, out, backend, shard_size):
    if backend not in BACKENDS:
        raise InputError(f"unknown format {backend!r}; allowed: {', '.join(BACKENDS)}")
    if shard_size < 1:
        raise InputError("shard size must be at least 1")
    encoders = list(encoders)
    requested = [check_encoder_arg(e) for e in encoders]  # fail fast on bad names/options
    if not requested:
        raise InputError("no encoder given; see `mmcache encoders`")
    inputs = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    videos = resolve_inputs(inputs)
    root = Path(out)
    _prepare_out(root)
    return videos, encoders, requested, root


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
    engine: Engine | None = None,
) -> ExtractReport:
    """Extract features of `encoders` ('NAME' or 'NAME:k=v,...') for `inputs` into cache `out`.

    Re-running is a no-op; new videos go to new shards; a new encoder is added to every shard.
    Per-video failures become failed rows (raise only when `strict`). `engine` computes the features
    (engines.py): in this process by default, or e.g. `distributed.DaskEngine("tcp://host:8786")`.
    """
    engine = engine or LocalEngine()
    progress = progress or Progress()
    videos, encoders, requested, root = _checked(inputs, encoders, out, backend, shard_size)
    with CacheLock(root):
        remove_stale_temps(root)
        plan = make_plan(videos, encoders, requested, root, backend, shard_size, progress)
        enc = Encoders(plan.args, plan.manifest["fields"])
        pending = Pending.load(root, plan.manifest)
        work = [pending.reuse(task, enc) for task in plan.tasks]  # (what is left to run, files reused)
        todo = [left for left, _ in work if left.fields]
        outcomes = engine.prepare(root, todo, plan.args, timeout, progress) if todo else encode_locally
        for task, (left, reused) in zip(plan.tasks, work, strict=True):
            part = run_task(root, backend, left, enc, timeout, progress, outcomes)
            part["fields"].update(reused)
            record_parts(root, plan.manifest, pending, [part])
            plan.report.record(task, part)
        if not plan.manifest["shards"]:
            _save_manifest(root, plan.manifest)
        engine.finish(root)
    if strict and plan.report.failures:
        raise DecodeError(f"{len(plan.report.failures)} video(s) failed, first: {plan.report.failures[0][1]}")
    return plan.report


def record_parts(root: Path, manifest: dict, pending: Pending, parts: list[dict]) -> None:
    """Record finished parts and publish. Order: the journal first, still listing a field about to
    enter the manifest (a crash before the manifest is written loses no finished file), then the
    manifest, all of whose fields are complete, then the journal without the fields that moved."""
    for part in parts:
        pending.add(manifest, part)
    ready = pending.complete(manifest)
    pending.save()
    pending.promote(manifest, ready)
    _save_manifest(root, manifest)
    if ready:
        pending.save()


def _save_manifest(root: Path, manifest: dict) -> None:
    with writing(root / "manifest.json"):
        save_manifest(root, manifest)


def make_plan(videos, encoder_args, requested, root, backend, shard_size, progress) -> Plan:
    manifest = load_manifest(root) or new_manifest(backend)
    if manifest["backend"] != backend and manifest["shards"]:
        raise CacheError(f"cache {root} uses format {manifest['backend']}, not {backend}")
    existing = {s: read_samples(root / e["path"]) for s, e in sorted(manifest["shards"].items())}
    _key_inputs(videos, root, existing, progress)
    videos, aliases = dedupe(videos)
    report = ExtractReport(cache=root, inputs=len(videos))

    args = dict(zip([f for _, f, _ in requested], encoder_args, strict=True))
    for spec, name, opts in requested:  # cheap check before any model loads; builds check the rest
        if name in manifest["fields"]:
            _check_options(name, spec.name, opts, manifest["fields"][name])
    for name, entry in manifest["fields"].items():
        args.setdefault(name, encoder_arg(name, entry))

    known = {row["key"] for rows in existing.values() for row in rows}
    by_key = {v.key: v for v in videos}
    report.cached = sum(k in known for k in by_key)
    tasks = []
    for shard, rows in existing.items():
        todo = [f for f in args if shard not in manifest["fields"].get(f, {}).get("files", {})]
        if todo:
            tasks.append(Task(shard, "add", todo, _shard_videos(shard, rows, todo, by_key)))
    new = [v for v in videos if v.key not in known]
    start = max((int(s) for s in existing), default=-1) + 1
    for n, i in enumerate(range(0, len(new), shard_size)):
        chunk = new[i : i + shard_size]
        tasks.append(
            Task(
                f"{start + n:06d}", "new", list(args), chunk, {v.key: aliases[v.key] for v in chunk if v.key in aliases}
            )
        )
    return Plan(manifest, args, tasks, report)


def _shard_videos(shard: str, rows: list[dict], fields: list[str], by_key: dict) -> list:
    ok_rows = [r for r in rows if r["status"] == "ok"]
    lost = [r["source"] for r in ok_rows if r["key"] not in by_key]
    if lost:
        raise InputError(
            f"cannot add {', '.join(fields)} to shard {shard}: {len(lost)} of its videos are not "
            f"among the inputs (e.g. {lost[0]}); pass the inputs the cache was made from"
        )
    return [by_key[r["key"]] for r in ok_rows]


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
    """Options that change the numbers (not where, in what batch size or with how many decoders they
    were computed)."""
    return {k: v for k, v in opts.items() if k not in NOT_FINGERPRINTED}


def _key_inputs(videos: list, root: Path, existing: dict[str, list[dict]], progress: Progress) -> None:
    """Hash every input, sparing the reads the local memo may (HashMemo: only for files the published
    samples index already records under that name, size and hash), then save the memo."""
    progress.start("hash", len(videos))
    memo = HashMemo.parse(read_hint(root / HASH_MEMO, MAX_MEMO_BYTES))  # malformed in any way: empty
    for rows in existing.values():
        memo.vouch(rows)
    for v in videos:
        key_input(v, memo)
        progress.advance("hash")
    recheck_aliases(videos, memo)
    write_file(root / HASH_MEMO, memo.dumps())


# -- the same work split across processes (Snakemake): plan, run each shard, finalize ------------


def plan_to_dir(
    inputs, encoders, out, *, backend: str = "webdataset", shard_size: int = 256, progress: Progress | None = None
) -> list[str]:
    """Write <cache>/plan/<shard>.json for every shard task; returns the shard names (may be none)."""
    progress = progress or Progress()
    videos, encoders, requested, root = _checked(inputs, encoders, out, backend, shard_size)
    with CacheLock(root):
        remove_stale_temps(root)
        plan = make_plan(videos, encoders, requested, root, backend, shard_size, progress)
        _fold_stale_parts(root, plan.manifest)
        shutil.rmtree(root / PLAN_DIR, ignore_errors=True)
        with writing(root / PLAN_DIR):
            (root / PLAN_DIR).mkdir()
        for task in plan.tasks:
            body = {"backend": backend, "args": plan.args, "task": task.to_json()}
            write_file(
                root / PLAN_DIR / f"{task.shard}.json", json.dumps(body, sort_keys=True).encode()
            )  # ascii: any name
        write_file(root / PLAN_DIR / "plan.json", dumps({"shards": [t.shard for t in plan.tasks]}).encode())
    return [t.shard for t in plan.tasks]


def _fold_stale_parts(root: Path, manifest: dict) -> None:
    """Parts left by an earlier plan that was never finalized describe that plan's tasks: a new shard
    of the same name may now hold other videos, so `run-shard` must not take them as done. Their
    files of fields being added to existing shards go to the journal (checked before any reuse), then
    the parts go."""
    parts = root / PARTS_DIR
    if not parts.is_dir():
        return
    pending = Pending.load(root, manifest)
    for path in sorted(parts.glob("*.json")):
        part = load_hint_json(path)
        if type(part) is dict and part.get("samples") is None and type(part.get("fields")) is dict:
            shard = path.stem
            for name, f in part["fields"].items():
                if type(f) is dict and type(f.get("header")) is dict and name not in manifest["fields"]:
                    entry = {"fingerprint": f["header"].get("fingerprint"), "files": {shard: f.get("file")}}
                    pending.note(name, entry, manifest)
    pending.save()
    shutil.rmtree(parts, ignore_errors=True)


def run_planned_shard(cache: str | Path, shard: str, timeout: float = 120.0, progress: Progress | None = None) -> dict:
    """Run one planned shard task and write <cache>/parts/<shard>.json; a finished shard is a no-op."""
    root = Path(cache)
    path = root / PLAN_DIR / f"{shard}.json"
    if not path.is_file():
        raise CacheError(f"no planned shard {shard} in {root} (run `mmcache plan` first)")
    with CacheLock(root, f".lock-{shard}"):
        done = read_part(root, shard)
        if done is not None:
            return done
        body = json.loads(path.read_text("utf-8"))
        manifest = load_manifest(root) or new_manifest(body["backend"])
        encoders = Encoders(body["args"], manifest["fields"])
        # the journal is only read here (finalize writes it, under the cache lock)
        task, reused = Pending.load(root, manifest).reuse(Task.from_json(body["task"]), encoders)
        part = run_task(root, body["backend"], task, encoders, timeout, progress)
        part["fields"].update(reused)
        write_part(root, part)
        return part


def finalize(cache: str | Path) -> ExtractReport:
    """Apply every planned shard's part to the manifest (written last), then drop plan and parts."""
    root = Path(cache)
    plan_file = root / PLAN_DIR / "plan.json"
    if not plan_file.is_file():
        raise CacheError(f"nothing to finalize in {root} (no plan)")
    shards = json.loads(plan_file.read_text("utf-8"))["shards"]
    with CacheLock(root):
        parts = {s: read_part(root, s) for s in shards}
        missing = [s for s, p in parts.items() if p is None]
        if missing:
            raise CacheError(
                f"cannot finalize {root}: shard(s) {', '.join(missing[:5])} have not finished "
                "(run `mmcache run-shard` for them)"
            )
        remove_stale_temps(root)  # left by killed run-shard jobs; every planned shard has finished
        first = json.loads((root / PLAN_DIR / f"{shards[0]}.json").read_text()) if shards else {}
        manifest = load_manifest(root) or new_manifest(first.get("backend", "webdataset"))
        report = ExtractReport(cache=root)
        for s in shards:
            task = Task.from_json(json.loads((root / PLAN_DIR / f"{s}.json").read_text("utf-8"))["task"])
            report.record(task, parts[s])
        report.inputs = report.new_ok + report.new_failed
        record_parts(root, manifest, Pending.load(root, manifest), [parts[s] for s in shards])
        shutil.rmtree(root / PARTS_DIR, ignore_errors=True)
        shutil.rmtree(root / PLAN_DIR, ignore_errors=True)
        for lock in root.glob(".lock-*"):
            lock.unlink(missing_ok=True)
    return report
