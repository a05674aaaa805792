"""Corruption of a finished cache: every damaged or hand-edited file is named by `verify_cache` with
its problem, mmfit refuses the cache unless told `--no-verify` (verify=False), and even then a
damaged shard is a clear project error, never a crash or silently wrong shapes."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from reliability_report import REPORT

import mmcache
from mmcache.errors import CacheError, MMCacheError
from mmfit.config import build_config
from mmfit.data import load_data

ENCODERS = ["logmel:fps=2,window=0.5", "mfcc:fps=2"]
FIELD = "logmel"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, clips):
    """finished(backend): a finished cache of the 4 conftest clips (2 shards of 2) and a label sheet
    for mmfit, made once per backend."""
    made: dict[str, tuple[Path, Path]] = {}

    def get(backend: str) -> tuple[Path, Path]:
        if backend not in made:
            d = tmp_path_factory.mktemp(f"corrupt-{backend}")
            root = d / "cache"
            mmcache.extract([clips], ENCODERS, root, shard_size=2, backend=backend)
            assert mmcache.verify_cache(root) == []
            labels = d / "labels.csv"
            stems = sorted(Path(r["source"]).stem for r in mmcache.open_cache(root).samples("ok"))
            splits = ["train", "train", "val", "test"]
            labels.write_text(
                "id,label,split\n" + "".join(f"{s},{'ab'[i % 2]},{splits[i]}\n" for i, s in enumerate(stems))
            )
            made[backend] = root, labels
        return made[backend]

    return get


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([b ^ 0x01]))


def _edit_manifest(root: Path, edit: Callable[[dict], None]) -> None:
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m, indent=1))


def _shard(root: Path) -> Path:
    return root / json.loads((root / "manifest.json").read_text())["fields"][FIELD]["files"]["000000"]["path"]


# each case: (damage, words its verify problem must contain, loads with --no-verify, backends)
@dataclass(frozen=True)
class Damage:
    name: str
    apply: Callable[[Path], None]
    words: tuple[str, ...]
    no_verify: str  # with --no-verify: "loads" (all samples), "partial" (silently fewer), "error" (CacheError)
    names: str = "shard"  # which file the problem must name: shard | manifest
    backends: tuple[str, ...] = ("webdataset", "hdf5")


def _cut_at_boundary(root):
    p = _shard(root)
    first_pair_end = _members(p)[2].offset  # end of the first sample's .npy + .ts.npy
    _truncate(p, first_pair_end)


def _cut_in_header(root):
    p = _shard(root)
    _truncate(p, _members(p)[2].offset + 100)


def _cut_in_data(root):
    p = _shard(root)
    m = _members(p)[2]
    _truncate(p, m.offset_data + m.size // 2)


def _flip_data(root):
    p = _shard(root)
    if p.suffix == ".tar":
        _flip(p, _members(p)[0].offset_data + 128)  # low byte of the first float16 after the .npy header
    else:
        _flip(p, p.stat().st_size // 2)


def _flip_tar_header(root):
    p = _shard(root)
    _flip(p, _members(p)[2].offset + 3)  # a member name: the header checksum no longer matches


def _cut_h5(root):
    p = _shard(root)
    _truncate(p, p.stat().st_size // 2)


# A tar cut at a member boundary or a damaged header after the first member reads as a clean end of
# archive in Python's tarfile; verification catches them by size/sha256, and with --no-verify
# Cache.read_field_shard compares the samples read with the manifest's count, so they are an error
# naming the file rather than silently fewer samples.
TAR, H5 = ("webdataset",), ("hdf5",)
DAMAGES = [
    Damage(
        "shard cut at a tar member boundary", _cut_at_boundary, ("manifest says", "truncated"), "error", backends=TAR
    ),
    Damage("shard cut inside a tar header", _cut_in_header, ("manifest says", "truncated"), "error", backends=TAR),
    Damage("shard cut inside member data", _cut_in_data, ("manifest says", "truncated"), "error", backends=TAR),
    Damage("HDF5 shard cut in half", _cut_h5, ("manifest says", "truncated"), "error", backends=H5),
    Damage("one flipped byte in feature data", _flip_data, ("sha256 mismatch",), "loads"),
    Damage("one flipped byte in a tar header", _flip_tar_header, ("sha256 mismatch",), "error", backends=TAR),
    Damage("zero-byte shard", lambda r: _truncate(_shard(r), 0), ("0 bytes, manifest says",), "error"),
    Damage("missing shard", lambda r: _shard(r).unlink(), ("missing",), "error"),
    Damage(
        "manifest: a sample count changed",
        lambda r: _edit_manifest(r, lambda m: m["fields"][FIELD]["files"]["000000"].update(count=3)),
        ("samples", "manifest says 3"),
        "error",
    ),
    Damage(
        "manifest: a samples index count changed",
        lambda r: _edit_manifest(r, lambda m: m["shards"]["000000"].update(count=5, ok=4)),
        ("rows", "manifest says 5"),
        "loads",
        names="samples",
    ),
    Damage(
        "manifest: a path changed to '../x'",
        lambda r: _edit_manifest(r, lambda m: m["fields"][FIELD]["files"]["000000"].update(path="../x")),
        ("invalid manifest", "../x"),
        "error",
        names="manifest",
    ),
    Damage(
        "manifest: a path pointing at another field's shard",
        lambda r: _edit_manifest(r, lambda m: m["fields"][FIELD]["files"]["000000"].update(path="mfcc/000000.tar")),
        ("points at", "mfcc/000000"),
        "error",
        names="manifest",
        backends=TAR,
    ),
    Damage(
        "samples index: one flipped byte",
        lambda r: _flip(r / "samples" / "000000.jsonl", 20),
        ("sha256 mismatch",),
        "loads",
        names="samples",
    ),
]


def _cfg(root: Path, labels: Path, verify: bool):
    return build_config(cache=str(root), labels=str(labels), fields=["logmel", "mfcc"], verify=verify, device="cpu")


@pytest.mark.parametrize(
    "backend,damage", [(b, d) for d in DAMAGES for b in d.backends], ids=lambda x: getattr(x, "name", x)
)
def test_damage_is_named_by_verify_and_refused_by_mmfit(finished, backend, damage, tmp_path):
    src, labels = finished(backend)
    case = REPORT.case("corruption", f"{damage.name} ({backend})", 1)
    root = tmp_path / "cache"
    shutil.copytree(src, root)
    target = {
        "shard": _shard(root).relative_to(root).as_posix(),
        "samples": "samples/000000.jsonl",
        "manifest": "manifest.json",
    }[damage.names]
    damage.apply(root)

    try:
        problems = mmcache.verify_cache(root)
    except CacheError as e:  # a manifest that breaks the schema cannot even be opened
        problems = [str(e)]
    if not problems:
        case.lost += 1  # an undetected corruption is silent data loss
    hits = [p for p in problems if target in p and all(w in p for w in damage.words)]
    assert hits, f"no problem names {target} with {damage.words}: {problems}"

    with pytest.raises(CacheError) as refused:
        load_data(_cfg(root, labels, verify=True).data)
    assert (target in str(refused.value)) or damage.names == "samples"
    if damage.names != "manifest":  # an unreadable manifest is refused before verification starts
        assert "--no-verify" in str(refused.value), refused.value

    intact = load_data(_cfg(src, labels, verify=False).data).masks[FIELD].any(1).sum()
    try:
        data = load_data(_cfg(root, labels, verify=False).data)
    except MMCacheError as e:  # a shard that cannot be read is a clear error naming it, never a crash
        assert damage.no_verify == "error", f"{damage.name}: --no-verify should load ({e})"
        assert target in str(e) or "manifest.json" in str(e), e
    else:
        assert damage.no_verify in ("loads", "partial"), f"{damage.name}: --no-verify loaded an unreadable cache"
        assert len(data.keys) == 4 and set(data.field_names) == {"logmel", "mfcc"}
        present = data.masks[FIELD].any(1).sum()
        assert (present < intact) if damage.no_verify == "partial" else (present == intact)
    case.ok()
