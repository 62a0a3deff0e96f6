"""Per-batch consolidation of labeling's per-video parts (sav_assets/lib/store/consolidation.py).

Real Parquet files in a temporary lake, real DuckDB views (the read-only connection, the pipeline's
connection and ``sav.duckdb`` itself). The invariant: every reader returns exactly the rows of the
per-video parts, once, before, during (an injected crash between writing the merged part and
deleting its sources) and after consolidation; the table then holds one file per batch.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pytest

from sav_assets.lib.label.batch import _existing_run
from sav_assets.lib.store import catalog
from sav_assets.lib.store.compaction import BATCH_COLUMN, compact_table
from sav_assets.lib.store.consolidation import consolidate_batch, consolidate_label_batch
from sav_assets.lib.store.lake import SCHEMA_BATCH, Lake, is_consolidated
from sav_assets.lib.store.tables import LABEL_RUNS, MASKLETS, to_table

VIDEOS = ["v1", "v2", "v3", "v4"]


class Crash(RuntimeError):
    pass


def _masklets(batch: str, vid: str, n: int = 3, tag: str = "a") -> pa.Table:
    return to_table([{"video_id": vid, "batch_id": batch, "masklet_id": m, "masklet_type": "sam2",
                      "model_name": tag, "num_frames": m + 1} for m in range(n)], MASKLETS)


def _run(batch: str, vid: str, key: str) -> pa.Table:
    return to_table([{"video_id": vid, "batch_id": batch, "label_key": key, "status": "labeled", "masklets": 3,
                      "frames_labeled": 10, "finished_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)}],
                    LABEL_RUNS)


def _label(lake: Lake, batch: str, videos=VIDEOS) -> None:
    """What lib/label/batch.py writes per video: masklets, then the label_runs commit marker."""
    for v in videos:
        lake.write_part("masklets", batch, f"{v}.sam2", _masklets(batch, v))
        lake.write_part("label_runs", batch, f"{v}.sam2", _run(batch, v, f"key-{v}"))


def _files(lake: Lake, table: str) -> list[str]:
    return [r for r in lake.list(Lake.table_dir(table)) if r.endswith(".parquet") and SCHEMA_BATCH not in r]


def _seen(lake: Lake, table: str = "masklets") -> dict[str, list]:
    """The table's (video_id, masklet_id, model_name) rows through every reader, sorted."""
    sql = f"select video_id, masklet_id, model_name from {table} order by all"
    catalog.refresh_catalog(lake)
    out = {"read_table": sorted((r["video_id"], r["masklet_id"], r["model_name"])
                                for r in lake.read_table(table).to_pylist()),
           "read_only": [tuple(r.values()) for r in catalog.query(lake, sql).to_pylist()]}
    con = catalog.connect(lake, read_only=False)
    out["pipeline"] = con.sql(sql).fetchall()
    con.close()
    db = duckdb.connect(str(lake.local_path(catalog.DB_NAME)), read_only=True)
    db.execute(f"SET file_search_path = '{lake.local_path('')}'")
    out["sav.duckdb"] = db.sql(sql).fetchall()
    db.close()
    return out


def _expect(lake_rows: list[tuple]) -> dict[str, list]:
    return {k: sorted(lake_rows) for k in ("read_table", "read_only", "pipeline", "sav.duckdb")}


def _rows(batch_videos: dict[str, list[str]], tag: str = "a") -> list[tuple]:
    return [(v, m, tag) for vs in batch_videos.values() for v in vs for m in range(3)]


def test_a_batch_becomes_one_file_and_every_reader_sees_the_same_rows(tmp_path):
    lake = Lake(tmp_path)
    _label(lake, "b1")
    _label(lake, "b2", ["v5", "v6"])
    before = _seen(lake)
    assert before == _expect(_rows({"b1": VIDEOS, "b2": ["v5", "v6"]}))
    assert len(_files(lake, "masklets")) == 6
    res = consolidate_label_batch(lake, "b1", log=lambda _m: None)
    assert [(r.table, r.parts, r.rows) for r in res if r.consolidated] == [("masklets", 4, 12), ("label_runs", 4, 4)]
    files = _files(lake, "masklets")
    assert len([f for f in files if "/b1/" in f]) == 1 and is_consolidated([f for f in files if "/b1/" in f][0])
    assert _seen(lake) == before
    # nothing left to merge: a second run writes nothing
    assert consolidate_batch(lake, "masklets", "b1", log=lambda _m: None).consolidated is None


def test_a_crash_between_writing_the_merged_part_and_deleting_the_parts_never_double_counts(tmp_path):
    lake = Lake(tmp_path)
    _label(lake, "b1")
    want = _expect(_rows({"b1": VIDEOS}))

    def crash(rel):
        raise Crash(rel)

    catalog.refresh_catalog(lake)        # a user's sav.duckdb opened before the merge
    before = tmp_path / "before.duckdb"
    before.write_bytes(lake.local_path(catalog.DB_NAME).read_bytes())
    with pytest.raises(Crash):
        consolidate_batch(lake, "masklets", "b1", fault=crash, log=lambda _m: None)
    files = _files(lake, "masklets")
    assert len(files) == 5 and sum(map(is_consolidated, files)) == 1     # merged part + the 4 parts it replaces
    assert _seen(lake) == want
    # the view made before the merge globs the per-video parts only: still no double count
    db = duckdb.connect(str(before), read_only=True)
    db.execute(f"SET file_search_path = '{lake.local_path('')}'")
    assert db.sql("select video_id, masklet_id, model_name from masklets order by all").fetchall() == want["read_table"]
    db.close()
    res = consolidate_batch(lake, "masklets", "b1", log=lambda _m: None)
    assert res.deleted == 5 and len(_files(lake, "masklets")) == 1
    assert _seen(lake) == want


def test_the_commit_marker_is_found_inside_the_merged_part(tmp_path):
    lake = Lake(tmp_path)
    _label(lake, "b1")
    consolidate_label_batch(lake, "b1", log=lambda _m: None)
    assert not lake.exists("tables/label_runs/b1/v2.sam2.parquet")
    prev = _existing_run(lake, "b1", "v2")
    assert prev is not None and prev["label_key"] == "key-v2" and prev["status"] == "labeled"
    assert _existing_run(lake, "b1", "v9") is None
    assert lake.part_rows("masklets", "b1", "v3.sam2").column("video_id").to_pylist() == ["v3"] * 3


def test_a_part_rewritten_after_the_merge_replaces_its_rows_at_the_next_merge(tmp_path):
    lake = Lake(tmp_path)
    _label(lake, "b1")
    consolidate_batch(lake, "masklets", "b1", log=lambda _m: None)
    # a relabel of v2 (another model) and a new video v7 after the merge
    lake.write_part("masklets", "b1", "v2.sam2", _masklets("b1", "v2", n=2, tag="b"))
    lake.write_part("masklets", "b1", "v7.sam2", _masklets("b1", "v7", n=1))
    old = _rows({"b1": VIDEOS}) + [("v7", 0, "a")]
    assert _seen(lake) == _expect(old)      # v2 as merged until the next merge; never both versions
    res = consolidate_batch(lake, "masklets", "b1", log=lambda _m: None)
    assert res.rows == 12 - 3 + 2 + 1 and len(_files(lake, "masklets")) == 1
    new = [r for r in old if r[0] != "v2"] + [("v2", 0, "b"), ("v2", 1, "b")]
    assert _seen(lake) == _expect(new)


def test_compaction_reads_merged_parts_under_their_batch(tmp_path):
    lake = Lake(tmp_path)
    _label(lake, "b1")
    _label(lake, "b2", ["v5"])
    consolidate_batch(lake, "masklets", "b1", log=lambda _m: None)
    want = _seen(lake)
    res = compact_table(lake, "masklets", log=lambda _m: None)
    assert res.compacted and res.rows == 15 and res.batches == 2
    assert _seen(lake) == want
    import pyarrow.parquet as pq

    batches = set()
    for f in lake.list("compacted/masklets"):
        if f.endswith(".parquet"):
            batches |= set(pq.read_table(lake.local_path(f), columns=[BATCH_COLUMN]).column(0).to_pylist())
    assert batches == {"b1", "b2"}
    # merging b2 after compaction: the view serves b2 from its merged part, once
    consolidate_batch(lake, "masklets", "b2", min_parts=1, log=lambda _m: None)
    assert _seen(lake) == want
