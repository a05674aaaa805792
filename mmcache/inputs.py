"""Resolve what the user passed (folders, video files, a video sheet) into VideoInputs, and key
each one by its content hash."""

from __future__ import annotations

import csv
import hashlib
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


def key_input(v: VideoInput, memo: dict | None = None) -> None:
    """Fill key/sha256/bytes. An unreadable file is keyed by its source name so it still gets a
    failure row; its sha256 stays empty.

    `memo` maps an absolute path to [size, mtime_ns, sha256]: a file whose size and mtime are
    unchanged is not read again, so re-running over terabytes of video is quick.
    """
    try:
        st = v.path.stat()
        if not stat.S_ISREG(st.st_mode):
            # a named pipe or device given as an input: reading it to hash it would block forever
            # (or never end, /dev/zero) before any per-file timeout applies; it fails as unreadable
            raise OSError(f"{v.path} is not a regular file")
        ident = [st.st_size, st.st_mtime_ns]
        hit = None if memo is None else memo.get(str(v.path.absolute()))
        if isinstance(hit, list) and len(hit) == 3 and hit[:2] == ident and isinstance(hit[2], str):
            v.sha256, v.bytes = hit[2], st.st_size
        else:
            v.sha256, v.bytes = sha256_file(v.path)
            if memo is not None:
                memo[str(v.path.absolute())] = [*ident, v.sha256]
        v.key = v.sha256[:KEY_LEN]
    except OSError:
        v.sha256, v.bytes = "", 0
        v.key = hashlib.sha256(f"unreadable:{v.source}".encode()).hexdigest()[:KEY_LEN]


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
