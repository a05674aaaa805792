"""Helpers of the mmfit tests: the labelled cache's fields, a config over it, a label sheet."""

from __future__ import annotations

import csv

from conftest import FAST_RESNET

from mmfit.config import build_config

FIELDS = [FAST_RESNET, "logmel:fps=2,window=0.5", "minilm-text"]


def cfg(labelled, tmp_path, **kw):
    base = {
        "cache": str(labelled / "cache"),
        "out": str(tmp_path / "run"),
        "epochs": 8,
        "batch_size": 8,
        "hidden": 32,
        "seed": 0,
    }
    return build_config(**{**base, **kw})


def _labels_csv(path, rows, header=("id", "label")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)
