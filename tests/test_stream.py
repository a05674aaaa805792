"""stream.py: streamed training and evaluation give what the in-memory data gives."""

from __future__ import annotations

import math

from mmfit_helpers import cfg

from mmfit.predict import evaluate_checkpoint
from mmfit.trainer import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_streaming_gives_the_same_eval_as_in_memory(labelled, tmp_path):
    train(cfg(labelled, tmp_path))
    ckpt = tmp_path / "run" / "best.pt"
    result = train(cfg(labelled, tmp_path / "s", streaming="always", epochs=3))
    assert result.val["accuracy"] >= 0.5
    mem = evaluate_checkpoint(ckpt, labelled / "cache", "all")
    import mmfit.predict

    orig = mmfit.predict.config_of
    mmfit.predict.config_of = lambda ck, **kw: orig(ck, streaming="always", **kw)
    try:
        streamed = evaluate_checkpoint(ckpt, labelled / "cache", "all")
    finally:
        mmfit.predict.config_of = orig
    assert streamed["accuracy"] == mem["accuracy"] and streamed["confusion"] == mem["confusion"]


def test_segment_tagging_trains_when_streamed_like_in_memory(labelled, tmp_path):
    """Streamed step targets are filled as shards are read, after the monitor check; training a
    segment task streamed once failed there with a bare ValueError."""
    from mmfit_helpers import _labels_csv

    ids = [f"{c}_{i:03d}" for c in ("sunrise", "ocean", "forest") for i in range(8)]
    rows = [(i, 0.0, 0.75, i.split("_")[0]) for i in ids]
    seg = _labels_csv(tmp_path / "seg.csv", rows, ("id", "start", "end", "label"))
    opts = {"task": "segment", "labels": seg, "fields": ["logmel"], "fusion": "attention", "epochs": 2, "hidden": 16}
    streamed = train(cfg(labelled, tmp_path / "s", streaming="always", **opts))
    assert len(streamed.history) == 2 and all(math.isfinite(r["val/loss"]) for r in streamed.history)
    assert 0 <= streamed.val["segment_f1"] <= 1 and streamed.val["frame_accuracy"] > 0
