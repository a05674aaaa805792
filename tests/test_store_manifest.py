"""store/manifest.py: the samples index rows (fast check, shared key strings)."""

from __future__ import annotations

import json

import pytest
from shard_helpers import KEYS


def test_the_fast_samples_row_check_never_accepts_what_the_schema_refuses():
    """store.manifest._plain_row recognises usual samples index rows without jsonschema; whatever it accepts,
    the schema must accept (anything else goes to jsonschema, which decides)."""
    import jsonschema
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mmcache.store.manifest import _plain_row, _row_schema_known, _row_validator

    assert _row_schema_known(), "schemas/cache-manifest.schema.json changed: update manifest._plain_row and its hash"
    validator = _row_validator()
    good = {"key": KEYS[0], "source": "a.mp4", "sha256": "ab" * 32, "bytes": 5, "status": "ok", "id": None,
            "aliases": ["b.mp4"], "duration": 2.0, "streams": {}, "error": None, "meta": {"label": "x"}}  # fmt: skip
    assert _plain_row(good) and validator.is_valid(good)
    values = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=3)
    values |= st.sampled_from([KEYS[0], "ab" * 32, "ok", "failed", "AB" * 32, KEYS[0] + "\n", [], ["x"], [1], {}])

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(st.dictionaries(st.sampled_from(sorted(good)), values, max_size=4), st.lists(st.sampled_from(sorted(good))))
    def check(changes, dropped):
        row = {**{k: v for k, v in good.items() if k not in dropped}, **changes}
        if _plain_row(row):
            assert validator.is_valid(row), row

    check()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "bytes": True}, {"type": "object", "properties": {"bytes": {"type": "integer"}}})
    assert not _plain_row({**good, "bytes": True}) and not _plain_row({**good, "key": KEYS[0] + "\n"})


def test_samples_rows_share_their_key_strings():
    """A samples index holds thousands of rows with the same field names: parsed rows share one str per
    name (nested dicts too) instead of each holding its own copies."""
    from mmcache.store.manifest import parse_samples

    row = {"key": "ab" * 12, "source": "a.mp4", "sha256": "0" * 64, "bytes": 1, "status": "ok"}
    row["streams"] = {"video": {"codec": "h264", "fps": 25.0}}
    data = "".join(json.dumps({**row, "key": f"{i:024x}"}) + "\n" for i in range(3)).encode()
    a, b, c = parse_samples(data, "x.jsonl")
    assert [r["key"] for r in (a, b, c)] == [f"{i:024x}" for i in range(3)]
    assert all(x is y for x, y in zip(a, c, strict=True))
    assert all(x is y for x, y in zip(a["streams"]["video"], b["streams"]["video"], strict=True))


def test_a_field_header_is_the_one_every_writer_records(tmp_path):
    """store.manifest.field_header: what `mmcache extract` writes for a field (shards.encoder_header) and what a
    writer without an encoder (benchmarks/synthetic.py) records come from it; the fingerprint is the sha256 of
    the parts, which are copied (a later change to the caller's dict does not reach the manifest)."""
    from mmcache.encoders import build_encoder
    from mmcache.shards import encoder_header
    from mmcache.store.manifest import field_header, fingerprint_of

    parts = {"encoder": "x", "options": {"a": [1, 2]}, "dim": 3}
    entry = field_header("x", {"a": [1, 2]}, "vision", 3, "float16", parts)
    parts["options"]["a"].append(3)
    assert entry["fingerprint_parts"]["options"]["a"] == [1, 2]
    assert entry["fingerprint"] == fingerprint_of(entry["fingerprint_parts"]) != fingerprint_of(parts)
    assert list(entry) == ["encoder", "options", "modality", "dim", "dtype", "fingerprint", "fingerprint_parts"]

    enc = build_encoder("mfcc:n_mels=40,n_mfcc=13")
    header = encoder_header(enc)
    assert header["fingerprint"] == enc.fingerprint() and "field" not in header["options"]
    assert header["options"]["n_mfcc"] == 13 and header["dim"] == enc.dim == 13
    again = field_header(enc.spec.name, header["options"], enc.spec.modality, enc.dim, enc.store_dtype,
                         enc.fingerprint_parts())  # fmt: skip
    assert again == header
