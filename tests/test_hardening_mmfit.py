"""Hardening audit (issue 15), the mmfit classes: every case ends in exit code 1 with one line naming
the file or sample and the problem (never a traceback), and nothing half-written.

9: NaN/inf features in any split (and in predict inputs) are named with their sample and field.
11: unwritable or wrong-kind --out paths, and empty, damaged, pickled or mistyped checkpoints.
13: a labels sheet naming one sample twice with different labels (or splits) is refused.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fuzzing import fuzz, nested, replace_at
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import mmcache
from mmfit.checkpoint import FIELD_TYPES, FOR_MODEL, FOR_RESUME, SCHEMA, check_checkpoint, load_checkpoint
from mmfit.cli import app
from mmfit.config import build_config
from mmfit.data import FIELD_META
from mmfit.errors import CheckpointError, DataError
from mmfit.labels import from_csv
from mmfit.predict import config_of, model_of
from mmfit.samples import SampleRows
from mmfit.trainer import train

FIELD = "logmel"
SPLIT_OF = {0: "train", 1: "train", 2: "val", 3: "test"}  # by clip number within each class


# -- a tiny labelled cache and a run trained on it ----------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """12 one-second clips (3 classes x 4), one cheap field, labels with a split column, and a
    2-epoch run on it (best.pt, last.pt): a few seconds in all."""
    from mmcache.synth import make_labelled_set

    d = tmp_path_factory.mktemp("tiny")
    make_labelled_set(d / "videos", per_class=4, duration=1.0, size="64x48")
    mmcache.extract([d / "videos" / "videos.csv"], [f"{FIELD}:fps=2,window=0.5"], d / "cache", shard_size=6)
    ids = sorted(r["id"] for r in csv.DictReader((d / "videos" / "videos.csv").read_text().splitlines()))
    with open(d / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "split"])
        w.writerows([i, i.rsplit("_", 1)[0], SPLIT_OF[int(i.rsplit("_", 1)[1])]] for i in ids)
    train(tiny_config(d, d / "run"))
    return d


def tiny_config(d: Path, out: Path, **kw):
    return build_config(
        cache=str(d / "cache"), labels=str(d / "labels.csv"), out=str(out), epochs=2, batch_size=8, hidden=8, **kw
    )


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result, pattern: str) -> str:
    """Exit 1 through the CLI's error path: one line `error: ...` matching `pattern`, no traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exception, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# -- class 9: NaN/inf features, named with their sample and field, in every split ------------------


def poison(cache: Path, sample_id: str, value: float) -> str:
    """Set one feature value of sample `sample_id` to `value` in its shard, in place, and record the
    shard's new sha256, so the cache verifies as if the encoder had produced it. Returns its key."""
    key = next(s["key"] for s in mmcache.open_cache(cache).samples("ok") if s["id"] == sample_id)
    manifest = json.loads((cache / "manifest.json").read_text())
    for entry in manifest["fields"][FIELD]["files"].values():
        path = cache / entry["path"]
        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name == f"{key}.npy"), None)
        if member is None:
            continue
        data = bytearray(path.read_bytes())
        npy = io.BytesIO(bytes(data[member.offset_data : member.offset_data + member.size]))
        version = np.lib.format.read_magic(npy)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        _, _, dtype = read_header[version](npy)
        start = member.offset_data + npy.tell() + dtype.itemsize  # the sample's second value
        data[start : start + dtype.itemsize] = np.array([value], dtype).tobytes()
        path.write_bytes(bytes(data))
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        (cache / "manifest.json").write_text(json.dumps(manifest))
        return key
    raise AssertionError(f"{sample_id} not found")


def poisoned(tiny: Path, tmp_path: Path, sample_id: str, value: float) -> tuple[Path, str]:
    cache = tmp_path / "cache"
    shutil.copytree(tiny / "cache", cache)
    key = poison(cache, sample_id, value)
    assert mmcache.verify_cache(cache) == []
    return cache, key


@pytest.mark.hardening(9)
@pytest.mark.parametrize(
    ("sample_id", "value"),
    [("ocean_002", np.nan), ("sunrise_003", np.inf), ("forest_000", -np.inf)],
    ids=["val-nan", "test-inf", "train-neginf"],
)
def test_nonfinite_features_are_named_in_every_split(tiny, tmp_path, sample_id, value):
    """val/test NaNs used to reach the metrics (ValueError: scores contains NaN), train ones a NaN
    loss that named neither sample nor field; now one check at read time names both for every split."""
    cache, key = poisoned(tiny, tmp_path, sample_id, value)
    out = tmp_path / "run"
    result = cli("train", "--cache", cache, "--labels", tiny / "labels.csv", "--out", out, "--epochs", "2")
    refused(result, rf"field '{FIELD}': sample '{sample_id}' \(key {key}, .*NaN or infinite")
    assert not out.exists()  # refused before anything was written


@pytest.mark.hardening(9)
def test_nonfinite_features_are_named_by_eval_and_predict(tiny, tmp_path):
    cache, key = poisoned(tiny, tmp_path, "ocean_003", np.nan)
    best = tiny / "run" / "best.pt"
    refused(cli("eval", "--checkpoint", best, "--cache", cache, "--split", "test"), rf"'ocean_003' \(key {key}")
    preds = tmp_path / "preds.csv"
    refused(cli("predict", "--checkpoint", best, "--cache", cache, "--out", preds), rf"'ocean_003' \(key {key}")
    assert not preds.exists()


@pytest.mark.hardening(9)
def test_nonfinite_features_are_named_when_streaming(tiny, tmp_path):
    """Streaming reads shards as batches are made: the same check, at that time."""
    cache, _ = poisoned(tiny, tmp_path, "ocean_002", np.nan)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"streaming": "always", "epochs": 1, "hidden": 8}))
    result = cli(
        "train", "--config", config, "--cache", cache, "--labels", tiny / "labels.csv", "--out", tmp_path / "r"
    )
    refused(result, rf"field '{FIELD}': sample 'ocean_002' .*NaN or infinite")


# -- class 11: --out paths ----------------------------------------------------------------------


def read_only_dir(tmp_path: Path) -> Path:
    """A directory that takes no new files. Root ignores permission bits, so it gets sysfs instead."""
    if os.geteuid() == 0:
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("running as root without sysfs: no directory is read-only here")
        return Path("/sys/kernel")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return d


@pytest.mark.hardening(11)
@pytest.mark.parametrize("case", ["existing file", "below a file", "read-only dir"])
def test_train_refuses_an_unwritable_out_before_any_work(tiny, tmp_path, case):
    (tmp_path / "file").write_text("keep me")
    out = {
        "existing file": tmp_path / "file",
        "below a file": tmp_path / "file" / "run",
        "read-only dir": read_only_dir(tmp_path) / "mmfit-run",
    }[case]
    result = cli("train", "--cache", tiny / "cache", "--labels", tiny / "labels.csv", "--out", out, "--epochs", "1")
    refused(result, rf"--out {re.escape(str(out))}")
    assert (tmp_path / "file").read_text() == "keep me"
    assert case == "existing file" or not out.exists()


@pytest.mark.hardening(11)
@pytest.mark.parametrize("case", ["existing folder", "below a file", "read-only dir"])
def test_predict_refuses_an_unwritable_out_before_any_work(tiny, tmp_path, case):
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "folder").mkdir()
    out = {
        "existing folder": tmp_path / "folder",
        "below a file": tmp_path / "file" / "preds.csv",
        "read-only dir": read_only_dir(tmp_path) / "preds.csv",
    }[case]
    result = cli("predict", "--checkpoint", tiny / "run" / "best.pt", "--cache", tiny / "cache", "--out", out)
    refused(result, rf"--out {re.escape(str(out))}")
    assert list((tmp_path / "folder").iterdir()) == [] and (tmp_path / "file").read_text() == "keep me"


@pytest.mark.hardening(11)
def test_sweep_refuses_an_out_that_is_a_file_before_any_trial(tiny, tmp_path):
    (tmp_path / "file").write_text("keep me")
    spec = {"base": {"cache": str(tiny / "cache"), "epochs": 1}, "grid": {"hidden": [8]}, "out": str(tmp_path / "file")}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    refused(cli("sweep", "--config", tmp_path / "sweep.yaml"), "is a file; a run needs a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "sweep.yaml"]


@pytest.mark.hardening(11)
def test_predict_writes_its_csv_whole(tiny, tmp_path):
    preds = tmp_path / "new" / "preds.csv"
    assert (
        cli("predict", "--checkpoint", tiny / "run" / "best.pt", "--cache", tiny / "cache", "--out", preds).exit_code
        == 0
    )
    assert len(preds.read_text().splitlines()) == 13
    assert [p.name for p in preds.parent.iterdir()] == ["preds.csv"]  # no temp file left beside it


# -- class 11: damaged, pickled and mistyped checkpoints ---------------------------------------------


class Trap:
    """Unpickling this creates `marker`: the file exists only if something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _set(key, value):
    return lambda c: c.__setitem__(key, value)


def _set_in(key, sub, value):
    return lambda c: c[key].__setitem__(sub, value)


def _nan_weights(c: dict) -> None:
    next(iter(c["model"].values())).fill_(float("nan"))


CUT = "cut"  # a variant that is the real file cut in half
VARIANTS = {  # name -> (bytes to write, CUT, or an edit of a copy of the real checkpoint; what the error says)
    "zero bytes": (b"", "the file is empty"),
    "cut in half": (CUT, "damaged, cut short"),
    "a tensor, not a dict": (lambda c: torch.zeros(3), "not an mmfit checkpoint .it holds a tensor"),
    "an int, not a dict": (lambda c: 5, "not an mmfit checkpoint .it holds int 5"),
    "version as text": (_set("version", "1"), "version '1' is not supported"),
    "config is a list": (_set("config", [1, 2]), "'config' must be a mapping"),
    "config has an unknown key": (_set_in("config", "bogus", 1), "'config' is not a valid.*bogus"),
    "config value of the wrong type": (_set_in("config", "hidden", "big"), "'config' is not a valid.*hidden"),
    "config missing": (lambda c: c.pop("config") and c, "lacks 'config'"),
    "model is a string": (_set("model", "weights"), "'model' must map parameter names to tensors, not str"),
    "model is a tensor": (_set("model", torch.zeros(3)), "'model' must map .*, not a tensor"),
    "model is an int": (_set("model", 7), "'model' must map .*, not int 7"),
    "model tensor of the wrong shape": (
        lambda c: c["model"].__setitem__(next(iter(c["model"])), torch.zeros(5, 5)),
        r"'model' does not fit its config: '.*' has shape \(5, 5\)",
    ),
    "model lacks a tensor": (lambda c: c["model"].popitem() and c, "'model' does not fit its config: it lacks"),
    "model holds a string": (lambda c: c["model"].__setitem__("head.1.bias", "x"), "it has 'head.1.bias': str"),
    "model holds NaN": (_nan_weights, "'model' has NaN or infinite values in 'head"),
    "classes are ints": (_set("classes", [1, 2, 3]), "'classes' must be a non-empty list of class names"),
    "fields is a list": (_set("fields", [FIELD]), "'fields' must map field names"),
    "field entry lacks its fingerprint": (
        lambda c: c["fields"][FIELD].pop("fingerprint") and c,
        f"entry of field '{FIELD}' has no valid 'fingerprint'",
    ),
    "dims as text": (_set_in("dims", FIELD, "64"), "'dims' must map field names to integer sizes"),
    "norm is a tensor": (_set("norm", torch.zeros(2)), "'norm' must map field names to .mean, std. tensors"),
    "norm of the wrong size": (_set_in("norm", FIELD, [torch.zeros(3), torch.ones(3)]), "mean of field .* 64 floats"),
    "task_state is a list": (_set("task_state", [1]), "'task_state' must be a mapping"),
}


def write_variant(path: Path, real: Path, variant) -> Path:
    if isinstance(variant, bytes):
        path.write_bytes(variant)
    elif variant == CUT:
        path.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    else:
        ckpt = copy.deepcopy(torch.load(real, weights_only=True))
        edited = variant(ckpt)  # None: edited in place; else what to save instead
        torch.save(ckpt if edited is None else edited, path)
    return path


@pytest.mark.hardening(11)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_bad_checkpoints_are_one_clear_line_in_eval_and_predict(tiny, tmp_path, name):
    """Before: IndexError (zero bytes), TypeError/AttributeError/KeyError/ValueError/RuntimeError
    (mistyped keys), multi-line size-mismatch text, or a silent run on a bad config."""
    variant, pattern = VARIANTS[name]
    bad = write_variant(tmp_path / "bad.pt", tiny / "run" / "best.pt", variant)
    refused(cli("eval", "--checkpoint", bad, "--cache", tiny / "cache", "--split", "val"), pattern)
    preds = tmp_path / "preds.csv"
    refused(cli("predict", "--checkpoint", bad, "--cache", tiny / "cache", "--out", preds), pattern)
    assert not preds.exists()


@pytest.mark.hardening(11)
def test_a_pickled_checkpoint_is_refused_without_torchs_advice(tiny, tmp_path):
    """torch's refusal suggests weights_only=False, which would run the file's code: not repeated."""
    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.pt"
    ckpt = torch.load(tiny / "run" / "best.pt", weights_only=True)
    torch.save({**ckpt, "history": Trap(marker)}, evil)
    line = refused(
        cli("eval", "--checkpoint", evil, "--cache", tiny / "cache"), r"refused to unpickle [\w.]*open, a Python object"
    )
    assert "weights_only" not in line and "can still be loaded" not in line
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    line = refused(cli("eval", "--checkpoint", tmp_path / "junk.pt", "--cache", tiny / "cache"), "refused to unpickle")
    assert "weights_only" not in line
    assert not marker.exists()


RESUME_VARIANTS = {
    "optimizer is a list": (_set("optimizer", [1]), "'optimizer' must be a mapping"),
    "optimizer of another model": (
        lambda c: c["optimizer"]["param_groups"][0].__setitem__("params", [0]),
        "optimizer, scheduler or RNG state does not fit this run",
    ),
    "generator is text": (_set("generator", "seed"), "'generator' must be a byte tensor"),
    "best_state of the wrong shape": (
        lambda c: c["best_state"].__setitem__(next(iter(c["best_state"])), torch.zeros(2)),
        "'best_state' does not fit its config",
    ),
    "epoch is text": (_set("epoch", "2"), "'epoch' must be a count"),
}


@pytest.mark.hardening(11)
@pytest.mark.parametrize("name", list(RESUME_VARIANTS))
def test_bad_last_checkpoints_are_one_clear_line_on_resume(tiny, tmp_path, name):
    variant, pattern = RESUME_VARIANTS[name]
    last = torch.load(tiny / "run" / "last.pt", weights_only=True)
    config = tmp_path / "train.yaml"  # the run's own config, so only the checkpoint's contents differ
    config.write_text(yaml.safe_dump({**last["config"], "out": str(tmp_path / "resumed")}))
    bad = write_variant(tmp_path / "last.pt", tiny / "run" / "last.pt", variant)
    refused(cli("train", "--config", config, "--resume", bad), pattern)
    assert not (tmp_path / "resumed").exists()


@pytest.mark.hardening(11)
def test_the_schema_covers_what_training_saves(tiny):
    """A key training starts saving needs a check in SCHEMA (or is unused on load), and a field's
    recorded entry is exactly what FIELD_TYPES checks."""
    last = torch.load(tiny / "run" / "last.pt", weights_only=True)
    assert set(last) - set(SCHEMA) == {"format", "version", "monitor"}
    assert set(FIELD_TYPES) == set(FIELD_META)
    check_checkpoint(last, "last.pt", FOR_RESUME)


values = nested(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats()
    | st.text(max_size=8)
    | st.builds(torch.zeros, st.lists(st.integers(0, 4), max_size=3).map(tuple))
    | st.sampled_from([torch.tensor([float("nan")]), torch.zeros(65, dtype=torch.uint8), torch.ones(3, 65)]),
    width=3,
    max_leaves=6,
)


@pytest.mark.hardening(11)
@pytest.mark.fuzz
def test_fuzz_checkpoint_bytes_and_structure(tiny, tmp_path):
    """Random byte flips and cuts of a real best.pt, and random values put anywhere in its
    structure: loading it for eval/predict (checks, model built, weights loaded) succeeds or
    raises CheckpointError, never anything else."""
    best = tiny / "run" / "best.pt"
    raw, real = best.read_bytes(), torch.load(best, weights_only=True)
    path = tmp_path / "fuzzed.pt"

    def use() -> None:
        try:
            ckpt = load_checkpoint(path, FOR_MODEL)
            model_of(ckpt, config_of(ckpt).model, path)
        except CheckpointError:
            pass

    @fuzz(0.6)  # a model is built per example
    @given(
        st.one_of(
            st.tuples(
                st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=6),
                st.none() | st.floats(0, 1),
            ).map(lambda e: ("bytes", e)),
            st.tuples(st.lists(st.integers(0, 60), min_size=1, max_size=4), values).map(lambda e: ("tree", e)),
        )
    )
    def run(case):
        kind, (a, b) = case
        if kind == "bytes":
            data = bytearray(raw)
            for where, byte in a:
                data[where] = byte
            path.write_bytes(bytes(data[: int(len(data) * b)] if b is not None else data))
        else:
            torch.save(replace_at(real, a, b), path)
        use()

    run()


# -- class 13: a sample labelled twice --------------------------------------------------------------


SAMPLES = SampleRows.from_dicts([{"key": f"{i:024x}", "id": f"clip_{i}", "source": f"clip_{i}.mp4"} for i in range(4)])


def sheet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


@pytest.mark.hardening(13)
@pytest.mark.parametrize(
    ("text", "columns", "pattern"),
    [
        (
            "id,label\nclip_0,cat\nclip_1,dog\nclip_0,dog\n",
            ["label"],
            r"line 2 'clip_0' \(label='cat'\) vs line 4 'clip_0' \(label='dog'\)",
        ),
        (  # the same sample by its id and by its file name
            "id,label\nclip_0,cat\nclip_0.mp4,dog\n",
            ["label"],
            r"line 2 'clip_0' \(label='cat'\) vs line 3 'clip_0.mp4' \(label='dog'\)",
        ),
        (  # one label, two splits: the sample would leak between them
            "id,label,split\nclip_0,cat,train\nclip_0,cat,test\n",
            ["label"],
            r"'clip_0' \(label='cat', split='train'\) vs line 3 'clip_0' \(label='cat', split='test'\)",
        ),
        (  # multilabel, 0/1 columns
            "id,cat,dog\nclip_0,1,0\nclip_0,1,1\n",
            ["cat", "dog"],
            r"'clip_0' \(cat='1', dog='0'\) vs line 3 'clip_0' \(cat='1', dog='1'\)",
        ),
        (  # multilabel, names joined by |
            "id,label\nclip_0,cat|dog\nclip_0,cat\n",
            ["label"],
            r"'clip_0' \(label='cat\|dog'\) vs line 3 'clip_0' \(label='cat'\)",
        ),
    ],
    ids=["label", "id-and-file-name", "split", "multilabel-columns", "multilabel-names"],
)
def test_conflicting_rows_for_one_sample_are_refused(tmp_path, text, columns, pattern):
    with pytest.raises(DataError, match=pattern):
        from_csv(sheet(tmp_path, text), SAMPLES, columns)


@pytest.mark.hardening(13)
def test_segment_rows_of_one_sample_may_repeat_but_not_disagree_on_split(tmp_path):
    spans = "id,start,end,label,split\nclip_0,0,1,run,train\nclip_0,1,2,jump,train\n"
    table = from_csv(sheet(tmp_path, spans), SAMPLES, ["label"], segments=True)
    assert len(table.spans[0]) == 2  # the spans of sample row 0
    with pytest.raises(DataError, match=r"split='train'\) vs line 4 'clip_0' \(split='val'\)"):
        from_csv(sheet(tmp_path, spans + "clip_0,2,3,run,val\n"), SAMPLES, ["label"], segments=True)


@pytest.mark.hardening(13)
def test_identical_repeated_rows_are_accepted(tmp_path):
    """A decision, not a bug: an exact repeat (e.g. overlapping sheets concatenated) changes nothing."""
    once = from_csv(sheet(tmp_path, "id,label\nclip_0,cat\nclip_1,dog\n"), SAMPLES, ["label"])
    twice = from_csv(sheet(tmp_path, "id,label\nclip_0,cat\nclip_1,dog\nclip_0,cat\n"), SAMPLES, ["label"])
    assert twice.rows.tolist() == once.rows.tolist() == [0, 1]
    assert [v.tolist() for v in twice.values] == [v.tolist() for v in once.values] == [[b"cat", b"dog"]]
    assert twice.split.tolist() == once.split.tolist()


@pytest.mark.hardening(13)
def test_conflicting_labels_stop_training_through_the_cli(tiny, tmp_path):
    labels = tmp_path / "labels.csv"
    text = (tiny / "labels.csv").read_text()
    labels.write_text(text + "forest_001,ocean,train\n")
    line_no = len(text.splitlines()) + 1
    result = cli("train", "--cache", tiny / "cache", "--labels", labels, "--out", tmp_path / "run")
    refused(result, rf"'forest_001' \(label='forest', split='train'\) vs line {line_no} 'forest_001' \(label='ocean'")
    assert not (tmp_path / "run").exists()
