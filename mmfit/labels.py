"""Labels joined to cache samples: from a CSV or from the samples index metadata."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmcache.cache import STR, as_keys, search_sorted

from .errors import DataError
from .samples import SampleRows

SPLITS = ("train", "val", "test")


@dataclass
class LabelTable:
    """Labels joined to a run's samples (rows of its SampleRows), as columns over the labelled ones."""

    rows: np.ndarray  # (M,) int64: positions of the labelled samples, ascending
    values: list[np.ndarray]  # per label column, (M,) UTF-8 bytes label strings (segment task: none)
    split: np.ndarray  # (M,) bytes: train | val | test, b"" when the labels give none
    spans: dict[int, list[tuple[float, float, str]]] = field(default_factory=dict)  # segment: row -> spans
    unknown: list[str] = field(default_factory=list)  # label ids not in the cache
    source: str = ""

    @classmethod
    def empty(cls) -> LabelTable:
        return cls(np.zeros(0, np.int64), [], np.zeros(0, "S1"))


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


def _resolve(refs: list[str], samples: SampleRows) -> list[int]:
    """The sample row each sheet reference names (-1: none): a key, else an id (several samples with
    one id: the last), else the stem, path or file name of a source or alias (several: the first)."""
    if not refs or not len(samples):
        return [-1] * len(refs)
    found = _search(samples.keys, as_keys(refs), last=False)
    by_id = _search(samples.ids, np.strings.encode(np.array(refs, STR), "utf-8"), last=True)
    by_id[np.array([not r for r in refs])] = -1
    found = np.where(found >= 0, found, by_id)
    left = {r for r, f in zip(refs, found.tolist(), strict=True) if f < 0 and r}
    if left:  # file names and stems: only for the references still unresolved (a pass over the sources)
        by_stem: dict[str, int] = {}
        aliases = samples.columns.get("aliases")
        for i, src in enumerate(samples.sources.tolist()):
            more = aliases[i].decode().split("\n") if aliases is not None and aliases[i] else []
            for name in [src.decode(), *more]:
                for ref in (Path(name).stem, name, Path(name).name):
                    if ref in left:
                        by_stem.setdefault(ref, i)
        found = np.array([f if f >= 0 else by_stem.get(r, -1) for r, f in zip(refs, found.tolist(), strict=True)])
    return found.tolist()


def _search(haystack: np.ndarray, needles: np.ndarray, last: bool) -> np.ndarray:
    return search_sorted(haystack, np.argsort(haystack, kind="stable"), needles, last)


def from_csv(path: Path, samples: SampleRows, columns: list[str], segments: bool = False) -> LabelTable:
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
    refs = [(row.get("key") or "").strip() or (row.get("id") or "").strip() for _, row in rows]
    table = LabelTable.empty()
    table.source = str(path)
    first: dict[int, tuple[int, str, list[str], str]] = {}  # sample -> its first row: line, ref, labels, split
    for (line, row), ref, key in zip(rows, refs, _resolve(refs, samples), strict=True):
        if key < 0:
            table.unknown.append(ref)
            continue
        split = (row.get("split") or "").strip()
        if split and split not in SPLITS:
            raise DataError(f"labels {path}: split {split!r} for {ref}; allowed: {', '.join(SPLITS)}")
        # a segment sample has one row per span: only its split must agree between rows
        labels = [] if segments else [(row[c] or "").strip() for c in columns]
        _check_repeat(path, columns, first.setdefault(key, (line, ref, labels, split)), (line, ref, labels, split))
        if segments:
            try:  # a row shorter than the header has None cells: TypeError/AttributeError, not a crash
                span = (float(row["start"]), float(row["end"]), row[columns[0]].strip())
            except (ValueError, TypeError, AttributeError):
                raise DataError(f"labels {path}: bad start/end for {ref}: {row['start']!r}, {row['end']!r}") from None
            table.spans.setdefault(key, []).append(span)
    table.rows = np.array(sorted(first), np.int64)
    chosen = [first[k] for k in table.rows.tolist()]
    table.split = np.array([c[3].encode() for c in chosen], "S")
    if not segments:
        table.values = [np.array([c[2][j].encode() for c in chosen], "S") for j in range(len(columns))]
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


def from_metadata(samples: SampleRows, columns: list[str]) -> LabelTable:
    """Labels carried into the samples index by the video sheet's extra columns (`samples` holds the
    columns meta.<column> and meta.split: `metadata_columns`)."""
    values = [np.strings.strip(samples.columns[f"meta.{c}"]) for c in columns]
    rows = np.flatnonzero(np.logical_and.reduce([v != b"" for v in values]))
    if not len(rows):
        raise DataError(f"no labels: pass --labels FILE, or carry column(s) {', '.join(columns)} in the video sheet")
    split = np.strings.strip(samples.columns["meta.split"][rows])
    split[~np.logical_or.reduce([split == s.encode() for s in SPLITS])] = b""
    return LabelTable(rows, [v[rows] for v in values], split, source="samples index metadata")


def metadata_columns(columns: list[str]) -> tuple[str, ...]:
    """The `Cache.table` columns `from_metadata` reads."""
    return (*(f"meta.{c}" for c in columns), "meta.split")
