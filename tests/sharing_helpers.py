"""Helpers of the merge, diff, stats and remote-reading tests: their fields, the CLI runner, a
field-by-field comparison of two caches."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from mmcache.cli import app

FIELDS = ["logmel:fps=2", "mfcc:fps=2"]


runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def fields_equal(x, y):
    """Same keys, features and timestamps for every field of two caches."""
    assert x.samples() == y.samples()
    for name in x.fields:
        fx, fy = x.load_field(name), y.load_field(name)
        assert fx.keys == fy.keys and fx.present.tolist() == fy.present.tolist()
        for a, b in zip(fx.feats + fx.ts, fy.feats + fy.ts, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
