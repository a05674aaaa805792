"""Hypothesis settings shared by every fuzz test (marked `fuzz`).

Two profiles: `bounded` (the default, part of `make test`: 100 examples a test, the same examples every
run, so that a failure reproduces and docs/RELIABILITY.md does not churn) and `long` (`make fuzz`:
MMCACHE_FUZZ_EXAMPLES examples a test, default 5000, new random examples each run; hypothesis prints
the seed and a `@reproduce_failure` line for anything it finds). Pick one with HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]
settings.register_profile(
    "bounded",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=_QUIET,
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("MMCACHE_FUZZ_EXAMPLES", "5000")),
    deadline=None,
    derandomize=False,
    database=None,
    print_blob=True,
    suppress_health_check=_QUIET,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "bounded"))


def fuzz(share: float = 1.0) -> settings:
    """The profile's settings, with `share` of its examples (slow properties, e.g. one torch model
    built per example, take fewer)."""
    return settings(settings.default, max_examples=max(1, round(settings.default.max_examples * share)))


def nested(scalars, width: int = 4, max_leaves: int = 20):
    """JSON-like values: `scalars`, and lists and dicts (text keys) of them, `width` items at most.
    (A named function, not a lambda: hypothesis checks that `extend` uses its argument by reading its
    source, which fails for lambdas split over lines.)"""
    from hypothesis import strategies as st

    def containers(kids):
        return st.lists(kids, max_size=width) | st.dictionaries(st.text(max_size=10), kids, max_size=width)

    return st.recursive(scalars, containers, max_leaves=max_leaves)


def replace_at(doc, path: list[int], value):
    """`doc` with the sub-value chosen by `path` (indices into keys/items) replaced by `value`."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    items = list(doc.items()) if isinstance(doc, dict) else list(enumerate(doc))
    k, v = items[path[0] % len(items)]
    new = dict(doc) if isinstance(doc, dict) else list(doc)
    new[k] = replace_at(v, path[1:], value)
    return new
