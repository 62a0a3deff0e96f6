"""The catalog file ``<root>/sav.duckdb`` (issue 8, item 7): the pipeline never needs a lock on it
while a user has it open, its views hold paths relative to the lake root (a copied or moved lake
answers queries), and it is written in a storage format that the DuckDB CLI from PyPI can open."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import textwrap

import duckdb
import pytest

from sav_assets.lib.store import catalog
from sav_assets.lib.store.compaction import compact_table
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import VIDEOS, to_table


def _videos(ids, batch):
    return to_table([{"video_id": i, "batch_id": batch, "status": "ok", "content_sha256": f"{n:064d}",
                      "bytes": 10} for n, i in enumerate(ids)], VIDEOS)


HOLDER = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])                    # read-write: holds DuckDB's lock on the file
    print(con.execute("select count(*) from videos").fetchone()[0], flush=True)
    sys.stdin.readline()
    print(con.execute("select count(*) from videos").fetchone()[0], flush=True)
""")


def test_refresh_while_a_user_session_holds_the_catalog_open(tmp_path):
    """A user's read-write ``duckdb <root>/sav.duckdb`` session: refreshing still works, the next
    query sees the new batch, and the user's session goes on with the catalog it opened."""
    root = tmp_path / "lake"
    lake = Lake(root)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    db = catalog.refresh_catalog(lake)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, db], cwd=root, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "2"
        lake.replace_batch("videos", "b2", _videos(["c"], "b2"))
        assert compact_table(lake, "videos", force=True).compacted
        assert catalog.refresh_catalog(lake) == db
        assert catalog.query(lake, "select count(*) n from videos").to_pylist() == [{"n": 3}]
        con = duckdb.connect(db, read_only=True)
        try:
            con.execute(f"SET file_search_path = '{root}'")
            assert con.execute("select count(*) from videos").fetchall() == [(3,)]
            view = con.execute("select sql from duckdb_views() where view_name = 'videos'").fetchone()[0]
            assert "compacted/videos/" in view
        finally:
            con.close()
        out, err = holder.communicate("go\n", timeout=60)
        assert holder.returncode == 0, err
        assert out.strip() == "3"                        # its views glob the parts: still valid
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_moved_lake_answers_queries(tmp_path, monkeypatch):
    old = tmp_path / "old"
    lake = Lake(old)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    lake.replace_batch("videos", "b2", _videos(["c"], "b2"))
    catalog.refresh_catalog(lake)
    assert compact_table(lake, "videos", min_new_parts=1).compacted
    lake.replace_batch("videos", "b3", _videos(["d"], "b3"))    # a part beside the compacted files
    catalog.refresh_catalog(lake)

    new = tmp_path / "moved" / "lake"
    new.parent.mkdir()
    shutil.move(str(old), str(new))
    db = str(new / catalog.DB_NAME)
    con = duckdb.connect(db, read_only=True)
    try:
        views = dict(con.execute("select view_name, sql from duckdb_views() where not internal").fetchall())
        assert "videos" in views and "masklet_frames" in views
        assert not [n for n, sql in views.items() if str(tmp_path) in sql]      # no absolute path
        con.execute(f"SET file_search_path = '{new}'")
        assert con.execute("select video_id from videos order by 1").fetchall() == [("a",), ("b",), ("c",), ("d",)]
        assert con.execute("select count(*) from masklets").fetchall() == [(0,)]
    finally:
        con.close()
    monkeypatch.chdir(new)                                # or run the CLI from the lake root
    con = duckdb.connect(catalog.DB_NAME, read_only=True)
    try:
        assert con.execute("select count(*) from videos").fetchall() == [(4,)]
    finally:
        con.close()
    assert catalog.query(Lake(new), "select count(*) n from videos").to_pylist() == [{"n": 4}]


def test_catalog_is_written_in_a_storage_format_duckdb_1x_reads(tmp_path):
    """duckdb-cli on PyPI is 1.x: the catalog is written in v1.0.0 storage, which every DuckDB >= 1.0 opens."""
    lake = Lake(tmp_path)
    db = catalog.refresh_catalog(lake)
    with open(db, "rb") as fh:
        head = fh.read(20)
    assert head[8:12] == b"DUCK"
    assert struct.unpack("<Q", head[12:20])[0] == 64          # the v1.0.0 storage version number
    con = duckdb.connect(db, read_only=True)
    try:
        tags = con.execute("select tags from duckdb_databases() where database_name = 'sav'").fetchone()[0]
    finally:
        con.close()
    assert tags["storage_version"].startswith("v1.0.0")


def test_refresh_leaves_no_temporary_files_and_queries_never_write(tmp_path):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a"], "b1"))
    catalog.refresh_catalog(lake)
    catalog.refresh_catalog(lake)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["sav.duckdb", "sav.duckdb.lock", "tables"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert catalog.query(lake, "select count(*) n from videos").to_pylist() == [{"n": 1}]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


@pytest.mark.parametrize("read_only", [True, False])
def test_connect_sees_batches_written_after_the_last_refresh(tmp_path, read_only):
    lake = Lake(tmp_path)
    lake.replace_batch("videos", "b1", _videos(["a"], "b1"))
    catalog.refresh_catalog(lake)
    assert compact_table(lake, "videos", force=True).compacted
    lake.replace_batch("videos", "b2", _videos(["b"], "b2"))          # no refresh since
    lake.replace_batch("videos", "b1", _videos(["a", "a2"], "b1"))    # rewritten after compaction
    con = catalog.connect(lake, read_only=read_only)
    try:
        assert con.execute("select video_id from videos order by 1").fetchall() == [("a",), ("a2",), ("b",)]
    finally:
        con.close()
