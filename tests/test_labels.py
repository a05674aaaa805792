"""labels.py: joining a label sheet to a cache's samples."""

from __future__ import annotations

from mmfit_helpers import _labels_csv, cfg

from mmfit.data import load_data

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_labels_csv_join_reports_unknown_ids_and_unlabelled(labelled, tmp_path):
    rows = [(f"{c}_{i:03d}", c) for c in ("sunrise", "ocean", "forest") for i in range(7)] + [("ghost_1", "ocean")]
    c = cfg(labelled, tmp_path, labels=_labels_csv(tmp_path / "l.csv", rows))
    data = load_data(c.data)
    assert data.report["unknown_label_ids"] == ["ghost_1"] and data.report["unlabelled"] == 3
