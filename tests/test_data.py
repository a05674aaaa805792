"""data.py: loading a cache (or several, or one over http) into training data, and its refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from mmfit_helpers import _labels_csv, cfg
from sharing_helpers import FIELDS, cli
from typer.testing import CliRunner

import mmcache
from mmcache.cache import open_cache
from mmcache.errors import CacheError, FingerprintMismatch
from mmcache.synth import make_labelled_set
from mmfit.data import load_data
from mmfit.errors import DataError
from mmfit.trainer import training_data

pytest_plugins = ["mmfit_fixtures", "sharing_fixtures"]  # session fixtures, made once for every file using them


def test_class_only_in_test_is_an_error(labelled, tmp_path):
    rows = [
        (f"{c}_{i:03d}", c, "train" if c != "forest" else "test")
        for c in ("sunrise", "ocean", "forest")
        for i in range(8)
    ]
    rows = [(i, c, "val" if i.endswith("7") and c != "forest" else s) for i, c, s in rows]
    c = cfg(labelled, tmp_path, labels=_labels_csv(tmp_path / "l.csv", rows, ("id", "label", "split")))
    with pytest.raises(DataError, match="class 'forest' is in the test split but not in train"):
        load_data(c.data)


def test_missing_field_lists_available(labelled, tmp_path):
    with pytest.raises(DataError, match="field 'clip' is not in the cache; available: logmel, minilm-text, resnet18"):
        load_data(cfg(labelled, tmp_path, fields=["clip"]).data)


def test_cache_failing_verification_is_refused(labelled, tmp_path):
    broken = tmp_path / "cache"
    shutil.copytree(labelled / "cache", broken)
    tar = broken / "logmel" / "000000.tar"
    tar.write_bytes(tar.read_bytes()[:-1024])  # cut at a member boundary: tarfile would read it cleanly
    with pytest.raises(CacheError, match="fails verification .*logmel/000000.tar.*--no-verify"):
        load_data(cfg(labelled, tmp_path, cache=str(broken)).data)


def test_mixing_caches_with_different_fingerprints_is_refused(labelled, tmp_path):
    other = tmp_path / "other"
    mmcache.extract([labelled / "videos" / "ocean_000.mp4"], ["logmel:fps=4,window=0.5"], other)
    with pytest.raises(FingerprintMismatch, match="options.fps"):
        load_data(cfg(labelled, tmp_path, cache=[str(labelled / "cache"), str(other)], fields=["logmel"]).data)


def test_the_loader_pools_only_when_the_caller_says_so(labelled, tmp_path):
    """load_data pools when told to (the trainer does when the model only sees each field's mean over
    time): the pooled batches are the masked means of the normalised steps, and the presence masks."""
    c = cfg(labelled, tmp_path, fusion="concat")
    steps, pooled = load_data(c.data), load_data(c.data, pooled=True)
    assert all(steps.feats[n].shape[1] > 1 and pooled.feats[n].shape[1] == 1 for n in steps.field_names)
    rows = steps.rows("train")
    a, b = next(steps.batches(rows, 64)), next(pooled.batches(rows, 64))
    for n in steps.field_names:
        w = a.masks[n].unsqueeze(-1).float()
        torch.testing.assert_close(
            b.feats[n][:, 0], (a.feats[n] * w).sum(1) / w.sum(1).clamp(min=1), atol=1e-3, rtol=1e-3
        )
        assert torch.equal(b.masks[n][:, 0], a.masks[n].any(1))
    assert training_data(c).normalised and not training_data(cfg(labelled, tmp_path, fusion="attention")).normalised


def test_mmfit_trains_over_http_with_cache_stats(served, tmp_path_factory):
    from mmfit.cli import app as mmfit_app
    from mmfit.config import build_config
    from mmfit.data import load_data

    base, d = served
    videos = make_labelled_set(tmp_path_factory.mktemp("lab") / "videos", per_class=3, duration=1.0)
    mmcache.extract([videos / "videos.csv"], FIELDS, d / "lab", shard_size=4)
    url = f"{base}/lab/"
    cfg = build_config(cache=url, out=str(d / "unused"))
    data = load_data(cfg.data)
    assert data.report["norm"] == "train" and len(data.keys) == 9
    assert cli("stats", d / "lab").exit_code == 0  # recorded where the cache lives, then read over http
    data = load_data(cfg.data)
    assert data.report["norm"] == "cache"
    st = open_cache(url).fields["mfcc"]["stats"]
    np.testing.assert_allclose(data.norm["mfcc"][0], st["mean"], rtol=1e-6)
    np.testing.assert_allclose(data.norm["mfcc"][1], np.array(st["std"]) + 1e-6, rtol=1e-6)
    run = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(
        mmfit_app, ["train", "--cache", url, "--epochs", "2", "--hidden", "8", "--batch-size", "4", "--out", str(run)]
    )
    assert res.exit_code == 0, res.output
    assert (run / "best.pt").is_file()


def test_labels_matching_no_sample_show_both_sides_naming(labelled, tmp_path):
    """Issue 13 row 11: ids that match nothing said only `no cache sample has a label`."""
    from mmfit.data import load_data
    from mmfit.errors import DataError

    sheet = _labels_csv(tmp_path / "l.csv", [(f"videos/bars_{i}", "a") for i in range(5)])
    with pytest.raises(DataError) as e:
        load_data(cfg(labelled, tmp_path, labels=sheet).data)
    msg = str(e.value)
    assert msg.startswith(f"no cache sample has a label in {sheet}: its ids ('videos/bars_0', 'videos/bars_1', ")
    names = [r.get("id") or r["source"].rsplit("/", 1)[-1] for r in mmcache.open_cache(labelled / "cache").samples()]
    assert f"e.g. {names[0]!r}" in msg and "keys like '" in msg
