"""ablate.py: each field's contribution (the metric with it masked out at test time vs all fields), next to
the unimodal baselines; in report.md after training and in `mmfit eval --ablate`."""

from __future__ import annotations

import json

import numpy as np
import torch
from mmfit_helpers import cfg
from torch import nn
from typer.testing import CliRunner

from mmfit.ablate import WithoutFields, ablate, contributions
from mmfit.cli import app
from mmfit.trainer import Trainer, training_data

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it

PNG = b"\x89PNG\r\n\x1a\n"
TWO = ["logmel", "minilm-text"]


class Spy(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, feats, masks):
        self.seen.append(({n: x.clone() for n, x in feats.items()}, {n: m.clone() for n, m in masks.items()}))
        return torch.full((len(next(iter(masks.values()))), 2), float("nan"))


def test_a_masked_field_is_absent_exactly_as_a_sample_without_it():
    """Mask all False and features 0 (what the loader gives a sample lacking the field), the other fields
    untouched; a sample left with no field is counted and scored 0 (no evidence), never NaN."""
    feats = {"a": torch.randn(3, 4, 5), "b": torch.randn(3, 4, 2)}
    masks = {"a": torch.ones(3, 4, dtype=torch.bool), "b": torch.tensor([[True] * 4, [False] * 4, [True] * 4])}
    spy = Spy()
    wrapped = WithoutFields(spy, {"a"})
    out = wrapped(feats, masks)
    seen_feats, seen_masks = spy.seen[0]
    assert not seen_masks["a"].any() and not seen_feats["a"].any()
    assert torch.equal(seen_masks["b"], masks["b"]) and torch.equal(seen_feats["b"], feats["b"])
    assert masks["a"].all()  # the caller's batch is not changed
    assert wrapped.left_empty == 1 and torch.equal(out, torch.zeros(3, 2))


def test_the_field_that_carries_the_class_contributes_more(labelled, tmp_path):
    """Two fields of the real cache's samples, rewritten in memory as 8 dims each: one holds the class (plus
    noise), the other only noise, both present everywhere. Masking the informative one out at test time
    costs far more accuracy than masking the noise."""
    c = cfg(labelled, tmp_path, fields=TWO, fusion="concat", head="linear", epochs=30, patience=30, lr=0.01)
    data = training_data(c)  # pooled: (N, 1, D) features, normalised
    gen = torch.Generator().manual_seed(0)
    n = len(data.keys)
    informative = 0.3 * torch.randn(n, 1, 8, generator=gen)
    informative[:, 0, : len(data.classes)] += 3 * torch.nn.functional.one_hot(data.y, len(data.classes))
    data.dims.update({f: 8 for f in TWO})
    data.feats.update({"logmel": informative, "minilm-text": torch.randn(n, 1, 8, generator=gen)})
    data.masks.update({f: torch.ones(n, 1, dtype=torch.bool) for f in TWO})  # presence says nothing either
    trainer = Trainer(c, data)
    result = trainer.fit()
    rows = np.flatnonzero(np.isin(data.split, ["val", "test"]))  # samples it did not learn from
    found = ablate(result.model, data, rows, result.task, **trainer.inference)
    assert found["n"] == len(rows) and found["fields"] == TWO and found["left_empty"] == {f: 0 for f in TWO}
    table = {r["field"]: r for r in contributions(found, "accuracy", {"logmel": {"accuracy": 0.9, "n": 20}})}
    assert table["logmel"]["all"] == found["all"]["accuracy"] == 1.0, table
    assert table["logmel"]["contribution"] >= 0.5, table
    assert table["logmel"]["contribution"] > table["minilm-text"]["contribution"] + 0.4, table
    assert found["without"]["logmel"]["loss"] > found["without"]["minilm-text"]["loss"]
    assert table["logmel"]["unimodal"] == 0.9 and table["logmel"]["unimodal_n"] == 20
    assert table["minilm-text"]["unimodal"] is None
    # an error metric: contribution is how much it rises without the field
    err = contributions({**found, "all": {"mae": 1.0}, "without": {f: {"mae": 1.5} for f in TWO}}, "mae")
    assert [r["contribution"] for r in err] == [0.5, 0.5]


def test_report_has_the_contributions_after_training(labelled, tmp_path):
    from mmfit.report import write_report

    c = cfg(labelled, tmp_path, fields=TWO, epochs=2, hidden=8)
    trainer = Trainer(c)
    result = trainer.fit()
    baselines = {"logmel": {"val": {"accuracy": 0.5}, "test": {"accuracy": 0.25, "n": 4}}}
    summary = write_report(result, trainer.data, c.model, str(result.out), baselines)
    contrib = summary["contributions"]
    assert contrib["split"] == "test" and contrib["metric"] == "accuracy"
    assert contrib["all"]["accuracy"] == result.test["accuracy"]
    assert [r["field"] for r in contrib["rows"]] == TWO
    saved = json.loads((result.out / "report.json").read_text())["contributions"]
    assert saved["rows"] == contrib["rows"]
    md = (result.out / "report.md").read_text()
    assert "## Modality contributions (test)" in md
    assert "| field | all fields | without it | contribution | unimodal |" in md
    logmel = next(line for line in md.splitlines() if line.startswith("| logmel |"))
    assert logmel.endswith("| 0.2500 |") and "![modality contributions](ablation.png)" in md
    assert (result.out / "ablation.png").read_bytes()[:8] == PNG

    one = cfg(labelled, tmp_path / "one", fields=["logmel"], epochs=1, hidden=8)
    trainer = Trainer(one)
    result = trainer.fit()
    summary = write_report(result, trainer.data, one.model, str(result.out))
    assert summary["contributions"] is None and not (result.out / "ablation.png").exists()
    assert "Modality contributions" not in (result.out / "report.md").read_text()


def test_eval_ablate_prints_the_table_writes_the_chart_and_finds_the_unimodal_baselines(labelled, tmp_path):
    c = cfg(labelled, tmp_path, fields=TWO, epochs=2, hidden=8)
    Trainer(c).fit()
    run = tmp_path / "run"
    Trainer(cfg(labelled, tmp_path, fields=["logmel"], epochs=2, hidden=8, out=str(run / "unimodal-logmel"))).fit()
    cache = str(labelled / "cache")
    res = CliRunner().invoke(
        app, ["eval", "--checkpoint", str(run / "best.pt"), "--cache", cache, "--split", "all", "--ablate", "--json"]
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["metric"] == "accuracy" and got["split"] == "all" and got["n"] == 24
    assert [r["field"] for r in got["rows"]] == TWO
    uni_ckpt = str(run / "unimodal-logmel" / "best.pt")
    uni = CliRunner().invoke(app, ["eval", "--checkpoint", uni_ckpt, "--cache", cache, "--split", "all", "--json"])
    assert uni.exit_code == 0, uni.output
    rows = {r["field"]: r for r in got["rows"]}
    assert rows["logmel"]["unimodal"] == json.loads(uni.output)["accuracy"] and rows["logmel"]["unimodal_n"] == 24
    assert rows["minilm-text"]["unimodal"] is None
    assert got["plot"] == str(run / "ablation-all.png") and (run / "ablation-all.png").read_bytes()[:8] == PNG

    res = CliRunner().invoke(
        app,
        ["eval", "--checkpoint", str(run / "best.pt"), "--cache", cache, "--ablate", "--plot", str(tmp_path / "a.png")],
    )
    assert res.exit_code == 0, res.output
    assert "contribution" in res.output and "logmel" in res.output and "minilm-text" in res.output
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG
    res = CliRunner().invoke(app, ["eval", "--checkpoint", uni_ckpt, "--cache", cache, "--ablate"])
    assert res.exit_code != 0 and "is a model of one field (logmel): nothing to mask out" in res.output
