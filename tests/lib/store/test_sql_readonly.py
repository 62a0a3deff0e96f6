"""Ad hoc SQL is read-only by construction (issue 8, item 1).

Every statement kind DuckDB has, with and without ``EXPLAIN`` / ``EXPLAIN ANALYZE``, is tried against
a lake holding plain batch parts, a compacted table and its catalog; afterwards the bytes of every
file under the lake root (and the folder beside it) are exactly what they were. A statement is
either refused by the statement check or fails inside DuckDB, whose connection can neither read nor
write a file by path; the check itself classifies ``EXPLAIN`` by the statement it explains.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import duckdb
import pytest

from sav_assets.lib.store import catalog
from sav_assets.lib.store.compaction import compact_table
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import SOURCE_OBJECTS, VIDEOS, to_table

PREFIXES = ["", "EXPLAIN ", "EXPLAIN ANALYZE ", "EXPLAIN (FORMAT json) ", "explain /* c */ analyze "]


def _videos(ids, batch):
    return to_table([{"video_id": i, "batch_id": batch, "status": "ok", "content_sha256": f"{n:064d}",
                      "bytes": 10 + n} for n, i in enumerate(ids)], VIDEOS)


def _sources(keys, batch):
    return to_table([{"source_key": k, "batch_id": batch, "disposition": "new"} for k in keys], SOURCE_OBJECTS)


def _snapshot(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under the roots (and so the set of files)."""
    out = {}
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath) / name
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("ro")
    root = base / "lake"
    lake = Lake(root)
    lake.replace_batch("videos", "b1", _videos(["a", "b"], "b1"))
    lake.replace_batch("videos", "b2", _videos(["c"], "b2"))
    lake.replace_batch("source_objects", "b1", _sources(["x.mp4", "y.mp4"], "b1"))
    catalog.refresh_catalog(lake)
    assert compact_table(lake, "videos", force=True).compacted
    catalog.refresh_catalog(lake)
    (base / "outside").mkdir()
    return root


def _statements(root: Path) -> list[str]:
    part = root / "tables" / "videos" / "b1" / "part-0.parquet"
    src = root / "tables" / "source_objects" / "b1" / "part-0.parquet"
    out = root.parent / "outside"
    return [
        # COPY over a part with tampered rows, truncating a table, a duplicate part, a partitioned overwrite
        f"COPY (SELECT * REPLACE ('tampered' AS status) FROM videos) TO '{part}' (FORMAT parquet)",
        f"COPY (SELECT * FROM source_objects WHERE false) TO '{src}' (FORMAT parquet)",
        f"COPY videos TO '{root}/tables/videos/b1/part-1.parquet' (FORMAT parquet)",
        f"COPY videos TO '{root}/tables/videos' (FORMAT parquet, PARTITION_BY (batch_id), OVERWRITE)",
        f"COPY videos TO '{root}/compacted/videos/x.parquet' (FORMAT parquet)",
        f"COPY videos TO '{out}/v.csv'",
        f"COPY videos FROM '{part}'",
        f"EXPORT DATABASE '{root}/tables/export'",
        f"EXPORT DATABASE '{out}/export'",
        f"IMPORT DATABASE '{root}'",
        f"ATTACH '{root}/sav.duckdb' AS cat",
        f"ATTACH '{root}/tables/new.duckdb' AS n",
        "INSTALL httpfs", "LOAD httpfs", "UPDATE EXTENSIONS",
        "SET enable_external_access = true", f"SET allowed_directories = ['{root}']", "RESET lock_configuration",
        f"SET profile_output = '{part}'", f"SET temp_directory = '{root}/tables'",
        "PRAGMA enable_profiling", f"PRAGMA profiling_output = '{part}'",
        f"CALL enable_logging(storage = 'file', storage_path = '{root}/tables/log')",
        f"SELECT * FROM enable_logging(storage = 'file', storage_path = '{root}/tables/log')",
        "CALL checkpoint()", "CHECKPOINT", "VACUUM", "USE memory", "DETACH memory",
        "CREATE TABLE t AS SELECT * FROM videos", "CREATE VIEW v2 AS SELECT 1", "CREATE MACRO m() AS 1",
        "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
        "DROP VIEW videos", "ALTER VIEW videos RENAME TO v3",
        "INSERT INTO videos (video_id) VALUES ('x')", "UPDATE videos SET status = 'x'",
        "DELETE FROM videos", "TRUNCATE videos",
        "BEGIN TRANSACTION", "PREPARE p AS SELECT 1",
        f"SELECT 1; COPY videos TO '{part}' (FORMAT parquet)",
        f"SELECT 1; EXPLAIN ANALYZE COPY videos TO '{part}' (FORMAT parquet)",
        # reads by path are refused too: the connection opens no file by name
        f"SELECT * FROM read_parquet('{part}')", "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM glob('{root}/*')", "SELECT * FROM read_text('/etc/hostname')",
    ]


def test_every_statement_kind_leaves_the_lake_untouched(lake_dir):
    lake = Lake(lake_dir)
    before = _snapshot(lake_dir, lake_dir.parent / "outside")
    rows = catalog.query(lake, "select * from videos order by video_id").to_pylist()
    accepted = []
    for stmt in _statements(lake_dir):
        for prefix in PREFIXES:
            sql = prefix + stmt
            try:
                catalog.query(lake, sql)
            except (catalog.ReadOnlyViolation, duckdb.Error):
                pass
            else:
                accepted.append(sql)
            assert _snapshot(lake_dir, lake_dir.parent / "outside") == before, sql
    assert accepted == []
    assert not (lake_dir.parent / ".tmp").exists() and not Path(".tmp").exists()
    assert catalog.query(lake, "select * from videos order by video_id").to_pylist() == rows
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]


@pytest.mark.parametrize("prefix", ["EXPLAIN ", "EXPLAIN ANALYZE ", "explain\n/* x */ ANALYZE ",
                                    "EXPLAIN (FORMAT json) ", "EXPLAIN EXPLAIN ANALYZE "])
def test_explain_is_classified_by_the_statement_it_explains(lake_dir, prefix):
    lake = Lake(lake_dir)
    con = catalog.connect(lake)
    try:
        with pytest.raises(catalog.ReadOnlyViolation, match="COPY"):
            catalog.check_read_only(con, prefix + "COPY videos TO 'x.parquet'")
        with pytest.raises(catalog.ReadOnlyViolation, match="DELETE"):
            catalog.check_read_only(con, prefix + "DELETE FROM videos")
        catalog.check_read_only(con, prefix.replace("EXPLAIN EXPLAIN", "EXPLAIN") + "SELECT * FROM videos")
    finally:
        con.close()


def test_explain_and_explain_analyze_of_a_select_still_work(lake_dir):
    lake = Lake(lake_dir)
    for sql in ["EXPLAIN SELECT count(*) FROM videos", "EXPLAIN ANALYZE SELECT count(*) FROM videos"]:
        plan = catalog.query(lake, sql)
        assert plan.num_rows >= 1 and "explain_value" in plan.column_names, sql
    assert catalog.query(lake, "select count(*) n from videos").to_pylist() == [{"n": 3}]
    assert catalog.query(lake, "describe videos").num_rows == len(VIDEOS)
    assert catalog.query(lake, "select count(*) n from source_objects").to_pylist() == [{"n": 2}]


def test_the_connection_itself_cannot_write_or_unlock(lake_dir):
    """Structural: even a statement that skipped the check cannot write a file or change settings."""
    lake = Lake(lake_dir)
    before = _snapshot(lake_dir)
    con = catalog.connect(lake)
    try:
        for sql in [f"COPY videos TO '{lake_dir}/tables/videos/b1/part-0.parquet' (FORMAT parquet)",
                    f"COPY videos TO '{lake_dir}/compacted/videos/y.parquet' (FORMAT parquet)",
                    f"COPY videos TO '{lake_dir}/tables/videos' (FORMAT parquet, PARTITION_BY (batch_id), OVERWRITE)",
                    f"ATTACH '{lake_dir}/sav.duckdb' AS cat", f"EXPORT DATABASE '{lake_dir}/tables/e'"]:
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        for sql in ["SET enable_external_access = true", "SET allowed_directories = ['/']",
                    "SET lock_configuration = false"]:
            with pytest.raises(duckdb.Error, match="locked"):
                con.execute(sql)
        assert con.execute("select count(*) from videos").fetchall() == [(3,)]
    finally:
        con.close()
    assert _snapshot(lake_dir) == before


def test_unparseable_or_unknown_statements_are_refused(lake_dir):
    con = catalog.connect(Lake(lake_dir))
    try:
        for sql in ["", "   ", "-- nothing", "UPDATE EXTENSIONS", "selec 1"]:
            with pytest.raises(catalog.ReadOnlyViolation):
                catalog.check_read_only(con, sql)
    finally:
        con.close()
