"""lib/util.py: the one SHA-256, atomic-write and Markdown-table helpers."""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pytest

from sav_assets.lib import util


def test_sha256_helpers_agree_with_hashlib(tmp_path):
    data = os.urandom(3 * 1024 + 7)
    f = tmp_path / "blob"
    f.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert util.sha256_bytes(data) == want
    assert util.sha256_file(f, chunk=1000) == want          # several chunks
    assert util.sha256_text("ab") == hashlib.sha256(b"ab").hexdigest()
    assert util.sha256_json({"b": 1, "a": [1, 2]}) == util.sha256_json({"a": [1, 2], "b": 1})


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "x.json"
    util.atomic_write_bytes(target, b"old")
    util.atomic_write_bytes(target, b"new", fsync=False)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_atomic_copy_failure_keeps_old_file(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        util.atomic_copy(tmp_path / "missing", target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    util.atomic_copy(src, target)
    assert target.read_bytes() == b"payload"


def test_markdown_table_from_rows_and_arrow():
    rows = [{"name": "a|b", "x": 0.123456}, {"name": None, "x": 2}]
    md = util.markdown_table(rows)
    assert md.splitlines() == ["| name | x |", "| --- | --- |", "| a\\|b | 0.1235 |", "|  | 2 |"]
    assert util.markdown_table(pa.Table.from_pylist(rows)) == md
    many = util.markdown_table([{"i": i} for i in range(5)], max_rows=2)
    assert many.endswith("_3 more rows_") and "| 1 |" in many and "| 2 |" not in many
    assert util.markdown_table([]) == "_(no columns)_"


def test_counts_table_largest_first():
    md = util.counts_table({"b": 1, "a": 3, "c": 1}, "reason", "videos")
    assert md.splitlines()[2:] == ["| a | 3 |", "| b | 1 |", "| c | 1 |"]
    assert md.splitlines()[0] == "| reason | videos |"
