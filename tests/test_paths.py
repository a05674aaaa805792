"""mmfit/paths.py: output paths checked before any work, naming the path and why; the checks create
nothing."""

from __future__ import annotations

import pytest

from mmfit.errors import ConfigError
from mmfit.paths import check_output_file, check_run_dir


def listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_a_new_or_existing_run_directory_is_accepted_and_nothing_is_created(tmp_path):
    (tmp_path / "old").mkdir()
    assert check_run_dir(tmp_path / "old") == tmp_path / "old"
    assert check_run_dir(str(tmp_path / "runs" / "a" / "b")) == tmp_path / "runs" / "a" / "b"
    assert listing(tmp_path) == ["old"]


def test_a_run_directory_that_is_a_file_or_below_one_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"--out .*/f is a file; a run needs a directory"):
        check_run_dir(tmp_path / "f")
    with pytest.raises(ConfigError, match=r"--out .*/f/run: cannot create the run directory, .*/f is a file"):
        check_run_dir(tmp_path / "f" / "run")


def test_a_predictions_file_may_be_new_or_replace_one_below_new_folders(tmp_path):
    (tmp_path / "old.csv").write_text("x")
    assert check_output_file(tmp_path / "old.csv") == tmp_path / "old.csv"
    assert check_output_file(tmp_path / "new" / "dir" / "p.csv") == tmp_path / "new" / "dir" / "p.csv"
    assert listing(tmp_path) == ["old.csv"] and (tmp_path / "old.csv").read_text() == "x"


def test_a_predictions_path_that_is_a_directory_or_below_a_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory; give the CSV file to write, e\.g\. .*/predictions\.csv"):
        check_output_file(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"cannot create the predictions file, .*/f is a file"):
        check_output_file(tmp_path / "f" / "p.csv")


def test_a_place_that_takes_no_new_files_is_refused():
    # /proc takes no new files, even for root (permission bits would not stop root)
    with pytest.raises(ConfigError, match=r"--out /proc/run: cannot write the run directory, /proc takes no new files"):
        check_run_dir("/proc/run")
