"""mmfit/runs.py: run folders are checked before any work and made only when the run writes; a run
is never silently replaced, and --overwrite never deletes a folder that is not a run."""

from __future__ import annotations

import threading

import pytest

from mmfit.errors import ConfigError
from mmfit.runs import claim_numbered, next_numbered, plan_run_dir


def _run_folder(path, *extra):
    path.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", *extra):
        (path / name).write_text("x")
    return path


def test_numbered_runs_count_up_per_stem(tmp_path):
    assert next_numbered(tmp_path / "runs", "concat").name == "concat-001"  # no runs/ yet: nothing is made
    assert not (tmp_path / "runs").exists()
    assert claim_numbered(tmp_path / "runs", "concat").name == "concat-001"
    assert claim_numbered(tmp_path / "runs", "concat").name == "concat-002"
    (tmp_path / "runs" / "gated-007").mkdir()
    (tmp_path / "runs" / "concat-notes").mkdir()
    assert claim_numbered(tmp_path / "runs", "concat").name == "concat-003"
    assert claim_numbered(tmp_path / "runs", "gated").name == "gated-008"


def test_runs_started_at_once_never_share_a_number(tmp_path):
    got, start = [], threading.Barrier(8)

    def claim():
        start.wait()
        got.append(claim_numbered(tmp_path, "concat").name)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(got) == [f"concat-{i:03d}" for i in range(1, 9)]


def test_no_out_plans_the_next_numbered_run_and_creates_it_only_on_create(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_run_dir(None, "attention")
    assert str(plan.path) == "runs/attention-001" and plan.numbered and not plan.path.exists()
    assert plan.create() == tmp_path.joinpath("runs/attention-001").relative_to(tmp_path)
    assert plan_run_dir(None, "attention").path.name == "attention-002"


def test_a_taken_out_is_refused_naming_what_it_holds(tmp_path):
    run = _run_folder(tmp_path / "r")
    with pytest.raises(ConfigError, match=r"--out .*r already holds a run \(config.yaml, metrics.jsonl, last.pt"):
        plan_run_dir(run, "concat")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds 1 other entries; pass --overwrite"):
        plan_run_dir(other, "concat")


def test_empty_or_new_out_is_used_as_is(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        plan = plan_run_dir(out, "concat")
        assert plan.path == out and not plan.clear
        assert plan.create() == out and out.is_dir()


def test_overwrite_clears_a_run_only_when_the_run_starts_writing(tmp_path):
    run = _run_folder(tmp_path / "r", "report.md")
    (run / "unimodal-logmel").mkdir()
    (run / "unimodal-logmel" / "best.pt").write_text("old")
    (run / "tensorboard").mkdir()
    plan = plan_run_dir(run, "concat", overwrite=True)
    assert (run / "unimodal-logmel" / "best.pt").exists()  # planning (the checks) deletes nothing
    plan.create()
    assert run.is_dir() and list(run.iterdir()) == []


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not an mmfit run .*--overwrite only replaces a run folder"):
        plan_run_dir(home, "concat", overwrite=True)
    assert (home / "thesis.tex").read_text() == "precious"


def test_resuming_continues_in_the_checkpoints_own_folder(tmp_path):
    run = _run_folder(tmp_path / "r")
    for out in (None, run):
        plan = plan_run_dir(out, "concat", resume=run / "last.pt")
        assert plan.path == run and plan.resuming and not plan.clear
        plan.create()
        assert (run / "last.pt").exists()  # nothing cleared
    with pytest.raises(ConfigError, match="already holds a run"):  # resuming into another taken folder
        plan_run_dir(_run_folder(tmp_path / "other"), "concat", resume=run / "last.pt")


def test_a_folder_filled_between_the_checks_and_the_start_is_not_shared(tmp_path):
    plan = plan_run_dir(tmp_path / "r", "concat")
    _run_folder(tmp_path / "r")  # another run took it meanwhile
    with pytest.raises(ConfigError, match="filled by something else"):
        plan.create()


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        plan_run_dir(tmp_path / "f", "concat")
