"""mmfit/cli.py (named test_mmfit_cli.py: test_cli.py is mmcache's CLI): train, eval, predict, sweep."""

from __future__ import annotations

import json

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


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


def test_version_flags_print_the_version_without_a_command():
    """Issue 13 row 1: `mmcache --version` said `Missing command`, `mmfit --version` `No such option`."""
    import subprocess
    import sys

    import mmcache

    for module, name in (("mmcache.cli", "mmcache"), ("mmfit.cli", "mmfit")):
        r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
        assert (r.returncode, r.stdout.strip()) == (0, f"{name} {mmcache.__version__}"), r.stderr


def test_a_gpu_torch_cannot_see_is_one_line_not_a_driver_traceback(labelled, tmp_path):
    """Issue 13 row 2: `--device cuda` on a machine without a GPU ended in a 20-line traceback."""
    import pytest
    import torch
    from typer.testing import CliRunner

    from mmfit.cli import app

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--cache",
            str(labelled / "cache"),
            "--device",
            "cuda",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert r.exit_code == 1 and "device 'cuda': torch finds no CUDA GPU on this machine" in r.stderr
    assert "Traceback" not in r.output and r.stderr.strip().count("\n") == 0


def test_eval_names_the_splits_for_an_unknown_one(labelled, tmp_path):
    """Issue 13 row 13: `--split tset` said "split 'tset' is empty" instead of naming the splits."""
    from typer.testing import CliRunner

    from mmfit.cli import app

    r = CliRunner().invoke(
        app, ["eval", "--checkpoint", str(tmp_path / "none.pt"), "--cache", str(labelled / "cache"), "--split", "tset"]
    )
    assert r.exit_code == 1 and "unknown split 'tset'; choose train, val, test or all" in r.stderr
