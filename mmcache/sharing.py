"""Sharing caches across teams, in one import: `merge_caches` (merge.py), `diff_caches` (diff.py),
`compute_stats`/`record_stats` (stats.py), and whether recorded stats are fresh (store/manifest.py).

Inputs may be directories or remote caches (http(s)://, pipe:); every byte copied or read from an
input is checked against the size and sha256 its manifest records.
"""

from __future__ import annotations

from .diff import diff_caches
from .merge import MergeReport, merge_caches
from .stats import compute_stats, record_stats
from .store.manifest import files_digest, fresh_stats

__all__ = [
    "MergeReport",
    "compute_stats",
    "diff_caches",
    "files_digest",
    "fresh_stats",
    "merge_caches",
    "record_stats",
]
