"""tasks.py: multilabel, regression and segment tasks train on a real cache."""

from __future__ import annotations

from mmfit_helpers import _labels_csv, cfg

from mmfit.trainer import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_multilabel_regression_and_segment_tasks(labelled, tmp_path):
    ids = [f"{c}_{i:03d}" for c in ("sunrise", "ocean", "forest") for i in range(8)]
    ml = _labels_csv(
        tmp_path / "ml.csv",
        [(i, "water" if i.startswith("ocean") else "sky|warm" if i.startswith("sun") else "green") for i in ids],
    )
    r = train(cfg(labelled, tmp_path / "ml", task="multilabel", labels=ml))
    assert r.val["mAP"] > 0.8 and len(r.task.state["thresholds"]) == 4
    reg = _labels_csv(tmp_path / "reg.csv", [(i, {"s": 1.0, "o": 2.0, "f": 3.0}[i[0]]) for i in ids])
    r = train(cfg(labelled, tmp_path / "reg", task="regression", labels=reg, epochs=30, lr=3e-3))
    assert r.val["mae"] < 0.6
    seg = [(i, 0.0, 0.75, i.split("_")[0]) for i in ids]  # first half of each clip is its class, then background
    seg_csv = _labels_csv(tmp_path / "seg.csv", seg, ("id", "start", "end", "label"))
    r = train(
        cfg(
            labelled,
            tmp_path / "seg",
            task="segment",
            labels=seg_csv,
            fields=["resnet18", "logmel"],
            fusion="attention",
            epochs=15,
            lr=3e-3,
        )
    )
    assert r.val["frame_accuracy"] > 0.6 and "segment_f1" in r.val
