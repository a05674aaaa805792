"""Security of the read paths: nothing is ever unpickled, nothing a crafted manifest, samples index,
HDF5 or tar file says can make a reader leave the cache directory, and every parser of user or cache
input (fuzzed with hypothesis) fails only with the project's own errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import string
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from fuzzing import fuzz, nested, replace_at
from hypothesis import given
from hypothesis import strategies as st
from reliability_report import REPORT

import mmcache
from mmcache.encoders import check_encoder_arg
from mmcache.errors import CacheError, MMCacheError
from mmcache.inputs import read_sheet
from mmcache.store.arrays import load_npy
from mmcache.store.hdf5 import iter_h5
from mmcache.store.manifest import load_manifest, read_samples
from mmcache.store.tar import iter_tar
from mmcache.subtitles import parse_cues
from mmfit.checkpoint import load_checkpoint, save_checkpoint
from mmfit.config import FIELD_NAMES, build_config
from mmfit.errors import CheckpointError
from mmfit.labels import from_csv
from mmfit.samples import SampleRows

REPO = Path(__file__).resolve().parent.parent
KEY = "0123456789abcdef01234567"


class Trap:
    """Unpickling this creates `marker`: the file exists only if something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_npy(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([Trap(marker)], dtype=object), allow_pickle=True)
    return buf.getvalue()


def plain_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes | None, bytes]]) -> Path:
    """members: (name, tar type or None for a regular file, data or link target)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind is None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = kind
                info.linkname = data.decode()
                tar.addfile(info)
    return path


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, clips) -> Path:
    root = tmp_path_factory.mktemp("sec") / "cache"
    mmcache.extract([clips], ["logmel:fps=2,window=0.5"], root, shard_size=2)
    return root


# -- nothing unpickles ---------------------------------------------------------------------------


def test_no_read_path_can_unpickle():
    """Static guard: every np.load passes allow_pickle=False, every torch.load weights_only=True, and
    no module imports pickle, joblib, dill or cloudpickle, or calls yaml.load."""
    case = REPORT.case("security", "source scan: np.load/torch.load/yaml.load/pickle on read paths", 1)
    offenders = []
    for path in sorted([*REPO.glob("mmcache/**/*.py"), *REPO.glob("mmfit/**/*.py")]):
        text = path.read_text("utf-8")
        for func, needed in (("np.load", "allow_pickle=False"), ("numpy.load", "allow_pickle=False"),
                             ("torch.load", "weights_only=True")):  # fmt: skip
            for m in re.finditer(rf"\b{re.escape(func)}\(", text):
                if needed not in _call_args(text, m.end()):
                    offenders.append(f"{path.name}: {func} without {needed}")
        for m in re.finditer(r"^\s*(import|from)\s+(pickle|cPickle|joblib|dill|cloudpickle)\b.*$", text, re.M):
            offenders.append(f"{path.name}: {m[0].strip()}")
        offenders += [f"{path.name}: yaml.load(" for _ in re.finditer(r"\byaml\.load\(", text)]
    assert offenders == []
    case.ok()


def _call_args(text: str, start: int) -> str:
    """The argument text of a call whose '(' ends at `start`, up to the matching ')'."""
    depth, i = 1, start
    while depth and i < len(text):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    return text[start : i - 1]


def test_a_pickled_npy_in_a_tar_shard_is_refused_and_never_runs(tmp_path, small_cache):
    case = REPORT.case("security", "tar member <key>.npy holding a pickled object array: refused, not run", 3)
    marker = tmp_path / "unpickled"
    shard = write_tar(
        tmp_path / "evil.tar",
        [(f"{KEY}.npy", None, evil_npy(marker)), (f"{KEY}.ts.npy", None, plain_npy(np.zeros((1, 2))))],
    )
    with pytest.raises(CacheError, match="not a plain .npy"):
        list(iter_tar(shard))
    assert not marker.exists()
    case.ok()

    # the same shard published in a cache, with a manifest that matches its size and sha256
    root = tmp_path / "cache"
    shutil.copytree(small_cache, root)
    _publish_over(root, "logmel", shard.read_bytes())
    problems = mmcache.verify_cache(root)
    assert any("logmel/000000.tar" in p and "not a plain .npy" in p for p in problems), problems
    case.ok()
    with pytest.raises(CacheError, match="not a plain .npy"):
        mmcache.open_cache(root).load_field("logmel")
    assert not marker.exists()
    case.ok()


def test_object_and_structured_npy_are_refused(tmp_path):
    case = REPORT.case("security", ".npy with object or structured dtype refused", 2)
    with pytest.raises(CacheError):
        load_npy(evil_npy(tmp_path / "unpickled"), "x.npy")
    assert not (tmp_path / "unpickled").exists()
    case.ok()
    with pytest.raises(CacheError, match="refusing .npy with dtype"):
        load_npy(plain_npy(np.zeros(3, dtype=[("a", "f4"), ("b", "i4")])), "x.npy")
    case.ok()


def test_a_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    case = REPORT.case("security", "checkpoint with a pickled payload: refused (weights_only), not run", 2)
    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "mmfit-checkpoint", "version": 1, "config": {}, "model": Trap(marker)}, evil)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(evil)
    assert not marker.exists()
    case.ok()
    good = tmp_path / "good.pt"  # a real one still loads
    save_checkpoint(good, {"config": {}, "model": {"w": torch.ones(2)}, "classes": ["a"], "fields": {}})
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.ones(2))
    case.ok()


def _npy_with_header(header: dict, payload: bytes = b"\0" * 16) -> bytes:
    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def _h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if value is None:
                f.create_group(name)
            else:
                f[name] = value
    return path


def _publish_over(root: Path, field: str, data: bytes) -> str:
    """Replace shard 000000 of `field` with `data` and make the manifest match its size and sha256,
    as a crafted cache would; returns the file's relative path."""
    m = json.loads((root / "manifest.json").read_text())
    entry = m["fields"][field]["files"]["000000"]
    (root / entry["path"]).write_bytes(data)
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (root / "manifest.json").write_text(json.dumps(m))
    return entry["path"]


def test_crafted_npy_headers_and_hdf5_layouts_are_project_errors(tmp_path, small_cache):
    """Fixed in store/arrays.py and store/hdf5.py: a damaged .npy header raised tokenize.TokenError, a
    header claiming petabytes MemoryError, and an HDF5 shard with integer keys or a group named feats
    AttributeError, all escaping verify_cache (`mmcache verify` crashed) and plain reads."""
    case = REPORT.case("security", "crafted .npy headers and HDF5 layouts: CacheError, also from verify_cache", 6)
    good = plain_npy(np.zeros((2, 4), np.float16))
    broken = good.replace(b"False", b"Fa(se", 1)  # what one flipped byte can do to the header
    huge = _npy_with_header({"descr": "<f2", "fortran_order": False, "shape": (10**15, 4)})
    for data in (broken, huge):
        with pytest.raises(CacheError, match="not a plain .npy"):
            load_npy(data, "x.npy")
        case.ok()
    ts = np.zeros((1, 2))
    for layout in (
        {"feats": np.zeros((1, 4), "f2"), "ts": ts, "offsets": np.array([0, 1]), "keys": np.array([5])},
        {"feats": np.zeros((1, 4), "f2"), "ts": ts, "offsets": np.array([0, 1]), "keys": np.array(KEY.encode())},
        {"feats": None, "ts": ts, "offsets": np.array([0, 1]), "keys": np.array([KEY.encode()])},
    ):
        with pytest.raises(CacheError, match="not a readable mmcache HDF5 shard|malformed HDF5 shard"):
            list(iter_h5(_h5(tmp_path / "crafted.h5", **layout)))
        case.ok()
    root = tmp_path / "cache"
    shutil.copytree(small_cache, root)
    shard = write_tar(tmp_path / "t.tar", [(f"{KEY}.npy", None, broken), (f"{KEY}.ts.npy", None, plain_npy(ts))])
    rel = _publish_over(root, "logmel", shard.read_bytes())
    problems = mmcache.verify_cache(root)
    assert any(rel in p and "not a plain .npy" in p for p in problems), problems
    case.ok()


@pytest.mark.fuzz
def test_fuzz_damaged_shards_read_without_verification(small_cache, tmp_path):
    """Random flips, overwrites and cuts of real tar and HDF5 shards, read as `--no-verify` would:
    the samples, or a CacheError; never another exception (verify catches them by sha256 first)."""
    check = fuzz_case("damaged tar/HDF5 shards read without verification (flips, overwrites, cuts)")
    d = tmp_path
    h5_root = d / "h5"
    tar_bytes = (small_cache / "logmel" / "000000.tar").read_bytes()
    h5_bytes = _h5_shard_bytes(h5_root)
    originals = {".tar": (tar_bytes, iter_tar), ".h5": (h5_bytes, iter_h5)}

    def read(suffix: str, edits: list[tuple[int, int]], cut: float | None):
        data, reader = originals[suffix]
        b = bytearray(data)
        for where, value in edits:
            b[where % len(b)] = value
        if cut is not None:
            b = b[: int(cut * len(b))]
        path = d / f"damaged{suffix}"
        path.write_bytes(bytes(b))
        for _key, feats, ts in reader(path):
            assert feats.ndim == 2 and len(ts) == len(feats)

    @fuzz()
    @given(
        st.sampled_from(sorted(originals)),
        # anywhere, or in the first member's .npy header (bytes 512-640 of a tar), where parsers are fussiest
        st.lists(st.tuples(st.integers(512, 640) | st.integers(0, 2**20), st.integers(0, 255)), max_size=4),
        st.none() | st.floats(0, 1),
    )
    def run(suffix, edits, cut):
        check(read, suffix, edits, cut)

    run()


def _h5_shard_bytes(root: Path) -> bytes:
    from mmcache.store import H5ShardWriter

    w = H5ShardWriter(root / "logmel" / "000000.h5", 4)
    rng = np.random.default_rng(0)
    for i in range(3):
        w.add(f"{i:024x}", rng.standard_normal((3 + i, 4)).astype(np.float16), np.zeros((3 + i, 2)))
    w.close()
    return (root / "logmel" / "000000.h5").read_bytes()


# -- nothing escapes the cache directory ---------------------------------------------------------


def _manifest_with(small_cache: Path, tmp_path: Path, edit) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(small_cache, root)
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))
    return root


ESCAPES = {
    "samples path '../../etc/passwd'": lambda m: m["shards"]["000000"].update(path="../../etc/passwd"),
    "field file path '../../etc/passwd'": lambda m: m["fields"]["logmel"]["files"]["000000"].update(
        path="../../etc/passwd"
    ),
    "field file path '/etc/passwd'": lambda m: m["fields"]["logmel"]["files"]["000000"].update(path="/etc/passwd"),
    "shard name '../x'": lambda m: m["shards"].update({"../x": m["shards"]["000000"]}),
    "field name '../x'": lambda m: m["fields"].update({"../x": m["fields"]["logmel"]}),
    "missing key '../x'": lambda m: m["fields"]["logmel"]["files"]["000000"]["missing"].update({"../x": "no"}),
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_a_crafted_manifest_cannot_point_outside_the_cache(small_cache, tmp_path, name):
    case = REPORT.case("security", f"crafted manifest: {name} rejected by the loader", 1)
    root = _manifest_with(small_cache, tmp_path, ESCAPES[name])
    with pytest.raises(CacheError, match="manifest"):
        load_manifest(root)
    with pytest.raises(CacheError):
        mmcache.verify_cache(root)
    case.ok()


def test_crafted_samples_rows_tar_members_and_hdf5_keys_cannot_escape(tmp_path):
    case = REPORT.case("security", "crafted samples key, tar members ('../x.npy', '/abs', links, dirs), HDF5 key", 9)
    rows = tmp_path / "000000.jsonl"
    row = {"key": "../x", "source": "a.mp4", "sha256": None, "bytes": 0, "status": "failed"}
    rows.write_text(json.dumps(row) + "\n")
    with pytest.raises(CacheError, match="bad samples row"):
        read_samples(rows)
    case.ok()
    npy, ts = plain_npy(np.zeros((1, 4), np.float16)), plain_npy(np.zeros((1, 2)))
    for members in (
        [("../x.npy", None, npy)],
        [(f"../{KEY}.npy", None, npy)],
        [(f"/tmp/{KEY}.npy", None, npy)],
        [(f"{KEY}.npy", tarfile.SYMTYPE, b"/etc/passwd")],
        [(f"{KEY}.npy", tarfile.LNKTYPE, b"../x")],
        [(f"{KEY}.npy", tarfile.DIRTYPE, b"")],
        [(f"{KEY}.pth", None, npy), (f"{KEY}.ts.npy", None, ts)],
    ):
        shard = write_tar(tmp_path / "m.tar", members)
        with pytest.raises(CacheError, match="unexpected member"):
            list(iter_tar(shard))
        case.ok()
    assert not (tmp_path.parent / "x.npy").exists() and not (tmp_path / "x.npy").exists()
    h5 = tmp_path / "bad.h5"
    with h5py.File(h5, "w") as f:
        f["feats"] = np.zeros((1, 4), np.float16)
        f["ts"] = np.zeros((1, 2))
        f["offsets"] = np.array([0, 1])
        f["keys"] = np.array([b"../x"])
    with pytest.raises(CacheError, match="bad key"):
        list(iter_h5(h5))
    case.ok()


# -- property-based fuzzing ----------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = nested(json_scalars, width=4, max_leaves=20)


def fuzz_case(name: str):
    """A report row whose tried/passed counts follow the examples hypothesis runs."""
    case = REPORT.case("fuzz", name, 0)

    def check(fn, *args):
        case.tried += 1
        try:
            fn(*args)
        except MMCacheError:
            pass
        case.ok()  # reached only when nothing but a project error came out

    return check


@pytest.mark.fuzz
def test_fuzz_manifest_loader_and_verify(small_cache, tmp_path):
    check = fuzz_case("manifest loader + verify_cache: arbitrary JSON, bytes, and mutations of a real manifest")
    real = json.loads((small_cache / "manifest.json").read_text())
    work = tmp_path / "cache"
    shutil.copytree(small_cache, work)

    def load_and_verify(data: bytes):
        (work / "manifest.json").write_bytes(data)
        if load_manifest(work) is not None:
            assert isinstance(mmcache.verify_cache(work), list)

    @fuzz()
    @given(
        st.one_of(
            json_values.map(lambda v: json.dumps(v).encode()),
            st.binary(max_size=200),
            st.tuples(st.lists(st.integers(0, 50), max_size=6), json_values).map(
                lambda pv: json.dumps(replace_at(real, *pv)).encode()
            ),
        )
    )
    def run(data):
        check(load_and_verify, data)

    run()


@pytest.mark.fuzz
def test_fuzz_samples_index_reader(tmp_path):
    check = fuzz_case("samples index reader (read_samples): arbitrary lines and JSON rows")
    path = tmp_path / "000000.jsonl"
    row = {"key": KEY, "source": "a.mp4", "sha256": None, "bytes": 0, "status": "ok"}

    def read(data: bytes):
        path.write_bytes(data)
        rows = read_samples(path)
        assert all(re.fullmatch(r"[0-9a-f]{8,64}", r["key"]) for r in rows)

    @fuzz()
    @given(
        st.one_of(
            st.binary(max_size=200),
            st.lists(json_values.map(json.dumps), max_size=4).map(lambda ls: "\n".join(ls).encode()),
            st.tuples(st.lists(st.integers(0, 10), max_size=2), json_values).map(
                lambda pv: (json.dumps(replace_at(row, *pv)) + "\n").encode("utf-8", "surrogatepass")
            ),
        )
    )
    def run(data):
        check(read, data)

    run()


CSV_COLUMNS = ["id", "key", "path", "label", "split", "start", "end", "text", "a|b", ""]
csv_cells = st.one_of(
    st.sampled_from(["vid-1", KEY, "clip", "a/clip.mp4", "x", "train", "val", "test", "0.5", "-1", "nan", "a|b", ""]),
    st.text(alphabet=string.printable + "éü,;\"'\t\r\n|", max_size=12),
)
csv_tables = st.tuples(
    st.lists(st.sampled_from(CSV_COLUMNS), min_size=1, max_size=5),
    st.lists(st.lists(csv_cells, max_size=6), max_size=5),
)


def _csv_text(table) -> str:
    header, rows = table
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@pytest.mark.fuzz
def test_fuzz_label_sheet_and_video_sheet_parsers(tmp_path):
    labels = fuzz_case("label sheet (mmfit.labels.from_csv) and video sheet (read_sheet): arbitrary CSV text")
    d = tmp_path
    samples = SampleRows.from_dicts(
        [
            {"key": KEY, "id": "vid-1", "source": "a/clip.mp4", "aliases": ["b/copy.mp4"]},
            {"key": "89abcdef0123456789abcdef", "id": None, "source": "x.mp4"},
        ]
    )

    def parse(text: str, raw: bytes, segments: bool, suffix: str):
        for data in (text.encode("utf-8", "surrogatepass"), raw):
            (d / f"labels{suffix}").write_bytes(data)
            try:
                from_csv(d / f"labels{suffix}", samples, ["label"], segments)
            except MMCacheError:
                pass
            (d / f"videos{suffix}").write_bytes(data)
            for v in read_sheet_or_error(d / f"videos{suffix}"):
                assert isinstance(v.source, str) and v.source

    @fuzz()
    @given(
        st.one_of(csv_tables.map(_csv_text), st.text(max_size=200)),
        st.binary(max_size=100),
        st.booleans(),
        st.sampled_from([".csv", ".tsv"]),
    )
    def run(text, raw, segments, suffix):
        labels(parse, text, raw, segments, suffix)

    run()


def test_ragged_label_rows_are_a_clear_error(tmp_path):
    """Found by the fuzzer: a row longer than the header (extra cells under the key None) made the
    missing-column messages of mmfit's label sheet and mmcache's video sheet raise TypeError, and a
    short row in a segment sheet (None cells) raised TypeError/AttributeError instead of DataError."""
    samples = SampleRows.from_dicts([{"key": KEY, "id": "vid-1", "source": "clip.mp4"}])
    long_row = tmp_path / "long.csv"
    long_row.write_text("id\nvid-1,extra\n")
    with pytest.raises(MMCacheError, match="needs columns"):
        from_csv(long_row, samples, ["label"])
    short_row = tmp_path / "short.csv"
    short_row.write_text("id,start,end,label\nvid-1,0\n")
    with pytest.raises(MMCacheError, match="bad start/end"):
        from_csv(short_row, samples, ["label"], segments=True)
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("id,start,end,label\nvid-1,0,1\n")
    with pytest.raises(MMCacheError, match="bad start/end"):
        from_csv(no_label, samples, ["label"], segments=True)
    with pytest.raises(MMCacheError, match="needs a 'path' column"):  # the same for a video sheet
        read_sheet(long_row)


def read_sheet_or_error(path: Path) -> list:
    try:
        return read_sheet(path)
    except MMCacheError:
        return []


@pytest.mark.fuzz
def test_fuzz_subtitle_parser():
    check = fuzz_case("subtitle parser (parse_cues): arbitrary SRT/WebVTT-like text")
    timing = st.builds(
        lambda h, m, s, ms, sep: f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}",
        st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 999), st.sampled_from([",", "."]),
    )  # fmt: skip
    block = st.builds(
        lambda n, a, b, text: f"{n}\n{a} --> {b}\n{text}\n",
        st.integers(0, 9), timing, timing, st.text(max_size=20),
    )  # fmt: skip

    def parse(text: str):
        cues = parse_cues(text)  # broken timing is repaired, never an error
        assert all(c.end >= c.start >= 0 and c.text for c in cues)
        assert cues == sorted(cues, key=lambda c: (c.start, c.end))

    @fuzz()
    @given(st.one_of(st.text(max_size=300), st.lists(block, max_size=5).map("\n".join)))
    def run(text):
        check(parse, text)

    run()


@pytest.mark.fuzz
def test_fuzz_encoder_option_parser():
    check = fuzz_case("encoder option parser (check_encoder_arg): arbitrary text")
    names = st.sampled_from(["resnet18", "logmel", "mfcc", "minilm-text", "torchvision-image", "hf-text", "x"])
    keys = st.sampled_from(["fps", "num_frames", "window", "weights", "model", "dtype", "batch_size", "field", "?"])
    option = st.builds(lambda k, v: f"{k}={v}", keys, st.text(max_size=8))

    @fuzz()
    @given(
        st.one_of(
            st.text(max_size=60), st.builds(lambda n, o: n + ":" + ",".join(o), names, st.lists(option, max_size=4))
        )
    )
    def run(text):
        check(check_encoder_arg, text)

    run()


@pytest.mark.fuzz
def test_fuzz_train_config(tmp_path):
    check = fuzz_case("train config (build_config): arbitrary YAML")
    path = tmp_path / "train.yaml"
    yaml_values = nested(json_scalars, width=3, max_leaves=10)

    def build(text: str):
        path.write_text(text, "utf-8", errors="surrogatepass")
        build_config(path)

    @fuzz()
    @given(
        st.one_of(
            st.text(max_size=200),
            st.dictionaries(st.sampled_from(FIELD_NAMES), yaml_values, max_size=6).map(yaml.safe_dump),
        )
    )
    def run(text):
        check(build, text)

    run()
