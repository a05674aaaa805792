"""train.py on a real cache: what a run learns and writes, resuming, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mmfit_helpers import cfg
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mmfit.errors import ConfigError, TrainingError
from mmfit.trainer import Trainer, train, training_data

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


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
    resumed = Trainer(part, resume=tmp_path / "b" / "run" / "last.pt").fit()
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert [r["val/loss"] for r in full.history] == [r["val/loss"] for r in resumed.history]


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
