"""The mmcache command: help, tables, and one clear line + exit 1 for every user error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mmcache.cli import app
from mmcache.encoders import REGISTRY

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_the_commands():
    res = run("--help")
    assert res.exit_code == 0
    for cmd in ("encoders", "extract", "inspect", "verify"):
        assert cmd in res.output


def test_encoders_table_lists_every_registered_encoder():
    res = runner.invoke(app, ["encoders"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for name in REGISTRY:
        assert name in res.output


def test_extract_inspect_verify(tmp_path, clips):
    cache = tmp_path / "c"
    res = run("extract", clips, "-e", "logmel", "-e", "mfcc:fps=2", "--out", cache, "--shard-size", "2")
    assert res.exit_code == 0, res.output
    assert "4 new ok, 0 failed" in res.output
    res = run("inspect", cache, "--json")
    summary = json.loads(res.output)
    assert summary["samples"] == {"total": 4, "ok": 4, "failed": 0}
    assert summary["fields"]["mfcc"]["dim"] == 20 and summary["fields"]["logmel"]["missing"] == 1
    res = run("verify", cache)
    assert res.exit_code == 0 and "verified" in res.output


def test_failures_exit_0_unless_strict(tmp_path, clips, bad_files):
    res = run("extract", clips / "ocean.mp4", bad_files["text"], "-e", "logmel", "--out", tmp_path / "c")
    assert res.exit_code == 0 and "text_file.mp4" in res.output
    res = run("extract", clips / "forest.mp4", bad_files["zero"], "-e", "logmel", "--out", tmp_path / "c", "--strict")
    assert res.exit_code == 1 and "zero_bytes.mp4: empty file" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["extract", "nowhere/", "-e", "logmel", "--out", "c"], "input nowhere does not exist"),
        (
            ["extract", "{clip}", "-e", "resnet19", "--out", "c"],
            "unknown encoder 'resnet19' (did you mean 'resnet18'?); known: ",
        ),
        (["extract", "{clip}", "-e", "logmel:fps=-1", "--out", "c"], "option fps=-1 is invalid"),
        (
            ["extract", "{clip}", "-e", "logmel:colour=red", "--out", "c"],
            "unknown option 'colour'; allowed: batch_size",
        ),
        (["extract", "{clip}", "-e", "resnet18:dtype=float8", "--out", "c"], "'float8' is not one of"),
        (
            ["extract", "{clip}", "-e", "logmel", "--out", "/proc/forbidden"],
            "output directory /proc/forbidden is not writable",
        ),
        (["extract", "{clip}", "-e", "logmel", "--out", "c", "--format", "zip"], "unknown format 'zip'"),
        (["inspect", "nowhere"], "is not an mmcache cache"),
    ],
)
def test_user_errors_are_one_clear_line_and_exit_1(tmp_path, clips, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    res = run(*[a.format(clip=clips / "ocean.mp4") for a in args])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output


def test_verify_names_the_bad_file(tmp_path, clips):
    cache = tmp_path / "c"
    assert run("extract", clips, "-e", "logmel", "--out", cache, "--shard-size", "2").exit_code == 0
    tar = cache / "logmel" / "000001.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF  # one flipped byte inside the first member's data
    tar.write_bytes(bytes(data))
    res = run("verify", cache)
    assert res.exit_code == 1
    assert "logmel/000001.tar: sha256 mismatch" in res.output
    (cache / "samples" / "000000.jsonl").write_bytes(b"")
    res = run("verify", cache)
    assert "samples/000000.jsonl: 0 bytes" in res.output


def test_mmfit_entry_point_prints_help():
    from mmfit.cli import app as mmfit_app

    res = runner.invoke(mmfit_app, ["--help"])
    assert res.exit_code == 0 and "train" in res.output


def test_bookkeeping_commands_do_not_load_torch():
    """finalize, verify, inspect, stats and merge start without the encoder stack (torch takes seconds
    to import, and a Snakemake run starts finalize and verify as separate processes)."""
    code = (
        "import sys; import mmcache.cli, mmcache.extraction, mmcache.shards, mmcache.cache, mmcache.sharing; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_an_encoder_on_a_gpu_torch_cannot_see_is_one_line(tmp_path, clips):
    """Issue 13 row 2: `-e resnet18:device=cuda` without a GPU ended in a driver traceback."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from conftest import FAST_RESNET

    r = CliRunner().invoke(
        app, ["extract", str(clips), "-e", FAST_RESNET + ",device=cuda", "--out", str(tmp_path / "c")]
    )
    assert r.exit_code == 1 and "device 'cuda': torch finds no CUDA GPU" in r.stderr and "Traceback" not in r.output


def test_extract_json_and_quiet_and_verify_json(tmp_path, clips, bad_files):
    """Scripts get JSON from extract and verify; --quiet drops the progress bars, never the failures."""
    cache = tmp_path / "c"
    res = run("extract", clips / "ocean.mp4", bad_files["text"], "-e", "logmel", "--out", cache, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)  # nothing but the JSON on stdout: no progress bar, no summary line
    assert report["new_ok"] == 1 and report["new_failed"] == 1 and report["cache"] == str(cache)
    assert report["failures"][0]["source"].endswith(bad_files["text"].name) and report["failures"][0]["reason"]
    res = run("extract", clips / "forest.mp4", "-e", "logmel", "--out", cache, "-q")
    assert res.exit_code == 0 and "1 new ok" in res.output and "━" not in res.output and "probe" not in res.output
    res = run("verify", cache, "--json")
    assert res.exit_code == 0 and json.loads(res.output) == {"cache": str(cache), "ok": True, "problems": []}
    (cache / "samples" / "000000.jsonl").write_bytes(b"")
    res = run("verify", cache, "--json")
    got = json.loads(res.output)
    assert res.exit_code == 1 and not got["ok"] and "samples/000000.jsonl: 0 bytes" in got["problems"][0]


def test_shell_completion_is_offered():
    assert "--install-completion" in run("--help").output
