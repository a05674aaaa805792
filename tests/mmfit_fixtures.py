"""mmfit's shared fixture, a plugin (`pytest_plugins = ["mmfit_fixtures"]` in the files using it, so that
it is made once per session): a real cache made by mmcache from ffmpeg clips of three classes."""

from __future__ import annotations

import pytest
from mmfit_helpers import FIELDS

import mmcache


@pytest.fixture(scope="session")
def labelled(tmp_path_factory):
    """24 clips (3 classes x 8) with sidecar subtitles; labels in the video sheet."""
    from mmcache.synth import make_labelled_set

    d = tmp_path_factory.mktemp("labelled")
    make_labelled_set(d / "videos", per_class=8, duration=1.5)
    mmcache.extract([d / "videos" / "videos.csv"], FIELDS, d / "cache", shard_size=10)
    return d
