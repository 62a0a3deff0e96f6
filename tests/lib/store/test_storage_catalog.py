"""Lake storage (atomic, idempotent batch writes) and the DuckDB catalog (views, read-only SQL)."""

import os

import pyarrow as pa
import pytest

from sav_assets.lib.store.catalog import ReadOnlyViolation, connect, query, refresh_catalog
from sav_assets.lib.store.lake import Lake, UnsafeKeyError, safe_relpath
from sav_assets.lib.store.tables import VIDEOS, to_table


def _videos(ids, batch):
    return to_table([{"video_id": i, "batch_id": batch, "status": "ok", "content_sha256": "0" * 64,
                      "bytes": 10} for i in ids], VIDEOS)


def test_replace_batch_is_idempotent(tmp_path):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    lake.replace_batch("videos", "b2", _videos(["c"], "b2"))
    assert sorted(lake.read_table("videos")["video_id"].to_pylist()) == ["a", "b", "c"]
    # a re-run that writes fewer rows replaces the batch's rows, never appends
    lake.replace_batch("videos", "b1", _videos(["a"], "b1"))
    assert sorted(lake.read_table("videos")["video_id"].to_pylist()) == ["a", "c"]
    assert lake.batches("videos") == ["b1", "b2"]


def test_atomic_write_leaves_old_version_on_crash(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    lake.put_bytes("x/file.bin", b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        lake.put_bytes("x/file.bin", b"new")
    monkeypatch.undo()
    assert lake.get_bytes("x/file.bin") == b"old"
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["file.bin"]  # no temp file left behind


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", "/abs/path", "a\x00b"])
def test_path_traversal_refused(tmp_path, bad):
    with pytest.raises(UnsafeKeyError):
        safe_relpath(bad)
    with pytest.raises(UnsafeKeyError):
        Lake(tmp_path).put_bytes(bad, b"x")


def test_views_and_read_only_sql(tmp_path):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    db = refresh_catalog(lake)
    assert db.endswith("sav.duckdb")
    assert query(lake, "select count(*) as n from videos").to_pylist() == [{"n": 2}]
    # empty tables still have their columns
    assert query(lake, "select count(*) as n from masklets").to_pylist() == [{"n": 0}]
    # a new batch is visible without refreshing (views glob the parts)
    lake.replace_batch("videos", "b2", _videos(["c"], "b2"))
    assert query(lake, "select count(*) as n from videos").to_pylist() == [{"n": 3}]
    for bad in ["insert into videos (video_id) values ('x')", "create table t as select 1",
                f"copy (select 1) to '{tmp_path}/tables/out.csv'", "drop view videos",
                "select 1; delete from videos"]:
        with pytest.raises(ReadOnlyViolation):
            query(lake, bad)
    with pytest.raises(Exception, match="(?i)permission|disabled"):
        query(lake, "select * from read_csv('/etc/passwd')")
    assert not (tmp_path / "tables" / "out.csv").exists()


def test_sql_bound_parameters(tmp_path):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    refresh_catalog(lake)
    con = connect(lake)
    try:
        rows = con.execute("select video_id from videos where video_id = ?", ["b"]).fetchall()
    finally:
        con.close()
    assert rows == [("b",)]


def test_arrow_roundtrip_types(tmp_path):
    lake = Lake(tmp_path)
    t = pa.table({"a": [1, 2]})
    lake.write_part("misc", "b", "p", t)
    assert lake.read_table("misc").to_pylist() == [{"a": 1}, {"a": 2}]
