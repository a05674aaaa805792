"""predict.py: evaluating a checkpoint, predicting caches and raw videos, fingerprint checks; segment predictions
in time (segments.py): per valid step, merged spans; ids; raw videos with progress and no temp folder left."""

from __future__ import annotations

import csv
import itertools
import shutil
import tempfile

import numpy as np
import pytest
from mmfit_helpers import FIELDS, _labels_csv, cfg

import mmcache
from mmcache.cache import open_cache
from mmcache.errors import FingerprintMismatch
from mmfit.checkpoint import load_checkpoint
from mmfit.errors import DataError
from mmfit.predict import evaluate_checkpoint, predict_cache, predict_videos
from mmfit.trainer import train

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
    done = predict_videos(tmp_path / "run" / "best.pt", [str(v) for v in videos], tmp_path / "p.csv", tmp_path / "work")
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert done.n == 2 and [r["prediction"] for r in rows] == ["ocean", "forest"]
    assert [r["id"] for r in rows] == ["ocean_000", "forest_001"]  # no sheet: the file's stem (was empty)
    assert done.spans is None and list((tmp_path / "work").iterdir()) == [tmp_path / "work" / "cache"]  # kept
    assert all(abs(sum(float(r[f"score_{c}"]) for c in ckpt["classes"]) - 1) < 1e-4 for r in rows)


def test_fingerprint_mismatch_names_the_key(labelled, tmp_path):
    train(cfg(labelled, tmp_path, fields=["logmel"]))
    other = tmp_path / "other"
    mmcache.extract([labelled / "videos" / "ocean_000.mp4"], ["logmel:fps=2,window=0.25"], other)
    with pytest.raises(FingerprintMismatch, match="options.window"):
        predict_cache(tmp_path / "run" / "best.pt", other, tmp_path / "p.csv")


# -- segment tasks: one row per valid step with its time span, merged spans; ids; raw videos ----------

LOGMEL = FIELDS[1]  # the labelled cache's logmel (fps=2: 0.5 s steps)
SEG_COLUMNS = ["key", "id", "source", "step", "start", "end", "prediction"]
SPAN_COLUMNS = ["key", "id", "source", "start", "end", "label", "score"]


@pytest.fixture(scope="module")
def seg_ckpt(labelled, tmp_path_factory):
    """A per-step tagger (task segment) on logmel alone, max_steps 4: a 1 s clip has 2 valid steps
    (padding would show), a 4 s clip has 8, subsampled to 4."""
    d = tmp_path_factory.mktemp("seg")
    ids = [f"{c}_{i:03d}" for c in ("sunrise", "ocean", "forest") for i in range(8)]
    seg = _labels_csv(d / "seg.csv", [(i, 0.0, 0.75, i.split("_")[0]) for i in ids], ("id", "start", "end", "label"))
    opts = {"fields": ["logmel"], "fusion": "attention", "epochs": 2, "hidden": 16, "max_steps": 4}
    train(cfg(labelled, d, task="segment", labels=seg, **opts))
    return d / "run" / "best.pt"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """short.mp4 (1 s) and long.mp4 (4 s), and a sheet naming short `clip-a` and long by no id."""
    from mmcache.synth import CLASSES, make_clip

    d = tmp_path_factory.mktemp("clips")
    make_clip(d / "short.mp4", duration=1.0, size="64x48", style=CLASSES[0])
    make_clip(d / "long.mp4", duration=4.0, size="64x48", style=CLASSES[1])
    (d / "sheet.csv").write_text("path,id\nshort.mp4,clip-a\nlong.mp4,\n")
    return d


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_spans(steps: list[dict], spans: list[dict]) -> None:
    """The spans are the steps' runs of one label, per sample, in order: from the first step's start
    to the last one's end, scored by the mean of the steps' scores of that label."""
    expected = []
    for _, sample in itertools.groupby(steps, key=lambda r: r["key"]):
        for label, run in itertools.groupby(sample, key=lambda r: r["prediction"]):
            run = list(run)
            score = np.mean([float(r[f"score_{label}"]) for r in run])
            expected.append((run[0]["key"], run[0]["id"], run[0]["source"], run[0]["start"], run[-1]["end"], label))
            expected[-1] += (pytest.approx(score, abs=2e-6),)
    got = [(r["key"], r["id"], r["source"], r["start"], r["end"], r["label"], float(r["score"])) for r in spans]
    assert got == expected
    assert all(a[5] != b[5] for a, b in itertools.pairwise(got) if a[0] == b[0])  # neighbours differ


def test_segment_predictions_are_valid_steps_with_times_and_spans(seg_ckpt, clips, tmp_path):
    mmcache.extract([clips / "sheet.csv"], [LOGMEL], tmp_path / "cache")
    out = tmp_path / "p.csv"
    done = predict_cache(seg_ckpt, tmp_path / "cache", out)
    classes = load_checkpoint(seg_ckpt)["classes"]
    steps, spans = read_csv(out), read_csv(tmp_path / "p.spans.csv")
    assert done.n == 2 and done.spans == tmp_path / "p.spans.csv"
    assert list(steps[0]) == SEG_COLUMNS + [f"score_{c}" for c in classes] and list(spans[0]) == SPAN_COLUMNS
    by_id = {i: list(rows) for i, rows in itertools.groupby(steps, key=lambda r: r["id"])}
    assert sorted(by_id) == ["clip-a", "long"]  # the sheet's id, else the file's stem
    # the 1 s clip: its 2 steps, not max_steps rows of padding, at the cache's own times
    short = by_id["clip-a"]
    assert [(r["step"], r["start"], r["end"]) for r in short] == [("0", "0.000", "0.500"), ("1", "0.500", "1.000")]
    # the 4 s clip: 8 steps subsampled to max_steps 4, each at a step's time span in the cache
    long = by_id["long"]
    ts = open_cache(tmp_path / "cache").read_sample("logmel", long[0]["key"])[1]
    assert len(ts) == 8 and [r["step"] for r in long] == ["0", "1", "2", "3"]
    times = [(float(r["start"]), float(r["end"])) for r in long]
    assert times[0] == (0.0, 0.5) and times[-1] == (3.5, 4.0) and times == sorted(set(times))
    assert all(any(np.allclose(t, row) for row in ts) for t in times)
    for r in steps:
        assert r["prediction"] in classes and sum(float(r[f"score_{c}"]) for c in classes) == pytest.approx(1, 1e-4)
        assert r["prediction"] == max(classes, key=lambda c: float(r[f"score_{c}"]))
    check_spans(steps, spans)


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """Where tempfile makes folders in this test (TMPDIR for the code under test), to see it left empty."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_cli_predicts_a_folder_of_raw_videos_with_progress_and_no_temp_left(seg_ckpt, clips, tmp_path, temp_root):
    from typer.testing import CliRunner

    from mmfit.cli import app

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("short.mp4", "long.mp4"):
        shutil.copy(clips / name, folder / name)
    (folder / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "preds.csv"
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(seg_ckpt), str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "logmel" in res.stderr and "probe" in res.stderr  # the extraction's progress, on stderr
    assert "broken.mp4" in res.stderr  # a video that failed is named, the others are predicted
    assert str(out) in res.stdout and str(tmp_path / "preds.spans.csv") in res.stdout
    steps = read_csv(out)
    assert sorted({r["id"] for r in steps}) == ["long", "short"]  # a folder has no ids: the file's stem
    assert [r["step"] for r in steps if r["id"] == "short"] == ["0", "1"]
    check_spans(steps, read_csv(tmp_path / "preds.spans.csv"))
    assert list(temp_root.iterdir()) == []  # the temporary cache is gone


def test_raw_video_temp_cache_is_removed_when_prediction_fails(seg_ckpt, tmp_path, temp_root):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DataError, match="bad.mp4"):
        predict_videos(seg_ckpt, [str(bad)], tmp_path / "p.csv")
    assert list(temp_root.iterdir()) == [] and not (tmp_path / "p.csv").exists()
    with pytest.raises(DataError, match="bad.mp4"):  # a --work folder the user gave is kept
        predict_videos(seg_ckpt, [str(bad)], tmp_path / "p.csv", tmp_path / "work")
    assert (tmp_path / "work" / "cache" / "manifest.json").is_file()
