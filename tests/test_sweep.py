"""mmfit/sweep.py: searches on Optuna (grid, random, tpe) over a few options, each trial over seeds;
the space checked whole up front, hopeless trials pruned, a killed sweep resumed from its study.db,
summary.csv and best.yaml written (issue 13, must-have 4; table rows 7 and 8)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution

import mmfit.sweep as sweep_mod
from mmfit.config import build_config
from mmfit.errors import ConfigError
from mmfit.sweep import combinations, load_sweep, normalise, plan_sweep, run_sweep
from mmfit.trainer import train as real_train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it

TINY = {"batch_size": 8, "hidden": 8, "epochs": 1}


def base(labelled, **more) -> dict:
    return {"cache": str(labelled / "cache"), **TINY, **more}


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def fake_train(monkeypatch):
    """Trials that take no time, scored by their options (for the sampler and folder logic)."""
    calls = []

    def train(cfg, on_epoch=None):
        calls.append(cfg)
        score = {"concat": 0.5, "late": 0.7, "gated": 0.6}.get(cfg.fusion, 0.4) + cfg.lr + cfg.hidden / 1000
        return SimpleNamespace(best_score=score, test={"accuracy": score / 2})

    monkeypatch.setattr(sweep_mod, "train", train)
    return calls


def test_combinations_are_every_grid_point_once_in_order():
    grid = {"lr": [0.1, 0.01], "fusion": ["concat", "late", "gated"], "hidden": [8]}
    got = combinations(grid)
    assert len(got) == 6 and all(set(t) == set(grid) for t in got)
    assert got[:2] == [{"fusion": "concat", "hidden": 8, "lr": 0.1}, {"fusion": "concat", "hidden": 8, "lr": 0.01}]
    assert {tuple(sorted(t.items())) for t in got} == {
        (("fusion", f), ("hidden", 8), ("lr", lr)) for f in grid["fusion"] for lr in grid["lr"]
    }
    assert combinations({}) == [{}]  # no search: one trial of the base config


def test_the_older_spellings_are_a_space_with_a_sampler():
    space = {"fusion": ["concat", "late"]}
    assert normalise({"base": {}, "grid": space}) == {"base": {}, "space": space, "sampler": "grid"}
    assert normalise({"base": {}, "random": {"trials": 4, "space": space}}) == {
        "base": {},
        "space": space,
        "sampler": "random",
        "trials": 4,
    }
    assert normalise({"base": {}})["space"] == {}
    with pytest.raises(ConfigError, match="one of grid, random or space, not grid and space"):
        normalise({"base": {}, "grid": space, "space": space})
    with pytest.raises(ConfigError, match="`random: {trials, space}` sets the sampler and trials"):
        normalise({"base": {}, "random": {"trials": 4, "space": space}, "trials": 3})


def test_load_sweep_reads_yaml_checked_against_its_schema(tmp_path):
    good = {"base": {"epochs": 1}, "grid": {"lr": [0.1]}, "seeds": [0, 1]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(good))
    assert load_sweep(tmp_path / "s.yaml") == good
    new = {
        "base": {"epochs": 1},
        "space": {"lr": [0.1]},
        "sampler": "tpe",
        "trials": 8,
        "minutes": 1.5,
        "pruning": {"startup_trials": 1, "min_epochs": 1},
    }
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new))
    assert load_sweep(tmp_path / "new.yaml") == new
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"base": {}, "grid": {"lr": []}}))
    with pytest.raises(ConfigError, match=r"sweep config .*bad\.yaml: grid/lr: \[\] should be non-empty"):
        load_sweep(tmp_path / "bad.yaml")
    (tmp_path / "sampler.yaml").write_text(yaml.safe_dump({"base": {}, "sampler": "bayes"}))
    with pytest.raises(ConfigError, match=r"sampler: 'bayes' is not one of \['grid', 'random', 'tpe'\]"):
        load_sweep(tmp_path / "sampler.yaml")
    (tmp_path / "broken.yaml").write_text("base: [unclosed")
    with pytest.raises(ConfigError, match="cannot read sweep config"):
        load_sweep(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="cannot read sweep config"):
        load_sweep(tmp_path / "missing.yaml")


def test_the_study_direction_follows_the_monitor(tmp_path):
    cache = {"cache": str(tmp_path), "epochs": 1}
    plan = plan_sweep({"base": cache, "out": str(tmp_path / "s")})
    assert (plan.monitor, plan.direction) == ("val/accuracy", "maximize")  # multiclass's auto monitor
    plan = plan_sweep({"base": {**cache, "monitor": "val/loss"}, "out": str(tmp_path / "s")})
    assert (plan.monitor, plan.direction) == ("val/loss", "minimize")
    plan = plan_sweep({"base": {**cache, "task": "regression"}, "out": str(tmp_path / "s")})
    assert (plan.monitor, plan.direction) == ("val/mae", "minimize")
    assert not (tmp_path / "s").exists()


def test_a_bad_value_is_refused_before_any_trial(labelled, tmp_path):
    """Row 8: `fusion: [concat, transformr]` trained trial 0, then failed on the bad value."""
    out = tmp_path / "sweep"

    def refused(space, match, **more):
        spec = {"base": base(labelled, **more.pop("base", {})), "grid": space, "out": str(out), **more}
        with pytest.raises(ConfigError, match=match):
            run_sweep(spec)
        assert not out.exists()

    refused(
        {"fusion": ["concat", "transformr"]},
        r"^sweep space: fusion 'transformr' is not a valid fusion \(choices: concat, late, gated, attention, "
        r"bottleneck, perceiver\)$",
    )
    refused({"fusion": ["concat", "atention"]}, r"fusion 'atention' .* did you mean 'attention'\?$")
    refused({"fusoin": ["concat"]}, r"^sweep space: 'fusoin' is not a train option; did you mean 'fusion'\?$")
    refused({"hidden": [8, 2]}, r"^sweep space: hidden: 2: config: hidden: 2 is less than the minimum of 4$")
    refused({"hidden": [8, 8]}, r"hidden lists a value twice")
    refused({"seed": [0, 1]}, r"'seed' cannot be swept; list seeds under `seeds:` instead")
    refused({"monitor": ["val/loss"]}, r"'monitor' cannot be swept")
    refused(  # the task's checks too
        {"fusion": ["concat", "late"]},
        r"^sweep space: fusion: 'late': fusion 'late' has no per-step output; use another fusion for task segment$",
        base={"task": "segment"},
    )
    with pytest.raises(ConfigError, match=r"^sweep: cache .*nope does not exist"):
        run_sweep({"base": {"cache": str(tmp_path / "nope")}, "grid": {"fusion": ["concat"]}, "out": str(out)})
    with pytest.raises(ConfigError, match=r"^sweep: labels .*nope\.csv do not exist"):
        run_sweep({"base": base(labelled, labels=str(tmp_path / "nope.csv")), "out": str(out)})
    assert not out.exists()


def test_a_grid_sweep_runs_every_combination_once_per_seed_and_writes_the_summary(labelled, tmp_path):
    out = tmp_path / "sweep"
    spec = {"base": base(labelled), "grid": {"fusion": ["concat", "late"]}, "seeds": [0, 1], "out": str(out)}
    seen = []
    res = run_sweep(spec, on_trial=seen.append)
    assert seen == res.rows and res.ran == 2 and "exhausted" in res.message
    assert [r["options"] for r in res.rows] == [{"fusion": "concat"}, {"fusion": "late"}]
    for r in res.rows:
        assert r["state"] == "COMPLETE" and r["monitor"] == "val/accuracy" and len(r["scores"]) == 2
        assert r["mean"] == pytest.approx(sum(r["scores"]) / 2)
        assert r["std"] == pytest.approx(abs(r["scores"][0] - r["scores"][1]) / 2)
        assert r["duration_s"] > 0
    runs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert runs == ["trial-000-seed0", "trial-000-seed1", "trial-001-seed0", "trial-001-seed1"]
    table = csv_rows(out / "summary.csv")
    assert [(t["trial"], t["state"], t["fusion"]) for t in table] == [
        ("0", "COMPLETE", "concat"),
        ("1", "COMPLETE", "late"),
    ]
    assert [float(t["mean"]) for t in table] == pytest.approx([r["mean"] for r in res.rows], abs=1e-5)
    assert set(table[0]) == {"trial", "state", "fusion", "monitor", "mean", "std", "test", "duration_s", "note"}
    assert json.loads((out / "summary.json").read_text()) == res.rows
    assert (out / "study.db").is_file() and (out / "sweep-config.yaml").is_file()

    # best.yaml: the best trial's full config, which `mmfit train --config` takes, into <out>/best
    cfg = build_config(out / "best.yaml")
    assert cfg.fusion == res.best["options"]["fusion"] and cfg.out == str(out / "best") and cfg.hidden == 8
    assert real_train(cfg).out == out / "best"

    # a finished sweep run again trains nothing and overwrites nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "best" not in p.parts}
    again = run_sweep(spec)
    assert again.ran == 0 and [r["options"] for r in again.rows] == [r["options"] for r in res.rows]
    assert [p for p, t in before.items() if p.stat().st_mtime_ns != t and p.name not in ("study.db", ".lock")] == []
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([*runs, "best"])


def test_random_never_repeats_a_combination_while_unseen_ones_remain(labelled, tmp_path):
    """Row 7: `random: {trials: 4, space: {fusion: [concat, late]}}` gave 3 of 4 identical trials."""
    spec = {"base": base(labelled), "random": {"trials": 4, "space": {"fusion": ["concat", "late"]}}}
    res = run_sweep({**spec, "out": str(tmp_path / "sweep")})
    assert sorted(r["options"]["fusion"] for r in res.rows) == ["concat", "late"]  # then the space is exhausted
    assert res.ran == 2 and res.message == "the space is exhausted: all 2 combinations have run"
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["trial-000", "trial-001"]


def test_random_draws_distinct_combinations_reproducibly(fake_train, tmp_path):
    space = {"lr": [0.1, 0.01, 0.001], "hidden": [8, 16, 32, 64]}

    def drawn(out, trials):
        res = run_sweep({"base": {"cache": str(tmp_path)}, "sampler": "random", "space": space, "trials": trials,
                         "out": str(tmp_path / out)})  # fmt: skip
        return [(r["options"]["lr"], r["options"]["hidden"]) for r in res.rows]

    got = drawn("a", 8)
    assert len(got) == 8 and len(set(got)) == 8  # no repeat
    assert got == drawn("b", 8)  # seeded: the same draws every time
    assert got != sorted(got)  # not the grid's order
    everything = drawn("c", 100)
    assert len(everything) == 12 and len(set(everything)) == 12  # every combination, then stop


def test_tpe_reuses_a_result_rather_than_retrain_a_combination(fake_train, tmp_path):
    space = {"fusion": ["concat", "late"], "lr": [0.01, 0.001]}
    spec = {"base": {"cache": str(tmp_path)}, "sampler": "tpe", "space": space, "trials": 40}
    res = run_sweep({**spec, "out": str(tmp_path / "sweep")})
    assert "exhausted" in res.message and res.ran <= 40
    assert len(fake_train) == 4  # each combination trained once; repeats proposed by TPE reuse its result
    repeats = [r for r in res.rows if r["note"].startswith("same as trial")]
    firsts = [tuple(r["options"].values()) for r in res.rows if r not in repeats]
    assert len(firsts) == len(set(firsts)) == 4 and len(repeats) == len(res.rows) - 4
    assert res.best["options"] == {"fusion": "late", "lr": 0.01}


def test_hopeless_trials_are_pruned_on_the_monitor_each_epoch(labelled, tmp_path):
    # trial 0 learns (val accuracy far above chance after one epoch); trial 1's lr is too small to move
    # from chance: the median pruner stops it at epoch 1, once trial 0 has finished
    spec = {
        "base": base(labelled, epochs=2),
        "space": {"lr": [0.01, 1e-6]},
        "pruning": {"startup_trials": 1, "min_epochs": 1},
    }
    res = run_sweep({**spec, "out": str(tmp_path / "pruned")})
    assert [r["state"] for r in res.rows] == ["COMPLETE", "PRUNED"]
    assert res.rows[1]["note"].startswith("at epoch 1: val/accuracy") and res.rows[1]["mean"] is None
    history = [json.loads(line) for line in (tmp_path / "pruned" / "trial-001" / "metrics.jsonl").open()]
    assert len(history) == 1  # stopped after its first epoch
    assert [t["state"] for t in csv_rows(tmp_path / "pruned" / "summary.csv")] == ["COMPLETE", "PRUNED"]
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 'pruned' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"] and study.direction.name == "MAXIMIZE"
    assert build_config(tmp_path / "pruned" / "best.yaml").lr == 0.01

    res = run_sweep({**spec, "pruning": False, "out": str(tmp_path / "unpruned")})
    assert [r["state"] for r in res.rows] == ["COMPLETE", "COMPLETE"]


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(labelled, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    spec = {"base": base(labelled, epochs=2), "grid": {"fusion": ["concat", "late", "gated"]}, "out": str(out)}
    trained = []

    def killed_in_trial_1(cfg, on_epoch=None):
        trained.append(cfg.out)

        def epoch(row):
            if cfg.out.endswith("trial-001"):
                raise KeyboardInterrupt  # Ctrl-C in the middle of trial 1, its folder half written
            if on_epoch:
                on_epoch(row)

        return real_train(cfg, on_epoch=epoch)

    monkeypatch.setattr(sweep_mod, "train", killed_in_trial_1)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec)
    assert (out / "trial-001" / "metrics.jsonl").is_file()
    first = (out / "trial-000" / "best.pt").stat().st_mtime_ns

    monkeypatch.setattr(sweep_mod, "train", lambda cfg, on_epoch=None: trained.append(cfg.out) or real_train(cfg))
    res = run_sweep(spec)
    assert [p.rsplit("/", 1)[-1] for p in trained] == ["trial-000", "trial-001", "trial-002", "trial-003"]
    assert [(r["state"], r["options"]["fusion"]) for r in res.rows] == [
        ("COMPLETE", "concat"),
        ("INTERRUPTED", "late"),
        ("COMPLETE", "late"),  # the combination cut off runs again first
        ("COMPLETE", "gated"),
    ]
    assert (out / "trial-000" / "best.pt").stat().st_mtime_ns == first  # not trained again
    assert not (out / "trial-001").exists()  # the cut-off trial's folder is cleared
    assert res.ran == 2 and "exhausted" in res.message


def test_a_hard_killed_trial_and_a_grown_budget_resume(fake_train, tmp_path):
    out = tmp_path / "sweep"
    spec = {"base": {"cache": str(tmp_path)}, "space": {"fusion": ["concat", "late", "gated"]}, "out": str(out)}
    res = run_sweep({**spec, "trials": 1})
    assert [r["options"] for r in res.rows] == [{"fusion": "concat"}] and "budget of 1 trials" in res.message
    # a process killed with SIGKILL leaves its trial RUNNING in the study, and its folder behind
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")
    study.enqueue_trial({"fusion": "late"})
    study.ask({"fusion": CategoricalDistribution(["concat", "late", "gated"])})
    (out / "trial-001").mkdir()
    (out / "trial-001" / "metrics.jsonl").write_text("{}\n")
    res = run_sweep({**spec, "trials": 3})  # the budget may grow: the same sweep
    assert [(r["trial"], r["state"], r["options"]["fusion"]) for r in res.rows] == [
        (0, "COMPLETE", "concat"),
        (1, "INTERRUPTED", "late"),
        (2, "COMPLETE", "late"),
        (3, "COMPLETE", "gated"),
    ]
    assert [c.fusion for c in fake_train] == ["concat", "late", "gated"] and not (out / "trial-001").exists()


def test_a_folder_holding_another_sweep_or_other_files_is_refused(fake_train, tmp_path):
    out = tmp_path / "sweep"
    spec = {"base": {"cache": str(tmp_path)}, "grid": {"fusion": ["concat", "late"]}, "out": str(out)}
    run_sweep(spec)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    other = {**spec, "grid": {"fusion": ["concat", "gated"]}}
    with pytest.raises(ConfigError, match=r"sweep .*sweep holds a different sweep \(space differ"):
        run_sweep(other)
    with pytest.raises(ConfigError, match=r"holds a different sweep \(seeds differ"):
        run_sweep({**spec, "seeds": [0, 1]})
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before and len(fake_train) == 2
    # the same sweep in its newer spelling is the same sweep
    assert run_sweep({**{k: v for k, v in spec.items() if k != "grid"}, "space": spec["grid"]}).ran == 0

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"already holds 1 entries and no mmfit sweep"):
        run_sweep({**spec, "out": str(tmp_path / "other")})
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_a_sweep_refused_before_any_trial_ended_can_be_corrected_in_place(fake_train, tmp_path, monkeypatch):
    """A check only training makes (a misspelt monitor needs the data) refuses trial 0; the folder then
    holds no result, so the corrected sweep takes it over instead of being refused as another sweep."""
    out = tmp_path / "sweep"
    spec = {"base": {"cache": str(tmp_path), "monitor": "val/acc"}, "space": {"fusion": ["concat"]}, "out": str(out)}

    def refuse(cfg, on_epoch=None):
        raise ConfigError("monitor 'val/acc' does not exist; available: val/accuracy")

    monkeypatch.setattr(sweep_mod, "train", refuse)
    with pytest.raises(ConfigError, match="monitor 'val/acc' does not exist"):
        run_sweep(spec)
    monkeypatch.setattr(sweep_mod, "train", lambda cfg, on_epoch=None: fake_train.append(cfg) or SimpleNamespace(
        best_score=0.5, test=None))
    fixed = {**spec, "base": {"cache": str(tmp_path), "monitor": "val/accuracy"}}
    assert run_sweep(fixed).ran == 1 and len(fake_train) == 1
    with pytest.raises(ConfigError, match="holds a different sweep"):  # now a result is there to protect
        run_sweep(spec)


def test_the_cli_prints_a_line_per_trial_a_ranked_table_and_the_best(fake_train, tmp_path):
    from typer.testing import CliRunner

    from mmfit.cli import app

    out = tmp_path / "sweep"
    spec = {"base": {"cache": str(tmp_path)}, "space": {"fusion": ["concat", "late"]}, "out": str(out)}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    res = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "sweep.yaml")])
    assert res.exit_code == 0, res.output
    assert "trial 0 {'fusion': 'concat'}: val/accuracy 0.7570 ± 0.0000" in res.output
    assert res.output.index("│ 1 ") < res.output.index("│ 0 ")  # late (0.957) ranks first
    assert "2 trials run; the space is exhausted" in res.output
    assert "best: trial 1 {'fusion': 'late'}, val/accuracy 0.9570; train it: mmfit train --config" in res.output

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**spec, "space": {"fusion": ["concat", "transformr"]}}))
    res = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "fusion 'transformr' is not a valid fusion" in res.output and len(fake_train) == 2


def test_the_cli_sweep_json_and_quiet(fake_train, tmp_path):
    from typer.testing import CliRunner

    from mmfit.cli import app

    spec = {"base": {"cache": str(tmp_path)}, "space": {"fusion": ["concat", "late"]}, "out": str(tmp_path / "s")}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    res = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "sweep.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)  # no trial lines, no table: only the JSON
    assert got["best"]["options"] == {"fusion": "late"} and len(got["trials"]) == 2
    res = CliRunner().invoke(app, ["sweep", "--config", str(tmp_path / "sweep.yaml"), "--quiet"])
    assert res.exit_code == 0 and "trial 0 {" not in res.output and "sweep" in res.output
