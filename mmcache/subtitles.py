"""Subtitle cues from sidecar .srt/.vtt files or embedded streams: one cue = one text step."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_CUE_TIMING = re.compile(_TIME + r"\s*-->\s*" + _TIME)
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
SIDECAR_SUFFIXES = (".srt", ".vtt")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_cues(text: str) -> list[Cue]:
    """Parse SRT or WebVTT text; blocks without a readable timing line are skipped.

    Broken timing is repaired rather than fatal: an end before its start becomes the start, and
    the cues come back sorted by start time.
    """
    cues = []
    for block in re.split(r"\r?\n\s*\r?\n", text.replace("\ufeff", "")):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            m = _CUE_TIMING.search(line)
            if m:
                start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
                body = " ".join(_TAG.sub("", ln).strip() for ln in lines[i + 1 :]).strip()
                if body:
                    cues.append(Cue(start, max(start, end), body))
                break
    return sorted(cues, key=lambda c: (c.start, c.end))


def find_sidecar(video: Path) -> Path | None:
    """`clip.srt` or `clip.vtt` (or `clip.mp4.srt`) beside `clip.mp4`."""
    for base in (video.with_suffix(""), video):
        for suffix in SIDECAR_SUFFIXES:
            cand = base.parent / (base.name + suffix)
            if cand.is_file():
                return cand
    return None
