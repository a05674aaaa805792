"""Resolve what the user passed (folders, video files, a video sheet) into VideoInputs, and key
each one by its content hash."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError
from .store.atomic import sha256_file
from .types import VideoInput

VIDEO_SUFFIXES = {
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".wmv",
    ".3gp",
    ".ogv",
}
SHEET_SUFFIXES = {".csv": ",", ".tsv": "\t"}
KEY_LEN = 24  # hex chars of sha256: 96 bits, no dots, no path
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MEMO_VERSION = 2  # v1 ({path: [size, mtime_ns, sha256]}) is ignored: those files are hashed once more


def resolve_inputs(inputs: Iterable[str | Path]) -> list[VideoInput]:
    """Folders (recursive, sorted), video files, and .csv/.tsv sheets, in the order given."""
    videos: list[VideoInput] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"input {item} does not exist")
        if path.is_dir():
            videos += _folder(path)
        elif path.suffix.lower() in SHEET_SUFFIXES:
            videos += read_sheet(path)
        else:
            videos.append(VideoInput(path=path, source=display_name(str(item))))
    if not videos:
        raise InputError(
            f"no videos found in {', '.join(map(str, inputs))} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    return videos


def _folder(root: Path) -> list[VideoInput]:
    found = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return [VideoInput(path=p, source=display_name(p.relative_to(root).as_posix())) for p in found]


def display_name(name: str) -> str:
    """A file name as valid UTF-8 text. Names that are not UTF-8 (e.g. Latin-1 bytes from an old
    archive) come back from the OS with lone surrogates, which the samples index (UTF-8 JSON) cannot
    hold: writing it crashed the whole run. Such bytes are shown as \\xNN; the file itself is still
    read through its real path."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_sheet(path: Path) -> list[VideoInput]:
    """A sheet with a `path` column (relative to the sheet), optional `id` and `text` columns;
    every other column is kept as metadata in the samples index."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter=SHEET_SUFFIXES[path.suffix.lower()]))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read video sheet {path}: {e}") from None
    if not rows or "path" not in rows[0]:
        # a row longer than the header keeps its extra cells under the key None: skip it, or the
        # join raised TypeError instead of this message
        cols = ", ".join(c for c in rows[0] if c is not None) if rows else "none"
        raise InputError(f"video sheet {path} needs a 'path' column (columns: {cols})")
    videos = []
    for i, row in enumerate(rows, 2):
        rel = (row.pop("path") or "").strip()
        if not rel:
            raise InputError(f"video sheet {path} line {i}: empty path")
        meta = {k: v for k, v in row.items() if k not in ("id", "text") and k is not None}
        videos.append(
            VideoInput(
                path=path.parent / rel,
                source=rel,
                id=(row.get("id") or None),
                text=(row.get("text") or None),
                meta=meta,
            )
        )
    return videos


class HashMemo:
    """The local memo of input hashes (`<cache>/.input-hashes.json`): absolute path -> the file's
    identity when it was hashed (device, inode, size, mtime_ns, ctime_ns) and its sha256, so that a
    re-run over terabytes of unchanged video reads none of it.

    It is a hint, never trusted for identity on its own: a stale, copied, corrupt or forged memo must
    not make two different videos one sample (a false alias drops one) nor put a non-hex name in a
    shard. A memoised hash is used only when
    * the value is a 64-hex sha256 and the identity is unchanged: ctime cannot be set back by user
      programs, so any write, rename-over or restored mtime since hashing misses (git's index uses
      the same fields); a memo copied to another machine or folder misses on device/inode; and
    * the published samples index already records that hash for a file of this name and size
      (`vouch`): the memo may only repeat what the verified index says, which is exactly the re-run
      case it exists for. A new video, or one whose memo entry disagrees with the index, is read.
    Two inputs that end up with one key where either came from the memo are read again before they
    become aliases (`recheck_aliases`), unless the index already records those distinct names as one
    sample (a same-named file in another folder never is). Reading a file costs a full pass; nothing cheaper
    than that can prove a hash (a sampled digest could be forged alongside the value), so identity
    decisions the index does not already back are always made from the bytes.
    """

    def __init__(self, entries: dict[str, list] | None = None):
        self.entries = entries or {}
        self.vouched: set[tuple[str, str, int]] = set()  # (source name, sha256, bytes) of indexed rows
        self.names: dict[str, set[str]] = {}  # sha256 -> the names one indexed row gives it (source, aliases)
        self.used: set[str] = set()  # paths whose hash came from the memo in this run

    @classmethod
    def parse(cls, data: bytes | None) -> HashMemo:
        """The memo's well-formed entries; anything malformed (bad JSON, deep nesting, huge integers,
        wrong types, non-hex values, an older version) is dropped, never an error."""
        try:
            doc = json.loads(data) if data else {}
        except (ValueError, RecursionError):  # ValueError: bad JSON/UTF-8, ints past Python's digit limit
            return cls()
        files = doc.get("files") if isinstance(doc, dict) and doc.get("version") == MEMO_VERSION else None
        if not isinstance(files, dict):
            return cls()
        return cls({path: value for path, value in files.items() if _memo_entry(value)})

    def vouch(self, rows) -> None:
        """Hashes the published samples index records: (source or alias, sha256, bytes)."""
        for r in rows:
            if r.get("sha256"):
                names = [r["source"], *r.get("aliases", [])]
                self.names.setdefault(r["sha256"], set()).update(names)
                for name in names:
                    self.vouched.add((name, r["sha256"], r["bytes"]))

    def lookup(self, v: VideoInput, st) -> str | None:
        hit = self.entries.get(str(v.path.absolute()))
        if hit is None or hit[:5] != _identity(st) or (v.source, hit[5], st.st_size) not in self.vouched:
            return None
        self.used.add(str(v.path.absolute()))
        return hit[5]

    def vouches_alias(self, group: list[VideoInput]) -> bool:
        """The index already records these distinct names as one content (a sample and its aliases).
        One name twice (the same file name in two folders) is never vouched for."""
        names = [v.source for v in group]
        sha = group[0].sha256
        return (
            len(set(names)) == len(names)
            and all(v.sha256 == sha for v in group)
            and set(names) <= self.names.get(sha, set())
        )

    def forget(self, v: VideoInput) -> None:
        path = str(v.path.absolute())
        self.entries.pop(path, None)
        self.used.discard(path)

    def record(self, v: VideoInput, st, sha256: str) -> None:
        self.entries[str(v.path.absolute())] = [*_identity(st), sha256]

    def dumps(self) -> bytes:
        return json.dumps({"version": MEMO_VERSION, "files": self.entries}, sort_keys=True).encode()


def _identity(st) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _memo_entry(value) -> bool:
    """[dev, ino, size, mtime_ns, ctime_ns, sha256]: five plain ints (not bools) and a 64-hex digest."""
    return (
        type(value) is list
        and len(value) == 6
        and all(type(n) is int for n in value[:5])
        and type(value[5]) is str
        and SHA256_HEX.fullmatch(value[5]) is not None
    )


def key_input(v: VideoInput, memo: HashMemo | None = None) -> None:
    """Fill key/sha256/bytes. An unreadable file is keyed by its source name so it still gets a
    failure row; its sha256 stays empty. `memo` may spare reading an unchanged, already indexed file
    (see HashMemo for when)."""
    try:
        st = v.path.stat()
        if not stat.S_ISREG(st.st_mode):
            # a named pipe or device given as an input: reading it to hash it would block forever
            # (or never end, /dev/zero) before any per-file timeout applies; it fails as unreadable
            raise OSError(f"{v.path} is not a regular file")
        sha = None if memo is None else memo.lookup(v, st)
        if sha is None:
            sha, _ = sha256_file(v.path)  # the identity was taken first: a file changed while read misses next time
            if memo is not None:
                memo.record(v, st, sha)
        v.sha256, v.bytes = sha, st.st_size
        v.key = v.sha256[:KEY_LEN]
    except OSError:
        v.sha256, v.bytes = "", 0
        v.key = hashlib.sha256(f"unreadable:{v.source}".encode()).hexdigest()[:KEY_LEN]


def recheck_aliases(videos: list[VideoInput], memo: HashMemo) -> None:
    """Inputs sharing a key become aliases of one sample (`dedupe`): where any of them got its hash
    from the memo, read them all before believing it, unless the index already records exactly
    these names as one sample (a re-run over known aliases reads nothing)."""
    groups: dict[str, list[VideoInput]] = {}
    for v in videos:
        groups.setdefault(v.key, []).append(v)
    for group in groups.values():
        memoised = any(str(v.path.absolute()) in memo.used for v in group)
        if len(group) > 1 and memoised and not memo.vouches_alias(group):
            for v in group:
                memo.forget(v)
                key_input(v, memo)


def dedupe(videos: list[VideoInput]) -> tuple[list[VideoInput], dict[str, list[str]]]:
    """One input per content key; the other names are returned as aliases of the first."""
    first: dict[str, VideoInput] = {}
    aliases: dict[str, list[str]] = {}
    for v in videos:
        if v.key in first:
            aliases.setdefault(v.key, []).append(v.source)
        else:
            first[v.key] = v
    return list(first.values()), aliases
