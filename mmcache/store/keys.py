"""Sample keys: the first hex digits of a video's sha256, the only names a shard member or dataset
row may have."""

from __future__ import annotations

import re

from ..errors import CacheError

KEY_RE = re.compile(r"^[0-9a-f]{8,64}$")


def check_key(key, path) -> None:
    """Writers' last line of defence: a sample key is a hex digest, so a member name can never be a
    path (`../x`), hold a dot, or collide with another sample's name."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise CacheError(f"{path}: refusing sample key {key!r} (keys are 8-64 lowercase hex digits)")
