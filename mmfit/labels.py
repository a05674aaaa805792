"""Labels joined to cache samples: from a CSV or from the samples index metadata."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

SPLITS = ("train", "val", "test")


@dataclass
class LabelTable:
    """Per-sample label values (raw strings) and optional split, keyed by cache key."""

    values: dict[str, list[str]]  # key -> label strings (one per label column; or span rows for segments)
    split: dict[str, str]  # key -> train | val | test (empty when the labels have no split)
    spans: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)  # segment task
    unknown: list[str] = field(default_factory=list)  # label ids not in the cache
    source: str = ""


def read_csv(path: Path) -> list[tuple[int, dict]]:
    """The sheet's rows, each with the file line it ends on (what messages name)."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read labels {path}: {e}") from None
    if not rows:
        raise DataError(f"labels {path} has no rows")
    return rows


def _index(samples: list[dict]) -> tuple[dict[str, str], dict[str, str]]:
    """id -> key and source-stem -> key lookups (ids from the video sheet, else file names)."""
    by_id, by_stem = {}, {}
    for s in samples:
        if s.get("id"):
            by_id[str(s["id"])] = s["key"]
        for src in [s["source"], *s.get("aliases", [])]:
            by_stem.setdefault(Path(src).stem, s["key"])
            by_stem.setdefault(src, s["key"])
    return by_id, by_stem


def from_csv(path: Path, samples: list[dict], columns: list[str], segments: bool = False) -> LabelTable:
    """Rows with `key` or `id` (an id may also be a video's file name or stem), label columns,
    an optional `split`; for segments: start, end, label per row."""
    rows = read_csv(path)
    header = rows[0][1]
    need = ["start", "end", *columns] if segments else columns
    missing = [c for c in need if c not in header]
    if missing or not ({"key", "id"} & set(header)):
        # a row longer than the header puts its extra cells under the key None (csv.DictReader):
        # joining that None raised TypeError instead of this message
        has = ", ".join(c for c in header if c is not None)
        raise DataError(
            f"labels {path} needs columns {'key or id'}, {', '.join(need)} (has: {has}){_binary_hint(rows, header)}"
        )
    by_id, by_stem = _index(samples)
    keys = {s["key"] for s in samples}
    table = LabelTable({}, {}, source=str(path))
    first: dict[str, tuple[int, str, list[str], str]] = {}  # key -> its first row: line, ref, labels, split
    for line, row in rows:
        ref = (row.get("key") or "").strip() or (row.get("id") or "").strip()
        key = ref if ref in keys else by_id.get(ref) or by_stem.get(ref)
        if key is None:
            table.unknown.append(ref)
            continue
        split = (row.get("split") or "").strip()
        if split and split not in SPLITS:
            raise DataError(f"labels {path}: split {split!r} for {ref}; allowed: {', '.join(SPLITS)}")
        # a segment sample has one row per span: only its split must agree between rows
        labels = [] if segments else [(row[c] or "").strip() for c in columns]
        _check_repeat(path, columns, first.setdefault(key, (line, ref, labels, split)), (line, ref, labels, split))
        if split:
            table.split[key] = split
        if segments:
            try:  # a row shorter than the header has None cells: TypeError/AttributeError, not a crash
                span = (float(row["start"]), float(row["end"]), row[columns[0]].strip())
            except (ValueError, TypeError, AttributeError):
                raise DataError(f"labels {path}: bad start/end for {ref}: {row['start']!r}, {row['end']!r}") from None
            table.spans.setdefault(key, []).append(span)
            table.values.setdefault(key, [])
        else:
            table.values[key] = labels
    return table


def _binary_hint(rows: list[tuple[int, dict]], header: list) -> str:
    """When the sheet's other columns all hold 0/1, they are multilabel columns: say how to use them."""
    others = [c for c in header if c is not None and c not in ("key", "id", "split", "start", "end", "source")]
    binary = [c for c in others if all((row.get(c) or "").strip() in ("0", "1") for _, row in rows)]
    if not binary or len(binary) != len(others):
        return ""
    cols = ",".join(binary)
    return f"; its 0/1 columns are multilabel targets: pass --task multilabel --label-columns {cols}"


def _check_repeat(path: Path, columns: list[str], first: tuple, row: tuple) -> None:
    """A sample named by two rows (the same id twice, or its id and its file name) must get the same
    labels and split from both: otherwise the last row would silently win. Identical repeats (e.g. a
    sheet concatenated with an overlapping one) change nothing and are accepted."""
    if first[2:] == row[2:]:
        return
    raise DataError(
        f"labels {path}: one sample has conflicting rows: {_row_text(columns, first)} vs {_row_text(columns, row)}; "
        "keep one row per sample"
    )


def _row_text(columns: list[str], row: tuple) -> str:
    line, ref, labels, split = row  # labels: one per column, none for segment rows
    parts = [f"{c}={v!r}" for c, v in zip(columns[: len(labels)], labels, strict=True)]
    parts += [f"split={split!r}"] if split else []
    return f"line {line} {ref!r} ({', '.join(parts) or 'no split'})"


def from_metadata(samples: list[dict], columns: list[str]) -> LabelTable:
    """Labels carried into the samples index by the video sheet's extra columns."""
    table = LabelTable({}, {}, source="samples index metadata")
    for s in samples:
        meta = s.get("meta") or {}
        if all(c in meta and str(meta[c]).strip() for c in columns):
            table.values[s["key"]] = [str(meta[c]).strip() for c in columns]
            split = str(meta.get("split", "")).strip()
            if split in SPLITS:
                table.split[s["key"]] = split
    if not table.values:
        raise DataError(f"no labels: pass --labels FILE, or carry column(s) {', '.join(columns)} in the video sheet")
    return table
