"""Project errors. The CLI turns any `MMCacheError` into one clear line and exit code 1."""

import difflib


def did_you_mean(value: object, choices) -> str:
    """' (did you mean 'x'?)' for the choice closest to a misspelt `value`, or '' when none is close."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class MMCacheError(Exception):
    """Base class of every error the project raises on purpose."""


class InputError(MMCacheError):
    """A missing input path, an unreadable sheet, an unwritable output directory."""


class EncoderError(MMCacheError):
    """Unknown encoder, bad encoder option, or weights that cannot be loaded."""


class DecodeError(MMCacheError):
    """ffprobe/ffmpeg could not read a video; recorded per video as a failure row."""


class FieldAbsent(MMCacheError):
    """The video has no data for this field (no audio stream, no subtitles): flagged, not failed."""


class CacheError(MMCacheError):
    """A cache that is missing, malformed, locked, or fails verification."""


class FingerprintMismatch(CacheError):
    """Two fingerprints of one field disagree; the message names the differing key."""
