"""mmfit/sweep.py: grid or random trials over a few options, each over seeds, summarised per trial."""

from __future__ import annotations

import json

import pytest
import yaml

from mmfit.errors import ConfigError
from mmfit.sweep import load_sweep, run_sweep, trials

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_a_grid_gives_every_combination_once():
    grid = {"lr": [0.1, 0.01], "fusion": ["concat", "late", "gated"], "hidden": [8]}
    got = trials({"grid": grid})
    assert len(got) == 6 and all(set(t) == set(grid) for t in got)
    assert {tuple(sorted(t.items())) for t in got} == {
        (("fusion", f), ("hidden", 8), ("lr", lr)) for f in grid["fusion"] for lr in grid["lr"]
    }


def test_random_trials_draw_from_the_space_reproducibly():
    space = {"lr": [0.1, 0.01, 0.001], "hidden": [8, 16, 32, 64]}
    got = trials({"random": {"trials": 20, "space": space}})
    assert len(got) == 20 and all(t["lr"] in space["lr"] and t["hidden"] in space["hidden"] for t in got)
    assert got == trials({"random": {"trials": 20, "space": space}})  # seeded: the same draws every time
    assert len({tuple(sorted(t.items())) for t in got}) > 1


def test_no_search_is_one_trial_of_the_base_config():
    assert trials({"base": {"epochs": 1}}) == [{}]


def test_load_sweep_reads_yaml_checked_against_its_schema(tmp_path):
    good = {"base": {"epochs": 1}, "grid": {"lr": [0.1]}, "seeds": [0, 1]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(good))
    assert load_sweep(tmp_path / "s.yaml") == good
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"base": {}, "grid": {"lr": []}}))
    with pytest.raises(ConfigError, match=r"sweep config .*bad\.yaml: grid/lr: \[\] should be non-empty"):
        load_sweep(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("base: [unclosed")
    with pytest.raises(ConfigError, match="cannot read sweep config"):
        load_sweep(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="cannot read sweep config"):
        load_sweep(tmp_path / "missing.yaml")


def test_a_sweep_trains_each_trial_per_seed_and_writes_the_summary(labelled, tmp_path):
    base = {"cache": str(labelled / "cache"), "batch_size": 8, "hidden": 16, "epochs": 1}
    spec = {"base": base, "grid": {"fusion": ["concat", "late"]}, "seeds": [0, 1]}
    spec["out"] = str(tmp_path / "sweep")
    seen = []
    rows = run_sweep(spec, on_trial=seen.append)
    assert seen == rows and [r["options"] for r in rows] == [{"fusion": "concat"}, {"fusion": "late"}]
    for r in rows:
        assert len(r["scores"]) == 2 and r["mean"] == pytest.approx(sum(r["scores"]) / 2)
        assert r["std"] == pytest.approx(abs(r["scores"][0] - r["scores"][1]) / 2)
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert runs == ["trial000-seed0", "trial000-seed1", "trial001-seed0", "trial001-seed1"]
    assert json.loads((tmp_path / "sweep" / "summary.json").read_text()) == rows
