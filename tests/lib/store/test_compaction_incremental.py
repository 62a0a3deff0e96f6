"""Incremental compaction (segments) and the incremental schema check behind view refreshes.

Real DuckDB over real Parquet files. Invariants: a compaction run sorts only the parts of new or
changed batches (the older segments' files are not rewritten), the views return exactly the parts'
rows through every change, and a refresh reads only the footers of parts it has not checked yet.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from sav_assets.lib.store import catalog
from sav_assets.lib.store.compaction import columns_cache_rel, compact_table, read_pointer, table_layout
from sav_assets.lib.store.lake import Lake
from sav_assets.lib.store.tables import LABEL_RUNS, to_table

T = "label_runs"
SQL = "select batch_id, video_id, label_key from label_runs order by all"


def _runs(batch: str, videos: list[str], key: str = "k1") -> pa.Table:
    return to_table([{"video_id": v, "batch_id": batch, "label_key": key, "status": "labeled", "masklets": 1,
                      "frames_labeled": 2} for v in videos], LABEL_RUNS)


def _views(lake: Lake) -> tuple[list, list]:
    catalog.refresh_catalog(lake)
    ro = [tuple(r.values()) for r in catalog.query(lake, SQL).to_pylist()]
    con = catalog.connect(lake, read_only=False)
    try:
        return ro, con.sql(SQL).fetchall()
    finally:
        con.close()


def _want(batches: dict[str, pa.Table]) -> list:
    rows = sorted((r["batch_id"], r["video_id"], r["label_key"]) for t in batches.values() for r in t.to_pylist())
    return [rows, rows]


def _mtimes(lake: Lake, files: list[str]) -> dict[str, int]:
    return {f: lake.local_path(f).stat().st_mtime_ns for f in files}


def _c(lake: Lake, **kw):
    return compact_table(lake, T, log=lambda _m: None, **kw)


def test_a_run_sorts_only_new_and_changed_batches_into_a_segment(tmp_path):
    lake = Lake(tmp_path)
    batches = {b: _runs(b, [f"{b}v{i}" for i in range(3)]) for b in ("b1", "b2", "b3")}
    for b, t in batches.items():
        lake.replace_batch(T, b, t)
    first = _c(lake)
    assert first.source_parts == 3 and first.segments == 1
    seg1 = read_pointer(lake, T)["files"]
    before = _mtimes(lake, seg1)

    batches["b4"] = _runs("b4", ["b4v0"])
    lake.replace_batch(T, "b4", batches["b4"])
    second = _c(lake)
    assert (second.reason, second.source_parts, second.rows, second.segments) == ("compacted incrementally", 1, 1, 2)
    assert _mtimes(lake, seg1) == before                           # the first segment was not rewritten
    assert list(_views(lake)) == _want(batches)

    # b1 relabeled: the next segment holds its new rows, the first segment's b1 rows are dead
    batches["b1"] = _runs("b1", ["b1v0", "b1v9"], key="k2")
    lake.replace_batch(T, "b1", batches["b1"])
    assert table_layout(lake, T).stale_batches == ["b1"]
    assert list(_views(lake)) == _want(batches)                    # before compacting: the parts
    third = _c(lake)
    assert (third.source_parts, third.rows, third.segments) == (1, 2, 3)
    segs = read_pointer(lake, T)["segments"]
    assert [sg["dead_batches"] for sg in segs] == [["b1"], [], []]
    assert sorted({r.split("/")[2] for r in segs[0]["sources"]}) == ["b2", "b3"]
    assert _mtimes(lake, seg1) == before
    assert list(_views(lake)) == _want(batches)
    assert table_layout(lake, T).parts == [f"tables/{T}/_schema/empty.parquet"]   # every batch compacted

    # at max_segments the run sorts every live part into one segment again
    batches["b5"] = _runs("b5", ["b5v0"])
    lake.replace_batch(T, "b5", batches["b5"])
    full = _c(lake, max_segments=3)
    assert (full.reason, full.source_parts, full.segments, full.rows) == ("compacted", 5, 1, 3 + 3 + 1 + 2 + 1)
    assert list(_views(lake)) == _want(batches)
    gens = {r.split("/")[2] for r in lake.list(f"compacted/{T}") if r.count("/") >= 3}
    assert full.generation in gens and len(gens) == 4      # the new one and the segments before it (open sessions)


def test_deleting_a_compacted_batch_needs_no_sort(tmp_path):
    lake = Lake(tmp_path)
    batches = {b: _runs(b, [f"{b}v0"]) for b in ("b1", "b2")}
    for b, t in batches.items():
        lake.replace_batch(T, b, t)
    _c(lake)
    for rel in lake.list(f"tables/{T}/b2"):
        lake.delete(rel)
    del batches["b2"]
    res = _c(lake)
    assert res.compacted and res.source_parts == 0 and res.segments == 1
    assert read_pointer(lake, T)["segments"][0]["dead_batches"] == ["b2"]
    assert list(_views(lake)) == _want(batches)


def test_refresh_reads_only_the_footers_of_parts_it_has_not_checked(tmp_path, monkeypatch):
    lake = Lake(tmp_path)
    for i in range(4):
        lake.write_part(T, "b1", f"v{i}.sam2", _runs("b1", [f"v{i}"]))
    catalog.refresh_catalog(lake)
    cache = json.loads(lake.get_bytes(columns_cache_rel(T)))
    assert sorted(cache["parts"]) == [f"tables/{T}/b1/v{i}.sam2.parquet" for i in range(4)]

    opened = []
    real = pq.ParquetFile

    def counting(source, *a, **kw):
        opened.append(getattr(source, "path", source))
        return real(source, *a, **kw)

    monkeypatch.setattr(pq, "ParquetFile", counting)
    catalog.refresh_catalog(lake)
    assert opened == []                                  # nothing new: no footer read
    lake.write_part(T, "b1", "v9.sam2", _runs("b1", ["v9"]))
    assert table_layout(lake, T).parts_match_schema
    assert len(opened) == 1
    monkeypatch.undo()
    # a part with other columns (an older writer): the view unifies by name and still answers
    old = _runs("b2", ["w0"]).drop_columns(["frames_labeled"])
    lake.write_part(T, "b2", "w0.sam2", old)
    assert not table_layout(lake, T).parts_match_schema
    ro, pipe = _views(lake)
    assert ro == pipe and ("b2", "w0", "k1") in ro and len(ro) == 6
