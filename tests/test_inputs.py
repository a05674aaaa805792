"""inputs.py: folders, files and video sheets -> VideoInputs keyed by their content hash, deduplicated;
the local hash memo spares re-reading only what the samples index already vouches for."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from mmcache.errors import InputError
from mmcache.inputs import (
    KEY_LEN,
    HashMemo,
    dedupe,
    display_name,
    key_input,
    read_sheet,
    recheck_aliases,
    resolve_inputs,
)
from mmcache.types import VideoInput


@pytest.fixture
def folder(tmp_path, clips):
    """Videos at two depths, upper-case suffixes, hidden files and folders, and files that are no video."""
    d = tmp_path / "in"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / ".hidden").mkdir()
    for rel in ["b.mp4", "a.MOV", "sub/c.mkv", "sub/deeper/d.webm", ".hidden/e.mp4", "sub/.f.mp4"]:
        shutil.copy(clips / "ocean.mp4", d / rel)
    (d / "notes.txt").write_text("no video")
    (d / "sub" / "clip.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    return d


def test_a_folder_gives_its_videos_recursively_sorted_without_hidden_ones(folder):
    videos = resolve_inputs([folder])
    assert [v.source for v in videos] == ["a.MOV", "b.mp4", "sub/c.mkv", "sub/deeper/d.webm"]
    assert all(v.path == folder / v.source for v in videos)


def test_inputs_keep_the_order_given_and_files_their_name_as_given(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    videos = resolve_inputs(["in/sub/c.mkv", folder / "sub" / "deeper", "in/b.mp4"])
    assert [v.source for v in videos] == ["in/sub/c.mkv", "d.webm", "in/b.mp4"]


def test_a_missing_input_or_a_folder_without_videos_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="nope does not exist"):
        resolve_inputs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no videos found in .*empty \(looked for .*\.mkv.*\.mp4"):
        resolve_inputs([tmp_path / "empty"])


def test_names_that_are_not_utf8_are_shown_escaped_and_still_read(tmp_path, clips):
    d = tmp_path / "in"
    d.mkdir()
    latin1 = os.fsdecode(b"caf\xe9.mp4")  # an old archive's Latin-1 name
    shutil.copy(clips / "ocean.mp4", d / latin1)
    (video,) = resolve_inputs([d])
    assert video.source == "caf\\xe9.mp4" and video.source.encode("utf-8")
    assert video.path.read_bytes() == (clips / "ocean.mp4").read_bytes()
    assert display_name("ünï 视频.mp4") == "ünï 视频.mp4"


def write_sheet(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_a_sheet_gives_paths_relative_to_it_with_id_text_and_metadata(tmp_path, suffix, sep):
    rows = [["path", "id", "text", "label", "split"], ["v/a.mp4", "x1", "a caption", "cat", "train"]]
    rows.append(["/abs/b.mp4", "", "", "dog", "val"])
    sheet = write_sheet(tmp_path / f"s{suffix}", "\ufeff" + "".join(sep.join(r) + "\n" for r in rows))  # with a BOM
    a, b = resolve_inputs([sheet])
    assert (a.path, a.source, a.id, a.text) == (tmp_path / "v/a.mp4", "v/a.mp4", "x1", "a caption")
    assert a.meta == {"label": "cat", "split": "train"}  # every other column, under its name
    assert (b.path, b.id, b.text, b.meta) == (tmp_path / "/abs/b.mp4", None, None, {"label": "dog", "split": "val"})


def test_a_sheet_without_a_path_column_names_its_columns(tmp_path):
    sheet = write_sheet(tmp_path / "s.csv", "file,label\na.mp4,cat\n")
    with pytest.raises(InputError, match=r"needs a 'path' column \(columns: file, label\)"):
        read_sheet(sheet)
    with pytest.raises(InputError, match=r"columns: none"):
        read_sheet(write_sheet(tmp_path / "empty.csv", ""))


def test_a_sheet_row_with_an_empty_path_names_its_line(tmp_path):
    sheet = write_sheet(tmp_path / "s.csv", "path,label\na.mp4,cat\n  ,dog\n")
    with pytest.raises(InputError, match="s.csv line 3: empty path"):
        read_sheet(sheet)


def test_an_unreadable_sheet_is_an_input_error(tmp_path):
    sheet = tmp_path / "s.csv"
    sheet.write_bytes(b"path\n\xff\xfe\xfa.mp4\n")  # not UTF-8
    with pytest.raises(InputError, match="cannot read video sheet"):
        read_sheet(sheet)


def test_the_key_is_the_start_of_the_content_sha256(clips):
    v = VideoInput(clips / "ocean.mp4", "ocean.mp4")
    key_input(v)
    data = (clips / "ocean.mp4").read_bytes()
    assert v.sha256 == hashlib.sha256(data).hexdigest() and v.bytes == len(data)
    assert v.key == v.sha256[:KEY_LEN] and len(v.key) == 24


def test_unreadable_inputs_are_keyed_by_name_without_being_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")  # hashing a FIFO nobody writes would block forever
    a, b, c = (VideoInput(tmp_path / n, n) for n in ["pipe.mp4", "gone.mp4", "gone.mp4"])
    for v in (a, b, c):
        key_input(v)
    assert (a.sha256, a.bytes, b.sha256) == ("", 0, "")
    assert b.key == c.key != a.key and len(a.key) == KEY_LEN  # stable per name, distinct across names


def test_dedupe_keeps_the_first_of_each_content_and_names_the_others(tmp_path, clips):
    for name, src in [("x.mp4", "ocean"), ("y.mp4", "forest"), ("z.mp4", "ocean"), ("w.mp4", "ocean")]:
        shutil.copy(clips / f"{src}.mp4", tmp_path / name)
    videos = resolve_inputs([tmp_path / n for n in ["x.mp4", "y.mp4", "z.mp4", "w.mp4"]])
    for v in videos:
        key_input(v)
    kept, aliases = dedupe(videos)
    assert [v.path.name for v in kept] == ["x.mp4", "y.mp4"]
    assert aliases == {kept[0].key: [str(tmp_path / "z.mp4"), str(tmp_path / "w.mp4")]}


def indexed_row(v: VideoInput) -> dict:
    """The samples-index row a previous run published for `v`."""
    return {"source": v.source, "sha256": v.sha256, "bytes": v.bytes}


def test_the_memo_spares_a_read_only_for_an_unchanged_file_the_index_vouches_for(tmp_path, clips):
    path = tmp_path / "a.mp4"
    shutil.copy(clips / "ocean.mp4", path)
    first, memo = VideoInput(path, "a.mp4"), HashMemo()
    key_input(first, memo)  # read, and recorded
    again = HashMemo.parse(memo.dumps())
    assert again.lookup(VideoInput(path, "a.mp4"), path.stat()) is None  # not vouched for by any index
    again.vouch([indexed_row(first)])
    assert again.lookup(VideoInput(path, "a.mp4"), path.stat()) == first.sha256
    assert again.lookup(VideoInput(path, "b.mp4"), path.stat()) is None  # the index knows it as a.mp4
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))  # same mtime, new ctime
    assert again.lookup(VideoInput(path, "a.mp4"), path.stat()) is None


def test_a_forged_memo_entry_is_read_again_before_two_files_become_one(tmp_path, clips):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    shutil.copy(clips / "ocean.mp4", a)
    shutil.copy(clips / "forest.mp4", b)
    va, vb = VideoInput(a, "a.mp4"), VideoInput(b, "b.mp4")
    key_input(va)
    memo = HashMemo()
    memo.record(vb, b.stat(), va.sha256)  # b claims a's content
    # an index row that agrees with the forged entry (as a stale index of another b.mp4 would); a.mp4 is new
    memo.vouch([{"source": "b.mp4", "sha256": va.sha256, "bytes": b.stat().st_size}])
    vb2, va2 = VideoInput(b, "b.mp4"), VideoInput(a, "a.mp4")
    key_input(va2, memo)
    key_input(vb2, memo)
    assert vb2.key == va2.key  # believed from the memo ...
    recheck_aliases([va2, vb2], memo)
    assert vb2.sha256 == hashlib.sha256(b.read_bytes()).hexdigest() != va2.sha256  # ... until read


def test_parse_drops_malformed_memos_and_entries():
    good = [1, 2, 3, 4, 5, "a" * 64]
    bad = [[1, 2, 3, 4, 5, "A" * 64], [True, 2, 3, 4, 5, "a" * 64], [1, 2, 3, 4, "a" * 64], "x", None]
    memo = HashMemo.parse(HashMemo({"/g": good, **{f"/b{i}": v for i, v in enumerate(bad)}}).dumps())
    assert memo.entries == {"/g": good}
    for data in [None, b"", b"{", b"[1]", b'{"version": 1, "files": {"/g": [1,2,3,4,5,"' + b"a" * 64 + b'"]}}']:
        assert HashMemo.parse(data).entries == {}
    assert HashMemo.parse(b"[" * 100_000 + b"]" * 100_000).entries == {}  # deeper than the parser goes
