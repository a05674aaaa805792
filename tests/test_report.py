"""report.py: the report a person reads: headline metrics, the results table with unimodal baselines, data
counts, the per-class table, and the PNGs."""

from __future__ import annotations

import json
import shutil

import pytest
from mmfit_helpers import _labels_csv, cfg

from mmfit.report import MAIN, comparison_rows, headline, markdown, per_class_lines, plot_confusion, plot_curves

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def summary(**kw) -> dict:
    base = {
        "task": "multiclass",
        "fusion": "gated",
        "fields": ["logmel", "resnet18"],
        "monitor": "val/accuracy",
        "best_epoch": 3,
        "best_score": 0.875,
        "epochs_run": 5,
        "data": {
            "samples": 24,
            "labelled": 21,
            "unlabelled": 3,
            "splits": {"train": 14, "val": 4, "test": 3},
            "unknown_label_count": 1,
            "unknown_label_ids": ["ghost_1"],
            "missing": {"logmel": 2},
        },  # fmt: skip
        "val": {"accuracy": 0.875, "macro_f1": 0.8},
        "test": {
            "accuracy": 1.0,
            "macro_f1": None,
            "confusion": [[1, 0], [0, 2]],
            "per_class": {"ocean": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 1}},
        },  # fmt: skip
        "classes": ["ocean", "forest"],
        "baselines": {"logmel": {"val": {"accuracy": 0.5}, "test": None}},
    }
    return {**base, **kw}


def test_headline_keeps_the_tasks_main_metrics():
    metrics = {"accuracy": 0.5, "macro_f1": 0.25, "loss": 1.0}
    assert headline("multiclass", metrics) == {"accuracy": 0.5, "macro_f1": 0.25}
    assert headline("regression", {"mae": 0.1, "r2": 0.9}) == {"mae": 0.1}
    assert headline("segment", None) == {} and headline("multilabel", {}) == {}
    assert set(MAIN) == {"multiclass", "multilabel", "regression", "segment"}


def test_markdown_lists_the_fused_model_then_each_baseline():
    s = summary()
    assert [name for name, _ in comparison_rows(s)] == ["fused (gated: logmel, resnet18)", "unimodal: logmel"]
    text = markdown(s, "runs/a")
    lines = text.splitlines()
    assert lines[0] == "# mmfit report: runs/a"
    assert "Best epoch 3 of 5 by `val/accuracy` = 0.8750; best weights restored." in text
    assert "| model | val accuracy | val macro_f1 | test accuracy | test macro_f1 |" in lines
    assert "| fused (gated: logmel, resnet18) | 0.8750 | 0.8000 | 1.0000 | n/a |" in lines
    assert "| unimodal: logmel | 0.5000 | n/a | n/a | n/a |" in lines
    assert "- label ids not in the cache: 1 (e.g. ghost_1)" in lines
    assert "- field logmel: samples without it (masked, never zero-filled): 2" in lines
    assert "## Per class (test)" in lines and "| ocean | 1.0000 | 0.5000 | 0.6667 | 1 |" in lines
    assert lines[-1] == "![confusion](confusion.png)"
    without_test = markdown(summary(test=None, val={"accuracy": 0.875}), "r")
    assert "## Per class" not in without_test and "confusion.png" not in without_test


@pytest.mark.parametrize("classes", [["a", "b"], [f"class {i}" for i in range(12)]])
def test_plots_are_written_as_png(tmp_path, classes):
    history = [{"epoch": e, "train/loss": 1 / e, "val/loss": 1.2 / e, "val/accuracy": 0.1 * e} for e in (1, 2, 3)]
    plot_curves(history, "val/accuracy", tmp_path / "curves.png")
    n = len(classes)
    plot_confusion([[i + j for j in range(n)] for i in range(n)], classes, tmp_path / "confusion.png")
    for name in ("curves.png", "confusion.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def _trained_report(c) -> tuple[dict, str]:
    from mmfit.report import write_report
    from mmfit.trainer import Trainer

    trainer = Trainer(c)
    result = trainer.fit()
    write_report(result, trainer.data, c.model, str(result.out))
    return json.loads((result.out / "report.json").read_text()), (result.out / "report.md").read_text()


def test_multilabel_classes_without_positives_read_na_as_in_report_json(labelled, tmp_path):
    """Issue 13, row 14: a class with no positive in the test split has no AP, recall or F1; report.json
    says so (None, listed as undefined) and report.md says n/a, never 0.0000."""
    rows = []
    for c in ("sunrise", "ocean", "forest"):
        for i in range(8):
            split = "train" if i < 5 else "val" if i == 5 else "test"
            rare = int(c == "sunrise" and split != "test")  # no positive in test
            rows.append((f"{c}_{i:03d}", int(c == "ocean"), int(c != "forest"), rare, split))
    labels = _labels_csv(tmp_path / "ml.csv", rows, ("id", "ocean", "bright", "rare", "split"))
    columns = ["ocean", "bright", "rare"]
    c = cfg(labelled, tmp_path, task="multilabel", labels=labels, label_columns=columns, fields=["logmel"], epochs=2)
    report, md = _trained_report(c)
    rare = report["test"]["per_class"]["rare"]
    assert rare["ap"] is None and rare["support"] == 0 and "rare" in report["test"]["undefined_ap"]
    assert "| class | precision | recall | f1 | ap | support |" in md
    line = next(x for x in md.splitlines() if x.startswith("| rare |"))
    assert line == "| rare | " + " | ".join(["n/a (no positives)"] * 4) + " | 0 |"
    ocean = next(x for x in md.splitlines() if x.startswith("| ocean |"))
    assert "n/a (no positives)" not in ocean and ocean.endswith(" | 2 |")


def test_report_says_which_normalisation_was_used(labelled, tmp_path):
    """Issue 13, row 15: after `mmcache stats`, training standardises with the whole cache's statistics;
    report.md's Data section says so (and says train split or off otherwise)."""
    from mmcache.stats import record_stats

    cache = tmp_path / "cache"
    shutil.copytree(labelled / "cache", cache)
    base = {"fields": ["logmel"], "epochs": 1, "hidden": 8}
    report, md = _trained_report(cfg(labelled, tmp_path / "a", cache=str(cache), **base))
    assert report["data"]["norm"] == "train" and "- normalisation: per-field mean/std of the train split" in md
    record_stats(cache)
    report, md = _trained_report(cfg(labelled, tmp_path / "b", cache=str(cache), **base))
    assert report["data"]["norm"] == "cache"
    assert "- normalisation: per-field mean/std recorded in the cache by `mmcache stats` (every sample" in md
    _, md = _trained_report(cfg(labelled, tmp_path / "c", cache=str(cache), normalize=False, **base))
    assert "- normalisation: off (features as stored)" in md


def test_per_class_table_marks_what_is_undefined():
    final = {
        "per_class": {
            "a": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3},  # never predicted
            "b": {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1},
            "c": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},  # no positives
        },
        "undefined": ["a", "c"],
    }
    assert per_class_lines(final)[2:] == [
        "| a | n/a (none predicted) | 0.0000 | 0.0000 | 3 |",
        "| b | 0.5000 | 1.0000 | 0.6667 | 1 |",
        "| c | n/a (no positives) | n/a (no positives) | n/a (no positives) | 0 |",
    ]
