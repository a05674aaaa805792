"""mmfit/api.py, the Python API the CLI calls: train into safe run folders, resume from a checkpoint
alone, load a finished run, predict and evaluate through it (issue 13 rows 4, 5, 6, 12, 16)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from mmfit_helpers import _labels_csv
from typer.testing import CliRunner

import mmfit
from mmfit import api
from mmfit.cli import app
from mmfit.errors import CheckpointError, ConfigError, DataError

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it

TINY = {"epochs": 2, "hidden": 8, "batch_size": 8, "seed": 0}


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_train_returns_a_run_with_metrics_paths_and_predict(labelled, tmp_path):
    run = mmfit.train(cache=labelled / "cache", fields=["logmel"], out=tmp_path / "r", **TINY)
    assert isinstance(run, mmfit.Run) and run.path == tmp_path / "r"
    assert run.best.is_file() and run.last.is_file() and run.report.is_file()
    assert 0 <= run.metrics["test"]["accuracy"] <= 1 and run.metrics["val"]["n"] > 0
    assert [r["epoch"] for r in run.history] == [1, 2]
    assert run.config.fields == ("logmel",) and run.config.out == str(tmp_path / "r")
    loaded = api.load_run(tmp_path / "r")
    assert loaded.metrics == json.loads(json.dumps(run.metrics))  # report.json holds what train returned
    done = loaded.predict(cache=labelled / "cache", out=tmp_path / "p.csv")
    assert done.n == 24 and len(list(csv.DictReader(open(done.path)))) == 24
    assert loaded.evaluate(split="all")["n"] == 24
    res = _cli("predict", "--checkpoint", run.best, "--cache", labelled / "cache", "--out", tmp_path / "q.csv",
               "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)  # only the JSON on stdout
    assert got["n"] == 24 and got["path"] == str(tmp_path / "q.csv") and got["failures"] == []
    with pytest.raises(ConfigError, match="not a finished mmfit run"):
        api.load_run(tmp_path)


def test_training_twice_into_one_out_is_refused_and_overwrite_replaces_the_whole_run(labelled, tmp_path):
    out = tmp_path / "r"
    res = _cli("train", "--cache", labelled / "cache", "--fields", "logmel,minilm-text", "--epochs", 2, "--hidden", 8,
               "--out", out, "--unimodal-baselines", "--tensorboard")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "unimodal-logmel").is_dir() and (out / "tensorboard").is_dir()
    before = _files(out)
    res = _cli("train", "--cache", labelled / "cache", "--fields", "logmel", "--epochs", 2, "--out", out)
    assert res.exit_code == 1 and "already holds a run" in res.output and "--overwrite" in res.output
    assert _files(out) == before  # nothing touched
    res = _cli("train", "--cache", labelled / "cache", "--fields", "logmel", "--epochs", 2, "--hidden", 8,
               "--out", out, "--overwrite")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert not (out / "unimodal-logmel").exists() and not (out / "tensorboard").exists()  # no stale leftovers
    assert yaml.safe_load((out / "config.yaml").read_text())["fields"] == ["logmel"]


def test_overwrite_with_a_failing_check_keeps_the_old_run(labelled, tmp_path):
    out = tmp_path / "r"
    api.train(cache=labelled / "cache", fields=["logmel"], out=out, **TINY)
    before = _files(out)
    with pytest.raises(ConfigError, match="monitor 'val/nope' does not exist"):
        api.train(cache=labelled / "cache", fields=["logmel"], out=out, overwrite=True, monitor="val/nope", **TINY)
    assert _files(out) == before  # cleared only once every check passed


def test_runs_without_out_are_numbered_per_fusion(labelled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = [api.train(cache=labelled / "cache", fields=["logmel"], fusion=f, **TINY).path for f in ("concat",) * 2]
    names.append(api.train(cache=labelled / "cache", fields=["logmel", "minilm-text"], fusion="gated", **TINY).path)
    assert [str(p) for p in names] == ["runs/concat-001", "runs/concat-002", "runs/gated-001"]
    assert yaml.safe_load((tmp_path / "runs/gated-001/config.yaml").read_text())["out"] == "runs/gated-001"


def test_resume_from_last_pt_alone_restores_config_labels_and_splits(labelled, tmp_path):
    sheet = _labels_csv(tmp_path / "labels.csv", _rows(labelled, split=True), header=("id", "label", "split"))
    out = tmp_path / "r"
    res = _cli("train", "--cache", labelled / "cache", "--labels", sheet, "--fields", "logmel,minilm-text",
               "--epochs", 2, "--hidden", 8, "--out", out, "--fusion", "gated")  # fmt: skip
    assert res.exit_code == 0, res.output
    res = _cli("train", "--resume", out / "last.pt", "--epochs", 4)  # no --cache, --labels, --fusion: all restored
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["epochs"] == 4 and cfg["fusion"] == "gated" and cfg["labels"] == sheet and cfg["hidden"] == 8
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert api.load_run(out).summary["data"]["splits"] == {"train": 12, "val": 6, "test": 6}


def test_a_refused_resume_leaves_config_and_checkpoints_untouched(labelled, tmp_path):
    out = tmp_path / "r"
    api.train(cache=labelled / "cache", fields=["logmel", "minilm-text"], out=out, **TINY)
    before = _files(out)
    res = _cli("train", "--cache", labelled / "cache", "--fields", "logmel", "--resume", out / "last.pt", "--epochs", 4)
    assert res.exit_code == 1 and "fields is ('logmel', 'minilm-text'), not ('logmel',)" in res.output, res.output
    assert _files(out) == before
    with pytest.raises(ConfigError, match="has already run 2 epochs; give --epochs above 2$"):
        api.train(resume=out / "last.pt", epochs=2)
    with pytest.raises(CheckpointError, match="best-weights checkpoint; resume from last.pt"):
        api.train(resume=out / "best.pt", epochs=4)
    assert _files(out) == before


def test_resume_refuses_labels_or_splits_that_changed(labelled, tmp_path):
    sheet = tmp_path / "labels.csv"
    _labels_csv(sheet, _rows(labelled, split=True), header=("id", "label", "split"))
    out = tmp_path / "r"
    api.train(cache=labelled / "cache", labels=str(sheet), fields=["logmel"], out=out, **TINY)
    before = _files(out)
    rows = _rows(labelled, split=True)
    rows[0][2], rows[-1][2] = rows[-1][2], rows[0][2]  # two samples swap splits
    _labels_csv(sheet, rows, header=("id", "label", "split"))
    with pytest.raises(DataError, match="samples, labels or splits differ from the ones this run was trained on"):
        api.train(resume=out / "last.pt", epochs=4)
    assert _files(out) == before


def test_multilabel_01_columns_get_a_hint_and_a_flag(labelled, tmp_path):
    rows = [[i, int(lab == "sunrise"), int(lab != "ocean")] for i, lab, _ in _rows(labelled, split=True)]
    sheet = _labels_csv(tmp_path / "ml.csv", rows, header=("id", "is_sun", "not_ocean"))
    res = _cli("train", "--cache", labelled / "cache", "--labels", sheet, "--task", "multilabel", "--out", tmp_path / "a")  # noqa: E501
    assert res.exit_code == 1
    assert "pass --task multilabel --label-columns is_sun,not_ocean" in " ".join(res.output.split()), res.output
    res = _cli("train", "--cache", labelled / "cache", "--labels", sheet, "--task", "multilabel", "--label-columns",
               "is_sun,not_ocean", "--fields", "logmel", "--epochs", 2, "--out", tmp_path / "b", "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["classes"] == ["is_sun", "not_ocean"] and summary["run"] == str(tmp_path / "b")


def test_cli_conventions_quiet_json_defaults_and_did_you_mean(labelled, tmp_path):
    res = _cli("train", "--help")
    flat = " ".join(res.output.replace("│", " ").split())  # the help's box, unwrapped
    assert "(default: 30)" in flat and "(default: concat)" in flat and "(default: a new runs/<fusion>-NNN)" in flat
    res = _cli("train", "--cache", labelled / "cache", "--fields", "logmel", "--epochs", 2, "--hidden", 8, "--quiet",
               "--out", tmp_path / "q")  # fmt: skip
    assert res.exit_code == 0 and "epoch   1" not in res.output and "mmfit:" in res.output
    res = _cli("train", "--cache", labelled / "cache", "--fusion", "atention", "--out", tmp_path / "x")
    assert res.exit_code == 1 and "did you mean 'attention'?" in res.output
    assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in res.output


def test_progress_bar_never_shows_an_epoch_past_the_last():
    from types import SimpleNamespace

    from mmfit.cli import EpochProgress

    p = EpochProgress()
    p.start("fused", SimpleNamespace(monitor="val/accuracy", optim=SimpleNamespace(epochs=3), epoch=0))
    row = {"train/loss": 1.0, "val/loss": 1.0, "val/accuracy": 0.5, "train/epoch_s": 0.1, "train/samples_per_s": 9}
    for e in (1, 2, 3):
        p.on_epoch({"epoch": e, **row})
    assert p.bar.tasks[0].fields["epoch"] == 3
    p.stop()


def _rows(labelled, split=False):
    """[id, label, split] for the 24 clips, from the video sheet: 12 train, 6 val, 6 test."""
    with open(labelled / "videos" / "videos.csv") as f:
        sheet = list(csv.DictReader(f))
    splits = ["train"] * 2 + ["val", "test"]
    return [[r["id"], r["label"], splits[i % 4]] for i, r in enumerate(sheet)]
