"""One unit of extraction work: a shard task (new shard, or fields added to an existing shard).

`run_task` writes and publishes the shard's files and returns a *part*: the manifest entries for
them. The caller records parts (`Pending.add`) under the cache lock, so tasks can run in one process
(`mmcache extract`), in parallel Snakemake jobs (`mmcache run-shard`), or from features computed on a
dask cluster (`outcomes`), and the manifest is still written last. A field being added to existing
shards is listed in the manifest only once it has a file for every shard; until then its finished
files are kept in a local journal (`Pending`), so an interrupted run resumes without redoing them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CacheError, DecodeError, MMCacheError
from .probe import probe
from .store import FORMATS
from .store.atomic import sha256_file, write_atomic
from .store.manifest import check_same_fingerprint, field_file_entry, field_header, samples_bytes, samples_entry
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


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _errno(e: Exception) -> int | None:
    """The errno of a failed write, also where h5py only puts it in the text ("errno = 28,")."""
    if isinstance(e, OSError) and e.errno:
        return e.errno
    found = re.search(r"errno = (\d+),", str(e))
    return int(found.group(1)) if found else None


def disk_full(e: Exception) -> bool:
    return _errno(e) in DISK_FULL or "No space left on device" in str(e)


def write_error(path: Path, e: Exception) -> str:
    """One line naming the file a write failed on; a full disk says so and how to go on."""
    if disk_full(e):
        quota = " (quota exceeded)" if _errno(e) == errno.EDQUOT else ""
        return (
            f"{path}: disk full{quota} while writing it; the published cache is unchanged: free space "
            "and re-run the same command to resume"
        )
    return f"{path}: cannot write ({getattr(e, 'strerror', None) or e})"


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError while writing the cache file `path` becomes one CacheError naming it (the CLI prints
    one line): a full disk mid-extraction is a message, not a traceback three exceptions deep."""
    try:
        yield
    except OSError as e:
        raise CacheError(write_error(path, e)) from None
    except RuntimeError as e:  # h5py raises some failed writes (closing a file it cannot flush) as these
        if not disk_full(e):
            raise
        raise CacheError(write_error(path, e)) from None


def write_file(path: Path, data: bytes) -> None:
    with writing(path):
        write_atomic(path, data)


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


def encoder_header(enc: Encoder) -> dict:
    """A field's manifest entry without its files, from the encoder that makes it."""
    options = {k: v for k, v in enc.options.items() if k != "field"}
    return field_header(enc.spec.name, options, enc.spec.modality, enc.dim, enc.store_dtype, enc.fingerprint_parts())


def _listed_field(manifest: dict, name: str, f: dict, shard: str) -> dict:
    """The manifest's entry of field `name`, refused when the part's file was made another way."""
    entry, header = manifest["fields"][name], f["header"]
    check_same_fingerprint(name, entry, header["fingerprint_parts"], header["fingerprint"], f"part {shard}")
    return entry


def write_part(root: Path, part: dict) -> None:
    write_file(root / "parts" / f"{part['shard']}.json", json.dumps(part, sort_keys=True).encode())


def read_part(root: Path, shard: str) -> dict | None:
    path = root / "parts" / f"{shard}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except ValueError as e:
        raise CacheError(f"{path}: unreadable part ({e})") from None


# -- the progress journal of fields being added -----------------------------------------------------

PENDING = ".pending-fields.json"
JOURNAL_VERSION = 1
MAX_HINT_BYTES = 64 << 20  # a journal entry is ~250 bytes: far more than any cache needs
_FIELD = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # the manifest schema's field name
_HEX = re.compile(r"[0-9a-f]{8,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_KEYS = {"path", "bytes", "sha256", "count", "steps", "missing"}


def read_hint(path: Path, limit: int = MAX_HINT_BYTES) -> bytes | None:
    """A local hint file's bytes, or None when it is absent, not a regular file (a FIFO would block
    the read, a symlink points elsewhere), larger than `limit` or unreadable: a hint is never worth
    an error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def load_hint_json(path: Path):
    """The JSON value of a hint file, or None when it is missing or malformed in any way (bad UTF-8,
    bad JSON, nesting past the recursion limit, integers past Python's digit limit)."""
    data = read_hint(path)
    try:
        return None if data is None else json.loads(data)
    except (ValueError, RecursionError):
        return None


def _count(n) -> bool:
    return type(n) is int and n >= 0  # bool is an int subclass: not a count


def _file_entry(name: str, shard: str, suffix: str, e) -> bool:
    """A manifest file entry exactly as `_publish` writes it, at the path its field and shard imply."""
    return (
        type(e) is dict
        and set(e) == _FILE_KEYS
        and e["path"] == f"{name}/{shard}{suffix}"
        and all(_count(e[k]) for k in ("bytes", "count", "steps"))
        and type(e["sha256"]) is str
        and _SHA256.fullmatch(e["sha256"]) is not None
        and type(e["missing"]) is dict
        and all(_HEX.fullmatch(k) and type(v) is str for k, v in e["missing"].items())
    )


class Pending:
    """`<cache>/.pending-fields.json`: fields being added to the existing shards of a cache, each with
    its fingerprint and the manifest entries of the files already written (`{"version": 1, "fields":
    {name: {"fingerprint": ..., "files": {shard: entry}}}}`). Not part of the cache contract; readers
    never look at it, and deleting it only costs redoing those files.

    The manifest lists a field only once it has a file for every shard (`complete`, `promote`), so a
    reader (verify, mmfit) sees the last consistent cache while another process adds an encoder. New
    shards are written with every listed field, so listed fields stay complete.

    The journal is a hint like the input-hash memo: malformed JSON or entries are dropped, and an
    entry is reused (`reuse`) only when the encoder's fingerprint is the recorded one and its file is
    a regular file of the recorded size and sha256 whose samples are those the entry claims.
    """

    def __init__(self, root: Path, backend: str):
        self.root, self.backend, self.suffix = root, backend, FORMATS[backend].suffix
        self.fields: dict[str, dict] = {}
        self.headers: dict[str, dict] = {}  # fields checked or written in this run: their fresh headers

    @classmethod
    def load(cls, root: Path, manifest: dict) -> Pending:
        pending = cls(root, manifest["backend"])
        doc = load_hint_json(root / PENDING)
        fields = doc.get("fields") if type(doc) is dict and doc.get("version") == JOURNAL_VERSION else None
        for name, entry in (fields if type(fields) is dict else {}).items():
            if name not in manifest["fields"]:  # a listed field is the manifest's business
                pending.note(name, entry, manifest)
        return pending

    def note(self, name: str, entry, manifest: dict) -> None:
        """Keep the well-formed files of an untrusted {"fingerprint", "files"} entry for shards the
        manifest lists (they are checked again before any reuse)."""
        if not (_FIELD.fullmatch(name) and type(entry) is dict and type(entry.get("files")) is dict):
            return
        fp = entry.get("fingerprint")
        if type(fp) is not str or not _SHA256.fullmatch(fp):
            return
        files = {
            s: e for s, e in entry["files"].items() if s in manifest["shards"] and _file_entry(name, s, self.suffix, e)
        }
        if files:
            kept = self.fields.setdefault(name, {"fingerprint": fp, "files": {}})
            if kept["fingerprint"] == fp:
                kept["files"].update(files)

    def reuse(self, task: Task, encoders: Encoders) -> tuple[Task, dict]:
        """Split an add task: fields whose file for this shard the journal records and that checks
        out become part entries at once; the task is left with the others."""
        if task.kind != "add":
            return task, {}
        ok_keys = {v.key for v in task.videos}
        done = {}
        for name in task.fields:
            entry = self._checked(name, task.shard, encoders, ok_keys)
            if entry is not None:
                done[name] = {"header": encoder_header(encoders.get(name)), "file": entry}
        return replace(task, fields=[f for f in task.fields if f not in done]), done

    def _checked(self, name: str, shard: str, encoders: Encoders, ok_keys: set[str]) -> dict | None:
        journal = self.fields.get(name)
        entry = None if journal is None else journal["files"].get(shard)
        if entry is None:
            return None
        enc = encoders.get(name)
        if journal["fingerprint"] != enc.fingerprint():
            del self.fields[name]  # made with other settings: none of its files count
            return None
        if not self._file_holds(entry, enc, ok_keys):
            del journal["files"][shard]
            return None
        return entry

    def _file_holds(self, entry: dict, enc: Encoder, ok_keys: set[str]) -> bool:
        """The file is what the entry says: a regular file of its size and sha256, holding `count`
        samples of `steps` steps of the field's dim, which with `missing` are the shard's ok samples."""
        path = self.root / entry["path"]
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry["bytes"]:
                return False
            if sha256_file(path) != (entry["sha256"], entry["bytes"]):
                return False
            keys, steps = set(), 0
            for key, feats, _ in FORMATS[self.backend].read(path):
                if key in keys or feats.ndim != 2 or feats.shape[1] != enc.dim:
                    return False
                keys.add(key)
                steps += len(feats)
        except (OSError, ValueError, MMCacheError):
            return False
        missing = set(entry["missing"])
        counts = (len(keys), steps) == (entry["count"], entry["steps"])
        return counts and not keys & missing and keys | missing == ok_keys

    def add(self, manifest: dict, part: dict) -> None:
        """Record a finished part: files of fields the manifest lists go there, the others here; a new
        shard's samples index goes into the manifest."""
        shard = part["shard"]
        for name, f in part["fields"].items():
            if name in manifest["fields"]:
                _listed_field(manifest, name, f, shard)["files"][shard] = f["file"]
                continue
            fp = f["header"]["fingerprint"]
            if self.fields.get(name, {}).get("fingerprint") != fp:
                self.fields[name] = {"fingerprint": fp, "files": {}}
            self.fields[name]["files"][shard] = f["file"]
            self.headers[name] = f["header"]
        if part["samples"] is not None:
            manifest["shards"][shard] = part["samples"]

    def complete(self, manifest: dict) -> list[str]:
        """Fields of this run with a file for every shard of the manifest (never for a cache with no
        shards: a field with no files says nothing)."""
        shards = set(manifest["shards"])
        return sorted(n for n in self.headers if n in self.fields and shards and shards <= set(self.fields[n]["files"]))

    def promote(self, manifest: dict, names: list[str]) -> None:
        for name in names:
            files = self.fields.pop(name)["files"]
            listed = {s: files[s] for s in sorted(manifest["shards"])}
            manifest["fields"][name] = {**self.headers.pop(name), "files": listed}

    def save(self) -> None:
        """Write the journal atomically; none is left when no field is pending."""
        path = self.root / PENDING
        if self.fields:
            write_file(path, json.dumps({"version": JOURNAL_VERSION, "fields": self.fields}, sort_keys=True).encode())
        else:
            with writing(path):
                path.unlink(missing_ok=True)


def no_work(task: Task) -> dict:
    """The part of an add task whose every field was reused from the journal."""
    return {"shard": task.shard, "samples": None, "fields": {}, "failures": []}


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
    cls = FORMATS[backend].writer
    path = root / enc.field / f"{shard}{cls.suffix}"
    with writing(path):
        return cls(path, enc.dim, enc.store_dtype)


def _discard(writer) -> None:
    """Drop a writer's temp file. After a failed write (a full disk) its abort may fail in turn,
    flushing what could not be written: then the temp file is unlinked directly, so that the error
    raised is the first one and the space is given back."""
    _silence_hdf5(writer)
    try:
        writer.abort()
    except (OSError, RuntimeError, MMCacheError):
        with contextlib.suppress(OSError):
            writer.tmp.unlink(missing_ok=True)


def _silence_hdf5(writer) -> None:
    """HDF5 flushes a file when it is closed, and again at interpreter exit, where a flush that fails
    (the disk is full) crashes the process (SIGSEGV, exit 139) instead of letting it exit 1. A temp
    file being discarded needs none of its bytes: its descriptor is pointed at /dev/null first, so
    every flush succeeds and nothing more is written to the disk."""
    h5file = getattr(writer, "f", None)
    if not h5file or not h5file.id.valid:
        return
    try:
        fd = h5file.id.get_vfd_handle()
    except (OSError, RuntimeError, ValueError, TypeError):  # already closed, or not a file-backed driver
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _encode_field(root, backend, shard, enc, jobs, timeout, progress, outcomes: Outcomes):
    """Encode `jobs` for one field into a temp shard file: (writer, missing, failed)."""
    writer = _writer(root, backend, shard, enc)
    missing, failed = {}, {}
    label = f"{enc.field} [{shard}]"
    progress.start(label, len(jobs))
    try:
        for o in outcomes(enc, jobs, timeout):
            if o.status == "ok":
                with writing(writer.path):
                    writer.add(o.job.key, o.feats.astype(enc.store_dtype), o.ts)
            elif o.status == "absent":
                missing[o.job.key] = o.reason
            else:
                failed[o.job.key] = with_source(o.reason, o.job.video)
            progress.advance(label)
    except BaseException:
        _discard(writer)
        raise
    return writer, missing, failed


def _publish(enc: Encoder, writer, missing: dict) -> dict:
    try:
        with writing(writer.path):
            writer.close()
    except BaseException:
        _discard(writer)  # a writer `_drop_failed` made is not among the caller's to discard
        raise
    return {"header": encoder_header(enc), "file": field_file_entry(enc.field, writer, missing)}


def encode_locally(enc: Encoder, jobs: list[Job], timeout: float) -> Iterator[Outcome]:
    """Outcomes computed in this process (the local engine's)."""
    from .pipeline import run_encoder

    return run_encoder(enc, jobs, timeout=timeout)


def run_task(
    root: Path,
    backend: str,
    task: Task,
    encoders: Encoders,
    timeout: float = 120.0,
    progress: Progress | None = None,
    outcomes: Outcomes = encode_locally,
) -> dict:
    progress = progress or Progress()
    if task.kind == "add" and not task.fields:
        return no_work(task)  # every field came from the journal: nothing to probe
    run = _new_shard if task.kind == "new" else _add_fields
    return run(root, backend, task, encoders, timeout, progress, outcomes)


def _probe_while_building(task: Task, encoders: Encoders, timeout: float, progress: Progress):
    """probe_jobs for the task's videos, run in a thread while its first encoder is built here: ffprobe
    (and `ffmpeg -version`, part of every fingerprint) run in processes of their own, so the model's
    loading and the probes overlap instead of adding up (a shard of short clips spends seconds in
    ffprobe; a model seconds loading its weights)."""
    from concurrent.futures import ThreadPoolExecutor

    from .probe import ffmpeg_version

    def work():
        with contextlib.suppress(MMCacheError):  # only a head start: the fingerprint asks again, and says why
            ffmpeg_version()
        return probe_jobs(task.videos, timeout, progress)

    with ThreadPoolExecutor(1, thread_name_prefix="mmcache-probe") as pool:
        probing = pool.submit(work)
        try:
            if task.fields:
                encoders.get(task.fields[0])
        except BaseException:
            probing.exception()  # let the probes end before the build's error is raised
            raise
        return probing.result()


def _new_shard(root, backend, task, encoders, timeout, progress, outcomes) -> dict:
    jobs, failed = _probe_while_building(task, encoders, timeout, progress)
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
            _discard(writer)
        raise
    data = samples_bytes(rows)
    write_file(root / "samples" / f"{task.shard}.jsonl", data)
    samples = samples_entry(task.shard, data, rows)
    return {
        "shard": task.shard,
        "samples": samples,
        "fields": fields,
        "failures": [[r["source"], r["error"]] for r in rows if r["status"] == "failed"],
    }


def _drop_failed(root, backend, shard, enc, writer, ok):
    """Rewrite a field's temp shard without samples that failed a later field (rare)."""
    with writing(writer.path):
        keep = [(k, f, t) for k, f, t in FORMATS[backend].read(writer.finish()) if k in ok]
    _discard(writer)
    fresh = _writer(root, backend, shard, enc)
    try:
        with writing(fresh.path):
            for k, f, t in keep:
                fresh.add(k, f, t)
    except BaseException:
        _discard(fresh)
        raise
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
