"""report.py: the report a person reads: headline metrics, the results table with unimodal baselines, data
counts, the per-class table, and the PNGs."""

from __future__ import annotations

import pytest

from mmfit.report import MAIN, comparison_rows, headline, markdown, plot_confusion, plot_curves


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
