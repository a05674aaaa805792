"""mmfit on a real cache made by mmcache from ffmpeg clips of three classes."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import FAST_RESNET
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mmcache
from mmcache.errors import CacheError, FingerprintMismatch
from mmfit.checkpoint import load_checkpoint
from mmfit.config import build_config
from mmfit.data import load_data
from mmfit.errors import CheckpointError, ConfigError, DataError, TrainingError
from mmfit.fusion import FUSIONS
from mmfit.predict import evaluate_checkpoint, predict_cache, predict_videos
from mmfit.train import Trainer, train, training_data

FIELDS = [FAST_RESNET, "logmel:fps=2,window=0.5", "minilm-text"]


@pytest.fixture(scope="session")
def labelled(tmp_path_factory):
    """24 clips (3 classes x 8) with sidecar subtitles; labels in the video sheet."""
    from mmcache.synth import make_labelled_set

    d = tmp_path_factory.mktemp("labelled")
    make_labelled_set(d / "videos", per_class=8, duration=1.5)
    mmcache.extract([d / "videos" / "videos.csv"], FIELDS, d / "cache", shard_size=10)
    return d


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


def test_concat_linear_matches_logistic_regression(labelled, tmp_path):
    c = cfg(
        labelled,
        tmp_path,
        fusion="concat",
        head="linear",
        dropout=0.0,
        epochs=60,
        lr=0.01,
        weight_decay=0.0,
        val_fraction=0.25,
        test_fraction=0.25,
        patience=60,
    )
    result = train(c)
    data = training_data(c)
    x = np.concatenate(
        [
            np.stack(
                [
                    (f.float() * m.unsqueeze(-1)).sum(0).numpy() / max(m.sum().item(), 1)
                    for f, m in zip(data.feats[n], data.masks[n], strict=True)
                ]
            )
            for n in data.field_names
        ],
        1,
    )  # mean-pooled features, the same rows
    y = data.y.numpy()
    tr, te = data.rows("train"), data.rows("test")
    scaler = StandardScaler().fit(x[tr])
    lr = LogisticRegression(max_iter=2000).fit(scaler.transform(x[tr]), y[tr])
    sk_acc = (lr.predict(scaler.transform(x[te])) == y[te]).mean()
    assert abs(result.test["accuracy"] - sk_acc) <= 0.02, (result.test["accuracy"], sk_acc)


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_every_fusion_learns_the_classes(labelled, tmp_path, fusion):
    result = train(cfg(labelled, tmp_path, fusion=fusion, epochs=8, lr=3e-3, modality_dropout=0.2))
    assert result.val["accuracy"] >= 0.75
    assert len(result.history) >= 1 and result.best_epoch >= 1


def test_run_outputs_and_best_weights_restored(labelled, tmp_path):
    result = train(cfg(labelled, tmp_path))
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "best.pt", "last.pt"):
        assert (out / name).is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    best = max(rows, key=lambda r: (r["val/accuracy"], -r["val/loss"]))
    assert result.best_epoch == best["epoch"] and result.val["accuracy"] == pytest.approx(best["val/accuracy"])
    from mmfit.report import write_report

    c = cfg(labelled, tmp_path)
    write_report(result, training_data(c), c.model, c.out)
    assert (out / "curves.png").stat().st_size > 1000 and (out / "confusion.png").stat().st_size > 1000
    assert "| fused (concat" in (out / "report.md").read_text()
    assert not (out / "tensorboard").exists()  # TensorBoard only when asked


def test_tensorboard_logs_the_same_scalars_as_metrics_jsonl(labelled, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(cfg(labelled, tmp_path, epochs=3, tensorboard=True))
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/accuracy"} <= tags
    for tag in ("train/loss", "val/accuracy"):
        logged = {e.step: e.value for e in acc.Scalars(tag)}
        assert logged == {r["epoch"]: pytest.approx(r[tag], rel=1e-6) for r in rows}


def test_resume_from_last_is_bitwise_identical(labelled, tmp_path):
    full = train(cfg(labelled, tmp_path / "a", epochs=6, dropout=0.3, modality_dropout=0.3, fusion="attention"))
    part = cfg(labelled, tmp_path / "b", epochs=6, dropout=0.3, modality_dropout=0.3, fusion="attention")
    trainer = Trainer(part)
    trainer.on_epoch = lambda row: (_ for _ in ()).throw(KeyboardInterrupt) if row["epoch"] == 3 else None
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 3 (last.pt holds epoch 3)
        trainer.fit()
    resumed = Trainer(part).fit(resume=tmp_path / "b" / "run" / "last.pt")
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert [r["val/loss"] for r in full.history] == [r["val/loss"] for r in resumed.history]


def test_metrics_do_not_depend_on_eval_batch_size(labelled, tmp_path):
    train(cfg(labelled, tmp_path, fusion="gated"))
    ckpt = tmp_path / "run" / "best.pt"
    one = evaluate_checkpoint(ckpt, labelled / "cache", "all", batch_size=1)
    many = evaluate_checkpoint(ckpt, labelled / "cache", "all", batch_size=512)
    assert {k: v for k, v in one.items() if k != "loss"} == {k: v for k, v in many.items() if k != "loss"}
    assert one["loss"] == pytest.approx(many["loss"], rel=1e-5)


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


def _labels_csv(path, rows, header=("id", "label")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_labels_csv_join_reports_unknown_ids_and_unlabelled(labelled, tmp_path):
    rows = [(f"{c}_{i:03d}", c) for c in ("sunrise", "ocean", "forest") for i in range(7)] + [("ghost_1", "ocean")]
    c = cfg(labelled, tmp_path, labels=_labels_csv(tmp_path / "l.csv", rows))
    data = load_data(c.data)
    assert data.report["unknown_label_ids"] == ["ghost_1"] and data.report["unlabelled"] == 3


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


def test_monitor_is_checked_before_training(labelled, tmp_path):
    with pytest.raises(ConfigError, match="monitor 'val/acc' does not exist; available: .*val/accuracy"):
        Trainer(cfg(labelled, tmp_path, monitor="val/acc"))
    assert not (tmp_path / "run").exists()


def test_nan_loss_stops_with_a_clear_message(labelled, tmp_path):
    c = cfg(labelled, tmp_path, normalize=False, fusion="gated")
    data = training_data(c)
    data.feats["logmel"][data.rows("train"), 0, 0] = float("inf")  # e.g. an overflowed float16 feature
    with pytest.raises(TrainingError, match="loss became nan at epoch 1"):
        train(c, data=data)


def test_corrupt_or_foreign_checkpoints_are_refused_without_unpickling(tmp_path):
    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').write('x')",))

    torch.save({"x": Boom()}, evil)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable mmfit checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "lightning", "state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an mmfit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_cache_failing_verification_is_refused(labelled, tmp_path):
    broken = tmp_path / "cache"
    shutil.copytree(labelled / "cache", broken)
    tar = broken / "logmel" / "000000.tar"
    tar.write_bytes(tar.read_bytes()[:-1024])  # cut at a member boundary: tarfile would read it cleanly
    with pytest.raises(CacheError, match="fails verification .*logmel/000000.tar.*--no-verify"):
        load_data(cfg(labelled, tmp_path, cache=str(broken)).data)


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


def test_mixing_caches_with_different_fingerprints_is_refused(labelled, tmp_path):
    other = tmp_path / "other"
    mmcache.extract([labelled / "videos" / "ocean_000.mp4"], ["logmel:fps=4,window=0.5"], other)
    with pytest.raises(FingerprintMismatch, match="options.fps"):
        load_data(cfg(labelled, tmp_path, cache=[str(labelled / "cache"), str(other)], fields=["logmel"]).data)


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


def test_yaml_config_is_validated(tmp_path):
    (tmp_path / "c.yaml").write_text("cache: x\nfusion: transformer\n")
    with pytest.raises(ConfigError, match="fusion: 'transformer' is not one of"):
        build_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("cache: x\nepochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        build_config(tmp_path / "c.yaml")


def test_aligned_fields_share_the_first_fields_grid(labelled, tmp_path):
    data = load_data(cfg(labelled, tmp_path, align=True, fields=["resnet18", "logmel", "minilm-text"]).data)
    # resnet18 and logmel both run at 2 steps/s: aligned step for step; text cues cover their halves of the clip
    assert torch.equal(data.masks["resnet18"], data.masks["logmel"])
    assert data.masks["minilm-text"].sum() > 0 and data.feats["resnet18"].shape[1] == data.feats["logmel"].shape[1]
    r = train(cfg(labelled, tmp_path, align=True, fusion="attention", epochs=4))
    assert r.val["accuracy"] >= 0.5


def test_token_fields_are_padded_to_their_longest_sample_only(labelled, tmp_path):
    data = load_data(cfg(labelled, tmp_path, fusion="attention", max_steps=64).data)
    cache = mmcache.open_cache(labelled / "cache")
    for name in data.field_names:
        longest = max(len(f) for f in cache.load_field(name).feats)
        assert data.feats[name].shape[1] == min(longest, 64)
        assert bool(data.masks[name][:, -1].any())  # no column is padding for every sample
    short = load_data(cfg(labelled, tmp_path, fusion="attention", max_steps=2).data)
    assert all(short.feats[n].shape[1] <= 2 for n in short.field_names)


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


def test_cli_train_eval_predict_sweep(labelled, tmp_path):
    from typer.testing import CliRunner

    from mmfit.cli import app

    run = CliRunner().invoke
    res = run(
        app,
        [
            "train",
            "--cache",
            str(labelled / "cache"),
            "--fields",
            "logmel,resnet18",
            "--epochs",
            "3",
            "--hidden",
            "16",
            "--out",
            str(tmp_path / "r"),
            "--unimodal-baselines",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "unimodal: logmel" in res.output and "unimodal: resnet18" in res.output
    assert (tmp_path / "r" / "unimodal-logmel" / "best.pt").is_file()
    res = run(
        app,
        [
            "eval",
            "--checkpoint",
            str(tmp_path / "r" / "best.pt"),
            "--cache",
            str(labelled / "cache"),
            "--split",
            "all",
            "--json",
        ],
    )
    assert res.exit_code == 0 and json.loads(res.output)["n"] == 24
    res = run(
        app,
        [
            "predict",
            "--checkpoint",
            str(tmp_path / "r" / "best.pt"),
            "--cache",
            str(labelled / "cache"),
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert res.exit_code == 0 and len((tmp_path / "p.csv").read_text().splitlines()) == 25
    res = run(app, ["train", "--cache", str(labelled / "cache"), "--monitor", "val/nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and res.output.count("error:") == 1 and "Traceback" not in res.output
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"base: {{cache: {labelled / 'cache'}, fields: [logmel], epochs: 2, hidden: 16}}\n"
        f"grid: {{fusion: [concat, gated]}}\nseeds: [0, 1]\nout: {tmp_path / 'sw'}\n"
    )
    res = run(app, ["sweep", "--config", str(sweep)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
    assert [r["options"] for r in summary] == [{"fusion": "concat"}, {"fusion": "gated"}]
    assert all(len(r["scores"]) == 2 for r in summary)


def test_cache_option_splits_local_lists_but_never_urls():
    from mmfit.cli import _caches

    assert _caches(None) is None
    assert _caches(["cache/"]) == "cache/"
    assert _caches(["a,b"]) == ["a", "b"]
    assert _caches(["a", "b"]) == ["a", "b"]
    url = "https://host/cache/?X-Amz-SignedHeaders=host,range&sig=1"
    assert _caches([url]) == url
    assert _caches(["pipe:aws s3 cp s3://b/{path} -", "c"]) == ["pipe:aws s3 cp s3://b/{path} -", "c"]
