"""predict.py: evaluating a checkpoint, predicting caches and raw videos, fingerprint checks."""

from __future__ import annotations

import csv

import pytest
from mmfit_helpers import cfg

import mmcache
from mmcache.errors import FingerprintMismatch
from mmfit.checkpoint import load_checkpoint
from mmfit.predict import evaluate_checkpoint, predict_cache, predict_videos
from mmfit.train import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_metrics_do_not_depend_on_eval_batch_size(labelled, tmp_path):
    train(cfg(labelled, tmp_path, fusion="gated"))
    ckpt = tmp_path / "run" / "best.pt"
    one = evaluate_checkpoint(ckpt, labelled / "cache", "all", batch_size=1)
    many = evaluate_checkpoint(ckpt, labelled / "cache", "all", batch_size=512)
    assert {k: v for k, v in one.items() if k != "loss"} == {k: v for k, v in many.items() if k != "loss"}
    assert one["loss"] == pytest.approx(many["loss"], rel=1e-5)


def test_checkpoint_records_fields_and_predicts_raw_videos(labelled, tmp_path):
    train(cfg(labelled, tmp_path))
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    assert sorted(ckpt["fields"]) == ["logmel", "minilm-text", "resnet18"] and ckpt["classes"] == [
        "forest",
        "ocean",
        "sunrise",
    ]
    videos = [labelled / "videos" / "ocean_000.mp4", labelled / "videos" / "forest_001.mp4"]
    n = predict_videos(tmp_path / "run" / "best.pt", [str(v) for v in videos], tmp_path / "p.csv", tmp_path / "work")
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert n == 2 and [r["prediction"] for r in rows] == ["ocean", "forest"]
    assert all(abs(sum(float(r[f"score_{c}"]) for c in ckpt["classes"]) - 1) < 1e-4 for r in rows)


def test_fingerprint_mismatch_names_the_key(labelled, tmp_path):
    train(cfg(labelled, tmp_path, fields=["logmel"]))
    other = tmp_path / "other"
    mmcache.extract([labelled / "videos" / "ocean_000.mp4"], ["logmel:fps=2,window=0.25"], other)
    with pytest.raises(FingerprintMismatch, match="options.window"):
        predict_cache(tmp_path / "run" / "best.pt", other, tmp_path / "p.csv")
